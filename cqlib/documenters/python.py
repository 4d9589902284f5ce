"""Python: documented by the standard library's own parser (ast), by pattern where it fails.

Owns: PYTHON (its Language record), the ast documenter (module docstring; classes, functions
and methods with signatures, docstrings and their class; imports, relative ones with their
dots), and keeping this interpreter's parser from crashing the process.
Must not: walk function bodies (nested helpers are implementation detail, and walking every
statement of every body doubles the time per file).
"""

from __future__ import annotations

import sys

from cqlib.documenters.language import Deadline, Language, OverBudget, ParserCrash, entry

# CPython 3.9 and 3.10 overflow the C stack (a segfault) in ast.parse on very long chains such
# as 1+1+...+1 (measured: 100,000 terms parse, 120,000 crash with an 8 MiB stack).  A file
# with fewer chain characters than this cannot hold such a chain; one with more is tried in a
# child process first.
PARSER_CHAIN_LIMIT = 10_000
CHAIN_CHARACTERS = "+-*/%@&|^.([~<>"


def document_python(text: str, lines: list[str], deadline: Deadline) -> tuple[str, list[dict]]:
    """Document Python with ast: docstrings, classes, functions, methods, imports."""
    import ast

    if parser_may_crash(text) and not parses_in_a_child(text, deadline):
        raise ParserCrash(f"Python {sys.version_info[0]}.{sys.version_info[1]}'s parser "
                          "crashes on this file; only its names were kept")
    tree = ast.parse(text)
    entries = []
    summary = ast.get_docstring(tree) or ""

    def visit(node, owner: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                bases = ", ".join(ast.unparse(b) for b in child.bases)
                entries.append(entry("class", child.name, child.lineno,
                                     f"class {child.name}({bases})" if bases else
                                     f"class {child.name}", ast.get_docstring(child),
                                     owner or ""))
                visit(child, f"{owner}.{child.name}" if owner else child.name)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                prefix = "async def" if isinstance(child, ast.AsyncFunctionDef) else "def"
                returns = f" -> {ast.unparse(child.returns)}" if child.returns else ""
                qual = f"{owner}.{child.name}" if owner else child.name
                entries.append(entry("method" if owner else "function", child.name,
                                     child.lineno,
                                     f"{prefix} {qual}({ast.unparse(child.args)}){returns}",
                                     ast.get_docstring(child), owner or ""))
            elif isinstance(child, (ast.Import, ast.ImportFrom)):
                if owner is None:
                    entries.extend(import_entries(child))
            elif isinstance(child, (ast.If, ast.Try, ast.With)):
                visit(child, owner)

    visit(tree, None)
    return summary, entries


def import_entries(node) -> list[dict]:
    """One entry per imported name; relative imports keep their dots (from . import x: .x)."""
    module = getattr(node, "module", None) or ""
    base = "." * getattr(node, "level", 0) + module
    names = [f"{base}.{a.name}" if module else f"{base}{a.name}" for a in node.names]
    return [entry("import", name, node.lineno, f"import {name}") for name in names]


def parser_may_crash(text: str) -> bool:
    """True if this interpreter's ast.parse could overflow the C stack on text."""
    return sys.version_info < (3, 11) and \
        sum(map(text.count, CHAIN_CHARACTERS)) > PARSER_CHAIN_LIMIT


def parses_in_a_child(text: str, deadline: Deadline) -> bool:
    """Parse text in a child process (on a thread with half the usual stack, for a margin);
    False if the parser crashed there.  A syntax error is not a crash."""
    import subprocess
    import time

    script = ("import ast, sys, threading\nthreading.stack_size(4 << 20)\n"
              "source = sys.stdin.buffer.read()\n"
              "t = threading.Thread(target=ast.parse, args=(source,)); t.start(); t.join()\n")
    try:
        proc = subprocess.run([sys.executable, "-I", "-S", "-c", script], check=False,
                              input=text.encode(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=max(deadline.at - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired as exc:
        raise OverBudget(f"took more than {deadline.seconds:g}s to parse; only its names "
                         "were kept") from exc
    return proc.returncode >= 0


PYTHON = Language(
    "python", extensions=(".py", ".pyi"), aliases=("py",), interpreters=("python",),
    comments=("#",), document=document_python,
    rules=(  # only where ast cannot parse the file
        ("class", r"class (?P<name>[A-Za-z_]\w*)", "any"),
        ("function", r"(?:async )?def (?P<name>[A-Za-z_]\w*)", "any"),
    ))

LANGUAGES = (PYTHON,)  # what this family adds to the table in __init__.py
