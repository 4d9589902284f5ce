"""Where a name is used: every line of the worktree that holds it as a word, grouped by the
definition it is in.

Owns: references(), a lexical answer, and honest about it: the files whose words hold the
name's words (the index narrows them, at HEAD; edited files are read as they are now), each
line that holds the name as a whole word, and around it the innermost definition the line is
in (`Client._merge_url` uses `merge`), the import lines and the definition itself marked.
Paged by file, cut to a budget of characters.
Must not: claim more than it knows: it does not resolve which `merge` a line means (a type
checker's job), and says so.
"""

from __future__ import annotations

import re
from collections import namedtuple

from cqlib.errors import CqError
from cqlib.index.queries import Filters, files_with_words, use_path_filter
from cqlib.index.store import Index
from cqlib.overlay import WorktreeOverlay
from cqlib.reader import doc_at, qualified, read_worktree_file
from cqlib.search import SearchQuery, path_matcher

REFERENCES_BUDGET = 12_000  # characters of one page of references
LINE_CHARS = 160  # a line is shown up to this many characters around the name
IMPORT_WORDS = ("import ", "from ", "use ", "#include", "require(", "extern crate ")


class UseSite(namedtuple("UseSite", ("line", "text", "role"))):
    """One line holding the name: its number, its text (trimmed), and what it is: `use`,
    `import`, or `definition` (the name is defined on it)."""

    __slots__ = ()


class UseGroup(namedtuple("UseGroup", ("path", "within", "sites"))):
    """The lines of one file that use the name inside one definition (`within`, qualified;
    '' for the file's top level)."""

    __slots__ = ()


class References(namedtuple("References", ("name", "groups", "files", "next_offset"))):
    """A page of references: the groups of use sites, how many files they are in, and the
    offset of the file to go on from (None: every file was read)."""

    __slots__ = ()


def references(index: Index, overlay: WorktreeOverlay, name: str, path: str | None = None,
               offset: int = 0, budget: int = REFERENCES_BUDGET) -> References:
    """The lines of the worktree (at HEAD, with the edited files as they are now) that hold
    `name` (its last part, for a qualified one) as a word, under `path` if given."""
    word = name_word(name)
    pattern = re.compile(rf"(?<![\w$]){re.escape(word)}(?![\w$])")
    candidates = candidate_files(index, overlay, word, path)
    if offset > len(candidates):
        raise CqError("that cursor is past the end of the references; ask again without it")
    groups, used, files, position = [], 0, 0, offset
    for position in range(offset, len(candidates)):
        found = file_uses(index, overlay, candidates[position], pattern, word)
        cost = sum(len(g.within) + sum(len(s.text) + 12 for s in g.sites) for g in found)
        if groups and used + cost > budget:
            break
        groups += found
        used += cost
        files += bool(found)
    else:
        position = len(candidates)
    return References(word, groups, files, position if position < len(candidates) else None)


def name_word(name: str) -> str:
    """The identifier to look for: a qualified name's last part (`Client.send` -> `send`)."""
    if not isinstance(name, str) or not name.strip():
        raise CqError("name must be an identifier, e.g. parse_config or Client.send")
    word = re.split(r"::|\.|->|#", name.strip())[-1]
    if not re.fullmatch(r"[\w$]*[^\W_][\w$]*", word):  # a letter or digit, to be looked up
        raise CqError(f"{name!r} is not an identifier: give one such as parse_config or "
                      "Client.send")
    return word


def candidate_files(index: Index, overlay: WorktreeOverlay, word: str,
                    path: str | None) -> list[str]:
    """The paths that may hold the word: those whose indexed words hold its words (edited
    and deleted files left out), and the edited files, in path order."""
    matches = path_matcher(path)
    use_path_filter(index.db, matches)
    terms = SearchQuery(word).terms
    expression = " AND ".join(t.files for t in terms)
    hidden = overlay.edited | overlay.deleted
    found = {p for p, _ in files_with_words(index.db, expression,
                                            Filters(overlay.repo.git_dir, path, None))
             if p not in hidden}
    found.update(p for p in overlay.edited if matches is None or matches(p))
    return sorted(found)


def file_uses(index: Index, overlay: WorktreeOverlay, path: str, pattern,
              word: str) -> list[UseGroup]:
    """The use sites of the word in one file, grouped by the definition each is in."""
    if overlay.top is None:
        return []
    try:
        data = read_worktree_file(overlay.top, path)
    except CqError:
        return []  # a link out of the work tree: not read
    if data is None or b"\0" in data[:8000]:
        return []
    text = data.decode("utf-8", errors="replace")
    if word not in text:
        return []
    doc = doc_at(index, overlay, path)
    entries = doc["entries"] if doc else []
    language = doc["language"] if doc else ""
    groups: dict = {}
    for number, line in enumerate(text.split("\n"), 1):
        if word not in line or not pattern.search(line):
            continue
        within = innermost(entries, number)
        role = site_role(entries, number, line, word)
        site = UseSite(number, shown_line(line, pattern), role)
        key = qualified(within, language) if within else ""
        groups.setdefault(key, []).append(site)
    return [UseGroup(path, within, sites) for within, sites in groups.items()]


def innermost(entries: list[dict], line: int) -> dict | None:
    """The innermost definition (not an import or heading) whose lines hold `line`."""
    best = None
    for e in entries:
        if e["kind"] in ("import", "heading"):
            continue
        end = e.get("end") or e["line"]
        if e["line"] <= line <= end and (best is None or e["line"] >= best["line"]):
            best = e
    return best


def site_role(entries: list[dict], line: int, text: str, word: str) -> str:
    """`definition` where an entry named the word starts on the line, `import` where the
    line imports, else `use`."""
    for e in entries:
        if e["line"] == line and e["name"] == word and e["kind"] != "import":
            return "definition"
        if e["kind"] == "import" and e["line"] <= line <= (e.get("end") or e["line"]):
            return "import"
    return "import" if text.lstrip().startswith(IMPORT_WORDS) else "use"


def shown_line(line: str, pattern) -> str:
    """A line as a reference shows it: trimmed, and around the name if it is long."""
    text = line.strip()
    if len(text) <= LINE_CHARS:
        return text
    at = pattern.search(text).start()
    start = max(0, at - LINE_CHARS // 2)
    return ("..." if start else "") + text[start:start + LINE_CHARS] + "..."


def reference_note(found: References) -> str:
    """What an answer says of how its references were found."""
    return (f"lexical: every line holding {found.name} as a word; which definition each "
            "line means is not resolved")
