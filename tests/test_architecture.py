"""The package's shape: no import cycle between modules or packages, every import counted
(function-local ones included, since they are where cycles hide)."""

import ast
from pathlib import Path

import mclnf_dist

ROOT = Path(mclnf_dist.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the ``mclnf_dist`` modules it imports anywhere in its body."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [
                    f"{node.module}.{a.name}"
                    if f"{node.module}.{a.name}" in modules
                    else node.module
                    for a in node.names
                ]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or (ROOT / parts[-1]).is_dir() else "mclnf_dist"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path, or None (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_module_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_package_import_cycle():
    """Dependencies between packages point one way (entry points -> sweeps -> jobs -> ...)."""
    packages: dict[str, set[str]] = {}
    for module, imports in import_graph().items():
        source = package_of(module)
        packages.setdefault(source, set())
        if source == "mclnf_dist":
            continue  # top-level helpers (config, storage, errors, cli) sit below or above all
        packages[source].update(
            package_of(m) for m in imports if package_of(m) not in (source, "mclnf_dist")
        )
    cycle = find_cycle(packages)
    assert cycle is None, "package cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_top_level_helpers_sit_below_every_package():
    """``config``, ``storage``, ``runtime``, ... are imported by the packages, so they import no
    package themselves (a top-level module importing ``jobs`` while ``jobs`` imports it is a
    cycle the package check above cannot see). ``cli`` reaches the entry points by name only."""
    graph = import_graph()
    upward = {
        module: sorted(t for t in targets if package_of(t) != "mclnf_dist")
        for module, targets in graph.items()
        if package_of(module) == "mclnf_dist" and module != "mclnf_dist"
    }
    assert {m: t for m, t in upward.items() if t} == {}


def test_only_entry_points_import_the_jobs():
    """``jobs/`` holds the entry points' code; the library (``sweeps/`` included) and the
    benchmarks import the library, not a job."""
    graph = import_graph()
    library = {
        module: sorted(t for t in targets if package_of(t) == "mclnf_dist.jobs")
        for module, targets in graph.items()
        if package_of(module) not in ("mclnf_dist.jobs", "mclnf_dist")
    }
    assert {m: t for m, t in library.items() if t} == {}
    benches = sorted((ROOT.parent / "bench").glob("*.py"))
    assert benches and not [b.name for b in benches if "mclnf_dist.jobs" in b.read_text()]


LAYERS = {
    "mclnf_dist.sweeps": 7,
    "mclnf_dist.jobs": 6,
    "mclnf_dist.experiments": 5,
    "mclnf_dist.city": 4,
    "mclnf_dist.distributed": 3,
    "mclnf_dist.evaluation": 3,
    "mclnf_dist.meta": 2,
    "mclnf_dist.nerf": 2,
    "mclnf_dist.raystore": 2,
    "mclnf_dist.scenes": 2,
    "mclnf_dist.signals": 2,
    "mclnf_dist.fields": 1,
    "mclnf_dist.cameras": 1,
    "mclnf_dist": 0,
}
"""The README's architecture picture as ranks: a package imports only packages of its own rank
or below (its own rank: the packages drawn side by side, kept acyclic by the test above)."""


def against_the_layers(graph: dict[str, set[str]]) -> list[str]:
    """``"a.b -> c.d"`` for every import from a module to a package ranked above its own."""
    return sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if module != "mclnf_dist.cli"  # the command-line dispatcher names the entry points
        for target in targets
        if LAYERS[package_of(target)] > LAYERS[package_of(module)]
    )


def test_every_import_points_down_the_readme_picture():
    graph = import_graph()
    assert set(LAYERS) >= {package_of(m) for m in graph}, "a package the picture does not rank"
    assert against_the_layers(graph) == []
    readme = (ROOT.parent / "README.md").read_text()
    picture = readme[readme.index("## Architecture") :]
    for package in LAYERS:
        if package != "mclnf_dist":
            assert f"{package.split('.')[-1]}/" in picture, package


def test_the_layer_check_sees_an_upward_import():
    graph = {"mclnf_dist.experiments.recipes": {"mclnf_dist.jobs.city"}}
    assert against_the_layers(graph) == ["mclnf_dist.experiments.recipes -> mclnf_dist.jobs.city"]
