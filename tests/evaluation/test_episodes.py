"""The one episode sampler: the draws the protocol has always made (recomputed here the old way, by hand), units
that never straddle references and queries, users skipped the same way in every draw, best-of-n groups."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from recsys.evaluation.episodes import EpisodeSampler, groups_of_n, seeded_permutation, user_key

USER_IDS = np.array(["u7", "alice", "1234", "bob", "zed"], dtype=object)


def ratings_like(sizes: list[int], seed: int = 0) -> np.ndarray:
    """``user_idx`` of a split whose users (0, 1, ...) hold ``sizes`` rows, interleaved at random."""
    user_idx = np.repeat(np.arange(len(sizes)), sizes)
    return user_idx[np.random.default_rng(seed).permutation(len(user_idx))]


def old_draw(user_idx, user_ids, seed, shots, draw, pool, min_queries, fixed_queries=True):
    """The evaluator's draw before the sampler, written out: per user (ascending) the user's rows in order, one
    permutation seeded by [seed, crc32(id), draw]; references the first k, queries all but the first pool (or
    all but the first k without fixed queries); users with fewer than pool + min_queries rows skipped."""
    out, skipped = [], 0
    for user in np.unique(user_idx):
        chunk = np.flatnonzero(user_idx == user)
        if len(chunk) < pool + min_queries:
            skipped += 1
            continue
        key = zlib.crc32(str(user_ids[user]).encode())
        permutation = chunk[np.random.default_rng([seed, key, draw]).permutation(len(chunk))]
        first_query = pool if fixed_queries else shots
        out.append((int(user), permutation[:shots], np.sort(permutation[first_query:])))
    return out, skipped


@pytest.mark.parametrize("fixed_queries", [True, False])
@pytest.mark.parametrize(("seed", "shots", "pool"), [(0, (0, 3, 10), None), (7, (1, 4), 12)])
def test_rows_are_drawn_exactly_as_before(seed, shots, pool, fixed_queries):
    user_idx = ratings_like([30, 14, 22, 40, 9], seed=seed)
    sampler = EpisodeSampler(
        USER_IDS, shots=shots, seed=seed, draws=3, pool=pool, min_queries=5, fixed_queries=fixed_queries
    )
    for draw in range(3):
        for k in shots:
            episodes, skipped = sampler.episodes(user_idx, k, draw)
            expected, expected_skipped = old_draw(
                user_idx, USER_IDS, seed, k, draw, sampler.pool, 5, fixed_queries
            )
            assert skipped == expected_skipped and len(episodes) == len(expected) > 0
            for e, (user, refs, queries) in zip(episodes, expected, strict=True):
                assert (e.user_idx, e.draw) == (user, draw)
                np.testing.assert_array_equal(e.references, refs)
                np.testing.assert_array_equal(e.queries, queries)


def test_the_user_key_and_permutation_are_the_old_seeds():
    assert user_key("alice") == zlib.crc32(b"alice") and user_key(1234) == zlib.crc32(b"1234")
    np.testing.assert_array_equal(
        seeded_permutation(17, 3, user_key("bob"), 2),
        np.random.default_rng([3, zlib.crc32(b"bob"), 2]).permutation(17),
    )


def test_a_chooser_picks_from_the_pool_and_keeps_the_queries():
    user_idx = ratings_like([30, 25])
    sampler = EpisodeSampler(USER_IDS, shots=(0, 4), seed=1, draws=1, pool=10, min_queries=5)
    pools = {}

    def choose(user: int, pool: np.ndarray) -> np.ndarray:
        pools[user] = pool
        return np.arange(len(pool))[::-1]  # the pool backwards

    chosen, _ = sampler.episodes(user_idx, 4, choose=choose)
    plain, _ = sampler.episodes(user_idx, 4)
    for c, p in zip(chosen, plain, strict=True):
        np.testing.assert_array_equal(c.queries, p.queries)
        assert len(pools[c.user_idx]) == 10 and np.array_equal(c.references, pools[c.user_idx][::-1][:4])
        mine = np.flatnonzero(user_idx == c.user_idx)
        np.testing.assert_array_equal(np.sort(np.r_[pools[c.user_idx], c.queries]), mine)


def grouped(unit_sizes: list[list[int]], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``user_idx`` and a unit id per row for users holding units of the given sizes, rows shuffled."""
    users, units, unit = [], [], 0
    for user, sizes in enumerate(unit_sizes):
        for size in sizes:
            users += [user] * size
            units += [unit] * size
            unit += 1
    order = np.random.default_rng(seed).permutation(len(users))
    return np.array(users)[order], np.array(units)[order]


@pytest.mark.parametrize("fixed_queries", [True, False])
def test_units_never_straddle_references_and_queries(fixed_queries):
    rng = np.random.default_rng(3)
    user_idx, units = grouped([rng.integers(1, 5, n).tolist() for n in (12, 20, 3, 16)])
    sampler = EpisodeSampler(
        USER_IDS, shots=(0, 1, 2, 4, 8), seed=2, draws=4, min_queries=5, fixed_queries=fixed_queries
    )
    seen_users = None
    for draw in range(4):
        queries_at_k = {}
        for k in sampler.shots:
            episodes, skipped = sampler.episodes(user_idx, k, draw, units=units)
            users = [e.user_idx for e in episodes]
            assert seen_users is None or users == seen_users  # the same users in every draw and at every k
            seen_users = users
            for e in episodes:
                assert len(e.references) == k and len(e.queries) >= 5
                assert (user_idx[e.references] == e.user_idx).all() and (
                    user_idx[e.queries] == e.user_idx
                ).all()
                assert not set(units[e.references].tolist()) & set(units[e.queries].tolist())
                # a query unit is whole: every row of it is a query
                for unit in np.unique(units[e.queries]):
                    assert np.isin(np.flatnonzero(units == unit), e.queries).all()
                queries_at_k.setdefault(e.user_idx, []).append(tuple(e.queries.tolist()))
        if fixed_queries:
            assert all(len(set(q)) == 1 for q in queries_at_k.values())
    sizes = {u: len(np.flatnonzero(user_idx == u)) for u in range(4)}
    largest = {u: np.bincount(units[user_idx == u]).max() for u in range(4)}
    qualifying = [u for u in range(4) if sizes[u] >= 8 - 1 + largest[u] + 5]
    assert seen_users == qualifying and len(qualifying) < 4  # the smallest user is skipped


def test_the_pool_takes_whole_units_in_the_drawn_order_and_references_are_its_first_rows():
    # one user, units of 3, 1, 2 and 4 rows, ten single rows after them
    user_idx, units = grouped([[3, 1, 2, 4] + [1] * 10])
    sampler = EpisodeSampler(USER_IDS, shots=(0, 2, 5), seed=4, draws=3, min_queries=5)
    for draw in range(3):
        (episode,), _ = sampler.episodes(user_idx, 5, draw, units=units)
        # by hand: the units ordered by first row, permuted by the user's seed, rows of a unit in order
        ids = list(dict.fromkeys(units.tolist()))
        rows = {u: np.flatnonzero(units == u) for u in ids}
        order = seeded_permutation(len(ids), 4, user_key(USER_IDS[0]), draw)
        sequence = np.concatenate([rows[ids[j]] for j in order])
        ends = np.cumsum([len(rows[ids[j]]) for j in order])
        cut = int(ends[np.argmax(ends >= 5)])
        np.testing.assert_array_equal(episode.references, sequence[:5])
        np.testing.assert_array_equal(episode.queries, np.sort(sequence[cut:]))


def test_without_units_every_row_is_its_own_unit():
    user_idx = ratings_like([20, 30])
    sampler = EpisodeSampler(USER_IDS, shots=(0, 6), seed=5, draws=2, min_queries=5)
    for draw in range(2):
        plain, _ = sampler.episodes(user_idx, 6, draw)
        singles, _ = sampler.episodes(user_idx, 6, draw, units=np.arange(len(user_idx)))
        for a, b in zip(plain, singles, strict=True):
            np.testing.assert_array_equal(a.references, b.references)
            np.testing.assert_array_equal(a.queries, b.queries)


def test_best_of_n_groups_are_the_old_shuffle():
    user_idx = ratings_like([9, 3, 17, 8])
    for n in (2, 4, 8):
        groups = groups_of_n(user_idx, n, user_ids=USER_IDS, seed=6)
        expected = []
        for user in range(4):
            rows = np.flatnonzero(user_idx == user)
            if len(rows) < n:
                continue
            key = zlib.crc32(str(USER_IDS[user]).encode())
            shuffled = rows[np.random.default_rng([6, n, key]).permutation(len(rows))]
            expected.append(shuffled[: len(rows) // n * n].reshape(-1, n))
        np.testing.assert_array_equal(groups, np.concatenate(expected))
    assert groups_of_n(user_idx[:0], 4, user_ids=USER_IDS).shape == (0, 4)


def test_bad_arguments_are_value_errors():
    with pytest.raises(ValueError, match="non-negative"):
        EpisodeSampler(USER_IDS, shots=(-1, 2))
    with pytest.raises(ValueError, match="draws must be at least 1"):
        EpisodeSampler(USER_IDS, shots=(2,), draws=0)
    with pytest.raises(ValueError, match=r"the reference pool \(3\) must hold the largest k \(5\)"):
        EpisodeSampler(USER_IDS, shots=(5,), pool=3)
    with pytest.raises(ValueError, match="not within"):
        EpisodeSampler(USER_IDS, shots=(2,)).episodes(ratings_like([10]), 3)
