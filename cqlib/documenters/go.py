"""Go: package, functions, methods with their receiver type, structs, interfaces and types.

Owns: GO (its Language record) and its rules.  The package a file declares is the container
of every definition in it (`strings.Builder`), a method's receiver type that of the method.
Must not: look inside function bodies (only unindented lines define anything).
"""

from __future__ import annotations

from cqlib.documenters.language import Language

GO = Language("go", extensions=(".go",), aliases=("golang",), comments=("//", "/*"), rules=(
    ("package", r"package (?P<name>[A-Za-z_]\w*)", "top"),
    ("method", (r"func \([A-Za-z_]\w* \*?(?P<container>[A-Za-z_]\w*)(?:\[[^\]]*\])?\) ?"
                r"(?P<name>[A-Za-z_]\w*)"), "top"),
    ("method", r"func \([^)]*\) ?(?P<name>[A-Za-z_]\w*)", "top"),
    ("function", r"func (?P<name>[A-Za-z_]\w*)", "top"),
    ("struct", r"type (?P<name>[A-Za-z_]\w*)(?:\[[^\]]*\])? struct\b", "top"),
    ("interface", r"type (?P<name>[A-Za-z_]\w*)(?:\[[^\]]*\])? interface\b", "top"),
    ("type", r"type (?P<name>[A-Za-z_]\w*)\b", "top"),
))

LANGUAGES = (GO,)  # what this family adds to the table in __init__.py
