"""The import graph of lens/ and saes/ (every import, at any depth, read with `ast`): no cycle between files or
between packages, and data flows one way (core -> studies -> CLI; saes on the core only, never on studies; lens.hybrid
imports saes only inside functions)."""

from __future__ import annotations

import ast
import collections
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# File cycles known today, each with the fix it needs (a new cycle fails the test).
KNOWN_FILE_CYCLES: set[frozenset[str]] = set()  # none: a cycle between two files fails
# What each package group may import besides itself and the core ("lens": the top-level modules, and
# lens.organism's import-light __init__ with the bundled models' paths). Anything else fails.
ALLOWED = {
    "lens": set(),
    "lens.organism": {"lens.interventions"},  # its evaluation steers through the engine
    "lens.evaluation": set(),
    "lens.interventions": set(),
    "lens.directions": {"lens.interventions"},
    "lens.decoding": {"lens.evaluation", "lens.interventions"},
    "lens.rl": {"lens.decoding", "lens.evaluation", "lens.organism"},
    # saes: the taxonomy selector (lens.hybrid.selectors) fits a saes taxonomy, imported inside the function only
    "lens.hybrid": {"lens.decoding", "lens.directions", "lens.evaluation", "lens.interventions", "saes"},
    "saes": {"lens.decoding", "lens.evaluation", "lens.interventions"},
    "lens.dashboards": set(),
    "lens.studies": {"lens.dashboards", "lens.decoding", "lens.directions", "lens.evaluation", "lens.hybrid",
                     "lens.interventions", "lens.organism", "lens.rl", "saes"},
    "lens.cli": {"lens.dashboards", "lens.decoding", "lens.directions", "lens.evaluation", "lens.hybrid",
                 "lens.interventions", "lens.organism", "lens.rl", "lens.studies", "saes"},
}


def modules() -> dict[str, Path]:
    out = {}
    for p in sorted([*ROOT.glob("lens/**/*.py"), *ROOT.glob("saes/**/*.py")]):
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The lens/saes modules `name` imports, anywhere in the file (not under `if TYPE_CHECKING`), ancestors left out."""
    found: set[str] = set()
    skip: set[int] = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if _type_checking(node):
            skip |= {id(n) for n in ast.walk(node)}
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, len(name.split(".")))}
    return {m for m in found if m in mods and m != name and m not in ancestors}


def group(m: str) -> str:
    parts = m.split(".")
    if parts[0] == "saes":
        return "saes"
    if m == "lens.organism":  # the import-light __init__: paths of the bundled models and data
        return "lens"
    if len(parts) >= 2 and (ROOT / "lens" / parts[1]).is_dir():
        return f"lens.{parts[1]}"
    return "lens"


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(m, p, mods) for m, p in mods.items()}


def test_no_import_cycle_between_files():
    found = set(cycles(graph()))
    assert found <= KNOWN_FILE_CYCLES, sorted(map(sorted, found - KNOWN_FILE_CYCLES))


def test_packages_import_only_downward_and_never_in_a_cycle():
    g = graph()
    edges = collections.defaultdict(set)
    for a, targets in g.items():
        for b in targets:
            if b == "lens":  # the facade re-exports lazily; a module importing `lens` itself is not a layer edge
                continue
            ga, gb = group(a), group(b)
            if ga != gb and gb != "lens":
                edges[ga].add(gb)
                assert gb in ALLOWED.get(ga, set()), f"{a} imports {b}: {ga} may not depend on {gb}"
    assert not cycles(edges), cycles(edges)


def test_the_facade_imports_saes_only_lazily():
    init = (ROOT / "lens" / "__init__.py").read_text()
    top = [n for n in ast.parse(init).body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not any("saes" in ast.unparse(n) for n in top)


def test_lens_packages_below_studies_import_saes_only_inside_functions():
    """lens.hybrid's taxonomy selector uses saes; importing lens.hybrid must not import saes."""
    for name, path in modules().items():
        if not name.startswith("lens.") or group(name) in ("lens.studies", "lens.cli"):
            continue
        top = [n for n in ast.parse(path.read_text()).body if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert not any(ast.unparse(n).split()[1].split(".")[0] == "saes" for n in top), name
