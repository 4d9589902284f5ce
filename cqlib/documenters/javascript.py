"""JavaScript and TypeScript: one set of rules for both.

Owns: JAVASCRIPT and TYPESCRIPT (their Language records) and their rules: functions, classes,
arrow functions, `X.prototype.y =`, `proto.y = function`, `exports.z =`, class fields and
methods, object-literal methods, interfaces and their members, types, enums, namespaces;
top-level `const`, `let` and `var` (a constant where `const` names it in UPPER_CASE, else a
variable; an object literal's members are its own) and `static` UPPER_CASE class fields.
Must not: match past a line (what spans lines is found by its first line only), or take
`require()` for a variable (it is an import).
"""

from __future__ import annotations

from cqlib.documenters.language import Blocks, Language
from cqlib.documenters.patterns import LazyPattern

NAME = r"(?P<name>[A-Za-z_$][\w$]*)"
UPPER_NAME = r"(?P<name>_*[A-Z][A-Z0-9_]*)"
DECLARED = r"(?:export )?(?:declare )?"
# After a declared name: its type, if any, then its value (not a `require`) or the line's end.
VALUE = r" ?(?::[^=;]*)?(?:=(?! ?require\b)|;$|$)"
FUNCTION_VALUE = r"(?:async ?)?(?:function\b|\([^)]*\) ?(?::[^=]*)?=>|[A-Za-z_$][\w$]* ?=>)"
METHOD = LazyPattern(
    r"(?:(?:static|async|public|private|protected|readonly|override|get|set) )*\*? ?"
    r"(?!(?:if|for|while|switch|catch|return|function)\b)"
    r"([A-Za-z_$][\w$]*) ?\([^)]*\) ?(?::[^{]*)?\{$")
ASSIGNMENT = LazyPattern(r"((?:[A-Za-z_$][\w$]*\.)+)([A-Za-z_$][\w$]*) ?= ?(.*)")
FUNCTION = LazyPattern(FUNCTION_VALUE)


def js_method(code: str) -> tuple[str, str] | None:
    """A method in a JavaScript or TypeScript class body or object literal: `name(...) {`."""
    if not code.endswith("{") or "(" not in code:
        return None
    match = METHOD.match(code)
    return (match.group(1), "") if match else None


def js_assignment(code: str) -> tuple[str, str] | None:
    """`a.b.name = function ...`, `X.prototype.y = (...) =>` and `exports.z = ...`: the name
    with its container (`prototype` dropped, `module.exports` as `exports`)."""
    match = ASSIGNMENT.match(code)
    if not match:
        return None
    container, name, value = match.group(1)[:-1], match.group(2), match.group(3)
    exported = container in ("exports", "module.exports")
    if not exported and not FUNCTION.match(value):
        return None
    container = container.replace(".prototype", "").replace("module.exports", "exports")
    return name, container


RULES = (
    ("function", rf"(?:export )?(?:default )?(?:declare )?(?:async )?function ?\*? ?{NAME}",
     "any"),
    ("class", rf"(?:export )?(?:default )?(?:declare )?(?:abstract )?class {NAME}", "any"),
    ("function", rf"(?:export )?(?:const|let|var) {NAME} ?(?::[^=]*)?= ?{FUNCTION_VALUE}",
     "any"),
    ("class", rf"(?:export )?(?:const|let|var) {NAME} ?= ?class\b", "any"),
    ("interface", rf"(?:export )?(?:declare )?interface {NAME}", "any"),
    ("type", rf"(?:export )?(?:declare )?type {NAME} ?(?:<[^>]*>)? ?=", "any"),
    ("enum", rf"(?:export )?(?:declare )?(?:const )?enum {NAME}", "any"),
    ("module", rf"(?:export )?(?:declare )?namespace {NAME}", "any"),
    ("constant", rf"{DECLARED}const {UPPER_NAME}{VALUE}", "top"),
    ("variable", rf"{DECLARED}(?:const|let|var) {NAME}{VALUE}", "top"),
    ("object", r"(?:module\.)?(?P<name>exports) ?= ?\{$", "top"),
    ("method", js_assignment, "any"),
    ("constant", (rf"(?:(?:public|private|protected|readonly|declare|override) )*static "
                  rf"(?:readonly )?{UPPER_NAME}{VALUE}"), "member"),
    ("method", js_method, "member"),
    ("method", rf"{NAME}\?? ?: ?{FUNCTION_VALUE}", "member"),
    ("method", rf"{NAME}\?? ?(?:<[^>]*>)? ?\(", "member"),  # in an interface
    ("property", (r"(?:(?:static|readonly|private|public|protected|declare|override|"
                  r"abstract|accessor) )*#?(?P<name>[A-Za-z_$][\w$]*)[?!]? ?(?:: ?[^=;]|=|;$)"),
     "member"),
)
# Strings in either quote end with their line; a template literal may span lines.
BLOCKS = Blocks(strings="\"'", long_strings="`", regexes=True)
JAVASCRIPT = Language("javascript", extensions=(".js", ".jsx", ".mjs", ".cjs"),
                      aliases=("js", "jsx"), interpreters=("node",), comments=("//", "/*"),
                      rules=RULES, blocks=BLOCKS)
TYPESCRIPT = Language("typescript", extensions=(".ts", ".tsx", ".mts", ".cts"),
                      aliases=("ts", "tsx"), comments=("//", "/*"), rules=RULES, blocks=BLOCKS)

LANGUAGES = (JAVASCRIPT, TYPESCRIPT)  # what this family adds to the table in __init__.py
