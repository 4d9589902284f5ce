"""Rust: functions and methods with their `impl` or trait, structs, enums, traits, types,
modules, macros, constants and statics (`static mut` a variable), each with its `///` docs.

Owns: RUST (its Language record) and its rules.
Must not: match past a line (a signature split over lines is found by its first line), or
take a `const` inside a function's body for a definition (only those at the top or directly
in an impl, trait or module count).
"""

from __future__ import annotations

from cqlib.documenters.language import Blocks, Language

PUB = r"(?:pub(?:\([^)]*\))? )?"
STATIC_MUT = rf"{PUB}static mut (?P<name>[A-Za-z_]\w*)"
CONSTANT = rf"{PUB}(?:const|static) (?!_\b)(?P<name>[A-Za-z_]\w*) ?:"
RUST = Language("rust", extensions=(".rs",), aliases=("rs",), comments=("//", "/*"),
                separator="::", blocks=Blocks(long_strings='"', chars=True), rules=(
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
    ("variable", STATIC_MUT, "top"),
    ("variable", STATIC_MUT, "member"),
    ("constant", CONSTANT, "top"),
    ("constant", CONSTANT, "member"),
))

LANGUAGES = (RUST,)  # what this family adds to the table in __init__.py
