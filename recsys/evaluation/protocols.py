"""Named evaluation protocols: presets of the one evaluator.

* ``default``: the suite's protocol (see ``recsys.evaluation.evaluator``): the splits the data has, k = 0 and 10
  reference ratings per new user, 5 draws, the same queries at every k.
* ``piaa``: the protocol of the personalised image aesthetics papers (PARA, LAPIS, FLICKR-AES and the methods
  listed in ``experiments.reported.PIAA``): a fixed set of test users (chosen once, with seed 0 whatever
  ``--seed`` is, among users with enough ratings for the largest k; 40 on PARA and 37 on FLICKR-AES as in those
  papers, else 10% of the users who qualify; at most half of the users), each given k = 10 and k = 100 of their ratings at random and
  scored on all their other ratings (so the queries differ between k, as in those papers), 10 repeated draws,
  user SROCC averaged over users. Every other user's ratings are the training data (10% of them, seeded, held
  out as ``val_seen`` for the models that stop early or calibrate).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

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


def apply_protocol(dataset: Dataset, protocol: Protocol) -> Dataset:
    """The dataset as the protocol splits it: itself for ``default``; for ``piaa`` every rating re-split into the
    fixed test users (``test_unseen``) and the training users (``train``, ``val_seen``)."""
    if protocol.name != "piaa":
        return dataset
    if dataset.choices and not dataset.ratings:
        raise UserError(f"--protocol piaa evaluates ratings; {dataset.name} holds pairwise choices only")
    parts = [s for s in SPLITS if s in dataset.ratings]
    every = Ratings.concat([dataset.ratings[s] for s in parts])
    truth = (
        np.concatenate([dataset.ground_truth[s] for s in parts]) if dataset.ground_truth is not None else None
    )
    counts = np.bincount(every.user_idx, minlength=dataset.n_users)
    need = max(protocol.shots) + MIN_USER_QUERIES
    qualifying = np.flatnonzero(counts >= need)
    if not len(qualifying):
        raise UserError(
            f"--protocol piaa needs users with at least {need} ratings ({max(protocol.shots)} references + "
            f"{MIN_USER_QUERIES} queries); {dataset.name} has none (most: {int(counts.max())})"
        )
    # sorted by external id, so the choice does not depend on the order the data were read in
    qualifying = qualifying[np.argsort(dataset.user_ids[qualifying].astype(str), kind="stable")]
    n_test = piaa_test_user_count(dataset, len(qualifying), int((counts > 0).sum()))
    test_users = np.random.default_rng(PIAA_SEED).choice(qualifying, n_test, replace=False)
    split_of = np.where(np.isin(every.user_idx, test_users), "test_unseen", "train").astype(object)
    train = np.flatnonzero(split_of == "train")
    if not len(train):
        raise UserError(f"--protocol piaa leaves no training user in {dataset.name}")
    held = np.random.default_rng(PIAA_SEED).permutation(train)[: round(PIAA_VALIDATION_SHARE * len(train))]
    split_of[held] = "val_seen"
    in_train = np.zeros(dataset.n_users, bool)
    in_train[every.user_idx[split_of == "train"]] = True
    split_of[(split_of == "val_seen") & ~in_train[every.user_idx]] = "train"  # seen users must be known
    ratings = {s: every.subset(split_of == s) for s in SPLITS if (split_of == s).any()}
    ground_truth = None if truth is None else {s: truth[split_of == s] for s in ratings}
    return dataclasses.replace(dataset, ratings=ratings, ground_truth=ground_truth)
