"""What an assistant reads of a worktree: a file's lines, a definition's body, an outline.

Owns: turning the path a client gives into a file of the worktree as it is now, or into the
one sentence saying why not (outside the repository, deleted, ignored, a folder, a link out
of the work tree, binary, too large); numbered lines and line ranges, cut to a budget with
where to go on; a definition's whole body by plain or qualified name; and a file's outline
(imports folded into one line, constants and variables listed, paged).  The CLI and MCP
both call these functions and only format what they return.
Must not: write anything, follow a link out of the work tree, or know a protocol or a
terminal.
"""

from __future__ import annotations

import os
import stat
from collections import namedtuple

from cqlib.documenters import (
    LANGUAGES,
    detect_language,
    document_text,
    looks_binary,
    separator,
)
from cqlib.documenters.patterns import may_head
from cqlib.errors import CqError
from cqlib.gitio import WorkTreeFiles, git_ignores
from cqlib.index.schema import LEXICAL
from cqlib.index.store import Index
from cqlib.overlay import WorktreeOverlay
from cqlib.search import SearchQuery, names_exactly
from cqlib.text import path_text, path_text_names

READ_BYTES_MAX = 32 << 20  # a file larger than this is not read (a log, a data dump)
READ_BUDGET = 16_000  # characters of numbered lines one read gives unless told otherwise
ABOVE_MAX = 40  # lines of comments and decorators above a definition taken with its body
OUTLINE_BUDGET = 12_000  # characters of one page of an outline
# What may stand directly above a definition and belongs to it: decorators and attributes.
DECORATIONS = ("@", "#[", "#![")
# The statuses of a file the worker has yet to document (beyond the lexical pass).
NOT_YET_DOCUMENTED = ("pending", LEXICAL)


class Located(namedtuple("Located", ("path", "shown", "doc", "edited"))):
    """A file of the worktree as it is now: its path in the repository, the text the client
    gave for it, its documentation (as the index or, for an edited file, the overlay holds
    it: Index.file_doc), and whether it differs from HEAD in the working tree."""

    __slots__ = ()


class Reading(namedtuple("Reading", ("path", "language", "start", "end", "total", "lines",
                                     "definition", "others", "next_start"))):
    """Lines of a file as read: the first and last shown (1-based), the file's line count,
    the lines themselves, the definition they are the body of (an entry, or None), the other
    definitions of that name in the file, and the first line not shown (None: all shown)."""

    __slots__ = ()

    def numbered(self) -> str:
        """The lines shown, each after its number and a tab, as `cat -n` prints them."""
        return "\n".join(f"{n}\t{line}" for n, line in enumerate(self.lines, self.start))


class Outline(namedtuple("Outline", ("path", "language", "summary", "summary_by", "imports",
                                     "entries", "total", "next_offset"))):
    """A file's outline: its summary (and who wrote it), its imports folded into one line
    ('' if none), a page of its other entries (each with `line` and `end`), how many
    entries there are in all, and the offset of the next page (None: this is the last)."""

    __slots__ = ()


def locate(index: Index, overlay: WorktreeOverlay, text: str) -> Located:
    """The file of the worktree a client's path names (from the top, `./` allowed; the text
    cq gives a name that is not UTF-8 works too).  CqError with what to do instead where it
    is not one: outside the repository, deleted, ignored, a folder, or unknown."""
    if not isinstance(text, str) or not text.strip():
        raise CqError("path must be a file's path from the repository's top, e.g. src/app.py")
    normal = os.path.normpath(text.strip()).removeprefix("./")
    if os.path.isabs(normal) or normal == ".." or normal.startswith("../"):
        raise CqError(f"{path_text(text)} is outside the repository: give a path from its "
                      "top, e.g. src/app.py")
    git_dir = overlay.repo.git_dir
    for path in path_text_names(normal):
        try:
            os.fsencode(path)
        except UnicodeError:
            continue  # characters no file name can have
        if path in overlay.deleted:
            raise CqError(f"{path_text(path)} is deleted in the working tree")
        edited = path in overlay.edited
        if edited and not overlay.complete:  # more edited files than the overlay documents:
            return Located(path, text, None, True)  # HEAD's lines are not the file's now
        doc = (overlay.index if edited else index).file_doc(git_dir, path)
        if doc is not None:
            if doc["status"] in NOT_YET_DOCUMENTED and overlay.top is not None:
                doc = documented_now(overlay, path, doc)
            return Located(path, text, doc, edited)
        if edited:  # an edited file the overlay does not document (binary, too large)
            return Located(path, text, None, True)
    raise CqError(why_not_a_file(overlay, normal))


def doc_at(index: Index, overlay: WorktreeOverlay, path: str) -> dict | None:
    """A file's documentation as it is now (see locate), or None where the path names no
    file cq may read."""
    try:
        return locate(index, overlay, path).doc
    except CqError:
        return None


def documented_now(overlay: WorktreeOverlay, path: str, doc: dict) -> dict:
    """A file the worker has not documented yet (fully), documented now from the work tree,
    as the overlay documents an edited one: its definitions are where the file has them."""
    try:
        data = read_worktree_file(overlay.top, path)
    except CqError:
        data = None
    if data is None or looks_binary(data) or len(data) > overlay.config.max_file_size:
        return doc
    found = document_text(path, data, overlay.config.parse_budget, words=False)
    return {**doc, "language": found["language"], "summary": doc["summary"] or
            found["summary"], "entries": [{**e, "note": ""} for e in found["entries"]]}


def why_not_a_file(overlay: WorktreeOverlay, path: str) -> str:
    """The sentence for a path that names no file of the worktree."""
    shown = path_text(path)
    top = overlay.top
    try:
        st = os.lstat(os.path.join(top, path)) if top else None
    except (OSError, ValueError):
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        return (f"{shown} is a folder: list its files with the files tool (path_glob "
                f"'{shown.rstrip('/')}/')")
    if st is not None and git_ignores(top, path):
        return f"{shown} is ignored by git (.gitignore), so cq does not read it"
    return f"{shown} is not a file of this repository (see the files tool)"


def read_text(overlay: WorktreeOverlay, located: Located) -> list[str]:
    """The lines of a file as the working tree holds it now (a link to a file of the work
    tree is read as that file; one leading out of it is refused, as are binary files)."""
    top, path = overlay.top, located.path
    if top is None:
        raise CqError("this repository has no working tree to read from")
    data = read_worktree_file(top, path)
    if data is None:
        raise CqError(f"{path_text(path)} cannot be read: it is not a regular file of the "
                      f"work tree, or is larger than {READ_BYTES_MAX >> 20} MB")
    if looks_binary(data):
        raise CqError(f"{path_text(path)} is a binary file ({len(data)} bytes): cq reads text")
    return data.decode("utf-8", errors="replace").split("\n")


def read_worktree_file(top: str, path: str, hops: int = 8) -> bytes | None:
    """A file's bytes, never through a link out of the work tree, into git's own files or
    to a file git ignores; a link to another file of the work tree is followed (at most
    `hops` in a row).  None where it is not a regular file."""
    with WorkTreeFiles(top) as files:
        data = files.read_file(path, READ_BYTES_MAX)
    if data is not None or hops == 0:
        return data
    try:
        target = os.readlink(os.path.join(top, path))
    except (OSError, ValueError):
        return None
    inside = os.path.normpath(os.path.join(os.path.dirname(path), target))
    if os.path.isabs(target) or inside == ".." or inside.startswith("../"):
        raise CqError(f"{path_text(path)} is a symbolic link leading out of the work tree: "
                      "cq does not follow it")
    if ".git" in inside.split(os.sep) or git_ignores(top, inside):
        raise CqError(f"{path_text(path)} is a symbolic link to a file git keeps to itself "
                      "or ignores: cq does not follow it")
    return read_worktree_file(top, inside, hops - 1)


def read_lines(overlay: WorktreeOverlay, located: Located, start: int | None = None,
               end: int | None = None, symbol: str | None = None,
               budget: int = READ_BUDGET) -> Reading:
    """Lines of a file as they are now: a definition's body (by plain or qualified name,
    with the comments and decorators right above it; from `start` on, if given, to go on
    with a body cut short), a range (start and end, 1-based, inclusive), or the whole file;
    cut, at a line's end, once `budget` characters are reached.  CqError for a range
    outside the file or a name it does not define."""
    lines = read_text(overlay, located)
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line starts no line of its own
    total = len(lines)
    language = located.doc["language"] if located.doc else \
        detect_language(located.path, "\n".join(lines[:1]))
    definition, others = None, []
    if symbol is not None:
        found = definitions_named(located, symbol)
        if not found:
            raise CqError(no_such_definition(located, symbol))
        definition, others = found[0], found[1:]
        start = body_start(lines, definition["line"], language) if start is None else start
        end = definition.get("end") or definition["line"]
    start = 1 if start is None else start
    end = total if end is None else min(end, total)
    if end < start and total and 1 <= start <= total:
        raise CqError(f"end ({end}) comes before start ({start}): give start <= end")
    if not 1 <= start <= max(total, 1):
        raise CqError(f"lines {start}-{end} are outside {path_text(located.path)}, which "
                      f"has {total} lines")
    shown, used = [], 0
    for text in lines[start - 1:end]:
        line = text if len(text) <= budget else \
            f"{text[:budget // 2]}... [cut: this line has {len(text)} characters]"
        used += len(line) + len(str(start + len(shown))) + 2
        if shown and used > budget:
            break
        shown.append(line)
    last = start + len(shown) - 1
    return Reading(located.path, language, start, last, total, shown, definition,
                   [entry_place(e, language) for e in others], last + 1 if last < end else None)


def definitions_named(located: Located, name: str) -> list[dict]:
    """The file's definitions a plain or qualified name names, in the file's order."""
    query = SearchQuery(name)
    if not query.whole:
        raise CqError("symbol must be an identifier, plain or qualified (Class.method)")
    entries = documented(located)["entries"]
    named = [e for e in entries if e["kind"] != "import" and
             names_exactly(query, e["name"], e["container"])]
    # `Schema.Meta` and `SchemaMeta` squash alike: the name as written goes first, alone.
    written = [e for e in named if dotted(name) in written_names(e)]
    return written or named


def dotted(name: str) -> str:
    """A qualified name with its language's separator made a dot (`a::b`, `a#b`: `a.b`)."""
    return name.replace("::", ".").replace("#", ".")


def written_names(entry: dict) -> tuple:
    """The ways a definition is named as written: plain, by its container's last part, and
    by its whole container."""
    container = dotted(entry["container"] or "")
    last = container.rsplit(".", 1)[-1]
    return (entry["name"], f"{last}.{entry['name']}", f"{container}.{entry['name']}")


def documented(located: Located) -> dict:
    """A located file's documentation; CqError where cq has none of it as it is now (an
    edited file, with more files edited than cq documents on the fly, or one too large)."""
    if located.doc is None:
        raise CqError(f"cq has not documented {path_text(located.path)} as it is now (it is "
                      "edited, and more files are edited than cq documents on the fly, "
                      "cq.overlayMaxFiles, or it is too large): read it by lines")
    return located.doc


def no_such_definition(located: Located, name: str) -> str:
    """The sentence for a name the file does not define, with some that it does."""
    defined = [e["name"] for e in located.doc["entries"]
               if e["kind"] not in ("import", "heading")][:12]
    hint = f"; it defines {', '.join(defined)}" if defined else ""
    return f"{path_text(located.path)} defines no {name}{hint}"


def body_start(lines: list[str], line: int, language: str) -> int:
    """The first line of a definition's body with what belongs to it right above: its
    return type where it has a line of its own (C's `static int`), its decorators or
    attributes and its comment block (ABOVE_MAX lines at most)."""
    known = LANGUAGES.get(language)
    prefixes = (*DECORATIONS, *known.comments, "*") if known else DECORATIONS
    first = line
    head = lines[line - 2] if known and known.split_heads and 1 < line <= len(lines) + 1 else ""
    if head.strip() and not head.strip().startswith(prefixes) and may_head(head, head.strip()):
        first -= 1
    while first > 1 and line - first < ABOVE_MAX:
        above = lines[first - 2].strip() if first - 2 < len(lines) else ""
        if not above or not above.startswith(prefixes) or above.startswith("#!"):
            break
        first -= 1
    return first


def entry_place(entry: dict, language: str) -> dict:
    """Where an entry is, as an answer names it: kind, symbol, first and last line."""
    return {"kind": entry["kind"], "symbol": qualified(entry, language), "line": entry["line"],
            "end": entry.get("end") or entry["line"]}


def qualified(entry: dict, language: str) -> str:
    """An entry's name qualified by its container, as people write it in its language."""
    container = entry.get("container") or ""
    return f"{container}{separator(language)}{entry['name']}" if container else entry["name"]


def outline(located: Located, offset: int = 0, budget: int = OUTLINE_BUDGET) -> Outline:
    """A file's outline, a page from offset: its imports on one line (where they start and
    end), then each other definition with its first and last line and signature."""
    doc = documented(located)
    imports = [e for e in doc["entries"] if e["kind"] == "import"]
    rest = [e for e in doc["entries"] if e["kind"] != "import"]
    if offset > len(rest):
        raise CqError("that cursor is past the end of the outline; ask again without it")
    page, used = [], 0
    for e in rest[offset:]:
        shown = {**entry_place(e, doc["language"]),
                 **({"signature": e["signature"]} if e["signature"] else {}),
                 **({"doc": first_line(e["doc"] or e.get("note") or "")}
                    if (e["doc"] or e.get("note")) else {})}
        used += sum(len(str(v)) + 4 for v in shown.values())
        if page and used > budget:
            break
        page.append(shown)
    after = offset + len(page)
    return Outline(located.path, doc["language"], doc["summary"], doc["summary_by"],
                   folded_imports(imports), page, len(rest),
                   after if after < len(rest) else None)


def folded_imports(imports: list[dict]) -> str:
    """A file's imports as one line: where they are and what they name."""
    if not imports:
        return ""
    names = []
    for e in imports:
        name = e["name"] if not e.get("container") else f"{e['container']}.{e['name']}"
        if name not in names:
            names.append(name)
    lines = sorted(e["line"] for e in imports)
    where = f"line {lines[0]}" if lines[0] == lines[-1] else f"lines {lines[0]}-{lines[-1]}"
    shown = ", ".join(names[:40]) + (f" and {len(names) - 40} more" if len(names) > 40 else "")
    return f"{where}: {shown}"


def first_line(text: str, most: int = 160) -> str:
    """The first line of a text, cut to `most` characters."""
    return (text.strip().split("\n", 1)[0])[:most]
