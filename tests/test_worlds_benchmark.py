"""benchmarks/worlds.py: ranks per world and the summary over worlds, on results written by hand."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def worlds(load_benchmark):
    return load_benchmark("worlds")


def result(world: str, seen: dict, new: dict) -> dict:
    """A world's rows: model -> (value, ci lo, ci hi) on test_seen and on test_unseen at 10 references."""
    rows = [
        {"model": m, "split": split, "shots": shots, "value": v, "ci95": [lo, hi]}
        for split, shots, cells in (("test_seen", None, seen), ("test_unseen", 10, new))
        for m, (v, lo, hi) in cells.items()
    ]
    return {"world": world, "kind": "ratings", "rows": rows}


def test_ranks_best_and_interval_of_the_best(worlds):
    one = result(
        "a",
        {
            "mf": (0.70, 0.68, 0.72),
            "ridge": (0.50, 0.48, 0.52),
            "knn": (0.69, 0.66, 0.71),
            "oracle": (0.9, 0.88, 0.92),
        },
        {"mf": (0.60, 0.55, 0.65), "ridge": (0.60, 0.56, 0.64), "knn": (0.40, 0.35, 0.45)},
    )
    cells = worlds.headline(one)
    assert {m: c["rank"] for m, c in cells["seen"].items() if "rank" in c} == {"mf": 1, "knn": 2, "ridge": 3}
    assert "rank" not in cells["seen"]["oracle"]  # the ceiling is not ranked
    assert [m for m, c in cells["seen"].items() if c.get("in_ci")] == ["mf", "knn"]  # 0.69 >= 0.68
    assert {m: c["rank"] for m, c in cells["new@10"].items()} == {"mf": 1.5, "ridge": 1.5, "knn": 3}  # a tie
    assert cells["new@10"]["mf"]["best"] and cells["new@10"]["ridge"]["best"]

    two = result(
        "b",
        {
            "mf": (0.60, 0.58, 0.62),
            "ridge": (0.65, 0.63, 0.67),
            "knn": (0.50, 0.47, 0.53),
            "oracle": (0.8, 0.7, 0.9),
        },
        {"mf": (0.50, 0.45, 0.55), "ridge": (0.30, 0.25, 0.35), "knn": (0.45, 0.40, 0.50)},
    )
    done = worlds.summary([one, two], ["mf", "ridge", "knn", "oracle"])
    assert done["models"]["mf"]["seen"] == {"worlds": 2, "mean_rank": 1.5, "best": 1, "in_ci": 1}
    assert done["models"]["knn"]["new@10"] == {
        "worlds": 2,
        "mean_rank": 2.5,
        "best": 0,
        "in_ci": 1,
    }  # 0.45 >= 0.45
    assert done["ceiling"]["b"]["seen"] == pytest.approx(
        {"oracle": 0.8, "best_model": "ridge", "best": 0.65, "gap": 0.15}
    )
    assert done["ceiling"]["a"]["new@10"]["oracle"] is None  # no oracle row there
