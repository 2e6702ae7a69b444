"""The package's layout: no import cycle (function-level imports included), no private name imported
across families, and every subpackage says in its docstring which concept it holds."""

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "jaxland"
FAMILIES = ("model", "data", "paths", "engine", "landscape", "construct", "search", "second_order",
            "theory", "experiments", "alignment")


def _modules() -> dict[str, Path]:
    out = {}
    for f in ROOT.rglob("*.py"):
        rel = f.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _is_package(name: str, mods) -> bool:
    return mods[name].name == "__init__.py"


def _resolve(me: str, node: ast.ImportFrom, mods) -> list[tuple[str, str]]:
    """(module imported, name) pairs for a `from … import …` inside the package."""
    if node.level == 0:
        base = node.module or ""
        if not base.startswith("jaxland"):
            return []
    else:
        pkg = me.split(".") if _is_package(me, mods) else me.split(".")[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([node.module] if node.module else []))
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        out.append((sub if sub in mods else base, alias.name))
    return out


def _graph():
    mods = _modules()
    edges = {m: set() for m in mods}
    private = []
    for me, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                for target, name in _resolve(me, node, mods):
                    assert target in mods, f"{me} imports {target}, which is not a module of jaxland"
                    edges[me].add(target)
                    private.append((me, target, name))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("jaxland"):
                        edges[me].add(alias.name)
    return mods, edges, private


def _family(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in FAMILIES else "<shared>"


def test_no_import_cycle():
    mods, edges, _ = _graph()
    # A package's __init__ imports its modules; a module importing from the package (not from the
    # module) would close a loop through the __init__, which the walk below reports as a cycle.
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(edges[m]):
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(mods):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_cycle_detector_sees_a_planted_cycle(tmp_path, monkeypatch):
    # The walk must be able to fail: plant a function-level import that closes a loop.
    pkg = tmp_path / "jaxland"
    (pkg / "fam").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .fam import _a\n")
    (pkg / "fam" / "__init__.py").write_text("")
    (pkg / "fam" / "_a.py").write_text("from ._b import g\n")
    (pkg / "fam" / "_b.py").write_text("def g():\n    from ._a import x\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", pkg)
    with pytest.raises(AssertionError, match="_a -> jaxland.fam._b -> jaxland.fam._a"):
        test_no_import_cycle()


def test_no_private_name_across_families():
    _, _, imports = _graph()
    bad = sorted(
        f"{me} imports {name} from {target}"
        for me, target, name in imports
        if name.startswith("_") and _family(me) != _family(target)
    )
    assert not bad, "private names imported across families:\n" + "\n".join(bad)


@pytest.mark.parametrize("family", FAMILIES)
def test_subpackage_says_what_it_holds(family):
    mod = importlib.import_module(f"jaxland.{family}")
    assert mod.__doc__ and len(mod.__doc__.split()) >= 8, f"jaxland.{family} needs a docstring"


def test_families_are_exactly_the_subpackages_and_the_readme_lists_them():
    """FAMILIES (what the tests above walk) is every subpackage, and the README's layout table has a
    row for each, so a new family cannot be left out of either."""
    found = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert found == set(FAMILIES), f"subpackages {sorted(found)} != FAMILIES {sorted(FAMILIES)}"
    readme = (ROOT.parent / "README.md").read_text()
    layout = readme.split("## How the code is laid out", 1)[-1].split("\n## ", 1)[0]
    missing = [f for f in FAMILIES if f"| `{f}/` |" not in layout]
    assert not missing, f"README's layout table lacks {missing}"


def test_every_module_has_a_docstring():
    """Every module says what it holds in its first line (the closing note's tree is made of them)."""
    bare = [str(f.relative_to(ROOT.parent)) for f in ROOT.rglob("*.py")
            if not ast.get_docstring(ast.parse(f.read_text()))]
    assert not bare, f"modules without a docstring: {bare}"
