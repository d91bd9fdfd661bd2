"""Every third-party module the package, the pipelines and the benches import is declared in
pyproject.toml, so a fresh ``pip install .`` cannot fail at import time on a missing package."""

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("mclnf_dist", "pipelines", "bench")


def normalise(name: str) -> str:
    """PEP 503 name: ``PyYAML`` and ``pyyaml``, ``scikit_image`` and ``scikit-image`` match."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    """Distribution names in ``[project] dependencies`` and every optional group."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for group in project.get("optional-dependencies", {}).values():
        specs += group
    return {normalise(re.match(r"[A-Za-z0-9._-]+", spec).group(0)) for spec in specs}


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every absolute import in ``path`` (function-local ones included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def third_party_imports() -> dict[str, set[str]]:
    """Third-party top-level module -> the files importing it. A script's own folder is on its
    ``sys.path`` (``bench/common.py`` is imported as ``common``), so sibling modules are local."""
    found: dict[str, set[str]] = {}
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            local = {p.stem for p in path.parent.glob("*.py")} | {"mclnf_dist", "pipelines"}
            for name in imported_modules(path) - local - set(sys.stdlib_module_names):
                found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_declared():
    distributions = packages_distributions()
    wanted = declared()
    missing = {}
    for module, files in third_party_imports().items():
        candidates = {normalise(d) for d in distributions.get(module, [module])}
        if not candidates & wanted:
            missing[module] = (sorted(candidates), sorted(files))
    assert not missing, f"imported but not in pyproject.toml: {missing}"


def test_the_walk_sees_the_imports_it_must_check():
    """Guards the test above against passing vacuously (e.g. a broken walk finding nothing)."""
    found = third_party_imports()
    assert {"torch", "ray", "numpy", "fsspec", "PIL", "yaml", "scipy"} <= set(found)
    assert "common" not in found and "mclnf_dist" not in found and "json" not in found
    assert "pyyaml" in declared() and "pillow" in declared()
