"""What a built-in documenter is made of: the Language record, the entry it makes, its budget.

Owns: `Language` (everything cq knows of one language, so that adding one is one record in one
file of its family), `Blocks` (how a language's definitions are delimited, for their extent),
`entry()` (the one shape of a searchable definition, heading or import, with its first and
last line), the kinds that count as definitions, and the time budget of documenting one file.
Must not: know any particular language (the family modules do), read files or touch storage.
"""

from __future__ import annotations

import time
from collections import namedtuple

DOC_COMMENT_MAX_CHARS = 4000  # a doc comment keeps its first part: the summary comes first
LONGEST_LINE_MATCHED = 500  # longer lines (minified, generated) are not definitions


class Blocks(namedtuple("Blocks", ("indent", "strings", "long_strings", "chars", "directives",
                                   "heredocs", "regexes"),
                         defaults=(False, '"', "", False, False, False, False))):
    """How a language's definitions are delimited, for where each ends (see extent.py).

    indent: a body is the lines indented under its first (Python); else a body is in braces,
    read past what could hold a brace that is not one: strings (the quotes of strings that
    end with their line, and long_strings, of strings that may span lines), character
    literals (chars: `'{'`, told from Rust's lifetimes by their closing quote), preprocessor
    lines (directives: C's `#define`, continued by a backslash), heredocs (shell) and regular
    expression literals (regexes: JavaScript's `/{/`).  The language's comments are skipped
    too."""

    __slots__ = ()


class Language(namedtuple("Language", ("name", "extensions", "aliases", "interpreters",
                                       "comments", "rules", "separator", "document", "blocks",
                                       "split_heads"),
                           defaults=((), (), (), (), (), ".", None, None, False))):
    """One language: how its files are recognised, how its comments and definitions read, and
    how `--lang` may name it.

    name: as the index and `--lang` name it; extensions: lowercase, with the dot; aliases:
    other names `--lang` and MCP take (`py`, `c++`); interpreters: words of a `#!` line that
    name it (a script with no extension); comments: line comment prefixes, "/*" meaning
    block comments too; separator: between a container and a name as people write it
    (`Regex::replace`).

    rules are the pattern documenter's (see patterns.py): each (kind, a pattern matched at
    the start of a line with its runs of white space made single spaces, or a function of
    that line; where it applies: "any" line, "top" for unindented lines, "member" for lines
    directly in a class, interface or object body).  document, where set, documents the
    whole text instead (text, its lines, a Deadline -> summary, entries), and the rules
    then find definitions by pattern only where it fails on a syntax error.  A rule whose
    name group matches nothing (`const \\((?P<name>)`) opens a group: each line up to the
    `)` that closes it defines the names it starts with (Go's `const (` and `var (`).
    blocks (a Blocks) tells where the definitions the rules find end; without it each ends
    on its own line.  split_heads: a definition's first line may be cut in two, its
    return type on an unindented line of its own (C's `static int` then `name (args)`):
    a line no rule matches is tried again joined to such a line above it.  (A namedtuple,
    not typing's: `cq search` imports this module, and typing costs it 4 ms.)"""

    __slots__ = ()


def entry(kind: str, name: str, line: int, signature: str = "", doc: str = "",
          container: str = "", end: int = 0) -> dict:
    """One searchable record of a file's documentation; container is what it is defined in
    (`Builder` for `Builder.WriteString`, `strings` for Go's `strings.Builder`); line and end
    its first and last line (1-based, inclusive: end is line where no more is known)."""
    return {"kind": kind, "name": name, "line": line, "end": max(end, line),
            "signature": signature.strip(), "doc": without_own_name((doc or "").strip(), name),
            "container": container}


def without_own_name(doc: str, name: str) -> str:
    """A doc comment without the heading that only repeats its definition's name, as C's
    often open (`LZ4_compressBound() :`, kernel-doc's `foo() - Frees a foo`): what it says
    about the name is the doc."""
    if not name or not doc.startswith(name):
        return doc
    first, _, rest = doc.partition("\n")
    heading = first[len(name):].lstrip()
    if heading.startswith("()"):
        heading = heading[2:].lstrip()
    if heading[:1].isalnum() or heading[:1] in ("_", ".", "(") or heading.startswith("->"):
        return doc  # a longer name, a sentence, a call or a signature
    said = heading.lstrip(":-\u2013 ").strip()
    return f"{said}\n{rest}".strip() if said else rest.strip()


class OverBudget(Exception):
    """Documenting one file took longer than its time budget."""


class ParserCrash(Exception):
    """This interpreter's parser would crash on the file."""


class Deadline:
    """The time budget for documenting one file, checked between lines of pure Python work
    (a regular expression or ast.parse call cannot be interrupted, so each stays linear)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def check(self) -> None:
        """Raise OverBudget once the budget is spent."""
        if time.monotonic() > self.at:
            raise OverBudget(f"took more than {self.seconds:g}s to document; only its names "
                             "were kept")
