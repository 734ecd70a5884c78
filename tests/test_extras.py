"""Optional weight: without its extras the suite imports, runs the models it can, reports the others as
``unsupported`` rows naming the install command, and a command that needs a missing extra fails with one line
and exit status 2.

Missing packages are simulated in a subprocess by a finder placed first on ``sys.meta_path`` that refuses
them, as an absent package does (``ModuleNotFoundError``; ``importlib.util.find_spec`` raises it too). Setting
``sys.modules[name] = None`` would simulate it less faithfully: SciPy looks ``torch`` up in ``sys.modules``
and fails on the None.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_imports import _modules

from recsys.extras import (
    EXTRAS,
    LazyModule,
    MissingExtra,
    extra_providing,
    install_command,
    missing_reason,
    require,
)
from recsys.models.registry import _REGISTRY, EXTRA_OF, PRESETS, unavailable_reason

ROOT = Path(__file__).resolve().parents[1]
#: every optional package the suite imports (EXTRAS' modules and the MLLM scorer's)
OPTIONAL = sorted({module for modules in EXTRAS.values() for module in modules})
#: the modules of the suite that import an optional package at their top, and the package: nothing else may
MODULES_OF_EXTRAS = {
    "features.embed": "torch",
    "features.encoders": "torch",
    "recsys.models.pal": "torch",
    "recsys.models.pref_tokens": "torch",
    "recsys.models.torch_utils": "torch",
    "recsys.models.two_tower": "torch",
    "recsys.retrieval.service": "fastapi",
}

BLOCKER = """
import sys

BLOCKED = set({blocked!r})


class Refuse:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, Refuse)
"""


def run_without(blocked: list[str], code: str, cwd: Path) -> dict:
    """Run ``code`` in a new interpreter, in ``cwd``, where ``blocked`` cannot be imported; it prints one JSON
    object last."""
    script = BLOCKER.format(blocked=sorted(blocked)) + textwrap.dedent(code)
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}", OPENBLAS_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_module_imports_without_the_extras_but_those_that_need_one(tmp_path):
    out = run_without(
        OPTIONAL,
        """
        import importlib, json, sys
        from test_imports import _modules
        failed = {}
        for module in sorted(_modules()):
            if not module.endswith("__main__"):
                try:
                    importlib.import_module(module)
                except ModuleNotFoundError as err:
                    failed[module] = err.name
        loaded = sorted(name for name in BLOCKED if name in sys.modules)
        print(json.dumps({"failed": failed, "loaded": loaded}))
        """,
        tmp_path,
    )
    assert out == {"failed": MODULES_OF_EXTRAS, "loaded": []}
    # a model whose module needs an extra is declared in the registry, which checks before importing it
    needing = {name for name, target in _REGISTRY.items() if target.partition(":")[0] in MODULES_OF_EXTRAS}
    assert (
        needing
        == {name for name, extra in EXTRA_OF.items() if extra == "deep"}
        == {
            "two_tower",
            "pref_tokens",
            "pal",
            "pal_a",
        }
    )
    assert {p for p, (base, _) in PRESETS.items() if base in needing} == set(PRESETS)
    assert set(_modules()) >= set(MODULES_OF_EXTRAS)


def test_without_extras_the_leaderboard_runs_what_it_can_and_commands_fail_in_one_line(
    small_sim_dir, tmp_path
):
    out = run_without(
        OPTIONAL,
        f"""
        import contextlib, io, json, sys
        from recsys.cli import main

        def run(*argv):
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                status = main(list(argv))
            return [status, err.getvalue()]

        data = {str(small_sim_dir)!r}
        board = run("leaderboard", "--data", data, "--models", "ridge,mf,user_knn,als,two_tower,pal",
                    "--draws", "1", "--jobs", "1", "--no-tracking", "--out", {str(tmp_path / "board")!r})
        rows = json.load(open({str(tmp_path / "board" / "leaderboard.json")!r}))["rows"]
        commands = {{
            "tracking": run("leaderboard", "--data", data, "--models", "ridge"),
            "tuned": run("leaderboard", "--data", data, "--tuned", "--no-tracking"),
            "tune": run("tune", "ridge", "--data", data),
            "similar-users": run("similar-users", "--data", data, "--user", "u"),
            "serve": run("serve", "--data", data),
            "features": run("features", "encoders"),
            "encoder": run("leaderboard", "--data", data, "--encoder", "clip:ViT-B-32", "--no-tracking"),
            "atlas": run("atlas", "--data", data, "--model", "two_tower"),
        }}
        print(json.dumps({{
            "board": board,
            "rows": sorted({{(r["model"], r["status"], r.get("reason", "")) for r in rows}}),
            "commands": commands,
            "loaded": sorted(name for name in BLOCKED if name in sys.modules),
        }}))
        """,
        tmp_path,
    )
    assert out["board"][0] == 0 and "error" not in out["board"][1]  # stderr holds the progress bar
    deep = 'needs the deep extra (torch, open_clip, safetensors are not installed): pip install "recsys-pamela[deep]"'
    implicit = 'needs the implicit extra (implicit, lightfm are not installed): pip install "recsys-pamela[implicit]"'
    assert [list(r) for r in out["rows"]] == [
        ["als", "unsupported", f"als {implicit}"],
        ["mf", "ok", ""],
        ["pal", "unsupported", f"pal {deep}"],
        ["ridge", "ok", ""],
        ["two_tower", "unsupported", f"two_tower {deep}"],
        ["user_knn", "ok", ""],
    ]
    experiments = "needs the experiments extra (optuna, mlflow, sqlalchemy are not installed): "
    experiments += 'pip install "recsys-pamela[experiments]"'
    expected = {
        "tracking": f"tracking the leaderboard in MLflow {experiments}, or pass --no-tracking",
        "tuned": f"recsys leaderboard --tuned {experiments}",
        "tune": f"recsys tune {experiments}",
        "similar-users": 'recsys similar-users needs the faiss extra (faiss is not installed): pip install "recsys-pamela[faiss]"',
        "serve": "recsys serve needs the serve extra (fastapi, uvicorn, starlette, pydantic, faiss are not installed): "
        'pip install "recsys-pamela[serve]"',
        "features": f"recsys features encoders {deep}",
        "encoder": f"--encoder (embedding the images) {deep}",
        "atlas": f"two_tower {deep}",
    }
    assert out["commands"] == {name: [2, f"error: {line}\n"] for name, line in expected.items()}
    assert out["loaded"] == []


def test_a_use_of_mf_that_needs_torch_is_an_unsupported_row_without_it(tmp_path):
    """mf fits ratings in numpy but choices with torch: on choices without the deep extra its rows say why."""
    out = run_without(
        ["torch"],
        """
        import json
        from recsys.data import load_dataset
        from recsys.data.simulate_pairs import PickapicSimulationConfig, simulate_pickapic
        from recsys.leaderboard import run_leaderboard
        config = PickapicSimulationConfig(seed=0, users=30, prompts_per_user=20, detailed_images=False,
                                          image_size=16, feature_dim=16)
        data = load_dataset(simulate_pickapic("pickapic", config, progress=False))
        board = run_leaderboard(data, ["mf"], draws=1, jobs=1, progress=False)
        print(json.dumps(sorted({(r.model, r.status, r.reason) for r in board.rows if r.model == "mf"})))
        """,
        tmp_path,
    )
    reason = 'mf on pairwise choices needs the deep extra (torch is not installed): pip install "recsys-pamela[deep]"'
    assert out == [["mf", "unsupported", reason]]


def test_a_missing_module_no_check_asked_for_is_still_one_line(tmp_path):
    """The command line's last guard: a ModuleNotFoundError of an optional package names its extra."""
    out = run_without(
        ["optuna"],
        """
        import contextlib, io, json
        import recsys.cli.models
        from recsys.cli import main

        def needs_optuna(args):  # stands for a command that imports an optional package without asking first
            import optuna  # noqa: F401

        recsys.cli.models.cmd_models = needs_optuna
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            status = main(["models"])
        print(json.dumps([status, err.getvalue()]))
        """,
        tmp_path,
    )
    line = 'error: recsys models needs the experiments extra (optuna is not installed): pip install "recsys-pamela[experiments]"\n'
    assert out == [2, line]


def test_install_commands_and_reasons(monkeypatch):
    assert install_command("deep") == 'pip install "recsys-pamela[deep]"'
    with pytest.raises(KeyError, match="unknown extra 'gpu'"):
        install_command("gpu")
    assert extra_providing("torch.nn.functional") == "deep" and extra_providing("numpy") is None
    assert extra_providing(None) is None
    monkeypatch.setattr("recsys.extras._installed", lambda module: module not in {"implicit", "lightfm"})
    assert missing_reason("deep", "x") is None and unavailable_reason("two_tower") is None
    assert missing_reason("implicit", "als") == (
        'als needs the implicit extra (implicit, lightfm are not installed): pip install "recsys-pamela[implicit]"'
    )
    assert unavailable_reason("bpr") == missing_reason("implicit", "bpr")
    with pytest.raises(MissingExtra, match=r"^lightfm needs .*\[implicit\]\"; or else$") as raised:
        require("implicit", "lightfm", "; or else")
    assert isinstance(raised.value, MissingExtra)


def test_a_lazy_module_imports_on_first_use_and_names_the_extra_when_missing(monkeypatch):
    lazy = LazyModule("deep", "json", "reading")
    assert "not imported yet" in repr(lazy)
    assert lazy.dumps([1]) == "[1]" and "imported" in repr(lazy)
    monkeypatch.setattr("recsys.extras._installed", lambda module: module != "faiss")
    with pytest.raises(MissingExtra, match=r"^the index needs the faiss extra \(faiss is not installed\)"):
        LazyModule("faiss", "faiss", "the index").IndexFlatIP(4)
