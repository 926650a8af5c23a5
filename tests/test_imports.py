"""The package's import rule, read from the code itself: imports only run downhill.

Every sub-package's ``__init__.py`` docstring ends with a line ``May import: jsplade.a, jsplade.b`` naming
the sub-packages its modules may import (besides their own package). This test reads every import of
every module under ``jsplade/`` — at the top of a module or inside a function, ``import x``,
``from x import y`` and ``importlib.import_module("x")`` alike — and fails on

* an import of a sub-package that the importing module's package may not import (uphill or sideways);
* any cycle between modules, lazy imports included (a lazy import that dodges a cycle is still a cycle).

It also checks that tests use other sub-packages only through their public names.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "jsplade"
TESTS = REPO / "tests"
MAY_IMPORT = re.compile(r"^May import:(.*?)(?:\n\s*\n|\Z)", re.MULTILINE | re.DOTALL)


# ----------------------------------------------------------------------------- reading the tree
def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def imported_names(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of everything a file imports, wherever the import statement stands."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module != "jsplade":  # ``from jsplade import x`` imports x, not the root as such
                found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: relative import; jsplade uses absolute imports only")
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"jsplade(\.\w+)+", node.value):
            found.append((node.lineno, node.value))  # module names held as data (a lazy-import table)
    return found


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """The jsplade module a dotted import name loads (``jsplade.a.b.func`` → ``jsplade.a.b``)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def unit_of(module: str, units: dict[str, set[str]]) -> str:
    """The innermost unit (sub-package or top-level module with a rule) that holds ``module``."""
    best = "jsplade"
    for unit in units:
        if (module == unit or module.startswith(unit + ".")) and len(unit) > len(best):
            best = unit
    return best


def rules(root: Path) -> dict[str, set[str]]:
    """Unit → the units it may import: every sub-package (its ``__init__.py`` docstring) and every module at
    the top of the package (its own docstring) is a unit with a ``May import:`` paragraph."""
    out = {}
    for path in sorted(root.rglob("__init__.py")) + sorted(p for p in root.glob("*.py") if p.name != "__init__.py"):
        unit = module_name(path, root)
        if unit == "jsplade":
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        match = MAY_IMPORT.search(doc)
        if match is None:
            raise AssertionError(f"{path}: the docstring has no 'May import: ...' paragraph")
        names = {n.strip().rstrip(".") for n in match.group(1).replace("\n", " ").split(",")}
        out[unit] = {n for n in names if n and n != "nothing"}
    return out


def check_tree(root: Path) -> list[str]:
    """Every violation of the import rule in the package at ``root`` (empty: the rule holds)."""
    known = modules(root)
    allowed = rules(root)
    problems = []
    graph: dict[str, set[str]] = {m: set() for m in known}
    for mod, path in known.items():
        where = path.relative_to(root.parent)
        own = unit_of(mod, allowed)
        may = allowed.get(own, set())
        for line, name in imported_names(path):
            if not (name == "jsplade" or name.startswith("jsplade.")):
                continue
            target = resolve(name, known)
            if target is None:
                problems.append(f"{where}:{line}: {name} is not a jsplade module")
                continue
            if target == mod:
                continue
            graph[mod].add(target)
            if mod == "jsplade":  # the package root re-exports the public API: it may import anything
                continue
            theirs = unit_of(target, allowed)
            if target == "jsplade" and name == "jsplade.__version__":
                continue  # the version string is the root's own, not an import of the public API
            if target == "jsplade":
                problems.append(f"{where}:{line}: imports the package root (import the defining module instead)")
            elif not (theirs == own or theirs.startswith(own + ".")
                      or any(theirs == a or theirs.startswith(a + ".") for a in may)):
                problems.append(f"{where}:{line}: {own} may not import {target} "
                                f"({own} may import: {', '.join(sorted(may)) or 'nothing'})")
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp) + [sorted(comp)[0]])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


# ----------------------------------------------------------------------------- the tests
def test_imports_run_downhill_and_never_in_a_cycle():
    assert check_tree(PACKAGE) == []


def test_every_sub_package_states_its_role_and_its_rule():
    allowed = rules(PACKAGE)
    assert set(allowed) >= {"jsplade.files", "jsplade.backbones", "jsplade.backbones.layers", "jsplade.checkpoints",
                            "jsplade.splade", "jsplade.training", "jsplade.retrieval", "jsplade.limit", "jsplade.cli"}
    units = set(allowed)
    for unit, may in allowed.items():
        assert may <= units, (unit, may - units)  # a rule names only real units
    # the order the package docstring gives
    assert allowed["jsplade.backbones.layers"] == set()
    assert "jsplade.splade" not in allowed["jsplade.checkpoints"]
    assert not {"jsplade.training", "jsplade.retrieval"} & allowed["jsplade.splade"]
    assert "jsplade.training" not in allowed["jsplade.retrieval"] and "jsplade.retrieval" not in allowed["jsplade.training"]


def test_top_level_holds_at_most_nine_entries():
    entries = sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__")
    assert len(entries) <= 9, entries


def test_root_lazy_names_resolve():
    import jsplade

    for name in jsplade.__all__:
        assert getattr(jsplade, name) is not None, name


def _planted(tmp_path: Path, module: str, line: str) -> list[str]:
    tree = tmp_path / "jsplade"
    shutil.copytree(PACKAGE, tree, ignore=shutil.ignore_patterns("__pycache__"))
    path = tree.joinpath(*module.split(".")[1:]).with_suffix(".py")
    path.write_text(path.read_text(encoding="utf-8") + "\n" + line + "\n", encoding="utf-8")
    return check_tree(tree)


def test_an_uphill_import_is_caught(tmp_path):
    problems = _planted(tmp_path, "jsplade.backbones.gte", "from jsplade.training.trainer import Trainer")
    assert any("jsplade/backbones/gte.py" in p and "jsplade.backbones may not import jsplade.training.trainer" in p
               for p in problems), problems


def test_a_lazy_import_that_closes_a_cycle_is_caught(tmp_path):
    # inside a function, so Python would never notice; the encoder already imports the packing module
    problems = _planted(tmp_path, "jsplade.splade.packing",
                        "def _late():\n    from jsplade.splade.encoder import SparseEncoder\n    return SparseEncoder")
    assert any(p.startswith("import cycle:") and "jsplade.splade.encoder" in p and "jsplade.splade.packing" in p
               for p in problems), problems


def test_a_sideways_import_between_peers_is_caught(tmp_path):
    problems = _planted(tmp_path, "jsplade.retrieval.index", "import jsplade.training.losses")
    assert any("jsplade.retrieval may not import jsplade.training.losses" in p for p in problems), problems


def test_an_import_from_importlib_or_a_layer_reaching_a_model_is_caught(tmp_path):
    problems = _planted(tmp_path, "jsplade.backbones.layers.dense",
                        "import importlib\n_GTE = importlib.import_module('jsplade.backbones.gte')")
    assert any("jsplade.backbones.layers may not import jsplade.backbones.gte" in p for p in problems), problems


# ----------------------------------------------------------------------------- tests use public names
def test_tests_use_other_sub_packages_through_public_names_only():
    """A test file under tests/<unit path>/ may reach private names (``_x``) only of its own unit."""
    known = modules(PACKAGE)
    units = rules(PACKAGE)
    problems = []
    for path in sorted(TESTS.rglob("test_*.py")):
        rel = path.relative_to(TESTS).parent.parts
        home = ".".join(("jsplade",) + rel) if rel else None
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jsplade"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    if full in known:
                        aliases[alias.asname or alias.name] = full
                    elif alias.name.startswith("_"):
                        problems.append((path, node.lineno, f"{node.module}.{alias.name}"))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in known and alias.asname:
                        aliases[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                problems.append((path, node.lineno, f"{aliases[node.value.id]}.{node.attr}"))
        for p, line, name in problems[:]:
            if p != path:
                continue
            unit = unit_of(resolve(name, known) or name, units)
            if home is not None and (unit == home or unit.startswith(home + ".")):
                problems.remove((p, line, name))
    assert not problems, "\n".join(f"{p.relative_to(REPO)}:{line}: private {name}" for p, line, name in problems)
