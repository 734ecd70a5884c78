"""Every third-party package the suite imports is declared in pyproject.toml, each with a lower bound.

The imports are read statically (every ``import x`` / ``from x import y``, function-level ones included) from
the installed packages (recsys, features, experiments: declared in ``dependencies`` or an extra), the tests
(``dependencies`` or what ``[dev]`` installs) and the benchmarks (anywhere in pyproject). An import name is
mapped to its distribution by the installed metadata (``importlib.metadata.packages_distributions``), else by
``DISTRIBUTIONS`` (for an extra not installed here), else it is its own name.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: folder -> where its imports must be declared: "package" (dependencies or an extra but dev), "dev" (what
#: ``[dev]`` installs), "any" (anywhere)
SOURCES = {
    "recsys": "package",
    "features": "package",
    "experiments": "package",
    "tests": "dev",
    "benchmarks": "any",
}
#: import name -> distribution, where they differ, for packages that need not be installed here
DISTRIBUTIONS = {
    "PIL": "pillow",
    "sklearn": "scikit-learn",
    "faiss": "faiss-cpu",
    "open_clip": "open_clip_torch",
    "lightfm": "rectools-lightfm",
    "surprise": "scikit-surprise",
    "psycopg2": "psycopg2-binary",
}
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?\s*(.*)$")


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them (``Open_CLIP.torch`` -> ``open-clip-torch``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirement(text: str) -> tuple[str, list[str], str]:
    """(normalised name, extras, the rest: version specifiers and markers) of a requirement string."""
    match = _REQUIREMENT.match(text)
    assert match, f"cannot read requirement {text!r}"
    name, extras, rest = match.groups()
    return normalise(name), [e.strip() for e in (extras or "").split(",") if e.strip()], rest.strip()


def declared(project: dict, groups: list[str] | None) -> set[str]:
    """Distributions that installing the project with ``groups`` (None: every extra) brings in, the project's
    own extras followed (``recsys-pamela[all]``)."""
    extras = project.get("optional-dependencies", {})
    own = normalise(project["name"])
    todo = list(extras) if groups is None else list(groups)
    names = {parse_requirement(r)[0] for r in project.get("dependencies", [])}
    seen: set[str] = set()
    while todo:
        group = todo.pop()
        if group in seen:
            continue
        seen.add(group)
        for requirement in extras[group]:
            name, wanted, _ = parse_requirement(requirement)
            if name == own:
                todo += wanted
            else:
                names.add(name)
    return names


def imported_modules(source: str) -> set[str]:
    """Top-level names of the absolute imports of a Python source."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.partition(".")[0])
    return names


def local_modules(root: Path) -> set[str]:
    """Names the suite's own files can be imported by: its folders and every module file's stem (pytest puts
    test folders on the path, so ``from test_api import ...`` is local)."""
    return set(SOURCES) | {path.stem for folder in SOURCES for path in (root / folder).rglob("*.py")}


def distributions_of(module: str, installed: dict[str, list[str]]) -> set[str]:
    """Every distribution that provides the import name ``module``."""
    if module in installed:
        return {normalise(d) for d in installed[module]}
    return {normalise(DISTRIBUTIONS.get(module, module))}


def undeclared_imports(root: Path, project: dict, installed: dict[str, list[str]]) -> list[str]:
    """``file: module (distribution)`` for each import whose distribution the file's rule does not declare."""
    extras = [group for group in project.get("optional-dependencies", {}) if group != "dev"]
    allowed = {
        "package": declared(project, extras),
        "dev": declared(project, ["dev"]),
        "any": declared(project, None),
    }
    local = local_modules(root) | set(sys.stdlib_module_names) | {"__future__"}
    problems = []
    for folder, rule in SOURCES.items():
        for path in sorted((root / folder).rglob("*.py")):
            for module in sorted(imported_modules(path.read_text()) - local):
                providers = distributions_of(module, installed)
                if not providers & allowed[rule]:
                    name = " or ".join(sorted(providers))
                    problems.append(f"{path.relative_to(root)}: {module} ({name}) is not declared for {rule}")
    return problems


def unbounded(project: dict) -> list[str]:
    """Requirements (but the project's own extras) without a lower bound (``>=`` or ``==``)."""
    own = normalise(project["name"])
    requirements = list(project.get("dependencies", []))
    for group in project.get("optional-dependencies", {}).values():
        requirements += group
    return [r for r in requirements if parse_requirement(r)[0] != own and not re.search(r">=|==|~=", r)]


def _project(root: Path = ROOT) -> dict:
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]


def test_every_imported_package_is_declared():
    problems = undeclared_imports(ROOT, _project(), packages_distributions())
    assert not problems, "imported but not declared in pyproject.toml:\n" + "\n".join(problems)


def test_every_requirement_has_a_lower_bound():
    assert unbounded(_project()) == []


def test_dev_installs_every_extra_of_all():
    project = _project()
    assert (
        declared(project, ["dev"])
        >= declared(project, ["all"])
        >= {"torch", "faiss-cpu", "fastapi", "mlflow"}
    )
    assert "torch" not in declared(project, []) and "faiss-cpu" not in declared(project, [])


def test_the_checker_catches_an_undeclared_import_and_a_missing_bound(tmp_path):
    """A constructed project: yaml imported by a function of the package, httpx by a test but declared for dev
    only in the package's view, a self-referencing extra followed, a requirement without a bound."""
    for folder in SOURCES:
        (tmp_path / folder).mkdir()
    (tmp_path / "recsys/io.py").write_text("import json\n\ndef read():\n    import yaml.safe_load\n")
    (tmp_path / "recsys/serve.py").write_text("from fastapi import FastAPI\nfrom . import io\n")
    (tmp_path / "tests/test_io.py").write_text(
        "import httpx\nimport pytest\nfrom recsys import io\nimport test_io\n"
    )
    project = {
        "name": "recsys_pamela",
        "dependencies": ["numpy>=1.26"],
        "optional-dependencies": {
            "serve": ["FastAPI>=0.110"],
            "all": ["recsys-pamela[serve]"],
            "dev": ["recsys-pamela[all]", "pytest>=8", "httpx"],
        },
    }
    installed: dict[str, list[str]] = {}
    assert undeclared_imports(tmp_path, project, installed) == [
        "recsys/io.py: yaml (yaml) is not declared for package"
    ]
    assert unbounded(project) == ["httpx"]
    assert declared(project, ["dev"]) == {"numpy", "fastapi", "pytest", "httpx"}
    (tmp_path / "recsys/io.py").write_text("import httpx\n")  # a test dependency used by the package
    assert undeclared_imports(tmp_path, project, installed) == [
        "recsys/io.py: httpx (httpx) is not declared for package"
    ]
    assert distributions_of("PIL", {}) == {"pillow"} and distributions_of("PIL", {"PIL": ["Pillow"]}) == {
        "pillow"
    }
