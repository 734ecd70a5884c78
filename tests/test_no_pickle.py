"""Nothing a user saves or loads goes through pickle: a static check of every module of the suite."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("recsys", "features", "experiments")
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "shelve", "marshal", "cloudpickle"}


def _modules():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def _keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    where = path.relative_to(ROOT)
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                if name.split(".")[0] in UNSAFE_MODULES:
                    problems.append(f"{where}:{node.lineno} imports {name}")
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
        method = node.func.attr
        if owner == "np" and method == "load":
            value = _keyword(node, "allow_pickle")
            if not (isinstance(value, ast.Constant) and value.value is False):
                problems.append(f"{where}:{node.lineno} np.load without allow_pickle=False")
        if owner == "torch" and method == "load":
            value = _keyword(node, "weights_only")
            if not (isinstance(value, ast.Constant) and value.value is True):
                problems.append(f"{where}:{node.lineno} torch.load without weights_only=True")
        if owner == "pd" and method == "read_pickle":
            problems.append(f"{where}:{node.lineno} pandas.read_pickle")
    return problems


def test_no_module_unpickles():
    problems = [p for path in _modules() for p in _problems(path)]
    assert not problems, "\n".join(problems)


def test_the_check_finds_what_it_looks_for(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle\nimport numpy as np\nimport torch\n"
        "np.load('x.npz')\ntorch.load('m.pt')\ntorch.load('m.pt', weights_only=False)\n"
    )
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        found = _problems(bad)
    finally:
        ROOT = saved
    assert len(found) == 4, found
