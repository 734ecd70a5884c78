from __future__ import annotations

import math

import numpy as np
import pytest

from recsys.data import References
from recsys.errors import ColdStartNotSupported
from recsys.evaluation.evaluator import Evaluator
from recsys.models.mllm import (
    IMAGE_TOKEN,
    MLLMScorer,
    MLLMUnavailable,
    build_prompt,
    plus_probability,
    reference_pairs,
    transformers_available,
)


def test_pairs_most_disliked_with_most_liked():
    images = np.array([10, 11, 12, 13, 14, 15])
    scores = np.array([1.0, 5.0, 2.0, 4.0, 3.0, 3.0])  # median 3: images 14 and 15 are neither
    assert reference_pairs(images, scores) == [(10, 11), (12, 13)]
    assert reference_pairs(images, scores, max_pairs=1) == [(10, 11)]


def test_pairs_are_capped_deterministic_and_need_both_sides():
    images = np.arange(40)
    scores = np.where(images % 2 == 0, 1.0, 5.0)
    pairs = reference_pairs(images, scores)
    assert len(pairs) == 8
    assert pairs[0] == (0, 1) and pairs[-1] == (14, 15)  # equal scores: lower image index first
    assert reference_pairs(np.array([1, 2]), np.array([3.0, 3.0])) == []
    assert reference_pairs(np.array([], dtype=int), np.array([])) == []


def test_prompt_template_and_image_order():
    text, images = build_prompt([(3, 7), (2, 9)], 5, lambda i: f"prompt {i}")
    assert images == [3, 7, 2, 9, 5]
    assert text.count(IMAGE_TOKEN) == 5
    lines = text.splitlines()
    assert lines[1] == 'Example 1: disliked <image> "prompt 3"; liked <image> "prompt 7".'
    assert lines[2] == 'Example 2: disliked <image> "prompt 2"; liked <image> "prompt 9".'
    assert lines[3] == 'Candidate: <image> "prompt 5"'
    assert lines[-2:] == ["Will this person like the candidate image? Answer + or -.", "Answer:"]


def test_plus_probability_reads_the_two_tokens():
    logits = np.array([0.0, 2.0, -1.0, 9.0])  # + is id 1, - is id 2; id 3 is irrelevant
    expected = math.exp(2.0) / (math.exp(2.0) + math.exp(-1.0))
    assert plus_probability(logits, 1, 2) == pytest.approx(expected)
    assert plus_probability(logits, 2, 1) == pytest.approx(1 - expected)
    assert plus_probability(np.array([1000.0, -1000.0]), 0, 1) == 1.0  # no overflow


def first_references(dataset, k: int) -> References:
    """The references of the evaluator's first new user at k (draw 0)."""
    evaluator = Evaluator(dataset, shots=[k])
    episode, r = evaluator.episodes("test_unseen", k)[0][0], evaluator.table("test_unseen")
    return References(episode.user_idx, r.image_idx[episode.references], r.score[episode.references])


def test_scorer_with_a_fake_backend_scores_new_users(small_sim):
    seen: list[list[int]] = []

    def fake_backend(text: str, images: list[int]) -> float:
        seen.append(images)
        return 0.25

    model = MLLMScorer(max_pairs=2).fit(small_sim)
    model.backend = fake_backend
    result = Evaluator(small_sim, shots=[10], n_bootstrap=10).evaluate(model, "test_unseen", 10)
    assert result.status == "ok" and result.n_ratings > 0
    assert all(len(images) <= 2 * 2 + 1 for images in seen)
    refs = first_references(small_sim, 10)
    assert model.predict_new([refs], [np.array([1, 2])])[0] == pytest.approx([2.0, 2.0])  # 1 + 0.25 * 4


@pytest.mark.skipif(
    transformers_available(), reason="transformers is installed: the skip path does not apply"
)
def test_without_transformers_the_evaluator_reports_a_skip(small_sim):
    model = MLLMScorer().fit(small_sim)
    with pytest.raises(MLLMUnavailable, match="^skipped: "):
        model.score_user(first_references(small_sim, 5), np.array([0]))
    assert issubclass(MLLMUnavailable, ColdStartNotSupported)
    result = Evaluator(small_sim, shots=[5], n_bootstrap=10).evaluate(model, "test_unseen", 5)
    assert result.status == "unsupported" and result.reason.startswith("skipped: ")
