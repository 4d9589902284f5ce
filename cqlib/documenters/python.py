"""Python: documented by the standard library's own parser (ast), by pattern where it fails.

Owns: PYTHON (its Language record), the ast documenter (module docstring, past a licence;
classes with their attributes' names, functions and methods with signatures, docstrings and
their class; module-level constants and variables and UPPER_CASE class attributes, with the
assignment's line and the comment above or string below as doc; imports, relative ones with
their dots; each with its last line), and keeping this interpreter's parser from crashing
the process.
Must not: walk function bodies (nested helpers and locals are implementation detail, and
walking every statement of every body doubles the time per file), but for the statements of
`__init__` that set the attributes a class is found by (class_members).
"""

from __future__ import annotations

import sys

from cqlib.documenters.language import (
    DOC_COMMENT_MAX_CHARS,
    Blocks,
    Deadline,
    Language,
    OverBudget,
    ParserCrash,
    entry,
)
from cqlib.documenters.patterns import without_boilerplate

# CPython 3.9 and 3.10 overflow the C stack (a segfault) in ast.parse on very long chains such
# as 1+1+...+1 (measured: 100,000 terms parse, 120,000 crash with an 8 MiB stack).  A file
# with fewer chain characters than this cannot hold such a chain; one with more is tried in a
# child process first.
PARSER_CHAIN_LIMIT = 10_000
CHAIN_CHARACTERS = "+-*/%@&|^.([~<>"
# Assigned names that define nothing: a throwaway, and the list of a module's public names.
NOT_DEFINED = frozenset({"_", "__all__"})
INITIALISERS = ("__init__", "__post_init__")  # the methods that set a class's attributes
MEMBERS_MAX = 64  # attribute names a class is found by
# What an assignment's pattern (where ast fails) must not take for a name: `else: x = 1`.
KEYWORDS = r"(?!(?:else|try|except|finally|lambda|return|yield|assert|del|_|__all__)\b)"


def document_python(text: str, lines: list[str], deadline: Deadline) -> tuple[str, list[dict]]:
    """Document Python with ast: docstrings, classes, functions, methods, constants,
    variables, imports."""
    import ast

    if parser_may_crash(text) and not parses_in_a_child(text, deadline):
        raise ParserCrash(f"Python {sys.version_info[0]}.{sys.version_info[1]}'s parser "
                          "crashes on this file; only its names were kept")
    tree = ast.parse(text)
    entries: list[dict] = []
    summary = "\n".join(without_boilerplate((ast.get_docstring(tree) or "").split("\n")))
    above: dict = {}  # line -> (signature, doc) of the assignments there

    def visit(node, owner: str | None) -> None:
        assigned: list[dict] = []  # the entries of the statement before, for a string after it
        for child in ast.iter_child_nodes(node):
            end = getattr(child, "end_lineno", None) or getattr(child, "lineno", 0)
            if isinstance(child, ast.ClassDef):
                bases = ", ".join(ast.unparse(b) for b in child.bases)
                entries.append(entry("class", child.name, child.lineno,
                                     f"class {child.name}({bases})" if bases else
                                     f"class {child.name}", ast.get_docstring(child),
                                     owner or "", end))
                entries[-1]["members"] = class_members(child)
                visit(child, f"{owner}.{child.name}" if owner else child.name)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                prefix = "async def" if isinstance(child, ast.AsyncFunctionDef) else "def"
                returns = f" -> {ast.unparse(child.returns)}" if child.returns else ""
                qual = f"{owner}.{child.name}" if owner else child.name
                entries.append(entry("method" if owner else "function", child.name,
                                     child.lineno,
                                     f"{prefix} {qual}({ast.unparse(child.args)}){returns}",
                                     ast.get_docstring(child), owner or "", end))
            elif isinstance(child, (ast.Import, ast.ImportFrom)):
                if owner is None:
                    entries.extend(import_entries(child))
            elif isinstance(child, (ast.Assign, ast.AnnAssign)):
                assigned = assignment_entries(child, owner, lines, end, above)
                entries.extend(assigned)
                continue
            elif isinstance(child, ast.Expr) and isinstance(child.value, ast.Constant) and \
                    isinstance(child.value.value, str):
                for e in assigned:  # a string under an assignment documents it
                    e["doc"] = e["doc"] or child.value.value.strip()[:DOC_COMMENT_MAX_CHARS]
            elif isinstance(child, (ast.If, ast.Try, ast.With)) and not runs_as_script(child):
                visit(child, owner)
            assigned = []

    visit(tree, None)
    return summary, entries


def class_members(node) -> str:
    """The names of a class's attributes, as the words it is found by: those its body
    assigns (dataclass and NamedTuple fields too) and those `__init__` sets on `self` in its
    own statements (not in nested blocks: an attribute is set where the object is made)."""
    import ast

    names: dict = {}
    for statement in node.body:
        if isinstance(statement, (ast.Assign, ast.AnnAssign)):
            targets = statement.targets if isinstance(statement, ast.Assign) \
                else [statement.target]
            names.update(dict.fromkeys(name for target in targets
                                       for name in assigned_names(target)))
        elif isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                statement.name in INITIALISERS:
            for line in statement.body:
                targets = line.targets if isinstance(line, ast.Assign) else \
                    [line.target] if isinstance(line, (ast.AnnAssign, ast.AugAssign)) else []
                names.update(dict.fromkeys(
                    target.attr for target in targets if isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name) and target.value.id == "self"))
    return " ".join(name for name in list(names)[:MEMBERS_MAX] if name not in NOT_DEFINED)


def runs_as_script(node) -> bool:
    """True for `if __name__ == "__main__":`, whose names are a script's locals."""
    import ast

    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and isinstance(test, ast.Compare) and \
        isinstance(test.left, ast.Name) and test.left.id == "__name__"


def assignment_entries(node, owner: str | None, lines: list[str], end: int,
                       above: dict) -> list[dict]:
    """The names an assignment defines: every name it assigns at module level (a constant
    if UPPER_CASE, else a variable), the UPPER_CASE ones in a class; each with the
    assignment's first line as signature and the comment above it as doc (worked out once
    a line, in `above`, however many statements share it)."""
    import ast

    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    names = [name for target in targets for name in assigned_names(target)
             if name not in NOT_DEFINED and (owner is None or name.isupper())]
    if not names:
        return []
    if node.lineno not in above:
        line = lines[node.lineno - 1] if node.lineno <= len(lines) else ""
        above[node.lineno] = (line[:1000].strip()[:200], comment_above(lines, node.lineno - 1))
    signature, doc = above[node.lineno]
    return [entry("constant" if name.isupper() else "variable", name, node.lineno,
                  signature, doc, owner or "", end) for name in names]


def assigned_names(target) -> list[str]:
    """The plain names a target assigns (`a`, and each of `a, (b, *c)`); none for an
    attribute or an item."""
    import ast

    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, ast.Starred):
        return assigned_names(target.value)
    if isinstance(target, (ast.Tuple, ast.List)):
        return [name for element in target.elts for name in assigned_names(element)]
    return []


def comment_above(lines: list[str], index: int) -> str:
    """The `#` comment lines directly above line `index` (`#:` as Sphinx writes them too),
    at most DOC_COMMENT_MAX_CHARS of them."""
    found, size, above = [], 0, index - 1
    while 0 <= above < len(lines) and size < DOC_COMMENT_MAX_CHARS:
        stripped = lines[above].strip()
        if not stripped.startswith("#") or stripped.startswith("#!"):
            break
        found.append(stripped.lstrip("#:").strip())
        size += len(found[-1]) + 1
        above -= 1
    return "\n".join(reversed(found)).strip()


def import_entries(node) -> list[dict]:
    """One entry per imported name; relative imports keep their dots (from . import x: .x)."""
    module = getattr(node, "module", None) or ""
    base = "." * getattr(node, "level", 0) + module
    names = [f"{base}.{a.name}" if module else f"{base}{a.name}" for a in node.names]
    end = getattr(node, "end_lineno", None) or node.lineno
    return [entry("import", name, node.lineno, f"import {name}", end=end) for name in names]


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
    comments=("#",), document=document_python, blocks=Blocks(indent=True),
    rules=(  # only where ast cannot parse the file
        ("class", r"class (?P<name>[A-Za-z_]\w*)", "any"),
        ("function", r"(?:async )?def (?P<name>[A-Za-z_]\w*)", "any"),
        ("constant", rf"{KEYWORDS}(?P<name>_*[A-Z][A-Z0-9_]*) ?(?::[^=]*)?=(?!=)", "top"),
        ("variable", rf"{KEYWORDS}(?P<name>[A-Za-z_]\w*) ?(?::[^=]*)?=(?!=)", "top"),
    ))

LANGUAGES = (PYTHON,)  # what this family adds to the table in __init__.py
