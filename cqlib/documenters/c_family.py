"""C, C++ and Java: classes, interfaces, records, methods in their class, C++ namespaces and
`Class::method` definitions, functions, structs, macros and typedefs, each with its doc comment.

Owns: C, CPP and JAVA (their Language records), their rules and the rule functions that tell a
definition from a call or a statement by what comes before the name's parenthesis.
Must not: match past a line (a return type on a line of its own is not read).
"""

from __future__ import annotations

from cqlib.documenters.language import Language
from cqlib.documenters.patterns import IDENTIFIER_CHARS, LazyPattern, name_before_paren

NOT_JAVA_TYPES = {"return", "new", "throw", "else", "case", "yield", "await", "assert", "do",
                  "try", "super", "this", "if", "for", "while", "switch", "catch"}
NOT_C_TYPES = {"return", "if", "else", "while", "for", "switch", "typedef", "do", "case",
               "goto", "sizeof", "throw", "new", "delete", "using", "namespace"}
JAVA_TYPE = LazyPattern(r"[\w<>\[\],.?@ ]+")
C_TYPE = LazyPattern(r"[\w *&:<>,]+")


def qualified(name: str) -> tuple[str, str] | None:
    """(name, container) from `Container::name` (C++ definitions outside their class)."""
    container, _, last = name.rpartition("::")
    if not (last[:1].isalpha() or last[:1] in ("_", "~")):
        return None
    return last, container.strip(":")


def java_method(code: str) -> tuple[str, str] | None:
    """A Java method or constructor declared on this (normalised) line of a class body
    (with or without a body: interface methods are API too)."""
    prefix, name, _ = name_before_paren(code)
    words = prefix.split()
    if not words or not name[:1].isalpha() or ":" in name or words[0] in NOT_JAVA_TYPES or \
            not JAVA_TYPE.fullmatch(prefix):
        return None
    return name, ""


def c_function(code: str) -> tuple[str, str] | None:
    """A C or C++ function defined at the start of this (normalised, unindented) line."""
    prefix, name, after = name_before_paren(code)
    words = prefix.split()
    if ";" in after or not words or words[0] in NOT_C_TYPES or \
            prefix[-1:] not in (" ", "*", "&") or not C_TYPE.fullmatch(prefix):
        return None
    return qualified(name)


def cpp_member(code: str) -> tuple[str, str] | None:
    """A method declared or defined in a C++ class body (with its return type)."""
    prefix, name, _ = name_before_paren(code)
    words = prefix.split()
    if not words or words[0] in NOT_C_TYPES or prefix[-1:] not in (" ", "*", "&") or \
            not C_TYPE.fullmatch(prefix) or "::" in name:
        return None
    return qualified(name)


def c_typedef(code: str) -> tuple[str, str] | None:
    """The name a C typedef on this line introduces (the last word before its `;`)."""
    if not code.startswith("typedef ") or not code.endswith(";"):
        return None
    body = code[:-1].rstrip()
    name = body[len(body.rstrip(IDENTIFIER_CHARS)):]
    return (name, "") if name[:1].isalpha() or name[:1] == "_" else None


C_RULES = (
    ("macro", r"# ?define (?P<name>[A-Za-z_]\w*)", "any"),
    ("module", r"namespace (?P<name>[A-Za-z_][\w:]*) ?\{?$", "any"),
    ("struct", (r"(?:typedef )?(?:template ?<[^>]*> )?(?:struct|union|enum|class)"
                r"(?: [A-Z_]+)? (?P<name>[A-Za-z_]\w*)(?: final)? ?(?:[:{]|$)"), "any"),
    ("function", c_function, "top"),
    ("method", cpp_member, "member"),
    ("type", c_typedef, "any"),
)
# C's `#` starts a preprocessor line, which is code, not a comment.
C = Language("c", extensions=(".c", ".h"), comments=("//", "/*"), rules=C_RULES,
             separator="::")
CPP = Language("cpp", extensions=(".cc", ".cpp", ".cxx", ".hpp", ".hh", ".hxx"),
               aliases=("c++", "cxx"), comments=("//", "/*"), rules=C_RULES, separator="::")
JAVA = Language("java", extensions=(".java",), comments=("//", "/*"), rules=(
    ("package", r"package (?P<name>[\w.]+) ?;", "top"),
    ("class", (r"(?:(?:public|private|protected|static|final|abstract|sealed|non-sealed|"
               r"strictfp) )*(?:class|interface|enum|record|@interface) "
               r"(?P<name>[A-Za-z_]\w*)"), "any"),
    ("method", java_method, "member"),
))

LANGUAGES = (JAVA, C, CPP)  # what this family adds to the table in __init__.py
