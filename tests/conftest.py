"""Shared fixtures: small simulated datasets, made once per test session."""

from __future__ import annotations

import contextlib
import signal

import pytest

from recsys.data import load_dataset
from recsys.data.simulate import SimulationConfig, simulate

#: a small simulation on which every personalised model must beat the global mean in both settings
SMALL = SimulationConfig(
    seed=7, users=80, images=800, ratings_per_user=150, feature_dim=64, render_images=False
)


@pytest.fixture(scope="session")
def small_sim_dir(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("sim") / "small", SMALL, progress=False)


@pytest.fixture(scope="session")
def small_sim(small_sim_dir):
    return load_dataset(small_sim_dir)


@contextlib.contextmanager
def _deadline(seconds: int):
    def expired(signum, frame):
        raise TimeoutError(f"blocked for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture()
def deadline():
    """``with deadline(seconds):`` fails the test (TimeoutError) instead of hanging the run when a read blocks."""
    return _deadline
