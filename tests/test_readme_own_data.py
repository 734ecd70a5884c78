"""The README's own-data commands run as printed, with no flag added, on tables written in the formats they name:
a plain ``ratings.csv``, MovieLens' ``u.data`` (tab-separated, no header), a table with other column names and an
image-features file, and ``recsys data split``. Every leaderboard writes a row for every default model, measured
or skipped with its reason: none aborts the run."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_api import write_table

from recsys.cli import main

#: the block of the README's Data section that shows a user's own table
MARKER = "recsys leaderboard --data ml-100k/u.data"


def own_data_commands() -> list[list[str]]:
    """The argv of every command of the README's own-data block, comments removed, exactly as printed."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```bash\n")[1:]]
    found = [b for b in blocks if MARKER in b]
    assert len(found) == 1, "the README has one own-data block"
    lines = [line.split("#", 1)[0].strip() for line in found[0].splitlines()]
    return [shlex.split(line) for line in lines if line]


def test_the_block_has_the_commands_this_test_prepares_for():
    commands = own_data_commands()
    assert [c[:2] for c in commands] == [["recsys", "leaderboard"]] * 3 + [["recsys", "data"]]
    assert {a for c in commands for a in c if a.endswith((".csv", ".data", ".npz"))} == {
        "ratings.csv",
        "ml-100k/u.data",
        "items.npz",
        "ratings_split.csv",
    }


def _prepare(argv: list[str], folder: Path) -> None:
    """The files a command names, written into ``folder`` in the format the README says they have."""
    table = pd.read_csv(write_table(folder / "plain.csv", users=40, items=50, per_user=25))
    if "ml-100k/u.data" in argv:  # MovieLens' own file: integer ids, a timestamp, tabs, no header
        (folder / "ml-100k").mkdir()
        movielens = pd.DataFrame(
            {
                "user": table.user_id.str[1:].astype(int) + 1,
                "item": table.item_id.str[1:].astype(int) + 1,
                "score": table.score,
                "timestamp": 881250949 + np.arange(len(table)),
            }
        )
        movielens.to_csv(folder / "ml-100k" / "u.data", sep="\t", header=False, index=False)
    elif "--columns" in argv:  # other column names, and features for every item
        table.rename(columns={"user_id": "uid", "item_id": "movie", "score": "rating"}).to_csv(
            folder / "ratings.csv", index=False
        )
        items = np.array(sorted(table.item_id.unique()))
        embedding = np.random.default_rng(0).normal(size=(len(items), 8)).astype(np.float32)
        np.savez(folder / "items.npz", image_id=items, embedding=embedding)
    else:
        table.to_csv(folder / "ratings.csv", index=False)


@pytest.mark.parametrize("index", range(4), ids=["plain", "u.data", "columns+features", "data split"])
def test_each_own_data_command_runs_as_printed(index, tmp_path, monkeypatch, capsys):
    argv = own_data_commands()[index]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    _prepare(argv, tmp_path)
    assert main(argv[1:]) == 0, capsys.readouterr().err
    if argv[1] == "data":
        split = pd.read_csv(tmp_path / "ratings_split.csv")
        assert len(split) == 40 * 25 and {"user_id", "item_id", "score", "split"} <= set(split.columns)
        assert "train" in set(split.split)
        return
    board = json.loads(
        (tmp_path / "runs" / "leaderboards" / "latest" / "leaderboard.json").read_text()
    )  # ./runs: the default workspace
    rows = board["rows"]
    assert {r["status"] for r in rows} <= {"ok", "skipped", "unsupported"}
    assert all(r["reason"] for r in rows if r["status"] != "ok")
    measured = {r["model"] for r in rows if r["status"] == "ok"}
    assert {"global_mean", "biases", "mf", "item_knn"} <= measured
    if "--image-features" in argv:  # features make the content models run too
        assert {"ridge", "user_ridge", "two_tower"} <= measured
