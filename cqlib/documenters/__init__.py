"""The built-in documenters: one file's bytes -> its language, summary, definitions and words.

Owns: the table of languages (LANGUAGES, gathered from the LANGUAGES of one file per language
family: a new language is one Language record in its family's file, a new family one line
here), telling a file's language from its
name or `#!` line, naming languages as `--lang` does, and document_text, the one entry point:
bounded in time (cq.parseBudget), stdlib only, and never raising on bad input.  There, one
rule for every language: a file's summary is its documenter's own (Python's docstring,
Markdown's first paragraph), else its first leading comment that is not a licence, else what
it defines (DEFINED_KINDS); a name assigned twice is defined where it is first; an
all-capitals macro without a doc takes its twin function's; a function named through a
macro is recorded under both names; an entry's extent lies within the file.
Must not: read blobs or touch the index (the pipeline hands it bytes and stores what it gives).
"""

from __future__ import annotations

import os

from cqlib.config import Config
from cqlib.documenters import c_family, go, javascript, markdown, python, rust, shell
from cqlib.documenters.extent import last_line
from cqlib.documenters.language import Deadline, Language, OverBudget, ParserCrash
from cqlib.documenters.patterns import document_by_patterns, leading_comment
from cqlib.errors import EXIT_USAGE, CqError
from cqlib.words import DEFINITION_KINDS, file_words

# Any other file: its leading comment, in whichever of the usual syntaxes, and its words.
TEXT = Language("text", aliases=("txt",), comments=("#", "//", "--", ";", "/*"))
# The language families, in the order a `#!` line is matched against their interpreters.
FAMILIES = (python, shell, javascript, go, rust, c_family, markdown)
LANGUAGES = {language.name: language for language in
             (*(language for family in FAMILIES for language in family.LANGUAGES), TEXT)}
BY_EXTENSION = {ext: language for language in LANGUAGES.values()
                for ext in language.extensions}
BY_NAME = {alias: language.name for language in LANGUAGES.values()
           for alias in (language.name, *language.aliases)}
PARSE_BUDGET = Config.KEYS["cq.parseBudget"][2]  # seconds the documenter may spend on a file
# What a summary made of a file's definitions names, most telling first: kind -> its plural.
DEFINED_KINDS = {"class": "classes", "struct": "structs", "record": "records",
                 "interface": "interfaces", "trait": "traits", "enum": "enums",
                 "type": "types", "module": "modules", "function": "functions",
                 "macro": "macros", "method": "methods", "constant": "constants",
                 "variable": "variables"}
SUMMARY_NAMES = 3  # names of each kind a summary made of definitions shows
SUMMARY_CHARS = 160  # the longest summary made of definitions
ASSIGNED_KINDS = ("constant", "variable")  # the kinds a name assigned again could have
TWIN_KINDS = ("macro", "constant")  # the kinds that may share a doc with a twin (with_twin_docs)
__all__ = ["DEFINITION_KINDS", "LANGUAGES", "canonical_language", "detect_language",
           "document_text", "looks_binary", "minimal_record", "separator", "skip_status"]


def detect_language(path: str, text: str) -> str:
    """The language of a file from its name, or its shebang for scripts without an extension."""
    language = BY_EXTENSION.get(os.path.splitext(path)[1].lower())
    if language:
        return language.name
    first = text[:100].split("\n", 1)[0]
    if first.startswith("#!"):
        for language in LANGUAGES.values():
            if any(word in first for word in language.interpreters):
                return language.name
    return "text"


def canonical_language(name: str) -> str:
    """A --lang value as the index names languages (py -> python); CqError if unknown."""
    found = BY_NAME.get(name.lower())
    if found is None:
        raise CqError(f"unknown language {name.lower()!r}; use one of: "
                      f"{', '.join(sorted(LANGUAGES))}", EXIT_USAGE)
    return found


def separator(language: str) -> str:
    """What stands between a container and a name in this language (`::` in Rust and C++)."""
    return LANGUAGES.get(language, TEXT).separator


def document_text(path: str, data: bytes, budget: float = PARSE_BUDGET,
                  words: bool = True) -> dict:
    """The built-in documenter: a summary and entries for one file; never raises.  Past its
    time budget, or where the parser would crash, a file keeps a minimal record: its
    language, leading comment and identifiers, with the reason.  Without `words` its
    identifiers are left out (None): the lexical pass has them already."""
    text = data.decode("utf-8", errors="replace")
    lines = text.split("\n")  # as git counts lines (str.splitlines also breaks at \f, \x1c...)
    language = LANGUAGES[detect_language(path, text)]
    deadline = Deadline(budget)
    summary, entries, error = "", [], ""
    try:
        if language.document:
            summary, entries = language.document(text, lines, deadline)
        elif language.rules:
            entries = document_by_patterns(language, lines, deadline)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        if language.document and language.rules:  # what was just added is still found
            entries = fallback_definitions(language, lines, deadline)
    except (OverBudget, ParserCrash) as exc:
        summary, entries, error = "", [], str(exc)
    entries = with_aliases(with_twin_docs(first_assignments(entries)))
    last = last_line(lines)
    for e in entries:  # within the file, never before its own line
        e["end"] = max(min(e.get("end", e["line"]), last), e["line"])
    summary = summary or leading_comment(lines, language.comments) or defined_summary(entries)
    return {"language": language.name, "summary": summary[:2000], "entries": entries,
            "error": error, "words": file_words(text) if words else None}


def first_assignments(entries: list[dict]) -> list[dict]:
    """The entries, but for a constant or variable assigned again in the same container
    (`x = 1` at the top, `x = 2` further down): its first assignment defines it."""
    seen: set = set()
    kept = []
    for e in entries:
        if e["kind"] in ASSIGNED_KINDS:
            key = (e["container"], e["name"])
            if key in seen:
                continue
            seen.add(key)
        kept.append(e)
    return kept


def with_twin_docs(entries: list[dict]) -> list[dict]:
    """The entries, but an UPPER_CASE macro or constant without a doc of its own takes the
    doc of the definition its name spells in other case, named: C headers document a
    function and its compile-time twin once (`LZ4_compressBound()` and `LZ4_COMPRESSBOUND()`),
    and the twin's name holds the words an all-capitals one runs together."""
    documented = {e["name"].lower(): e for e in entries if e["doc"] and not e["name"].isupper()}
    if documented:
        for e in entries:
            twin = documented.get(e["name"].lower()) if e["kind"] in TWIN_KINDS else None
            if twin and not e["doc"] and e["name"].isupper():
                e["doc"] = f"As {twin['name']}: {twin['doc']}"
    return entries


def with_aliases(entries: list[dict]) -> list[dict]:
    """The entries, with a function named through a macro of the same file (`#define
    STRCASESTR strcasestr`, then `char *STRCASESTR (...)`) recorded under the name it
    compiles to as well."""
    aliases = {}
    for e in entries:
        if e["kind"] in TWIN_KINDS and e["signature"].startswith("#"):
            words = e["signature"].split()
            if len(words) == 3 and words[1] == e["name"] and words[2].isidentifier():
                aliases[e["name"]] = words[2]
    if not aliases:
        return entries
    named = {e["name"] for e in entries}
    return [*entries, *({**e, "name": aliases[e["name"]]} for e in entries
                        if e["kind"] == "function" and e["name"] in aliases
                        and aliases[e["name"]] not in named)]


def defined_summary(entries: list[dict]) -> str:
    """A summary of a file without a comment of its own, from what it defines: "Defines
    class Loader; functions parse, load and 2 more; constant MAX." (imports, headings and
    members' properties never count; public names before _private ones)."""
    by_kind: dict = {}
    for e in entries:
        if e["kind"] in DEFINED_KINDS:
            by_kind.setdefault(e["kind"], {})[e["name"]] = None
    parts: list[str] = []
    for kind, plural in DEFINED_KINDS.items():
        names = sorted(by_kind.get(kind, ()), key=lambda name: name.startswith("_"))
        if not names:
            continue
        more = f" and {len(names) - SUMMARY_NAMES} more" if len(names) > SUMMARY_NAMES else ""
        part = f"{kind if len(names) == 1 else plural} {', '.join(names[:SUMMARY_NAMES])}{more}"
        if parts and len("; ".join([*parts, part])) + len("Defines .") > SUMMARY_CHARS:
            break
        parts.append(part)
    summary = f"Defines {'; '.join(parts)}." if parts else ""
    return summary if len(summary) <= SUMMARY_CHARS else summary[:SUMMARY_CHARS - 3] + "..."


def fallback_definitions(language: Language, lines: list[str],
                         deadline: Deadline) -> list[dict]:
    """Definitions by pattern, for a file the language's own documenter cannot parse (within
    the budget)."""
    try:
        return document_by_patterns(language, lines, deadline)
    except OverBudget:
        return []


def looks_binary(data: bytes) -> bool:
    """Git's own heuristic: a NUL byte in the first 8000 bytes means binary."""
    return b"\0" in data[:8000]


def skip_status(data: bytes | None) -> str | None:
    """Why a blob's content (None: over cq.maxFileSize) is not documented, or None."""
    if data is None:
        return "too large"
    return "binary" if looks_binary(data) else None


def minimal_record(path: str, data: bytes, reason: str) -> dict:
    """A file's language and words: all the lexical pass records, and all a file the full
    documenter cannot take keeps."""
    text = data.decode("utf-8", errors="replace")
    return {"language": detect_language(path, text), "summary": "", "error": reason,
            "entries": [], "words": file_words(text)}
