"""Contract tests run on every registered model: the shared interface, and that each model learns."""

from __future__ import annotations

import re
import sys
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from recsys.data.choices import Choices
from recsys.data.dataset import Ratings, References
from recsys.errors import ColdStartNotSupported, NewImagesNotSupported, UserError
from recsys.evaluation.evaluator import Evaluator
from recsys.models import create_model, list_models, registry
from recsys.models.base import DATA_POLICY, Model
from recsys.models.registry import model_class


def _contributing_example() -> str:
    """Load the worked example model of CONTRIBUTING.md as a module; returns its registry target."""
    text = (Path(__file__).resolve().parents[2] / "CONTRIBUTING.md").read_text()
    code = next(
        block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "class MetadataAffinity" in block
    )
    module = types.ModuleType("contributing_example")
    sys.modules[module.__name__] = module  # dataclasses look their module up while the code runs
    exec(compile(code, "CONTRIBUTING.md", "exec"), module.__dict__)  # noqa: S102 - our own documentation
    return "contributing_example:MetadataAffinity"


EXAMPLE = "metadata_affinity"
_EXAMPLE_TARGET = _contributing_example()
#: every registered model and preset that can run here (the MLLM scorer needs its extra, weights and a GPU),
#: and the worked example of CONTRIBUTING.md
MODELS = [m for m in list_models() if model_class(m).unavailable_reason() is None] + [EXAMPLE]


@pytest.fixture(autouse=True)
def _example_registered(monkeypatch):
    """The CONTRIBUTING.md example is registered for these tests only, as its one registry line would."""
    monkeypatch.setitem(registry._REGISTRY, EXAMPLE, _EXAMPLE_TARGET)


NON_PERSONALISED = {"global_mean", "metadata_mean", "ridge"}
_fitted: dict[str, Model] = {}


def fitted(name: str, dataset) -> Model:
    """Each model fitted once per session on the small simulation (fits can be slow)."""
    if name not in _fitted:
        params = {"seed": 0} if "seed" in model_class(name).param_names() else {}
        _fitted[name] = create_model(name, **params).fit(dataset)
    return _fitted[name]


@pytest.mark.parametrize("name", MODELS)
def test_params_are_keyword_only_and_cloned_unchanged(name):
    model = create_model(name)
    params = model.get_params()
    clone = model.clone()
    assert clone.get_params() == params
    assert clone is not model
    assert not getattr(clone, "fitted_", False)


@pytest.mark.parametrize("name", MODELS)
def test_unknown_parameter_is_a_clear_error(name):
    with pytest.raises(UserError, match="unknown parameter"):
        create_model(name, no_such_parameter=1)


@pytest.mark.parametrize("name", MODELS)
def test_batch_equals_one_by_one(name, small_sim):
    model = fitted(name, small_sim)
    r = small_sim.ratings["val_seen"]
    users, images = r.user_idx[:12], r.image_idx[:12]
    batch = model.predict(users, images)
    single = np.array([model.predict(users[i : i + 1], images[i : i + 1])[0] for i in range(12)])
    np.testing.assert_allclose(batch, single, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_save_load_round_trip(name, small_sim, tmp_path):
    """The loaded model predicts the same, for seen and new users, and keeps its name and parameters."""
    model = fitted(name, small_sim)
    r = small_sim.ratings["test_seen"]
    before = model.predict(r.user_idx[:50], r.image_idx[:50])
    loaded = Model.load(model.save(tmp_path / name))
    assert loaded.name == name and loaded.get_params() == model.get_params()
    np.testing.assert_allclose(
        loaded.predict(r.user_idx[:50], r.image_idx[:50]), before, rtol=1e-6, atol=1e-6
    )
    u = small_sim.ratings["test_unseen"]
    refs, queries = [References(int(u.user_idx[0]), u.image_idx[:10], u.score[:10])], [u.image_idx[10:20]]
    if name != "oracle":
        np.testing.assert_allclose(
            loaded.predict_new(refs, queries)[0], model.predict_new(refs, queries)[0], rtol=1e-6, atol=1e-6
        )
    assert not list(tmp_path.glob(".*.tmp")), "the temporary directory must be renamed into place"


@pytest.mark.parametrize("name", MODELS)
def test_deterministic_under_seed(name, small_sim):
    """Models with randomness take a ``seed``; a refit with the same seed predicts the same."""
    if "seed" not in model_class(name).param_names():
        pytest.skip("no randomness (closed form or deterministic search)")
    again = create_model(name, seed=0).fit(small_sim)
    r = small_sim.ratings["test_seen"]
    np.testing.assert_allclose(
        again.predict(r.user_idx[:100], r.image_idx[:100]),
        fitted(name, small_sim).predict(r.user_idx[:100], r.image_idx[:100]),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("name", [m for m in MODELS if m not in NON_PERSONALISED | {"global_mean"}])
def test_learns_better_than_global_mean_in_both_settings(name, small_sim):
    """Personalised models beat the global mean's 0.5 pairwise accuracy clearly, seen and unseen (10-shot)."""
    evaluator = Evaluator(small_sim, shots=(10,), n_bootstrap=10)
    model = fitted(name, small_sim)
    seen = evaluator.evaluate(model, "test_seen")
    assert seen.metrics["pairwise_acc"] > 0.58, seen.metrics
    try:
        unseen = evaluator.evaluate(model, "test_unseen", 10)
    except ColdStartNotSupported:
        pytest.fail("the evaluator must report unsupported models, not raise")
    assert unseen.status == "ok", unseen.reason
    assert unseen.metrics["pairwise_acc"] > 0.58, unseen.metrics


def test_predicting_an_unfitted_user_is_a_clear_error(small_sim):
    model = fitted("user_ridge", small_sim)
    unseen_user = small_sim.ratings["test_unseen"].user_idx[:1]
    with pytest.raises(UserError, match="predict_new"):
        model.predict(unseen_user, np.array([0]))


@pytest.mark.parametrize("name", MODELS)
def test_taste_vectors_and_fold_in_share_one_space(name, small_sim):
    """user_vectors() has a row per user; fold_in() of references (also of someone absent from the dataset,
    user_idx -1) gives finite vectors of the same width; a model with one has the other."""
    if not model_class(name).has_taste_vectors():
        with pytest.raises(NotImplementedError):
            fitted(name, small_sim).fold_in([])
        pytest.skip("no taste vectors")
    model = fitted(name, small_sim)
    vectors = model.user_vectors()
    assert vectors.shape[0] == small_sim.n_users and np.isfinite(vectors).all()
    r = small_sim.ratings["test_unseen"]
    mask = r.user_idx == r.user_idx[0]
    refs = [
        References(int(r.user_idx[0]), r.image_idx[mask][:10], r.score[mask][:10]),
        References(-1, r.image_idx[mask][:10], r.score[mask][:10]),
        References(-1, r.image_idx[:0], r.score[:0]),
    ]
    folded = model.fold_in(refs)
    assert folded.shape == (3, vectors.shape[1]) and np.isfinite(folded).all()
    assert model.fold_in([]).shape == (0, vectors.shape[1])


@pytest.mark.parametrize("name", [m for m in MODELS if m != "oracle"])
def test_new_user_absent_from_the_dataset_is_scored(name, small_sim):
    """References with user_idx -1 (a person with no recorded demographics) are scored like any new user."""
    model = fitted(name, small_sim)
    r = small_sim.ratings["test_unseen"]
    refs = References(-1, r.image_idx[:10], r.score[:10])
    scores = model.predict_new([refs], [r.image_idx[10:20]])[0]
    assert scores.shape == (10,) and np.isfinite(scores).all()


# ---------------------------------------------------------------------- what a fit may see (issue 11)
def _scrambled(dataset, *, keep_truth: bool):
    """A copy whose test scores are random (and, unless ``keep_truth``, every ground-truth value too)."""
    rng = np.random.default_rng(99)
    low, high = dataset.score_range
    ratings = dict(dataset.ratings)
    for split in ("test_seen", "test_unseen"):
        r = dataset.ratings[split]
        ratings[split] = Ratings(r.user_idx, r.image_idx, rng.uniform(low, high, len(r)).astype(np.float32))
    truth = dataset.ground_truth
    if not keep_truth:
        truth = {s: rng.uniform(low, high, len(v)).astype(np.float32) for s, v in truth.items()}
    return replace(dataset, ratings=ratings, ground_truth=truth)


#: short fits (each model is fitted twice here); they still read the validation split where a model does
_QUICK = {
    "seed": 0,
    "epochs": 2,
    "iterations": 5,
    "episodes_per_user": 1,
    "max_references": 8,
    "n_queries": 8,
}


@pytest.mark.parametrize("name", MODELS)
def test_scrambled_test_scores_leave_test_seen_predictions_identical(name, small_sim):
    """Test ratings (and, but for the oracle, the ground truth) are not reachable from a fit: a model fitted on
    data whose test scores are random predicts test_seen exactly as one fitted on the real data."""
    cls = model_class(name)
    params = {k: v for k, v in _QUICK.items() if k in cls.param_names()}
    real = create_model(name, **params).fit(small_sim)
    scrambled = create_model(name, **params).fit(_scrambled(small_sim, keep_truth=cls.needs_ground_truth))
    r = small_sim.ratings["test_seen"]
    np.testing.assert_array_equal(
        scrambled.predict(r.user_idx, r.image_idx), real.predict(r.user_idx, r.image_idx)
    )


@pytest.mark.parametrize("name", MODELS)
def test_every_model_validates_on_the_policy_split_or_none(name, small_sim):
    model = fitted(name, small_sim)
    assert model.fit_split_ == DATA_POLICY.fit_split
    assert model.validation_split_ in (None, DATA_POLICY.validation_split)


def test_models_that_stop_early_use_the_same_validation_split_and_report_their_epoch(small_sim):
    for name in ("mf", "two_tower", "pref_tokens"):
        model = fitted(name, small_sim)
        assert model.validation_split_ == "val_seen", name
        history = model.history_
        expected = history["best_epoch"] + 1 if isinstance(history, dict) else int(np.argmin(history)) + 1
        assert model.stopping_epoch() == expected >= 1, name
    assert fitted("ridge", small_sim).stopping_epoch() is None
    # a refit that includes the validation split has nothing to stop on
    refit = create_model("mf").fit(small_sim, "train+val_seen")
    assert refit.validation_split_ is None and refit.stopping_epoch() is None


def test_validation_is_the_policy_split_of_the_fit_data_kind(small_sim):
    """A model asks for the validation data of its kind; the split is the policy's, never one it names."""
    model = create_model("ridge")
    view = small_sim.fit_view("train", "val_seen")
    held = model._validation(view, "train")
    assert model.validation_split_ == "val_seen" and len(held) == len(small_sim.ratings["val_seen"])
    assert model._validation(view, "train", Choices) is None  # rating data hold no validation choices
    assert model._validation(small_sim.fit_view("train+val_seen"), "train+val_seen") is None


# ---------------------------------------------------------------------- images the model was not fitted with
#: models whose image side is per image id: they cannot score new images, and say so in one line
CANNOT_SCORE_NEW_IMAGES = {"oracle"}
#: models that compute in float32 (torch, LightFM): their new-image scores agree to float32 precision only
FLOAT32 = {"lightfm", "pal", "pal_a"} | {m for m in MODELS if m.startswith(("two_tower", "pref_tokens"))}


def _unrated_images(dataset, n: int = 12) -> np.ndarray:
    """Images without a rating in the fit view (train and the validation split), like PAMELA's test_seen images."""
    rated = np.zeros(dataset.n_images, bool)
    for split in ("train", DATA_POLICY.validation_split):
        rated[dataset.ratings[split].image_idx] = True
    return np.flatnonzero(~rated)[:n]


def _as_new_images(dataset, images: np.ndarray):
    """The inputs of dataset images described as new ones: their features and their metadata table alone."""
    columns = dataset.metadata().columns
    return dataset.new_image_inputs(dataset.image_features[images], dataset.images.iloc[images][columns])


@pytest.mark.parametrize("name", MODELS)
def test_new_images_score_as_the_same_images_in_the_data(name, small_sim, tmp_path):
    """Images the fit never saw a rating of, scored from their features and metadata only, get the scores the model
    gives the same images by index: for fitted users and for new users from references; the model itself is not
    changed; a saved-and-loaded model scores them identically."""
    model = fitted(name, small_sim)
    images = _unrated_images(small_sim)
    assert len(images) >= 10
    inputs = _as_new_images(small_sim, images)
    if name in CANNOT_SCORE_NEW_IMAGES:
        with pytest.raises(NewImagesNotSupported) as err:
            model.with_new_images(inputs)
        assert name in str(err.value) and "\n" not in str(err.value)
        return
    tolerance = {"rtol": 2e-5, "atol": 2e-5} if name in FLOAT32 else {"rtol": 1e-10, "atol": 1e-10}
    before = {k: v for k, v in vars(model).items() if k.endswith("_")}
    extended = model.with_new_images(inputs)
    new = np.arange(model.n_images_, model.n_images_ + len(images))
    assert extended.n_images_ == small_sim.n_images + len(images) and model.n_images_ == small_sim.n_images
    for user in small_sim.train_users()[:4]:
        users = np.full(len(images), user)
        np.testing.assert_allclose(extended.predict(users, new), model.predict(users, images), **tolerance)
        np.testing.assert_allclose(
            model.score_new_images(inputs, user_idx=int(user)), model.predict(users, images), **tolerance
        )
    r = small_sim.ratings["test_unseen"]
    person = r.user_idx == r.user_idx[0]
    for refs in (
        References(int(r.user_idx[0]), r.image_idx[person][:10], r.score[person][:10]),
        References(-1, r.image_idx[:0], r.score[:0]),
    ):
        by_index = model.predict_new([refs], [images])[0]
        np.testing.assert_allclose(extended.predict_new([refs], [new])[0], by_index, **tolerance)
        np.testing.assert_allclose(model.score_new_images(inputs, references=refs), by_index, **tolerance)
    # the fitted model is untouched (the service scores from several threads): same objects, same values
    assert all(vars(model)[k] is v for k, v in before.items())
    with pytest.raises(UserError, match="not one of its"):
        model.predict(np.array([small_sim.train_users()[0]]), np.array([small_sim.n_images]))
    loaded = Model.load(model.save(tmp_path / name))
    users = np.full(len(images), small_sim.train_users()[0])
    np.testing.assert_allclose(
        loaded.with_new_images(inputs).predict(users, new), extended.predict(users, new), rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize(
    ("name", "params", "without"),
    [
        ("item_knn", {"similarity": "pearson_baseline"}, None),
        ("user_knn", {}, "features"),
        ("mf", {"epochs": 2}, "features and metadata"),
        ("biases", {"epochs": 2}, "features and metadata"),
    ],
)
def test_models_whose_image_side_is_per_id_cannot_score_new_images(name, params, without, small_sim):
    """item_knn on co-raters, user_knn without image features, factor and bias models without any image design:
    one line naming the model (the oracle is in the test above)."""
    data = small_sim
    if without is not None:
        data = replace(data, image_features=None, feature_source=None)
    if without == "features and metadata":
        data = replace(data, images=data.images[[]])
    model = create_model(name, **params).fit(data)
    metadata = data.images.iloc[:2][data.metadata().columns]  # no columns at all without metadata
    inputs = data.new_image_inputs(None if data.image_features is None else data.image_features[:2], metadata)
    with pytest.raises(NewImagesNotSupported) as err:
        model.with_new_images(inputs)
    assert str(err.value).startswith(name) and "\n" not in str(err.value)
