"""Shell scripts (sh, bash, zsh): their functions, and the variables they set at the top
(`readonly` ones constants).

Owns: SHELL (its Language record) and its rules.
Must not: take `#!` lines that name another interpreter (those are that language's), or an
indented assignment (in a function or a loop) for a definition.
"""

from __future__ import annotations

from cqlib.documenters.language import Blocks, Language

SHELL = Language("shell", extensions=(".sh", ".bash", ".zsh"), aliases=("sh", "bash", "zsh"),
                 interpreters=("sh", "bash", "zsh"), comments=("#",),
                 blocks=Blocks(strings="", long_strings="\"'", heredocs=True), rules=(
    ("function", r"function (?P<name>[A-Za-z_][\w:.-]*)", "any"),
    ("function", r"(?P<name>[A-Za-z_][\w:.-]*) ?\(\)", "any"),
    ("constant", (r"(?:readonly|declare -r|declare -rx|declare -xr|typeset -r) "
                  r"(?P<name>[A-Za-z_]\w*)"), "top"),
    ("variable", r"(?:export |declare (?:-[a-zA-Z]+ )?)?(?P<name>[A-Za-z_]\w*)=", "top"),
))

LANGUAGES = (SHELL,)  # what this family adds to the table in __init__.py
