"""Shared fixtures: small simulated datasets, made once per test session."""

from __future__ import annotations

import contextlib
import importlib.util
import signal
from pathlib import Path

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


#: the benchmark scripts (not a package: their tests load them by path)
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark("scale")``: the module of ``benchmarks/scale.py``."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


#: a CLIP small enough to build and run in milliseconds (random weights): the encoder of upload tests
TINY_ENCODER = "clip:recsys-test-tiny/random"


@pytest.fixture(scope="session")
def tiny_home(tmp_path_factory):
    """A RECSYS_HOME for commands that embed with the tiny encoder (its embedding cache lives there)."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="session")
def tiny_sim(tmp_path_factory, tiny_home):
    """(root, dataset) of a small simulation with rendered images, embedded by ``TINY_ENCODER``."""
    from features.embed import embed_dataset_features
    from features.encoders import TINY_ARCHITECTURE, register_architecture

    register_architecture("recsys-test-tiny", TINY_ARCHITECTURE)
    config = SimulationConfig(seed=5, users=30, images=40, ratings_per_user=15, feature_dim=8, image_size=16)
    root = simulate(tmp_path_factory.mktemp("sim") / "pamela", config, progress=False)
    data = embed_dataset_features(
        load_dataset(root),
        TINY_ENCODER,
        device="cpu",
        cache_dir=tiny_home / "embeddings",
        progress=False,
        workspace=tiny_home,
    )
    return root, data


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
