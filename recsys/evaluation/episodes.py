"""The one episode sampler: which of a new user's rows are references and which are queries, in every reference
draw, for the rating protocol and the pairwise protocol alike, and how a user's queries are grouped for best-of-n.

Units. A user's rows of a split (ratings, or choices) fall into units: single rows, or groups of rows that must
stay together (the choices of one prompt, ``Choices.session``: a reference prompt's images never appear among the
queries, see ``recsys.data.pickapic``). A user's units are ordered by their first row, a unit's rows by position.

The draw. For user u and draw d the user's units are permuted by ``seeded_permutation(n_units, seed,
user_key(u), d)``, ``user_key`` the crc32 of the user's external id, so every model, every run and every process
sees the same draws. The permuted units' rows, read as one sequence:

* the pool is the shortest prefix of whole units that holds at least ``pool`` rows (``pool`` defaults to K, the
  largest k evaluated); the references at k are its first k rows, or the first k picks of a strategy that
  chooses from the pool (``choose``; ``recsys.evaluation.elicitation``), so a k-curve is nested;
* the queries are the rows of every unit after the pool, the same at every k. With ``fixed_queries=False`` (the
  PIAA protocol) the prefix is the shortest that holds k rows instead: each k scores every row of the user but
  its references (and but the rest of a unit that the k-th reference cuts).

With single-row units this is "references: the first k rows of the permutation; queries: all but the first
``pool``". A user qualifies when every draw leaves at least ``min_queries`` queries, that is with at least
``pool - 1 + largest unit + min_queries`` rows (``pool + min_queries`` with single-row units; ``min_queries``
when the pool is empty); other users are skipped at every k and in every draw, and counted.

Best-of-n (``groups_of_n``): each user's scored queries permuted by ``seeded_permutation(n_rows, seed, n,
user_key(u))`` and cut into groups of n, the last incomplete group dropped.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from recsys.data.dataset import group_by, is_unseen_split

#: reference draws per new user (the README's numbers use this many)
DEFAULT_DRAWS = 5

#: ``choose(user, pool)``: positions in ``pool`` (the user's pool rows, in draw order) of a strategy's picks
Chooser = Callable[[int, np.ndarray], np.ndarray]


def user_key(user_id) -> int:
    """The seed part of a user: the crc32 of the external id's text (stable across runs, processes and the
    order of users in a dataset)."""
    return zlib.crc32(str(user_id).encode())


def seeded_permutation(n: int, *key: int) -> np.ndarray:
    """A permutation of ``range(n)`` seeded by the integers ``key`` (protocol seed, user key, draw): the one
    permutation every draw and every best-of-n grouping of the suite is cut from."""
    return np.random.default_rng([*key]).permutation(n)


@dataclass(frozen=True)
class Episode:
    """One new user in one reference draw, as row positions in the split: ``references`` in the order they were
    drawn or picked, ``queries`` ascending (the same at every k with fixed queries)."""

    user_idx: int
    draw: int
    references: np.ndarray
    queries: np.ndarray


@dataclass(frozen=True)
class UserUnits:
    """One user's rows grouped into units: unit j is ``rows[starts[j] : starts[j] + sizes[j]]``."""

    user_idx: int
    rows: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def permuted(self, permutation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows of the units in ``permutation`` order, and the cumulative row count after each unit."""
        sizes = self.sizes[permutation]
        if len(sizes) == len(self.rows):  # single-row units
            return self.rows[permutation], np.cumsum(sizes)
        pieces = [self.rows[s : s + n] for s, n in zip(self.starts[permutation], sizes, strict=True)]
        return np.concatenate(pieces), np.cumsum(sizes)


def user_units(user_idx: np.ndarray, units: np.ndarray | None = None) -> list[UserUnits]:
    """Each user's rows in units (module docstring), users ascending: ``units`` holds a unit id per row (rows of
    one user with equal ids form a unit); None makes every row its own unit."""
    out = []
    for user, rows in group_by(user_idx):
        if units is None:
            ones = np.ones(len(rows), np.int64)
            out.append(UserUnits(int(user), rows, np.arange(len(rows)), ones))
            continue
        _, first, inverse = np.unique(units[rows], return_index=True, return_inverse=True)
        rank = np.argsort(np.argsort(first))[inverse.reshape(-1)]  # units in order of their first row
        order = np.lexsort((rows, rank))
        sizes = np.bincount(rank)
        out.append(UserUnits(int(user), rows[order], np.cumsum(sizes) - sizes, sizes))
    return out


def groups_of_n(user_idx: np.ndarray, n: int, *, user_ids: np.ndarray, seed: int = 0) -> np.ndarray:
    """(groups, n) row positions: each user's rows (users ascending) permuted by (seed, n, user key) and cut into
    groups of n, the last incomplete group of a user dropped; users with fewer than n rows have none."""
    groups = []
    for user, rows in group_by(user_idx):
        if len(rows) < n:
            continue
        shuffled = rows[seeded_permutation(len(rows), seed, n, user_key(user_ids[user]))]
        groups.append(shuffled[: len(shuffled) // n * n].reshape(-1, n))
    return np.concatenate(groups) if groups else np.zeros((0, n), np.int64)


class EpisodeSampler:
    """Draws new users' references and queries (module docstring).

    Args:
        user_ids: the dataset's external user ids, by user index (they seed each user's draws).
        shots: numbers of references evaluated; the largest, K, fixes the queries.
        seed: the protocol seed.
        draws: reference draws per new user.
        pool: rows kept out of the queries for the references (default None: K).
        min_queries: queries every qualifying user keeps in every draw.
        fixed_queries: True: every k scores the same queries; False: each k scores every row but its references.
    """

    def __init__(
        self,
        user_ids: np.ndarray,
        *,
        shots: Sequence[int],
        seed: int = 0,
        draws: int = DEFAULT_DRAWS,
        pool: int | None = None,
        min_queries: int = 1,
        fixed_queries: bool = True,
    ):
        if not len(shots) or any(k < 0 for k in shots):
            raise ValueError(f"shots must be non-negative, got {list(shots)}")
        if draws < 1:
            raise ValueError(f"draws must be at least 1, got {draws}")
        if pool is not None and pool < max(shots):
            raise ValueError(f"the reference pool ({pool}) must hold the largest k ({max(shots)})")
        self.user_ids = user_ids
        self.shots = tuple(int(k) for k in shots)
        self.seed = int(seed)
        self.draws = int(draws)
        self.pool = self.max_shots if pool is None else int(pool)
        self.min_queries = int(min_queries)
        self.fixed_queries = bool(fixed_queries)

    @property
    def max_shots(self) -> int:
        """The largest k: every user keeps at least this many rows out of its queries, whatever k is scored."""
        return max(self.shots)

    def tasks(self, split: str) -> list[int | None]:
        """The shot counts evaluated on a split: None for seen splits (every row is a query, no draw)."""
        return list(self.shots) if is_unseen_split(split) else [None]

    def needed_rows(self, largest_unit: int = 1) -> int:
        """Rows a user with units of at most ``largest_unit`` rows needs to qualify."""
        return self.min_queries if self.pool == 0 else self.pool - 1 + largest_unit + self.min_queries

    def episodes(
        self,
        user_idx: np.ndarray,
        shots: int,
        draw: int = 0,
        *,
        units: np.ndarray | None = None,
        choose: Chooser | None = None,
    ) -> tuple[list[Episode], int]:
        """The episodes of every qualifying user (users ascending) of a split whose rows belong to ``user_idx``
        (``units``: a unit id per row, None for single rows) at k = ``shots`` in draw ``draw``, and the number of
        users skipped. ``choose`` picks the references from the pool instead of taking its first k rows."""
        if not 0 <= shots <= self.max_shots:
            raise ValueError(f"shots = {shots} is not within the evaluator's 0..{self.max_shots}")
        episodes, skipped = [], 0
        for user in user_units(user_idx, units):
            if len(user) < self.needed_rows(int(user.sizes.max())):
                skipped += 1
                continue
            permutation = seeded_permutation(
                len(user.sizes), self.seed, user_key(self.user_ids[user.user_idx]), draw
            )
            sequence, ends = user.permuted(permutation)
            pool = sequence[: _prefix(ends, self.pool)]
            first_query = _prefix(ends, self.pool if self.fixed_queries else shots)
            references = sequence[:shots] if choose is None else pool[choose(user.user_idx, pool)[:shots]]
            episodes.append(Episode(user.user_idx, draw, references, np.sort(sequence[first_query:])))
        return episodes, skipped

    def groups_of(self, user_idx: np.ndarray, n: int) -> np.ndarray:
        """Best-of-n groups of scored queries (``groups_of_n``) under this sampler's seed and users."""
        return groups_of_n(user_idx, n, user_ids=self.user_ids, seed=self.seed)


def _prefix(ends: np.ndarray, rows: int) -> int:
    """Rows in the shortest prefix of whole units (cumulative row counts ``ends``) that holds ``rows`` rows."""
    return 0 if rows <= 0 else int(ends[np.searchsorted(ends, rows)])
