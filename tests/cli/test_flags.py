"""Error messages name only options that exist where they are read.

* Statically: every ``--flag`` in the text of an error raised anywhere in recsys/, features/ and experiments/
  is declared by some command; one inside a backticked ``recsys COMMAND ...`` span by that command.
* Dynamically: a table of bad invocations, one or more per command, each ending in one line (exit 2) whose
  ``--flags`` the running command declares: the messages a command reaches name its own options.
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recsys.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
COMMAND_SPAN = re.compile(r"`recsys ([a-z][a-z-]*(?: [a-z][a-z-]*)?)([^`]*)`")


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


PARSERS = {" ".join(path): parser for path, parser in _commands(build_parser())}
DECLARED = {name: {o for a in p._actions for o in a.option_strings} for name, p in PARSERS.items()}
EVERY_FLAG = set().union(*DECLARED.values())


def flags_of(command: str) -> set[str]:
    return DECLARED[command]


def split_message(text: str) -> tuple[set[str], dict[str, set[str]]]:
    """(flags outside any `recsys COMMAND ...` span, {command: flags inside its spans})."""
    named: dict[str, set[str]] = {}
    for match in COMMAND_SPAN.finditer(text):
        words = match.group(1).split()
        command = " ".join(words) if " ".join(words) in DECLARED else words[0]
        rest = (" ".join(words[1:]) + " " if command == words[0] and len(words) > 1 else "") + match.group(2)
        named.setdefault(command, set()).update(FLAG.findall(rest))
    return set(FLAG.findall(COMMAND_SPAN.sub("", text))), named


def _error_texts():
    """(file, line, text) of the string parts of every ``raise X(...)`` and ``X(...)`` call whose name ends in
    Error, and of every ``.remedy(...)`` call, in the suite's packages."""
    for package in ("recsys", "features", "experiments"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if not (name.endswith("Error") or name == "remedy"):
                    continue
                parts = [
                    n.value
                    for arg in node.args
                    for n in ast.walk(arg)
                    if isinstance(n, ast.Constant) and isinstance(n.value, str)
                ]
                if parts:
                    yield path.relative_to(ROOT), node.lineno, "".join(parts)


ERROR_TEXTS = list(_error_texts())


def test_every_flag_an_error_names_exists():
    assert len(ERROR_TEXTS) > 200  # the scan found the messages
    unknown = []
    for path, line, text in ERROR_TEXTS:
        loose, named = split_message(text)
        unknown += [f"{path}:{line} {flag}" for flag in loose - EVERY_FLAG]
        for command, flags in named.items():
            if command not in DECLARED:
                unknown.append(f"{path}:{line} `recsys {command}` is no command")
                continue
            unknown += [f"{path}:{line} {flag} (of recsys {command})" for flag in flags - flags_of(command)]
    assert unknown == []


def test_the_probe_messages_name_real_flags():
    texts = " ".join(text for path, _, text in ERROR_TEXTS if path.parts[0] == "features")
    assert "--skip-bad-images" not in texts  # rank has no such option; features embed says it itself
    assert "pass --out" not in texts and "pass --cache-dir" not in texts


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """A tiny simulation with image files (the small one has none)."""
    from recsys.data.simulate import SimulationConfig, simulate

    config = SimulationConfig(seed=3, users=12, images=30, ratings_per_user=10, feature_dim=8, image_size=16)
    return simulate(tmp_path_factory.mktemp("rendered") / "sim", config, progress=False)


@pytest.fixture(scope="module")
def bad_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("candidates")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "good.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    refs = folder.parent / "refs.csv"
    return folder, refs


#: (command, arguments after it, what the one line says); {sim} is the small simulation
CASES = [
    ("explain", ["--data", "{sim}", "--user", "nobody", "--image", "1"], "unknown user id 'nobody'"),
    (
        "similar-users",
        ["--data", "{sim}", "--model", "oracle", "--user", "{user}"],
        "oracle has no taste vectors",
    ),
    ("similar-images", ["--data", "{sim}", "--image", "0", "--k", "5"], "unknown image id '0'"),
    (
        "rank",
        ["--data", "{rendered}", "--user", "x", "--images", "{images}", "--encoder", "clip:nope/x"],
        "nope",
    ),
    ("atlas", ["--data", "{sim}", "--model", "global_mean"], "global_mean has no taste vectors"),
    (
        "leaderboard",
        ["--data", "{sim}", "--models", "mf", "--params", "[1]", "--no-tracking"],
        "--params must",
    ),
    ("tune", ["ridge", "--data", "{sim}", "--metric", "nope", "--no-tracking"], "unknown metric 'nope'"),
    ("study", ["--data", "{sim}", "--models", "nope", "--no-tracking"], "unknown model 'nope'"),
    ("features embed", ["--data", "{rendered}", "--encoder", "nope"], "nope"),
    ("data validate", ["{missing}"], "no such file or directory"),
    ("serve", ["--data", "{sim}", "--port", "0"], "--port must be between 1 and 65535"),
]


@pytest.mark.parametrize(("command", "arguments", "message"), CASES, ids=[c[0] for c in CASES])
def test_each_command_names_only_its_own_flags(command, arguments, message, small_sim_dir, small_sim, rendered,
                                               bad_images, tmp_path, monkeypatch, capsys):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    folder, _ = bad_images
    values = {"{sim}": str(small_sim_dir), "{images}": str(folder), "{missing}": str(tmp_path / "missing")}
    values["{rendered}"] = str(rendered)
    values["{user}"] = str(small_sim.user_ids[small_sim.train_users()[0]])  # a user with training ratings
    argv = [*command.split(), *(values.get(a, a) for a in arguments)]
    if command not in ("data validate", "features embed", "study", "tune"):
        argv += ["--workspace", str(tmp_path / "ws")]
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    loose, named = split_message(lines[0])
    assert loose <= flags_of(command), (command, loose - flags_of(command))
    for other, flags in named.items():
        assert flags <= flags_of(other)


def test_rank_with_bad_new_images_names_no_option_it_lacks(
    rendered, bad_images, tmp_path, monkeypatch, capsys
):
    """The probe: rank suggested --skip-bad-images, an option of features embed only."""
    from features.encoders import TINY_ARCHITECTURE, register_architecture
    from recsys.data import load_dataset

    register_architecture("recsys-test-tiny", TINY_ARCHITECTURE)
    folder, refs = bad_images
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    ds = load_dataset(rendered)
    train = ds.ratings["train"]
    items = [str(ds.image_ids[i]) for i in train.image_idx[:5]]
    refs.write_text("item_id,score\n" + "".join(f"{i},3\n" for i in items))
    encoder = "clip:recsys-test-tiny/random"
    argv = ["rank", "--data", str(rendered), "--encoder", encoder, "--model", "global_mean"]
    argv += [
        "--references",
        str(refs),
        "--images",
        str(folder),
        "--workspace",
        str(tmp_path / "ws"),
        "--json",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]  # the rest: --encoder's progress
    assert len(lines) == 1 and "broken.png" in lines[0] and f"remove them from {folder}" in lines[0]
    assert "Traceback" not in err
    loose, _ = split_message(lines[0])
    assert loose <= flags_of("rank")
    # the data's own features went under the workspace, not into the data folder
    assert list((tmp_path / "ws" / "features").rglob("*.npz")) and not (rendered / "features").exists()
