"""Every mistake a user can make on the command line is one line on stderr (``error: ...``), exit status 2, no
traceback, and nothing written: a table of bad invocations, run through ``recsys.cli.main``; subprocesses where
a real pipe is needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.cli import main
from recsys.data.simulate import SimulationConfig, simulate
from recsys.models.persistence import SAVE_FORMAT


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, small_sim):
    """Bad input files, each next to the simulation it is meant for."""
    root = tmp_path_factory.mktemp("bad-inputs")
    ids = np.asarray(small_sim.image_ids)
    n = len(ids)
    good = np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32)
    zero_row = good.copy()
    zero_row[5] = 0.0
    embeddings = {
        "strings": np.array([["a", "b"]] * n),
        "bools": good > 0,
        "complex": good.astype(np.complex64),
        "zero_row": zero_row,
        "no_columns": np.ones((n, 0), np.float32),
        "scalar": np.array(1.0, np.float32),
        "vector": good[:, 0],
    }
    for name, embedding in embeddings.items():
        np.savez(root / f"{name}.npz", image_id=ids, embedding=embedding)

    rng = np.random.default_rng(1)
    rows = [
        (f"u{u}", f"i{i}", float(rng.integers(1, 6))) for u in range(30) for i in rng.choice(50, 20, False)
    ]
    table = pd.DataFrame(rows, columns=["user_id", "item_id", "score"])
    padded = table.copy()
    padded.loc[7, "user_id"] = "u0 "  # "u0" is a user too: stripped or not, this one must not pass silently
    (root / "padded").mkdir()
    padded.to_csv(root / "padded" / "ratings.csv", index=False)
    (root / "side").mkdir()
    table.to_csv(root / "side" / "ratings.csv", index=False)
    users = pd.DataFrame({"user_id": [f"u{u}" for u in range(30)], "age": 30})
    users.loc[3, "user_id"] = " u3"
    users.to_csv(root / "side" / "users.csv", index=False)

    (root / "junk.pt").write_bytes(b"not a checkpoint")
    config = SimulationConfig(seed=3, users=10, images=24, ratings_per_user=6, feature_dim=8, image_size=16)
    simulate(root / "with-images", config, progress=False)
    return root


LEADERBOARD = ["leaderboard", "--data", "{sim}", "--models", "user_ridge", "--out", "board", "--no-tracking"]
SIMILAR = ["similar-users", "--data", "{sim}", "--user", "nobody", "--workspace", "ws"]
EMBED = ["features", "embed", "--data", "{inputs}/with-images", *"--out x.npz --cache-dir cache".split()]
EMBED += ["--device", "cpu", "--no-progress"]

#: (case, arguments, what the one line must say); {sim} is the small simulation, {inputs} the bad files
CASES = [
    ("params-json", [*LEADERBOARD, "--params", '{"user_ridge": {"alpha": 10'], "--params is not valid JSON"),
    ("params-not-object", [*LEADERBOARD, "--params", '{"user_ridge": 5}'], "value of 'user_ridge' must be"),
    ("params-type", [*LEADERBOARD, "--params", '{"user_ridge": {"alpha": "x"}}'], "alpha must be a number"),
    (
        "params-model-typo",
        [*LEADERBOARD, "--params", '{"user_rige": {"alpha": 10}}'],
        "unknown model 'user_rige' (did you mean 'user_ridge'?); known models: global_mean",
    ),
    (
        "params-model-not-run",
        [*LEADERBOARD, "--params", '{"mf": {"factors": 8}}'],
        "not among the models to run",
    ),
    (
        "params-key-typo",
        [*LEADERBOARD, "--params", '{"user_ridge": {"alpah": 10}}'],
        "unknown parameter(s) alpah",
    ),
    (
        "similar-params-type",
        [*SIMILAR, "--model", "user_ridge", "--params", '{"alpha": "x"}'],
        "alpha must be a number",
    ),
    ("similar-params-no-model", [*SIMILAR, "--params", '{"alpha": 1}'], "--params needs --model"),
    (
        "similar-params-per-model",
        [*SIMILAR, "--model", "user_ridge", "--params", '{"user_ridge": {"alpha": 1}}'],
        "unknown parameter(s) user_ridge",
    ),
    ("features-strings", [*LEADERBOARD, "--image-features", "{inputs}/strings.npz"], "holds string values"),
    ("features-bools", [*LEADERBOARD, "--image-features", "{inputs}/bools.npz"], "holds boolean values"),
    ("features-complex", [*LEADERBOARD, "--image-features", "{inputs}/complex.npz"], "holds complex values"),
    (
        "features-zero-row",
        [*LEADERBOARD, "--image-features", "{inputs}/zero_row.npz"],
        "1 embedding row(s) are all zeros",
    ),
    ("features-no-columns", [*LEADERBOARD, "--image-features", "{inputs}/no_columns.npz"], "no dimensions"),
    ("features-0-dim", [*LEADERBOARD, "--image-features", "{inputs}/scalar.npz"], "expected (n,) and (n, d)"),
    ("features-1-dim", [*LEADERBOARD, "--image-features", "{inputs}/vector.npz"], "expected (n,) and (n, d)"),
    (
        "id-whitespace",
        [*LEADERBOARD, "--data", "{inputs}/padded/ratings.csv"],
        "user_id 'u0 ' at row 7 has leading or trailing whitespace (1 user_id value(s) do); ids are rejected, not stripped",
    ),
    (
        "side-id-whitespace",
        [*LEADERBOARD, "--data", "{inputs}/side/ratings.csv"],
        "users.csv: user_id ' u3' at row 3 has leading or trailing whitespace",
    ),
    (
        "checkpoint-without-tag",
        [*EMBED, "--encoder", "clip:ViT-B-32", "--checkpoint", "{inputs}/junk.pt"],
        "junk.pt: cannot read checkpoint",
    ),
]


def _snapshot(*roots: Path) -> dict[str, tuple]:
    """Every file and folder under ``roots`` with its size and modification time."""
    found = {}
    for root in roots:
        for path in [root, *root.rglob("*")]:
            info = path.stat()
            found[str(path)] = (path.is_dir(), 0 if path.is_dir() else info.st_size, info.st_mtime_ns)
    return found


@pytest.mark.parametrize(("arguments", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    arguments, message, inputs, small_sim_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # relative outputs (board, ws, x.npz, cache, ./runs) would land here
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    argv = [a.replace("{sim}", str(small_sim_dir)).replace("{inputs}", str(inputs)) for a in arguments]
    before = _snapshot(tmp_path, inputs)
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert message in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert _snapshot(tmp_path, inputs) == before


def test_a_saved_model_of_an_unknown_format_is_refitted_with_one_line(small_sim_dir, tmp_path, capsys):
    argv = ["similar-users", "--data", str(small_sim_dir), "--workspace", str(tmp_path), "--json"]
    from recsys.data import load_dataset

    user = str(load_dataset(small_sim_dir).user_ids[0])
    assert main([*argv, "--user", user]) == 0
    expected = json.loads(capsys.readouterr().out)
    (config,) = tmp_path.rglob("config.json")
    config.write_text(json.dumps(json.loads(config.read_text()) | {"format": 999}))

    assert main([*argv, "--user", user]) == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].endswith("; refitting"), captured.err
    assert "saved in format 999 by a newer version" in lines[0]
    assert json.loads(captured.out) == expected
    assert json.loads(config.read_text())["format"] == SAVE_FORMAT  # saved again, in this version's format


def test_a_closed_pipe_is_no_traceback():
    """``recsys features encoders | head -1``: the reader goes away; the command ends quietly."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    argv = [sys.executable, "-m", "recsys.cli", "features", "encoders", "--random"]  # more than a pipe buffer
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert err == ""
