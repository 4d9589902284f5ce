"""The layout of the source: cq.py over the cqlib package, one module per concern, each
importing only those above it in the map that opens cq.py."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest
from conftest import ROOT

MODULES = sorted(ROOT.glob("cqlib/**/*.py"))
# SQL a string of the code may hold (docstrings aside): only the index package runs any.
SQL = re.compile(r"\b(SELECT|INSERT INTO|DELETE FROM|UPDATE \w+ SET|CREATE (TABLE|INDEX|"
                 r"VIRTUAL TABLE)|PRAGMA)\b")


def module_name(path) -> str:
    """cqlib.index.store for cqlib/index/store.py, cqlib for cqlib/__init__.py."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layers() -> list[str]:
    """The layers of the map in cq.py's docstring, top first: `errors`, ..., `mcp`."""
    doc = ast.get_docstring(ast.parse((ROOT / "cq.py").read_text()))
    return [line.split()[0].rstrip("/") for line in doc.splitlines()
            if re.match(r"  [a-z]+/? +\S", line)]


def layer_of(module: str) -> int:
    """The position in the map of the layer a module belongs to (cqlib itself first)."""
    if module == "cqlib":
        return -1
    return layers().index(module.split(".")[1])


def is_module(name: str) -> bool:
    """Whether a dotted name is a module of cqlib (`from cqlib.documenters import go`)."""
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_of(path) -> list[tuple[str, int]]:
    """(module, line) of every cqlib module a file imports, at any depth of its code."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and \
                node.module.split(".")[0] in ("cqlib", "huey", "sqlite3"):
            found += [(f"{node.module}.{a.name}" if is_module(f"{node.module}.{a.name}")
                       else node.module, node.lineno) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names
                      if a.name.split(".")[0] in ("cqlib", "huey", "sqlite3")]
    return found


def code_strings(path) -> list[tuple[str, int]]:
    """(text, line) of the string literals of a file that are not docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    return [(node.value, node.lineno) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings]


def test_the_map_in_cq_py_names_every_module_of_the_package():
    named = set(layers())
    actual = {module_name(p).split(".")[1] for p in MODULES if module_name(p) != "cqlib"}
    assert named == actual


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_a_module_imports_only_modules_above_it_in_the_map(path):
    mine = layer_of(module_name(path))
    for module, line in imports_of(path):
        if module.split(".")[0] != "cqlib":
            continue
        assert layer_of(module) <= mine, f"{module_name(path)}:{line} imports {module}"


def test_no_module_imports_one_that_imports_it():
    graph = {module_name(p): {m for m, _ in imports_of(p) if m.startswith("cqlib.")}
             for p in MODULES}

    def reaches(start: str, goal: str, seen: set) -> bool:
        return any(m == goal or (m not in seen and not seen.add(m) and reaches(m, goal, seen))
                   for m in graph.get(start, ()))

    cycles = [m for m in graph if reaches(m, m, set())]
    assert cycles == []


def test_only_the_queue_imports_huey():
    users = {module_name(p) for p in [*MODULES, ROOT / "cq.py"]
             if any(m.split(".")[0] == "huey" for m, _ in imports_of(p))}
    assert users == {"cqlib.queue"}


def test_only_the_index_package_holds_sql():
    holders = {f"{module_name(p)}:{line}" for p in [*MODULES, ROOT / "cq.py"]
               for text, line in code_strings(p) if SQL.search(text)
               and not module_name(p).startswith("cqlib.index")}
    assert holders == set()


def test_the_detector_imports_neither_huey_nor_sqlite3():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-I", "-c",
                           f"import sys; sys.path.insert(0, {str(ROOT)!r}); import cqlib.detector"],
                          capture_output=True, text=True, check=True)
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()}
    assert "cqlib.detector" in imported
    assert not {m for m in imported if m.split(".")[0] in ("huey", "sqlite3", "_sqlite3")}


def test_cq_py_is_the_command_line_and_no_module_is_a_house_of_its_own():
    assert len((ROOT / "cq.py").read_text().splitlines()) < 1500
    sizes = {module_name(p): len(p.read_text().splitlines()) for p in MODULES}
    assert {m: n for m, n in sizes.items() if n > 1200} == {}


def test_every_module_says_what_it_owns_and_what_it_must_not_do():
    for path in MODULES:
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if module_name(path) == "cqlib":
            assert "cq.py" in doc
            continue
        assert "Owns:" in doc and "Must not:" in doc, module_name(path)
