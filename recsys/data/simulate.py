"""A PAMELA-format simulator with a known ground truth, calibrated to PAMELA's published training aggregates.

The generative model (all draws from one seeded generator):

* Each image has a type (Art / Photorealism), a visual group, an art style (Art only) and continuous content
  attributes ``c`` (colourfulness, brightness, complexity, symmetry, ...), partly set by its group and style.
* Consensus appeal per image: group, style and type offsets (raked so that mean scores per group, style and
  type on train match the published ones), a linear effect of ``c``, and an idiosyncratic part.
* Shared taste groups: a taste vector over the image content per group; a user's group membership depends
  partly on demographics (age, gender, nationality). Each user adds an individual deviation, a bias, a scale
  and a noise level.
* Expected score ``mu = 3 + bias + scale * (appeal + taste . content)``; an observed score is
  ``clip(mu + noise, 1, 5)`` rounded to 3 decimals. The ground truth is ``E[clip(mu + noise, 1, 5)]``, the
  noise-free expected observed score.
* Image features (512-d, unit norm, like CLIP) are a fixed random two-layer tanh map of the image content plus
  noise; PNGs render the same attributes as colours, brightness, clutter and layout.

The world's structure is a setting too (``SimulationConfig``; ``recsys.data.worlds`` names a family of worlds):
the number of taste groups and the rank of their shared taste, the share of individual taste, how strongly
demographics pull group membership, rating and feature noise, and three changes of form: each user's shared
taste a mixture of groups (``membership``), taste acting on products of content attributes as well
(``taste_form``), and another map from content to features (``feature_map``, ``hidden_attributes``). The
defaults are the world above, drawn exactly as before; a world that differs only in these settings keeps the
images, demographics, biases, noise levels and rated pairs of the default world of the same seed (its other
draws come from a second stream of the seed).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import ndtr
from tqdm.auto import tqdm

from recsys.data.features_file import write_image_features
from recsys.errors import UserError

# PAMELA's published split sizes and shapes (DATASETS.md, train_aggregates.json).
PAMELA_USERS, PAMELA_TRAIN_USERS = 199, 156
PAMELA_IMAGES, PAMELA_TRAIN_IMAGES = 5077, 3554
PAMELA_SPLIT_RATINGS = {
    "train": 50222,
    "val_seen": 6551,
    "val_unseen": 926,
    "test_seen": 9735,
    "test_unseen": 2470,
}
NATIONALITIES = (
    "United States", "United Kingdom", "Germany", "Poland", "Portugal", "South Africa", "Italy", "Canada",
    "Mexico", "Spain", "Netherlands", "France", "Greece", "Hungary", "Chile", "Australia", "Belgium", "India",
    "Nigeria", "Kenya", "Brazil", "Czech Republic", "Ireland",
)  # fmt: skip
GENDERS = ("male", "female", "prefer not to say")
GENDER_SHARE = (40525 / 69904, 29086 / 69904, 293 / 69904)  # PAMELA's ratings per gender
AGE_BINS = (
    (20, "teens"),
    (30, "twenties"),
    (40, "thirties"),
    (50, "forties"),
    (60, "fifties"),
    (200, "sixties"),
)
QUALITY_LABELS = ("poor", "fair", "good", "great", "excellent")
N_ATTRIBUTES = 12  # continuous content attributes; the first four are rendered into the PNGs
N_TASTE_GROUPS = 6  # the default world's
#: images whose features are computed at once (bounds the simulator's memory on a million images)
FEATURE_CHUNK = 65_536
#: spread of a group's taste and of a user's individual deviation in the default world
GROUP_TASTE_SD, INDIVIDUAL_TASTE_SD = 0.3, 0.13
#: the default world's share of taste variance that is individual (about 0.158)
DEFAULT_INDIVIDUAL_SHARE = INDIVIDUAL_TASTE_SD**2 / (GROUP_TASTE_SD**2 + INDIVIDUAL_TASTE_SD**2)
MEMBERSHIPS = ("single", "mixture")
TASTE_FORMS = ("linear", "interaction")
FEATURE_MAPS = ("tanh", "relu", "fourier")
#: the settings of the generative model that both simulators share (``simulate_pairs`` passes them through)
WORLD_KNOBS = (
    "noise_scale",
    "taste_groups",
    "taste_rank",
    "individual_share",
    "demographic_weight",
    "membership",
    "taste_form",
    "feature_map",
    "feature_noise",
    "hidden_attributes",
)
#: the second stream of a seed: every draw of a world's non-default structure comes from it
SIDE_STREAM = 7
SUBJECTS = {
    "abstract": ("interlocking shapes", "a field of colour", "flowing lines"),
    "animal": ("a fox in the snow", "a heron at dawn", "a sleeping cat"),
    "architecture": ("a grand palace", "a modern museum", "an old cathedral"),
    "automotive": ("a vintage roadster", "a sports car on a coastal road", "a classic pickup truck"),
    "cinematic": ("a lone figure on a rooftop", "a rain-soaked alley", "a desert chase"),
    "cityscape": ("a city skyline at dusk", "a harbour city", "a busy avenue"),
    "fashion": ("a model in a flowing gown", "a tailored suit", "a street-style outfit"),
    "flower painting": ("a vase of peonies", "wild poppies", "a bouquet of lilies"),
    "food": ("a rustic loaf of bread", "a bowl of ramen", "a fruit tart"),
    "landscape": ("mountains above a lake", "rolling hills", "a misty forest"),
    "lifestyle": ("friends at a picnic", "a cosy reading nook", "a morning coffee"),
    "portrait": ("an elderly fisherman", "a young dancer", "a woman in a red hat"),
    "product": ("a wristwatch", "a pair of headphones", "a perfume bottle"),
    "scene": ("a village festival", "a quiet library", "a market square"),
    "special": ("a surreal floating island", "a clockwork dragon", "a glass forest"),
    "sports": ("a sprinter at the finish", "a surfer on a wave", "a basketball dunk"),
    "still life": ("apples and a jug", "books and a candle", "a skull and flowers"),
    "street": ("a street musician", "a night market", "a cyclist in the rain"),
    "travel": ("a tropical beach", "a mountain village", "an old bridge"),
}
ATTRIBUTE_WORDS = (
    ("muted colours", "vivid colours"),
    ("dark mood", "bright light"),
    ("minimal composition", "intricate detail"),
    ("asymmetric layout", "symmetric composition"),
)


def knob(default, doc: str, choices: tuple[str, ...] | None = None):
    """A simulator setting: its default, what it does and (for a named form) its choices; ``recsys data
    simulate`` makes an option of each."""
    return field(default=default, metadata={"doc": doc, "choices": choices})


@dataclass(frozen=True)
class SimulationConfig:
    """Knobs of the simulator; the defaults reproduce PAMELA's sizes."""

    seed: int = knob(0, "seed of the simulated world and its ratings")
    users: int = knob(PAMELA_USERS, "number of users")
    images: int = knob(PAMELA_IMAGES, "number of images")
    ratings_per_user: int = knob(
        round(PAMELA_SPLIT_RATINGS["train"] / PAMELA_TRAIN_USERS), "training ratings per training user"
    )
    feature_dim: int = knob(512, "dimension of the image features")
    image_size: int = knob(96, "side of the rendered PNGs in pixels")
    render_images: bool = knob(True, "render a PNG per image")
    noise_scale: float = knob(1.0, "multiplies every user's rating noise")
    taste_groups: int = knob(N_TASTE_GROUPS, "number of shared taste groups")
    taste_rank: int = knob(
        0,
        "dimension of the shared taste: the groups' tastes span this many directions (at most --taste-groups); "
        "0: one independent direction per group",
    )
    individual_share: float = knob(
        DEFAULT_INDIVIDUAL_SHARE,
        "share of taste variance that is each user's own, not shared with a group: 0 all shared, 1 none shared "
        "(default: about 0.158, the default world's)",
    )
    demographic_weight: float = knob(
        1.0, "multiplies the pull of age, gender and nationality on taste group membership (0: none)"
    )
    membership: str = knob(
        "single",
        "single: each user in one taste group; mixture: each user's shared taste a softmax mixture of the groups",
        MEMBERSHIPS,
    )
    taste_form: str = knob(
        "linear",
        "linear: taste . content; interaction: taste also weights products of pairs of content attributes",
        TASTE_FORMS,
    )
    feature_map: str = knob(
        "tanh",
        "map from image content to features: tanh (2-layer tanh net), relu (3-layer ReLU net), fourier (random "
        "cosine features, local in content)",
        FEATURE_MAPS,
    )
    feature_noise: float = knob(0.35, "noise added to the unit-norm feature signal (then renormalised)")
    hidden_attributes: int = knob(
        0, f"content attributes (the last of {N_ATTRIBUTES}) the image features do not see; taste still does"
    )

    def validate(self) -> None:
        if self.users < 10:
            raise UserError(f"--users {self.users}: the simulator needs at least 10 users")
        if self.images < 20:
            raise UserError(f"--images {self.images}: the simulator needs at least 20 images")
        if self.ratings_per_user < 5:
            raise UserError(f"--ratings-per-user {self.ratings_per_user}: needs at least 5")
        if self.feature_dim < 8:
            raise UserError(f"--feature-dim {self.feature_dim}: needs at least 8")
        if not 16 <= self.image_size <= 1024:
            raise UserError(f"--image-size {self.image_size}: choose 16 to 1024 pixels")
        check_world(self)


def check_world(config) -> None:
    """One-line errors for the world settings (``WORLD_KNOBS``) of ``config``, a config of either simulator."""
    if config.noise_scale < 0:
        raise UserError("--noise-scale must be non-negative")
    if config.taste_groups < 1:
        raise UserError(f"--taste-groups {config.taste_groups}: needs at least 1")
    if not 0 <= config.taste_rank <= config.taste_groups:
        raise UserError(
            f"--taste-rank {config.taste_rank}: choose 0 to --taste-groups ({config.taste_groups}); "
            "the groups' tastes span at most that many directions"
        )
    if not 0.0 <= config.individual_share <= 1.0:
        raise UserError(f"--individual-share {config.individual_share}: choose 0 to 1")
    if config.demographic_weight < 0 or config.feature_noise < 0:
        raise UserError("--demographic-weight and --feature-noise must be non-negative")
    for name, allowed in (
        ("membership", MEMBERSHIPS),
        ("taste_form", TASTE_FORMS),
        ("feature_map", FEATURE_MAPS),
    ):
        if getattr(config, name) not in allowed:
            raise UserError(
                f"--{name.replace('_', '-')} {getattr(config, name)!r}: choose one of {', '.join(allowed)}"
            )
    if not 0 <= config.hidden_attributes <= N_ATTRIBUTES:
        raise UserError(f"--hidden-attributes {config.hidden_attributes}: choose 0 to {N_ATTRIBUTES}")


def world_label(config) -> str:
    """The world settings of ``config`` that differ from the default world's, as ``", name=value, ..."`` (empty
    for the default world): what a simulated dataset's name adds after its seed."""
    defaults = {f.name: f.default for f in fields(SimulationConfig)}
    changed = [
        f"{name}={getattr(config, name):.3g}"
        if isinstance(getattr(config, name), float)
        else f"{name}={getattr(config, name)}"
        for name in WORLD_KNOBS
        if getattr(config, name) != defaults[name]
    ]
    return "".join(f", {c}" for c in changed)


def load_aggregates() -> dict:
    """PAMELA's published training aggregates (CC BY 4.0), shipped with the package."""
    text = resources.files("recsys.data").joinpath("calibration/pamela_train_aggregates.json").read_text()
    return json.loads(text)


def expected_clipped(mu: np.ndarray, sigma: np.ndarray, lo: float = 1.0, hi: float = 5.0) -> np.ndarray:
    """E[clip(X, lo, hi)] for X ~ N(mu, sigma^2), elementwise (the noise-free expected observed score)."""
    sigma = np.maximum(sigma, 1e-9)
    a, b = (lo - mu) / sigma, (hi - mu) / sigma
    pdf = lambda x: np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)  # noqa: E731
    inside = mu * (ndtr(b) - ndtr(a)) + sigma * (pdf(a) - pdf(b))
    return lo * ndtr(a) + inside + hi * (1.0 - ndtr(b))


def age_bin(age: float) -> str:
    """PAMELA's decade bins ("twenties", ...)."""
    for upper, label in AGE_BINS:
        if age < upper:
            return label
    return AGE_BINS[-1][1]


def quality_label(score: float) -> str:
    """PAMELA's five labels for a 1-5 score (nearest integer)."""
    return QUALITY_LABELS[int(np.clip(np.floor(score + 0.5), 1, 5)) - 1]


class _World:
    """All latent draws of one simulation."""

    def __init__(self, config: SimulationConfig, aggregates: dict, features_into: np.ndarray | None = None):
        """Draw the world; its image features go into ``features_into`` (n_images x feature_dim, e.g. a float16
        memory map) when given, else into a new float32 array."""
        self.config = config
        rng = np.random.default_rng(config.seed)
        self.rng = rng
        self.groups = list(aggregates["train_by_group"])
        self.styles = list(aggregates["train_by_style"])
        self.types = ["Art", "Photorealism"]
        n_img, n_users = config.images, config.users

        # ---- images
        type_images = np.array([aggregates["train_by_type"][t]["images"] for t in self.types], float)
        group_images = np.array([aggregates["train_by_group"][g]["images"] for g in self.groups], float)
        style_images = np.array([aggregates["train_by_style"][s]["images"] for s in self.styles], float)
        self.image_type = rng.choice(2, size=n_img, p=type_images / type_images.sum())
        self.image_group = rng.choice(len(self.groups), size=n_img, p=group_images / group_images.sum())
        style = rng.choice(len(self.styles), size=n_img, p=style_images / style_images.sum())
        self.image_style = np.where(self.image_type == 0, style, -1)
        group_attr = rng.normal(0, 0.7, (len(self.groups), N_ATTRIBUTES))
        style_attr = rng.normal(0, 0.7, (len(self.styles) + 1, N_ATTRIBUTES))
        style_attr[-1] = 0.0
        self.attributes = (
            group_attr[self.image_group]
            + style_attr[self.image_style]
            + rng.normal(0, 0.8, (n_img, N_ATTRIBUTES))
        )
        self.content = self._content_matrix()  # (n_img, n_content): one-hots + attributes
        n_content = self.content.shape[1]

        # ---- consensus appeal (offsets are raked later to match the published means)
        self.group_offset = np.zeros(len(self.groups))
        self.style_offset = np.zeros(len(self.styles) + 1)
        self.type_offset = np.zeros(2)
        self.attribute_appeal = rng.normal(0, 0.18, N_ATTRIBUTES)
        self.idiosyncratic = rng.normal(0, 0.3, n_img)

        # ---- users: demographics, taste groups, individual parameters
        self.age = np.clip(np.round(19 + rng.gamma(2.0, 6.0, n_users)), 19, 60).astype(int)
        self.gender = rng.choice(3, size=n_users, p=np.array(GENDER_SHARE) / sum(GENDER_SHARE))
        nat_weights = 1.0 / np.arange(1, len(NATIONALITIES) + 1) ** 1.1
        self.nationality = rng.choice(len(NATIONALITIES), size=n_users, p=nat_weights / nat_weights.sum())
        cover = min(n_users, len(NATIONALITIES))
        self.nationality[rng.permutation(n_users)[:cover]] = np.arange(cover)  # every nationality appears
        age_z = (self.age - 30.0) / 10.0
        nat_region = self.nationality % 4
        # the default world's draws are always made, so that every later draw is the same whatever the settings
        age_pull = rng.normal(0, 1.0, N_TASTE_GROUPS)
        gender_pull = rng.normal(0, 0.8, (3, N_TASTE_GROUPS))
        region_pull = rng.normal(0, 0.8, (4, N_TASTE_GROUPS))
        chance = rng.gumbel(0, 1.0, (n_users, N_TASTE_GROUPS))
        group_taste = rng.normal(0, GROUP_TASTE_SD, (N_TASTE_GROUPS, n_content))
        individual = rng.normal(0, INDIVIDUAL_TASTE_SD, (n_users, n_content))
        side = np.random.default_rng([config.seed, SIDE_STREAM])  # a non-default structure's draws
        n_groups = config.taste_groups
        if n_groups != N_TASTE_GROUPS:
            age_pull = side.normal(0, 1.0, n_groups)
            gender_pull = side.normal(0, 0.8, (3, n_groups))
            region_pull = side.normal(0, 0.8, (4, n_groups))
            chance = side.gumbel(0, 1.0, (n_users, n_groups))
        logits = (
            config.demographic_weight
            * (np.outer(age_z, age_pull) + gender_pull[self.gender] + region_pull[nat_region])
            + chance
        )
        self.taste_group = logits.argmax(1)
        self.taste_content = self.content  # what taste acts on: (n_img, n_taste)
        if config.taste_form == "interaction":
            self.taste_content = np.hstack([self.content, self._attribute_products(side)])
        n_taste = self.taste_content.shape[1]
        if n_groups != N_TASTE_GROUPS or config.taste_rank or n_taste != n_content:
            rank = config.taste_rank
            group_taste = (
                side.normal(0, 1.0, (n_groups, rank))
                @ side.normal(0, GROUP_TASTE_SD / math.sqrt(rank), (rank, n_taste))
                if rank
                else side.normal(0, GROUP_TASTE_SD, (n_groups, n_taste))
            )
            extra = side.normal(0, INDIVIDUAL_TASTE_SD, (n_users, n_taste - n_content))
            individual = np.hstack([individual, extra])
        if config.membership == "mixture":  # weights of unit norm keep the shared taste's spread
            weights = np.exp(logits - logits.max(1, keepdims=True))
            shared = (weights / np.linalg.norm(weights, axis=1, keepdims=True)) @ group_taste
        else:
            shared = group_taste[self.taste_group]
        share, default_share = config.individual_share, DEFAULT_INDIVIDUAL_SHARE
        self.taste = shared * math.sqrt((1 - share) / (1 - default_share)) + individual * math.sqrt(
            share / default_share
        )
        self.user_bias = rng.normal(0, 0.3, n_users)
        self.user_scale = np.exp(rng.normal(0, 0.2, n_users))
        self.user_noise = rng.uniform(0.6, 0.95, n_users) * config.noise_scale

        # ---- image features: a fixed random nonlinear map of the content, plus noise, FEATURE_CHUNK images at a
        # time into ``features_into`` (or a new float32 array): the draws are the same whatever the chunk size
        hidden = 96
        w1 = rng.normal(0, 1.0 / math.sqrt(n_content), (n_content, hidden)) * 1.6
        b1 = rng.normal(0, 0.3, hidden)
        w2 = rng.normal(0, 1.0 / math.sqrt(hidden), (hidden, config.feature_dim))
        if config.feature_map == "tanh":
            feature_map = lambda seen: np.tanh(seen @ w1 + b1) @ w2  # noqa: E731
        else:
            feature_map = self._other_feature_map(n_content, config.feature_map, config.feature_dim, side)
        self.features = (
            np.empty((n_img, config.feature_dim), np.float32) if features_into is None else features_into
        )
        for start in range(0, n_img, FEATURE_CHUNK):
            seen = self.content[start : start + FEATURE_CHUNK]
            if config.hidden_attributes:  # the last attributes are invisible to the features
                seen = seen.copy()
                seen[:, n_content - config.hidden_attributes :] = 0.0
            signal = feature_map(seen)
            signal /= np.linalg.norm(signal, axis=1, keepdims=True)
            noise = rng.normal(0, 1.0 / math.sqrt(config.feature_dim), (len(seen), config.feature_dim))
            features = signal + config.feature_noise * noise
            self.features[start : start + len(seen)] = (
                features / np.linalg.norm(features, axis=1, keepdims=True)
            ).astype(np.float32)

    def _attribute_products(self, side: np.random.Generator) -> np.ndarray:
        """(n_img, N_ATTRIBUTES): products of as many random pairs of content attributes (on the content's
        scale), for taste of the ``interaction`` form ("likes bright images when they are colourful")."""
        first, second = np.triu_indices(N_ATTRIBUTES, k=1)
        pairs = side.choice(len(first), N_ATTRIBUTES, replace=False)
        scaled = self.attributes / 1.2
        return scaled[:, first[pairs]] * scaled[:, second[pairs]]

    @staticmethod
    def _other_feature_map(n_content: int, form: str, dim: int, side: np.random.Generator):
        """The map of content rows to features of another generator than the default tanh net (its weights drawn
        now, once): a random 3-layer ReLU net (He-scaled), or random cosine features of an RBF kernel of length
        2.5 over the content (similar content, similar features; unlike content, unrelated ones)."""
        if form == "relu":
            width = 128
            first = side.normal(0, math.sqrt(2.0 / n_content), (n_content, width))
            second = side.normal(0, math.sqrt(2.0 / width), (width, width))
            second_bias = side.normal(0, 0.1, width)
            last = side.normal(0, 1.0 / math.sqrt(width), (width, dim))
            return lambda content: np.maximum(np.maximum(content @ first, 0) @ second + second_bias, 0) @ last
        frequencies = side.normal(0, 1.0 / 2.5, (n_content, dim))
        phases = side.uniform(0, 2 * math.pi, dim)
        return lambda content: np.cos(content @ frequencies + phases)

    def _content_matrix(self) -> np.ndarray:
        n = len(self.image_type)
        onehot_group = np.eye(len(self.groups))[self.image_group]
        onehot_style = np.eye(len(self.styles) + 1)[self.image_style][:, :-1]
        onehot_type = np.eye(2)[self.image_type]
        return np.hstack([onehot_group, onehot_style, onehot_type, self.attributes / 1.2]).reshape(n, -1)

    def mean_score(self, users: np.ndarray, images: np.ndarray) -> np.ndarray:
        """mu: the expected score before observation noise and clipping."""
        appeal = (
            self.group_offset[self.image_group[images]]
            + self.style_offset[self.image_style[images]]
            + self.type_offset[self.image_type[images]]
            + self.attributes[images] @ self.attribute_appeal
            + self.idiosyncratic[images]
        )
        personal = np.einsum("ij,ij->i", self.taste[users], self.taste_content[images])
        return 3.0 + self.user_bias[users] + self.user_scale[users] * (appeal + personal)

    def expected_score(self, users: np.ndarray, images: np.ndarray) -> np.ndarray:
        return expected_clipped(self.mean_score(users, images), self.user_noise[users])

    def calibrate(self, users: np.ndarray, images: np.ndarray, aggregates: dict, rounds: int = 30) -> None:
        """Rake group, style and type offsets so that expected train means match the published ones."""
        margins = [
            (
                self.group_offset,
                self.image_group,
                [aggregates["train_by_group"][g]["mean_score"] for g in self.groups],
            ),
            (
                self.style_offset,
                self.image_style,
                [aggregates["train_by_style"][s]["mean_score"] for s in self.styles],
            ),
            (
                self.type_offset,
                self.image_type,
                [aggregates["train_by_type"][t]["mean_score"] for t in self.types],
            ),
        ]
        scale = self.user_scale[users]
        for _ in range(rounds):
            for offsets, labels, targets in margins:
                expected = self.expected_score(users, images)
                label = labels[images]
                for k, target in enumerate(targets):
                    mask = label == k
                    if mask.any():
                        # Divided by the mean scale (and damped) since clipping flattens the response.
                        offsets[k] += 0.9 * (target - expected[mask].mean()) / scale[mask].mean()


def _draw_ratings(rng: np.random.Generator, users: np.ndarray, pool: np.ndarray, per_user: int):
    """Each user rates ``per_user`` distinct images of ``pool`` (fewer if the pool is smaller)."""
    per_user = min(per_user, len(pool))
    if per_user <= 0 or not len(users):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    picks = [pool[rng.choice(len(pool), size=per_user, replace=False)] for _ in range(len(users))]
    return np.repeat(users, per_user), np.concatenate(picks).astype(np.int64)


def simulate(out: str | Path, config: SimulationConfig | None = None, *, progress: bool = True) -> Path:
    """Write a simulated PAMELA directory to ``out`` and return its path.

    The directory holds ``annotations/pamela_*.json``, ``images/*.png`` (unless ``render_images`` is off),
    ``image_features.npz``, ``simulation.json`` (manifest, config and calibration report) and
    ``simulation/ground_truth.csv`` / ``simulation/users.csv`` (noise-free expected scores, taste groups).
    It is written into a temporary sibling directory and moved into place at the end, so an interrupted run
    never leaves a directory that loads.
    """
    config = config or SimulationConfig()
    config.validate()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: already exists and is not empty; choose another --out or remove it")
    aggregates = load_aggregates()
    world = _World(config, aggregates)
    rng = world.rng

    # ---- users and images per split, with PAMELA's proportions
    n_train_users = max(2, round(config.users * PAMELA_TRAIN_USERS / PAMELA_USERS))
    n_unseen = config.users - n_train_users
    unseen_ratings = PAMELA_SPLIT_RATINGS["val_unseen"] + PAMELA_SPLIT_RATINGS["test_unseen"]
    n_val_unseen = round(n_unseen * PAMELA_SPLIT_RATINGS["val_unseen"] / unseen_ratings)
    user_order = rng.permutation(config.users)
    train_users = np.sort(user_order[:n_train_users])
    val_unseen_users = np.sort(user_order[n_train_users : n_train_users + n_val_unseen])
    test_unseen_users = np.sort(user_order[n_train_users + n_val_unseen :])
    n_train_images = round(config.images * PAMELA_TRAIN_IMAGES / PAMELA_IMAGES)
    seen_ratings = PAMELA_SPLIT_RATINGS["val_seen"] + PAMELA_SPLIT_RATINGS["test_seen"]
    n_val_images = round((config.images - n_train_images) * PAMELA_SPLIT_RATINGS["val_seen"] / seen_ratings)
    image_order = rng.permutation(config.images)
    train_images = image_order[:n_train_images]
    val_images = image_order[n_train_images : n_train_images + n_val_images]
    test_images = image_order[n_train_images + n_val_images :]

    r = config.ratings_per_user / (PAMELA_SPLIT_RATINGS["train"] / PAMELA_TRAIN_USERS)
    per_user = {
        "train": config.ratings_per_user,
        "val_seen": round(r * PAMELA_SPLIT_RATINGS["val_seen"] / PAMELA_TRAIN_USERS),
        "test_seen": round(r * PAMELA_SPLIT_RATINGS["test_seen"] / PAMELA_TRAIN_USERS),
        "unseen": max(20, round(r * unseen_ratings / (PAMELA_USERS - PAMELA_TRAIN_USERS))),
    }
    pairs = {
        "train": _draw_ratings(rng, train_users, train_images, per_user["train"]),
        "val_seen": _draw_ratings(rng, train_users, val_images, per_user["val_seen"]),
        "test_seen": _draw_ratings(rng, train_users, test_images, per_user["test_seen"]),
        "val_unseen": _draw_ratings(rng, val_unseen_users, np.arange(config.images), per_user["unseen"]),
        "test_unseen": _draw_ratings(rng, test_unseen_users, np.arange(config.images), per_user["unseen"]),
    }
    world.calibrate(*pairs["train"], aggregates)

    # ---- observed scores and ground truth
    observed, truth = {}, {}
    for split, (users, images) in pairs.items():
        mu = world.mean_score(users, images)
        sigma = world.user_noise[users]
        observed[split] = np.round(np.clip(mu + sigma * rng.standard_normal(len(mu)), 1.0, 5.0), 3)
        truth[split] = expected_clipped(mu, sigma)

    # ---- ids and metadata
    participant_ids = np.array([f"p_{v:08x}" for v in rng.choice(2**32, size=config.users, replace=False)])
    image_ids = 1_000_000 + rng.choice(9_000_000, size=config.images, replace=False).astype(np.int64)
    uuids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(config.images)]
    prompts = [_prompt(world, i, rng) for i in range(config.images)]
    image_meta = [
        json.dumps(
            {
                "group": world.groups[world.image_group[i]],
                "style": world.styles[world.image_style[i]] if world.image_style[i] >= 0 else None,
                "category": "AI image",
                "prompt": prompts[i],
                "type": world.types[world.image_type[i]],
            }
        )
        for i in range(config.images)
    ]
    user_meta = [
        json.dumps(
            {
                "age": int(world.age[u]),
                "age_binned": age_bin(world.age[u]),
                "gender": GENDERS[world.gender[u]],
                "nationality": NATIONALITIES[world.nationality[u]],
            }
        )
        for u in range(config.users)
    ]

    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "annotations").mkdir(parents=True)
    (tmp / "simulation").mkdir()
    labels = np.array(QUALITY_LABELS)
    for split, (users, images) in pairs.items():
        score = observed[split]
        label = labels[np.clip(np.floor(score + 0.5), 1, 5).astype(int) - 1]
        with open(tmp / "annotations" / f"pamela_{split}.json", "w") as fh:
            fh.write("[\n")
            fh.write(
                ",\n".join(
                    f'{{"image_path": "./images/{uuids[i]}.png", "image_id": {image_ids[i]}, '
                    f'"participant_id": "{participant_ids[u]}", "image_metadata": {image_meta[i]}, '
                    f'"user_demographics": {user_meta[u]}, "quality_label": "{lab}", "original_score": {s:.3f}}}'
                    for u, i, lab, s in zip(
                        users.tolist(), images.tolist(), label.tolist(), score.tolist(), strict=True
                    )
                )
            )
            fh.write("\n]\n")
    frames = [
        pd.DataFrame(
            {
                "split": split,
                "participant_id": participant_ids[users],
                "image_id": image_ids[images],
                "expected_score": np.round(truth[split], 5),
            }
        )
        for split, (users, images) in pairs.items()
    ]
    pd.concat(frames).to_csv(tmp / "simulation" / "ground_truth.csv", index=False)
    pd.DataFrame({"participant_id": participant_ids, "taste_group": world.taste_group}).to_csv(
        tmp / "simulation" / "users.csv", index=False
    )
    write_image_features(tmp / "image_features.npz", image_ids, world.features)
    if config.render_images:
        (tmp / "images").mkdir()
        for i in tqdm(range(config.images), desc="rendering images", unit="img", disable=not progress):
            _render(world, i, config.image_size).save(tmp / "images" / f"{uuids[i]}.png", compress_level=1)

    manifest = {
        "name": f"simulated PAMELA (seed {config.seed}{world_label(config)})",
        "simulated": True,
        "note": "Simulated data calibrated to PAMELA's published training aggregates; not ratings by real people.",
        "config": asdict(config),
        "image_features": "image_features.npz",
        "ground_truth": "simulation/ground_truth.csv",
        "calibration": calibration_report(world, pairs["train"], observed["train"], aggregates),
    }
    (tmp / "simulation.json").write_text(json.dumps(manifest, indent=2))
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return out


def calibration_report(world: _World, train_pairs, train_scores: np.ndarray, aggregates: dict) -> dict:
    """Observed train means per group, style and type against the published ones, with RMS differences."""
    users, images = train_pairs
    report = {}
    for name, labels, names, key in (
        ("group", world.image_group, world.groups, "train_by_group"),
        ("style", world.image_style, world.styles, "train_by_style"),
        ("type", world.image_type, world.types, "train_by_type"),
    ):
        rows, errors = {}, []
        label = labels[images]
        for k, level in enumerate(names):
            mask = label == k
            if not mask.any():
                continue
            mean = float(train_scores[mask].mean())
            target = aggregates[key][level]["mean_score"]
            rows[level] = {"simulated": round(mean, 3), "published": target, "ratings": int(mask.sum())}
            errors.append(mean - target)
        report[name] = {"rms_difference": float(np.sqrt(np.mean(np.square(errors)))), "levels": rows}
    return report


def _prompt(world: _World, i: int, rng: np.random.Generator) -> str:
    group = world.groups[world.image_group[i]]
    subject = SUBJECTS.get(group, ("a scene",))[rng.integers(len(SUBJECTS.get(group, ("a scene",))))]
    words = [pair[int(world.attributes[i, a] > 0)] for a, pair in enumerate(ATTRIBUTE_WORDS)]
    if world.image_style[i] >= 0:
        style = world.styles[world.image_style[i]].replace("_", " ")
        return f"{subject[0].upper()}{subject[1:]}, rendered in the style of {style}, {words[0]}, {words[2]}"
    return f"A photorealistic photo of {subject}, {words[1]}, {words[3]}, {words[0]}"


def _render(world: _World, i: int, size: int):
    """A small PNG whose colours, brightness, clutter and layout follow the image's latent attributes."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(int(world.config.seed) * 1_000_003 + i)
    colourful, bright, complexity, symmetry = np.tanh(world.attributes[i, :4] / 1.5)
    hue = (world.image_group[i] / len(world.groups) + 0.1 * world.attributes[i, 4]) % 1.0
    saturation = 0.25 + 0.35 * (colourful + 1)
    value = 0.3 + 0.3 * (bright + 1)

    def colour(h, s, v):
        import colorsys

        return tuple(
            int(255 * c)
            for c in colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1)))
        )

    img = Image.new("RGB", (size, size), colour(hue, saturation * 0.6, value))
    draw = ImageDraw.Draw(img)
    n_shapes = int(2 + 10 * (complexity + 1))
    for _ in range(n_shapes):
        w = rng.uniform(0.05, 0.4) * size
        if symmetry > 0:  # centred, mirrored layout
            cx = size / 2 + rng.normal(0, 0.1) * size
        else:
            cx = rng.uniform(0, size)
        cy = rng.uniform(0, size)
        box = [cx - w / 2, cy - w / 2, cx + w / 2, cy + w / 2]
        fill = colour(
            hue + rng.normal(0, 0.08 + 0.2 * (colourful + 1)), saturation, value + rng.normal(0, 0.15)
        )
        if world.image_type[i] == 0:
            draw.ellipse(box, fill=fill)
        else:
            draw.rectangle(box, fill=fill)
        if symmetry > 0:
            mirror = [size - box[2], box[1], size - box[0], box[3]]
            (draw.ellipse if world.image_type[i] == 0 else draw.rectangle)(mirror, fill=fill)
    return img
