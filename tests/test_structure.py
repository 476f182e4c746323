"""The package's shape: no import cycle among lasegm's modules (lazy imports inside functions included), and
nothing outside the package reaches into the checkout's layout with sys.path."""

import ast
import re
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "lasegm"


def lasegm_imports(path: Path) -> set[str]:
    """The lasegm modules a file imports anywhere in it (top level or inside a function)."""
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "lasegm":
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lasegm."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("lasegm.")}
    return found


def test_no_import_cycle_in_the_package():
    graph = {p.stem: lasegm_imports(p) - {p.stem} for p in PACKAGE.glob("*.py")}
    assert {"export", "onnx_export", "runtime", "models"} <= set(graph)

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for d in graph.get(todo.pop(), ()):
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        return seen

    cycles = sorted(m for m in graph if m in reachable(m))
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_scripts_import_the_installed_package_not_the_checkout():
    """Demo, benchmark and scripts run against `pip install .`: no sys.path edits (docs/experiments/ holds one-off
    probes of past research, not maintained scripts)."""
    offenders = [str(p.relative_to(REPO)) for folder in ("lasegm", "demo", "benchmarks", "docs")
                 for p in (REPO / folder).rglob("*.py")
                 if "sys.path" in p.read_text() and "experiments" not in p.relative_to(REPO).parts]
    assert not offenders, offenders


def test_every_third_party_import_of_the_package_is_declared():
    """pip install . (with the extra a module belongs to) gives every package lasegm imports."""
    import sys
    import tomllib
    from importlib.metadata import packages_distributions

    def normal(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + [s for extra in project["optional-dependencies"].values() for s in extra]
    declared = {normal(re.match(r"[A-Za-z0-9._-]+", s).group(0)) for s in specs}
    dists = packages_distributions()
    imported = set()
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            imported |= {n.split(".")[0] for n in names}
    third_party = imported - set(sys.stdlib_module_names) - {"lasegm"}
    missing = {m: dists.get(m, [m]) for m in third_party if not {normal(d) for d in dists.get(m, [m])} & declared}
    assert not missing, f"imported by lasegm but not declared in pyproject.toml: {missing}"
