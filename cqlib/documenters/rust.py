"""Rust: functions and methods with their `impl` or trait, structs, enums, traits, types,
modules and macros, each with its `///` docs.

Owns: RUST (its Language record) and its rules.
Must not: match past a line (a signature split over lines is found by its first line).
"""

from __future__ import annotations

from cqlib.documenters.language import Language

PUB = r"(?:pub(?:\([^)]*\))? )?"
RUST = Language("rust", extensions=(".rs",), aliases=("rs",), comments=("//", "/*"),
                separator="::", rules=(
    ("function", (rf"{PUB}(?:default )?(?:const )?(?:async )?(?:unsafe )?"
                  r'(?:extern "[^"]*" )?fn (?P<name>[A-Za-z_]\w*)'), "any"),
    ("struct", rf"{PUB}struct (?P<name>[A-Za-z_]\w*)", "any"),
    ("enum", rf"{PUB}enum (?P<name>[A-Za-z_]\w*)", "any"),
    ("trait", rf"{PUB}(?:unsafe )?trait (?P<name>[A-Za-z_]\w*)", "any"),
    ("type", rf"{PUB}type (?P<name>[A-Za-z_]\w*)", "any"),
    ("module", rf"{PUB}mod (?P<name>[A-Za-z_]\w*)", "any"),
    ("macro", r"macro_rules! (?P<name>[A-Za-z_]\w*)", "any"),
    ("impl", (r"(?:unsafe )?impl(?:<[^>]*>)? (?:[\w:<>, &']+ for )?(?:[\w]+::)*"
              r"(?P<name>[A-Za-z_]\w*)"), "any"),
))

LANGUAGES = (RUST,)  # what this family adds to the table in __init__.py
