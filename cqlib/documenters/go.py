"""Go: package, functions, methods with their receiver type, structs, interfaces, types,
constants and package-level variables (one entry a name, in `const (` and `var (` groups too).

Owns: GO (its Language record) and its rules.  The package a file declares is the container
of every definition in it (`strings.Builder`), a method's receiver type that of the method.
Must not: look inside function bodies (only unindented lines, and the lines of a top-level
group, define anything).
"""

from __future__ import annotations

from cqlib.documenters.language import Blocks, Language

NOT_BLANK = r"(?!_\b)"  # `var _ Interface = (*T)(nil)` defines no name
GO = Language("go", extensions=(".go",), aliases=("golang",), comments=("//", "/*"),
              blocks=Blocks(long_strings="`", chars=True), rules=(
    ("package", r"package (?P<name>[A-Za-z_]\w*)", "top"),
    ("method", (r"func \([A-Za-z_]\w* \*?(?P<container>[A-Za-z_]\w*)(?:\[[^\]]*\])?\) ?"
                r"(?P<name>[A-Za-z_]\w*)"), "top"),
    ("method", r"func \([^)]*\) ?(?P<name>[A-Za-z_]\w*)", "top"),
    ("function", r"func (?P<name>[A-Za-z_]\w*)", "top"),
    ("struct", r"type (?P<name>[A-Za-z_]\w*)(?:\[[^\]]*\])? struct\b", "top"),
    ("interface", r"type (?P<name>[A-Za-z_]\w*)(?:\[[^\]]*\])? interface\b", "top"),
    ("type", r"type \((?P<name>)$", "top"),  # a group: its names on the lines that follow
    ("type", r"type (?P<name>[A-Za-z_]\w*)\b", "top"),
    ("constant", r"const \((?P<name>)$", "top"),
    ("constant", rf"const {NOT_BLANK}(?P<name>[A-Za-z_]\w*)", "top"),
    ("variable", r"var \((?P<name>)$", "top"),
    ("variable", rf"var {NOT_BLANK}(?P<name>[A-Za-z_]\w*)", "top"),
))

LANGUAGES = (GO,)  # what this family adds to the table in __init__.py
