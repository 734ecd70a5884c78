"""Fixtures shared by the model tests: an evaluator on the small simulation and the baselines' floors."""

from __future__ import annotations

import pytest

from recsys.evaluation.evaluator import Evaluator
from recsys.models import create_model


@pytest.fixture(scope="session")
def evaluator(small_sim):
    """An evaluator of the small simulation with 10-shot episodes."""
    return Evaluator(small_sim, shots=(10,), n_bootstrap=10)


@pytest.fixture(scope="session")
def floors(small_sim, evaluator) -> dict[str, float]:
    """The test_unseen 10-shot pairwise accuracy of each non-personalised baseline: what a model must beat."""
    return {
        name: evaluator.evaluate(create_model(name).fit(small_sim), "test_unseen", 10).metrics["pairwise_acc"]
        for name in ("global_mean", "metadata_mean")
    }
