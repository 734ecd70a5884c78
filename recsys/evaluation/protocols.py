"""Named evaluation protocols: presets of the one evaluator.

* ``default``: the suite's protocol (see ``recsys.evaluation.evaluator``): the splits the data has, k = 0 and 10
  reference ratings per new user, 5 draws, the same queries at every k.
* ``piaa``: the protocol of the personalised image aesthetics papers (PARA, LAPIS, FLICKR-AES and the methods
  listed in ``experiments.reported.PIAA``): a fixed set of test users (chosen once, with seed 0 whatever
  ``--seed`` is, among users with enough ratings for the largest k; 40 on PARA and 37 on FLICKR-AES as in those
  papers, else 10% of the users who qualify; at most half of the users), each given k = 10 and k = 100 of their ratings at random and
  scored on all their other ratings (so the queries differ between k, as in those papers), 10 repeated draws,
  user SROCC averaged over users. The test users' images are kept out of training, as in those papers: every
  rating of an image a test user rated is removed from the fit splits. Every other rating is the training
  data (10% of it, seeded, held out as ``val_seen`` for the models that stop early or calibrate).

  A published split replaces the draw: ``test_users`` (ids, e.g. from ``--test-users FILE``) are exactly the
  test users, and ``test_images`` (``--test-images FILE``), when given, are the images kept out of training
  (then the test users are scored on their ratings of those images only; their other ratings are dropped).
  ``piaa_split`` says which rule was used and how many ratings it removed; leaderboard.md prints it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.data.dataset import SPLITS, Dataset, Ratings
from recsys.errors import UserError
from recsys.evaluation.metrics import MIN_USER_QUERIES


@dataclass(frozen=True)
class Protocol:
    """How a leaderboard evaluates: ``shots`` and ``draws`` per new user, whether every k scores the same queries
    (``fixed_queries``), and which test splits (None: those the data has)."""

    name: str
    shots: tuple[int, ...]
    draws: int
    fixed_queries: bool
    splits: tuple[str, ...] | None
    description: str


PROTOCOLS: dict[str, Protocol] = {
    "default": Protocol(
        "default",
        (0, 10),
        5,
        True,
        None,
        "the suite's protocol: the test splits the data has, the same queries at every k",
    ),
    "piaa": Protocol(
        "piaa",
        (10, 100),
        10,
        False,
        ("test_unseen",),
        "the PIAA papers' protocol: fixed test users, 10 and 100 random references each, every other rating of "
        "the user a query, 10 draws",
    ),
}

#: the seed of the PIAA test users: fixed, so that every run and every model meets the same people
PIAA_SEED = 0
#: test users of the PIAA datasets' own splits, by the dataset name's first word
PIAA_TEST_USERS = {"PARA": 40, "FLICKR-AES": 37}
#: share of the qualifying users held out as test users on other data
PIAA_TEST_SHARE = 0.1
#: share of the training users' ratings held out for early stopping and calibration
PIAA_VALIDATION_SHARE = 0.1


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise UserError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def piaa_test_user_count(dataset: Dataset, qualifying: int, raters: int) -> int:
    """How many test users the PIAA protocol holds out: the paper's number on PARA / FLICKR-AES, else 10% of
    those who qualify; never more than half of the ``raters`` (a small file keeps users to train on)."""
    fixed = PIAA_TEST_USERS.get(dataset.name.split(" ")[0])
    wanted = fixed if fixed is not None else max(1, round(PIAA_TEST_SHARE * qualifying))
    return min(wanted, qualifying, max(1, raters // 2))


@dataclass(frozen=True)
class PiaaSplit:
    """A dataset as the PIAA protocol splits it, and what the split did: ``rule`` (which images were kept out
    of training, a template for their number), ``chosen`` (how the test users were chosen), the test users and images, the training ratings
    removed (ratings by other users of the images kept out) and the test users' ratings dropped (of images
    outside ``--test-images``)."""

    dataset: Dataset
    rule: str
    chosen: str
    test_users: int
    test_images: int
    removed: int
    kept: int
    dropped: int = 0

    def describe(self) -> str:
        """One sentence for leaderboard.md and the terminal."""
        share = self.removed / max(1, self.removed + self.kept)
        text = (
            f"PIAA split: {self.test_users} test users ({self.chosen}); {self.rule.format(self.test_images)} "
            f"kept out of training: {self.removed:,} ratings of them by other users removed from training and "
            f"validation ({share:.1%} of those users' ratings; {self.kept:,} left)"
        )
        if self.dropped:
            text += f"; {self.dropped:,} ratings of the test users on other images dropped"
        return text


def read_id_file(path: str | Path, what: str) -> list[str]:
    """Ids from a text file, one per line (blank lines ignored, surrounding spaces stripped), in file order
    without repeats; ``what`` names the option in one-line errors."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{what} {path}: cannot be read ({type(err).__name__}: {err})") from None
    ids = list(dict.fromkeys(line.strip() for line in lines if line.strip()))
    if not ids:
        raise UserError(f"{what} {path}: holds no ids (one per line)")
    return ids


def _positions(ids: Sequence[str], known: np.ndarray, what: str, dataset: Dataset) -> np.ndarray:
    """The positions in ``known`` (a dataset's ids) of ``ids`` (as text); unknown ids are a one-line error."""
    index = {str(v): i for i, v in enumerate(known.tolist())}
    missing = [i for i in ids if str(i) not in index]
    if missing:
        shown = ", ".join(missing[:5]) + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
        raise UserError(f"{what}: {len(missing)} id(s) not in {dataset.name}: {shown}")
    return np.array([index[str(i)] for i in ids], dtype=np.int64)


def split_for_protocol(
    dataset: Dataset,
    protocol: Protocol,
    *,
    test_users: Sequence[str] | None = None,
    test_images: Sequence[str] | None = None,
) -> tuple[Dataset, str]:
    """(the dataset as the protocol splits it, a sentence on the split for the outputs; empty for
    ``default``). ``test_users`` / ``test_images`` (a published split) apply to ``piaa`` only."""
    if protocol.name != "piaa":
        if test_users is not None or test_images is not None:
            raise UserError("--test-users and --test-images apply to --protocol piaa only")
        return dataset, ""
    split = piaa_split(dataset, protocol, test_users=test_users, test_images=test_images)
    return split.dataset, split.describe()


def apply_protocol(dataset: Dataset, protocol: Protocol) -> Dataset:
    """The dataset as the protocol splits it: itself for ``default``; for ``piaa`` see ``piaa_split``."""
    return split_for_protocol(dataset, protocol)[0]


def piaa_split(
    dataset: Dataset,
    protocol: Protocol,
    *,
    test_users: Sequence[str] | None = None,
    test_images: Sequence[str] | None = None,
) -> PiaaSplit:
    """Every rating re-split into the test users' (``test_unseen``) and the training data (``train``,
    ``val_seen``), with the test images kept out of the training data (module docstring)."""
    if dataset.choices and not dataset.ratings:
        raise UserError(f"--protocol piaa evaluates ratings; {dataset.name} holds pairwise choices only")
    parts = [s for s in SPLITS if s in dataset.ratings]
    every = Ratings.concat([dataset.ratings[s] for s in parts])
    truth = (
        np.concatenate([dataset.ground_truth[s] for s in parts]) if dataset.ground_truth is not None else None
    )
    counts = np.bincount(every.user_idx, minlength=dataset.n_users)
    raters = int((counts > 0).sum())
    need = max(protocol.shots) + MIN_USER_QUERIES
    if test_users is not None:
        chosen_users = np.unique(_positions(test_users, dataset.user_ids, "--test-users", dataset))
        unrated = chosen_users[counts[chosen_users] == 0]
        if len(unrated):
            raise UserError(
                f"--test-users: {len(unrated)} user(s) without ratings in {dataset.name}: "
                + ", ".join(str(v) for v in dataset.user_ids[unrated[:5]].tolist())
            )
        chosen = "from --test-users"
    else:
        qualifying = np.flatnonzero(counts >= need)
        if not len(qualifying):
            raise UserError(
                f"--protocol piaa needs users with at least {need} ratings ({max(protocol.shots)} references + "
                f"{MIN_USER_QUERIES} queries); {dataset.name} has none (most: {int(counts.max())})"
            )
        # sorted by external id, so the choice does not depend on the order the data were read in
        qualifying = qualifying[np.argsort(dataset.user_ids[qualifying].astype(str), kind="stable")]
        n_test = piaa_test_user_count(dataset, len(qualifying), raters)
        chosen_users = np.random.default_rng(PIAA_SEED).choice(qualifying, n_test, replace=False)
        chosen = f"a seed-{PIAA_SEED} draw among the {len(qualifying)} users with at least {need} ratings"
    by_test_user = np.isin(every.user_idx, chosen_users)
    if test_images is not None:
        held_images = np.unique(_positions(test_images, dataset.image_ids, "--test-images", dataset))
        rule = "the {:,} images of --test-images"
    else:
        held_images = np.unique(every.image_idx[by_test_user])
        rule = "the {:,} images the test users rated"
    of_held_image = np.isin(every.image_idx, held_images)
    split_of = np.full(len(every), "train", dtype=object)
    split_of[by_test_user & of_held_image] = "test_unseen"
    split_of[by_test_user & ~of_held_image] = "dropped"
    split_of[~by_test_user & of_held_image] = "removed"
    train = np.flatnonzero(split_of == "train")
    if not len(train):
        raise UserError(
            f"--protocol piaa leaves no training rating in {dataset.name} once the test users and every rating "
            "of the test images are held out"
        )
    if not (split_of == "test_unseen").any():
        raise UserError(
            f"--protocol piaa: the test users have no ratings of the test images in {dataset.name}"
        )
    held = np.random.default_rng(PIAA_SEED).permutation(train)[: round(PIAA_VALIDATION_SHARE * len(train))]
    split_of[held] = "val_seen"
    in_train = np.zeros(dataset.n_users, bool)
    in_train[every.user_idx[split_of == "train"]] = True
    split_of[(split_of == "val_seen") & ~in_train[every.user_idx]] = "train"  # seen users must be known
    ratings = {s: every.subset(split_of == s) for s in SPLITS if (split_of == s).any()}
    ground_truth = None if truth is None else {s: truth[split_of == s] for s in ratings}
    return PiaaSplit(
        dataset=dataclasses.replace(dataset, ratings=ratings, ground_truth=ground_truth),
        rule=rule,
        chosen=chosen,
        test_users=len(chosen_users),
        test_images=len(held_images),
        removed=int((split_of == "removed").sum()),
        kept=len(train),
        dropped=int((split_of == "dropped").sum()),
    )
