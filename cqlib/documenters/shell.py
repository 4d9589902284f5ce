"""Shell scripts (sh, bash, zsh): their functions.

Owns: SHELL (its Language record) and its rules.
Must not: take `#!` lines that name another interpreter (those are that language's).
"""

from __future__ import annotations

from cqlib.documenters.language import Language

SHELL = Language("shell", extensions=(".sh", ".bash", ".zsh"), aliases=("sh", "bash", "zsh"),
                 interpreters=("sh", "bash", "zsh"), comments=("#",), rules=(
    ("function", r"function (?P<name>[A-Za-z_][\w:.-]*)", "any"),
    ("function", r"(?P<name>[A-Za-z_][\w:.-]*) ?\(\)", "any"),
))

LANGUAGES = (SHELL,)  # what this family adds to the table in __init__.py
