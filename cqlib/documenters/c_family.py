"""C, C++ and Java: classes, interfaces, records, methods in their class, C++ namespaces and
`Class::method` definitions, functions, structs, macros and typedefs, constants (`#define`s
with a value, `const` and UPPER_CASE globals, C++ `const` members, Java `static final`
fields) and file-scope variables, each with its doc comment.

Owns: C, CPP and JAVA (their Language records), their rules and the rule functions that tell a
definition from a call or a statement by what comes before the name's parenthesis (its
attributes left out), and a global from a statement by its type.
Must not: match past a line (but for a return type on a line of its own, which the pattern
documenter joins to the name below it: split_heads), or take an indented line for a global
(a function's body is indented).
"""

from __future__ import annotations

from cqlib.documenters.language import Blocks, Language
from cqlib.documenters.patterns import IDENTIFIER_CHARS, LazyPattern, name_before_paren

NOT_JAVA_TYPES = {"return", "new", "throw", "else", "case", "yield", "await", "assert", "do",
                  "try", "super", "this", "if", "for", "while", "switch", "catch"}
NOT_C_TYPES = {"return", "if", "else", "while", "for", "switch", "typedef", "do", "case",
               "goto", "sizeof", "throw", "new", "delete", "using", "namespace"}
# The words a global's type cannot end with (`struct node;` declares a type, not a variable).
NOT_C_TYPE_ENDS = {"struct", "union", "enum", "class", "static", "extern"}
CONSTANT_WORDS = {"const", "constexpr", "constinit"}  # of a C or C++ constant's type
# What compilers read before a name and a reader skips: GNU attributes (nested parentheses
# two deep: `__attribute__((format(printf, 1, 2)))`), MSVC's __declspec, C++11 `[[...]]`.
ATTRIBUTES = LazyPattern(r"__attribute__ ?\(\((?:[^()]|\((?:[^()]|\([^()]*\))*\))*\)\) ?|"
                         r"__declspec ?\((?:[^()]|\([^()]*\))*\) ?|\[\[[^\]]*\]\] ?")
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


def without_attributes(code: str) -> str:
    """A line with its attributes left out (see ATTRIBUTES)."""
    return ATTRIBUTES.get().sub("", code) if "__" in code or "[[" in code else code


def c_function(code: str) -> tuple[str, str] | None:
    """A C or C++ function defined at the start of this (normalised, unindented) line (its
    body may be on the same line), or declared as a library's API: a prototype marked
    `extern` or by an export macro (`LZ4LIB_API int f(int);`, where a header documents it)."""
    if "(" not in code:
        return None
    prefix, name, after = name_before_paren(without_attributes(code))
    words = prefix.split()
    # A `;` before any `{` ends a prototype; one after it is in a body on the same line
    # (`int bound(int n) { return BOUND(n); }`).
    if ";" in after.partition("{")[0] and \
            not any(w == "extern" or (len(w) > 3 and w.isupper()) for w in words):
        return None
    if not words or words[0] in NOT_C_TYPES or \
            prefix[-1:] not in (" ", "*", "&") or not C_TYPE.fullmatch(prefix):
        return None
    return qualified(name)


def cpp_member(code: str) -> tuple[str, str] | None:
    """A method declared or defined in a C++ class body (with its return type); not a base
    class list (`: std::integral_constant<bool, bool(...)>`) or an initialiser (`, arg(x)`)."""
    prefix, name, _ = name_before_paren(without_attributes(code))
    words = prefix.split()
    if not words or words[0] in NOT_C_TYPES or prefix[-1:] not in (" ", "*", "&") or \
            prefix[:1] in (":", ",") or \
            not C_TYPE.fullmatch(prefix) or "::" in name:
        return None
    if words[-1] == "operator":  # a conversion: `explicit operator bool() const`
        return f"operator {name}", ""
    return qualified(name)


def declared(code: str) -> str | None:
    """What a declaration on this line says before its value: the text before its `=`, or
    before the `;` that ends one without a value; None for a line that is neither."""
    head, assigned, _ = code.partition("=")
    if assigned:
        return head
    return code[:-1] if code.endswith(";") else None


def c_global(code: str) -> tuple[str, str, bool] | None:
    """(name, container, whether a constant) of the variable a C or C++ declaration on this
    (normalised) line declares: `TYPE NAME;`, `TYPE NAME[N] = ...`; None for a statement,
    a prototype or a function pointer (what has parentheses before its `=`)."""
    code = code.partition("//")[0].partition("/*")[0].rstrip()
    head = declared(code)
    if head is None:
        return None
    head = head.rstrip()
    if "(" in head or ")" in head or head.endswith(("!", "<", ">", "+", "-", "|", "&", "^")):
        return None
    while head.endswith("]") and "[" in head:  # `NAME[N][M]`
        head = head[:head.rindex("[")].rstrip()
    prefix = head.rstrip(IDENTIFIER_CHARS + ":")
    words = prefix.replace("*", " ").replace("&", " ").split()
    if not words or words[0] in NOT_C_TYPES or words[-1] in NOT_C_TYPE_ENDS or \
            not (words[0][:1].isalpha() or words[0][:1] == "_") or words[0].endswith(":") or \
            prefix[-1:] not in (" ", "*", "&") or not C_TYPE.fullmatch(prefix):
        return None
    found = qualified(head[len(prefix):])
    if not found:
        return None
    return (*found, found[0].isupper() or not CONSTANT_WORDS.isdisjoint(words))


def c_constant(code: str) -> tuple[str, str] | None:
    """A C or C++ global constant on this line: `const` (or constexpr) or UPPER_CASE."""
    found = c_global(code)
    return found[:2] if found and found[2] else None


def c_variable(code: str) -> tuple[str, str] | None:
    """A C or C++ global variable on this line (that is not a constant)."""
    found = c_global(code)
    return found[:2] if found and not found[2] else None


def cpp_member_constant(code: str) -> tuple[str, str] | None:
    """A constant in a C++ class or namespace body: `static constexpr int kMax = 64;`."""
    found = c_global(code)
    words = code.partition("=")[0].split()
    return found[:2] if found and "=" in code and not CONSTANT_WORDS.isdisjoint(words) \
        else None


def java_constant(code: str) -> tuple[str, str] | None:
    """A Java `static final` field on this (normalised) line of a class body."""
    head = declared(code)
    if head is None:
        return None
    words = head.split()
    if "static" not in words or "final" not in words or "(" in head or len(words) < 4:
        return None
    name = words[-1]
    if not (name[:1].isalpha() or name[:1] == "_") or \
            name.strip(IDENTIFIER_CHARS + "$") or not JAVA_TYPE.fullmatch(" ".join(words[:-1])):
        return None
    return name, ""


def c_typedef(code: str) -> tuple[str, str] | None:
    """The name a C typedef on this line introduces (the last word before its `;`)."""
    if not code.startswith("typedef ") or not code.endswith(";"):
        return None
    body = code[:-1].rstrip()
    name = body[len(body.rstrip(IDENTIFIER_CHARS)):]
    return (name, "") if name[:1].isalpha() or name[:1] == "_" else None


C_RULES = (
    ("macro", r"# ?define (?P<name>[A-Za-z_]\w*)\(", "any"),
    ("constant", r"# ?define (?P<name>[A-Za-z_]\w*) ", "any"),  # with a value
    ("macro", r"# ?define (?P<name>[A-Za-z_]\w*)", "any"),  # a flag or an include guard
    ("module", r"namespace (?P<name>[A-Za-z_][\w:]*) ?\{?$", "any"),
    ("struct", (r"(?:typedef )?(?:template ?<[^>]*> )?(?:struct|union|enum|class)"
                r"(?: [A-Z_]+)? (?P<name>[A-Za-z_]\w*)(?: final)? ?(?:[:{]|$)"), "any"),
    ("function", c_function, "top"),
    ("constant", cpp_member_constant, "member"),
    ("method", cpp_member, "member"),
    ("type", c_typedef, "any"),
    ("constant", c_constant, "top"),
    ("variable", c_variable, "top"),
)
# C's `'{'` is a character; a preprocessor line is skipped (`#define BEGIN {`).
C_BLOCKS = Blocks(chars=True, directives=True)
# C's `#` starts a preprocessor line, which is code, not a comment.
C = Language("c", extensions=(".c", ".h"), comments=("//", "/*"), rules=C_RULES,
             separator="::", blocks=C_BLOCKS, split_heads=True)
CPP = Language("cpp", extensions=(".cc", ".cpp", ".cxx", ".hpp", ".hh", ".hxx"),
               aliases=("c++", "cxx"), comments=("//", "/*"), rules=C_RULES, separator="::",
               blocks=C_BLOCKS, split_heads=True)
JAVA = Language("java", extensions=(".java",), comments=("//", "/*"), blocks=Blocks(chars=True),
                rules=(
    ("package", r"package (?P<name>[\w.]+) ?;", "top"),
    ("class", (r"(?:(?:public|private|protected|static|final|abstract|sealed|non-sealed|"
               r"strictfp) )*(?:class|interface|enum|record|@interface) "
               r"(?P<name>[A-Za-z_]\w*)"), "any"),
    ("constant", java_constant, "member"),
    ("method", java_method, "member"),
))

LANGUAGES = (JAVA, C, CPP)  # what this family adds to the table in __init__.py
