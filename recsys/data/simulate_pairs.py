"""A Pick-a-Pic-format simulator with known choice probabilities, from the generative model of
``recsys.data.simulate`` (the same images, users, tastes, noise and calibration to PAMELA's aggregates).

The choices:

* Each user writes ``prompts_per_user`` prompts. A prompt gets 1 to ``max_comparisons`` comparisons (uniform)
  and one more image than comparisons; its images are consecutive in a shuffle of all images sorted by visual
  group, so they mostly share a group. Its caption is the simulator's prompt of its first image. Each image
  comes from one of ``MODELS`` (a generator), which shifts its consensus appeal by ``MODEL_APPEAL``.
* The first comparison shows the prompt's first two images; after it the chosen image (the kept one on a tie)
  stays, on a random side, against the next new image, as Pick-a-Pic's interface does.
* ``prompt_taste`` (default 0) makes taste depend on the prompt: under a prompt whose caption names an art style,
  a user's own taste term in ``mu`` is multiplied by 1 - 2 * ``prompt_taste`` (``score_under_prompt``), so
  only a model that reads the prompt can tell those comparisons from the others.
* A user perceives each image at its expected score ``mu`` (the rating model's, before clipping) plus
  independent N(0, sigma_u^2) noise (the user's rating noise) and chooses the image perceived higher, or calls a
  tie when the two are within ``tie_margin``. With d = mu_a - mu_b and s = sigma_u * sqrt(2):
  P(a) = Phi((d - tie_margin) / s), P(b) = Phi((-d - tie_margin) / s), P(tie) = 1 - P(a) - P(b).
  The ground truth of a row is its three probabilities and the expected ``label_0``, P(a) + P(tie) / 2.
* As in the published data, some rows are not choices: ``unlabelled_share`` of rows have ``has_label`` false
  (labels 0/0) and ``same_image_share`` have ``are_different`` false (image 1 replaced by image 0, labels
  0.5/0.5); they have no ground truth.
* Published splits: the rows of ``published_holdout_users`` of the users go to ``validation`` and ``test`` (half
  of those users each), with ``validation_unique`` / ``test_unique`` holding the first row of each of their
  prompts; the rest go to ``train`` in ``train_shards`` shards.

Written: ``data/<split>-NNNNN-of-MMMMM.parquet`` (every published column, JPEGs of ``image_size`` pixels in
``jpg_0``/``jpg_1``), ``image_features.npz`` (the simulator's image features keyed by uid, float32 or with
``feature_dtype`` float16, uncompressed so that the loader memory-maps it), ``image_features.text.npz`` (each
image's prompt embedding, ``write_prompt_embeddings``, of the same type),
``simulation/choice_probabilities.csv``, ``simulation/users.csv`` (taste groups) and ``simulation.json``.
"""

from __future__ import annotations

import colorsys
import io
import json
import math
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.special import ndtr
from tqdm.auto import tqdm

from recsys.data.features_file import write_image_features
from recsys.data.pickapic import CHOICE_PROBABILITIES, SIMULATION_MANIFEST
from recsys.data.simulate import (
    ATTRIBUTE_WORDS,
    DEFAULT_INDIVIDUAL_SHARE,
    N_TASTE_GROUPS,
    WORLD_KNOBS,
    SimulationConfig,
    _prompt,
    _render,
    _World,
    check_world,
    load_aggregates,
    world_label,
)
from recsys.errors import UserError

#: the generators an image may come from, and the shift each gives to its consensus appeal
MODELS = ("sim-diffusion-a", "sim-diffusion-b", "sim-diffusion-c")
MODEL_APPEAL = (-0.15, 0.0, 0.15)

#: the published columns' types (DATASETS.md): bools, strings, a timestamp, JPEG bytes, float labels, int ids
PICKAPIC_SCHEMA = pa.schema(
    [
        ("are_different", pa.bool_()),
        ("best_image_uid", pa.string()),
        ("caption", pa.string()),
        ("created_at", pa.timestamp("ns")),
        ("has_label", pa.bool_()),
        ("image_0_uid", pa.string()),
        ("image_0_url", pa.string()),
        ("image_1_uid", pa.string()),
        ("image_1_url", pa.string()),
        ("jpg_0", pa.binary()),
        ("jpg_1", pa.binary()),
        ("label_0", pa.float64()),
        ("label_1", pa.float64()),
        ("model_0", pa.string()),
        ("model_1", pa.string()),
        ("ranking_id", pa.int64()),
        ("user_id", pa.int64()),
        ("num_example_per_prompt", pa.int64()),
    ]
)


#: the embedding types the simulator writes (float16 halves the features file; the loader memory-maps either)
FEATURE_DTYPES = ("float32", "float16")
#: rows written at once (a parquet row group): with their JPEGs, the most the simulator holds of the table
CHUNK_ROWS = 20_000
#: the published splits each row is in once (the *_unique splits repeat rows of validation and test)
PRIMARY_SPLITS = ("train", "validation", "test")


def write_pickapic_shard(path: str | Path, columns: dict) -> None:
    """Write one parquet shard in the published format: ``columns`` maps each column of ``PICKAPIC_SCHEMA`` to
    its values (one per row), typed by the schema."""
    pq.write_table(pa.Table.from_pydict(columns, schema=PICKAPIC_SCHEMA), path)


@dataclass(frozen=True)
class PickapicSimulationConfig:
    """Knobs of the Pick-a-Pic simulator."""

    seed: int = 0
    users: int = 200
    prompts_per_user: int = 25
    max_comparisons: int = 3  # per prompt
    feature_dim: int = 512
    image_size: int = 64  # JPEG side in pixels
    detailed_images: bool = True  # False: flat colour swatches (fast, for tests)
    tie_margin: float = 0.15  # on the 1-5 score scale
    noise_scale: float = 1.0  # multiplies every user's perception noise
    # the world's taste and feature settings, as in SimulationConfig (recsys.data.simulate.WORLD_KNOBS)
    taste_groups: int = N_TASTE_GROUPS
    taste_rank: int = 0
    individual_share: float = DEFAULT_INDIVIDUAL_SHARE
    demographic_weight: float = 1.0
    membership: str = "single"
    taste_form: str = "linear"
    feature_map: str = "tanh"
    feature_noise: float = 0.35
    hidden_attributes: int = 0
    unlabelled_share: float = 0.02
    same_image_share: float = 0.01
    published_holdout_users: float = 0.1  # users whose rows go to the published validation and test files
    train_shards: int = 2
    feature_dtype: str = "float32"  # of image_features.npz's embedding: float32, or float16 (half the size)
    prompt_embeddings: bool = True  # write image_features.text.npz (each image's prompt embedding)
    prompt_taste: float = (
        0.0  # under prompts that name an art style, own taste times 1 - 2 x this (1: reversed)
    )

    def validate(self) -> None:
        # `recsys data simulate --pickapic` sets users (and the images' detail) only: the rest are named as the
        # fields they are
        if self.users < 10:
            raise UserError(f"--users {self.users}: the simulator needs at least 10 users")
        if self.prompts_per_user < 1 or self.max_comparisons < 1:
            raise UserError("prompts_per_user and max_comparisons must be at least 1")
        if self.feature_dim < 8:
            raise UserError(f"feature_dim {self.feature_dim}: needs at least 8")
        if not 8 <= self.image_size <= 512:
            raise UserError(f"--image-size {self.image_size}: choose 8 to 512 pixels")
        if self.tie_margin < 0:
            raise UserError(f"tie_margin {self.tie_margin}: must be non-negative")
        check_world(self)
        for name in ("unlabelled_share", "same_image_share", "published_holdout_users"):
            if not 0.0 <= getattr(self, name) < 0.5:
                raise UserError(f"{name} {getattr(self, name)}: choose 0 <= value < 0.5")
        if not 0.0 <= self.prompt_taste <= 1.0:
            raise UserError(f"--prompt-taste {self.prompt_taste}: choose 0 to 1")
        if self.train_shards < 1:
            raise UserError("train_shards must be at least 1")
        if self.feature_dtype not in FEATURE_DTYPES:
            raise UserError(f"--feature-dtype {self.feature_dtype}: choose {' or '.join(FEATURE_DTYPES)}")


def choice_probabilities(
    mu_a: np.ndarray, mu_b: np.ndarray, sigma: np.ndarray, tie_margin: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P(a chosen), P(tie), P(b chosen)) for perceived scores N(mu, sigma^2) each and a tie band of
    ``tie_margin`` (see the module docstring); arrays of the same shape."""
    spread = np.maximum(np.asarray(sigma, np.float64) * math.sqrt(2.0), 1e-9)
    d = np.asarray(mu_a, np.float64) - np.asarray(mu_b, np.float64)
    p_a = ndtr((d - tie_margin) / spread)
    p_b = ndtr((-d - tie_margin) / spread)
    return p_a, np.clip(1.0 - p_a - p_b, 0.0, 1.0), p_b


def simulate_pickapic(
    out: str | Path,
    config: PickapicSimulationConfig | None = None,
    *,
    progress: bool = True,
    chunk_rows: int = CHUNK_ROWS,
) -> Path:
    """Write a simulated Pick-a-Pic v2 directory to ``out`` and return its path (see the module docstring).

    Written into a temporary sibling directory and moved into place at the end, so an interrupted run never
    leaves a directory that loads. Streamed: the image features go to a memory-mapped scratch file as they are
    drawn, and the table is written ``chunk_rows`` rows (one parquet row group) at a time, JPEGs rendered per
    chunk, so memory holds the compact per-row numbers and one chunk, never every row's strings and JPEGs. The
    files' contents are the same whatever ``chunk_rows``.
    """
    config = config or PickapicSimulationConfig()
    config.validate()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: already exists and is not empty; choose another --out or remove it")

    # ---- the layout of prompts (its own generator: the world's size depends on it)
    layout = np.random.default_rng([config.seed, 1])
    prompt_user = np.repeat(np.arange(config.users), config.prompts_per_user)
    n_prompts = len(prompt_user)
    comparisons = layout.integers(1, config.max_comparisons + 1, n_prompts)
    n_images = int((comparisons + 1).sum())
    world_config = SimulationConfig(
        seed=config.seed,
        users=config.users,
        images=max(n_images, 20),
        feature_dim=config.feature_dim,
        image_size=max(16, config.image_size),
        **{name: getattr(config, name) for name in WORLD_KNOBS},
    )
    aggregates = load_aggregates()
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "data").mkdir(parents=True)
    (tmp / "simulation").mkdir()
    scratch = tmp / "features.scratch.npy"  # the features as drawn, until image_features.npz is written
    features = np.lib.format.open_memmap(
        scratch, mode="w+", dtype=config.feature_dtype, shape=(world_config.images, config.feature_dim)
    )
    world = _World(world_config, aggregates, features_into=features)
    rng = world.rng
    image_model = rng.integers(len(MODELS), size=world_config.images)
    world.idiosyncratic += np.asarray(MODEL_APPEAL)[image_model]

    # ---- images per prompt: consecutive in a group-sorted shuffle
    shuffled = rng.permutation(n_images)
    shuffled = shuffled[np.argsort(world.image_group[shuffled], kind="stable")]
    prompt_order = rng.permutation(n_prompts)
    blocks = np.split(shuffled, np.cumsum(comparisons[prompt_order] + 1)[:-1])
    prompt_images = [np.empty(0, np.int64)] * n_prompts
    for position, prompt in enumerate(prompt_order.tolist()):
        prompt_images[prompt] = blocks[position]
    shown_users = np.repeat(prompt_user, comparisons + 1)
    shown_images = np.concatenate(prompt_images)
    world.calibrate(shown_users, shown_images, aggregates)

    # ---- comparisons, step by step: the chosen image stays against the next new one
    current = np.array([images[0] for images in prompt_images])
    styled = world.image_style[current] >= 0  # the prompt's caption names an art style (its first image's)
    columns: dict[str, list] = {k: [] for k in ("prompt", "step", "a", "b", "label", "p_a", "p_tie", "p_b")}
    for step in range(config.max_comparisons):
        active = np.flatnonzero(comparisons > step)
        new = np.array([prompt_images[p][step + 1] for p in active.tolist()], dtype=np.int64)
        kept = current[active]
        kept_first = rng.random(len(active)) < 0.5
        a, b = np.where(kept_first, kept, new), np.where(kept_first, new, kept)
        users = prompt_user[active]
        reversed_ = styled[active]
        p_a, p_tie, p_b = choice_probabilities(
            score_under_prompt(world, users, a, reversed_, config.prompt_taste),
            score_under_prompt(world, users, b, reversed_, config.prompt_taste),
            world.user_noise[users],
            config.tie_margin,
        )
        draw = rng.random(len(active))
        label = np.where(draw < p_a, 1.0, np.where(draw < p_a + p_b, 0.0, 0.5))
        current[active] = np.where(label == 1.0, a, np.where(label == 0.0, b, kept))
        values = {"prompt": active, "step": np.full(len(active), step), "a": a, "b": b, "label": label}
        values |= {"p_a": p_a, "p_tie": p_tie, "p_b": p_b}
        for key, value in values.items():
            columns[key].append(value)
    rows = pd.DataFrame({key: np.concatenate(values) for key, values in columns.items()})
    rows = rows.sort_values(["prompt", "step"], kind="stable").reset_index(drop=True)
    n_rows = len(rows)
    rows["user"] = prompt_user[rows["prompt"].to_numpy()]

    # ---- rows that are not choices
    draw = rng.random(n_rows)
    unlabelled = draw < config.unlabelled_share
    same = ~unlabelled & (draw < config.unlabelled_share + config.same_image_share)
    rows.loc[same, "b"] = rows.loc[same, "a"]

    # ---- ids, captions, times
    user_ids = 1 + rng.choice(1_000_000, size=config.users, replace=False).astype(np.int64)
    uids = np.array([str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(world_config.images)])
    captions = np.array([_prompt(world, int(images[0]), rng) for images in prompt_images], dtype=object)
    start = np.datetime64("2023-04-01T00:00:00", "ns")
    prompt_time = start + (rng.random(n_prompts) * 120 * 86400e9).astype("timedelta64[ns]")
    created = prompt_time[rows["prompt"].to_numpy()] + (rows["step"].to_numpy() * 30e9).astype(
        "timedelta64[ns]"
    )
    ranking_id = np.empty(n_rows, np.int64)
    ranking_id[np.argsort(created, kind="stable")] = 100_000 + np.arange(n_rows)

    a, b = rows["a"].to_numpy(), rows["b"].to_numpy()
    label_0 = np.where(unlabelled, 0.0, np.where(same, 0.5, rows["label"].to_numpy()))
    label_1 = np.where(unlabelled, 0.0, 1.0 - label_0)
    row_prompt, row_user = rows["prompt"].to_numpy(), rows["user"].to_numpy()
    renderer = _JpegRenderer(world, config)

    def table_part(positions: np.ndarray) -> dict:
        """The published columns of some rows, their JPEGs rendered now (never every image's at once)."""
        a_, b_, l0 = a[positions], b[positions], label_0[positions]
        jpeg = renderer.jpegs(np.concatenate([a_, b_]))
        best = np.where(l0 == 1.0, uids[a_], np.where(l0 == 0.0, uids[b_], ""))
        best[unlabelled[positions] | same[positions]] = ""
        return {
            "are_different": ~same[positions],
            "best_image_uid": best,
            "caption": captions[row_prompt[positions]],
            "created_at": created[positions],
            "has_label": ~unlabelled[positions],
            "image_0_uid": uids[a_],
            "image_0_url": [f"https://simulated.invalid/pickapic/{u}.jpg" for u in uids[a_]],
            "image_1_uid": uids[b_],
            "image_1_url": [f"https://simulated.invalid/pickapic/{u}.jpg" for u in uids[b_]],
            "jpg_0": [jpeg[i] for i in a_.tolist()],
            "jpg_1": [jpeg[i] for i in b_.tolist()],
            "label_0": l0,
            "label_1": label_1[positions],
            "model_0": np.array(MODELS)[image_model[a_]],
            "model_1": np.array(MODELS)[image_model[b_]],
            "ranking_id": ranking_id[positions],
            "user_id": user_ids[row_user[positions]],
            "num_example_per_prompt": comparisons[row_prompt[positions]],
        }

    # ---- published splits: a share of users to validation and test
    n_held = round(config.published_holdout_users * config.users)
    held = rng.permutation(config.users)[:n_held]
    split_of_user = np.full(config.users, "train", dtype=object)
    split_of_user[held[: n_held // 2]] = "validation"
    split_of_user[held[n_held // 2 :]] = "test"
    split_of = split_of_user[row_user]
    first_of_prompt = rows["step"].to_numpy() == 0

    written = {}
    bar = tqdm(total=n_rows, desc="writing shards", unit="row", disable=not progress)
    for split, mask in (
        ("train", split_of == "train"),
        ("validation", split_of == "validation"),
        ("test", split_of == "test"),
        ("validation_unique", (split_of == "validation") & first_of_prompt),
        ("test_unique", (split_of == "test") & first_of_prompt),
    ):
        positions = np.flatnonzero(mask)
        if not len(positions):
            continue
        shards = np.array_split(positions, config.train_shards if split == "train" else 1)
        for i, shard in enumerate(shards):
            path = tmp / "data" / f"{split}-{i:05d}-of-{len(shards):05d}.parquet"
            with pq.ParquetWriter(path, PICKAPIC_SCHEMA) as writer:  # one row group per chunk of rows
                for first in range(0, max(len(shard), 1), chunk_rows):
                    part = table_part(shard[first : first + chunk_rows])
                    writer.write_table(pa.Table.from_pydict(part, schema=PICKAPIC_SCHEMA))
                    bar.update(min(chunk_rows, len(shard) - first) if split in PRIMARY_SPLITS else 0)
        written[split] = len(positions)
    bar.close()

    is_choice = np.flatnonzero(~unlabelled & ~same)
    probabilities = tmp / CHOICE_PROBABILITIES
    for first in range(0, max(len(is_choice), 1), chunk_rows):
        at = is_choice[first : first + chunk_rows]
        p_a, p_tie = rows["p_a"].to_numpy()[at], rows["p_tie"].to_numpy()[at]
        pd.DataFrame(
            {
                "ranking_id": ranking_id[at],
                "user_id": user_ids[row_user[at]],
                "image_0_uid": uids[a[at]],
                "image_1_uid": uids[b[at]],
                "p_image_0": np.round(p_a, 6),
                "p_tie": np.round(p_tie, 6),
                "p_image_1": np.round(rows["p_b"].to_numpy()[at], 6),
                "expected_label_0": np.round(p_a + 0.5 * p_tie, 6),
            }
        ).to_csv(probabilities, index=False, mode="a" if first else "w", header=not first)
    pd.DataFrame({"user_id": user_ids, "taste_group": world.taste_group}).to_csv(
        tmp / "simulation" / "users.csv", index=False
    )
    write_image_features(tmp / "image_features.npz", uids, world.features, dtype=config.feature_dtype)
    if config.prompt_embeddings:
        write_prompt_embeddings(tmp / "image_features.text.npz", world, prompt_images, uids, config)
    del world.features  # the memory map of the features' scratch file, removed now
    scratch.unlink()
    prompt_label = f", prompt_taste={config.prompt_taste:g}" if config.prompt_taste else ""
    manifest = {
        "name": f"simulated Pick-a-Pic (seed {config.seed}{world_label(config)}{prompt_label})",
        "simulated": True,
        "note": "Simulated pairwise choices in Pick-a-Pic v2's format; not choices by real people.",
        "config": asdict(config),
        "image_features": "image_features.npz",
        "prompt_features": "image_features.text.npz" if config.prompt_embeddings else None,
        "ground_truth": CHOICE_PROBABILITIES,
        "rows": written,
        "choices": len(is_choice),
        "ties": int((label_0[is_choice] == 0.5).sum()),
    }
    (tmp / SIMULATION_MANIFEST).write_text(json.dumps(manifest, indent=2))
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return out


def score_under_prompt(
    world: _World, users: np.ndarray, images: np.ndarray, reversed_: np.ndarray, prompt_taste: float
) -> np.ndarray:
    """mu of each (user, image) as the user perceives the image under its prompt: the world's expected score,
    except that under a prompt naming an art style (``reversed_``) the user's own taste term is multiplied by
    1 - 2 * ``prompt_taste`` (1: the user likes under such prompts what they dislike elsewhere). With
    ``prompt_taste`` 0, the world's expected score itself."""
    mu = world.mean_score(users, images)
    if prompt_taste == 0.0:
        return mu
    personal = np.einsum("ij,ij->i", world.taste[users], world.taste_content[images])
    return mu - 2.0 * prompt_taste * world.user_scale[users] * personal * reversed_


#: prompts whose embeddings are drawn at once (bounded memory at any size)
PROMPT_CHUNK = 16_384


def write_prompt_embeddings(
    path: Path,
    world: _World,
    prompt_images: list[np.ndarray],
    uids: np.ndarray,
    config: PickapicSimulationConfig,
) -> None:
    """Write each shown image's prompt embedding (``feature_dim`` wide, ``feature_dtype``) to ``path``, keyed by
    uid: a simulated text encoder's embedding of what the prompt's caption says of its first image (the visual
    group, the style or photorealism, the signs of the four attributes its words name) through a fixed random
    linear map, plus a little noise per prompt. Drawn a chunk of prompts at a time into a memory-mapped scratch
    file, from a generator of its own, so the rest of the simulation is the same with or without it."""
    rng = np.random.default_rng([config.seed, 2])
    n_said = len(world.groups) + len(world.styles) + 1 + len(ATTRIBUTE_WORDS)
    text_map = rng.normal(0.0, 1.0 / math.sqrt(n_said), (n_said, config.feature_dim))
    sizes = np.array([len(images) for images in prompt_images])
    first = np.array([images[0] for images in prompt_images])
    starts = np.concatenate([[0], np.cumsum(sizes)])
    scratch = path.with_name("prompts.scratch.npy")
    rows = np.lib.format.open_memmap(
        scratch, mode="w+", dtype=config.feature_dtype, shape=(int(starts[-1]), config.feature_dim)
    )
    for p0 in range(0, len(first), PROMPT_CHUNK):
        p1 = min(p0 + PROMPT_CHUNK, len(first))
        said = np.concatenate(
            [
                np.eye(len(world.groups))[world.image_group[first[p0:p1]]],
                np.eye(len(world.styles) + 1)[world.image_style[first[p0:p1]]],
                np.sign(world.attributes[first[p0:p1], : len(ATTRIBUTE_WORDS)]),
            ],
            axis=1,
        )
        text = said @ text_map + rng.normal(0.0, 0.1, (p1 - p0, config.feature_dim))
        rows[starts[p0] : starts[p1]] = np.repeat(text, sizes[p0:p1], axis=0)
    write_image_features(path, uids[np.concatenate(prompt_images)], rows, dtype=config.feature_dtype)
    del rows
    scratch.unlink()


class _JpegRenderer:
    """JPEGs of the images of a chunk of rows, rendered on demand (``_render_jpeg``: the same bytes for an image
    however often it is asked for); the last chunk's are kept, since a prompt's rows may straddle two chunks."""

    def __init__(self, world: _World, config: PickapicSimulationConfig) -> None:
        self.world, self.config = world, config
        self.kept: dict[int, bytes] = {}

    def jpegs(self, images: np.ndarray) -> dict[int, bytes]:
        wanted = np.unique(images).tolist()
        self.kept = {
            i: self.kept[i] if i in self.kept else _render_jpeg(self.world, self.config, i) for i in wanted
        }
        return self.kept


def _render_jpeg(world: _World, config: PickapicSimulationConfig, i: int) -> bytes:
    """The JPEG of image ``i``: the simulator's rendering, or a flat swatch of its hue and brightness."""
    from PIL import Image

    if config.detailed_images:
        image = _render(world, i, max(16, config.image_size)).resize((config.image_size, config.image_size))
    else:
        hue = (world.image_group[i] / len(world.groups) + 0.1 * world.attributes[i, 4]) % 1.0
        value = 0.3 + 0.3 * (np.tanh(world.attributes[i, 1] / 1.5) + 1)
        rgb = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.6, float(np.clip(value, 0, 1))))
        image = Image.new("RGB", (config.image_size, config.image_size), rgb)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()
