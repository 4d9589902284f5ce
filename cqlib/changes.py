"""What changed: the files and definitions added, changed or removed, in the commits since a
ref and in the working tree, so that an assistant can find its feet after an edit, a pull or
a switch of branch.

Owns: changes(): the commits since a ref (by default the commit the index stood at before
its last move: what this worktree's last pull, commit or checkout brought), the working
tree against HEAD, and for each changed text file (up to DEFINITIONS_FILES of them) which
definitions appeared, went or changed (by their body's text), both sides documented on the
fly by the built-in documenter.
Must not: write the index, or read a file through a link (the working tree is read as the
overlay reads it).
"""

from __future__ import annotations

from collections import namedtuple

from cqlib.documenters import document_text, looks_binary
from cqlib.errors import CqError
from cqlib.gitio import BlobReader, blobs_at, head_commit, resolve_commit, tree_diff
from cqlib.index.store import Index
from cqlib.overlay import WorktreeOverlay
from cqlib.reader import qualified, read_worktree_file

DEFINITIONS_FILES = 60  # changed files whose definitions are compared; the rest are listed
PATHS_PER_CALL = 500  # paths of the working tree looked up at HEAD in one git call
CHANGE_BYTES_MAX = 1 << 20  # larger files are listed, not compared
CHANGES_BUDGET = 12_000  # characters of one answer


class DefinitionChange(namedtuple("DefinitionChange", ("change", "kind", "symbol", "line"))):
    """A definition `added`, `changed` or `removed`, and its line (in the new version; in
    the old one for a removed definition)."""

    __slots__ = ()


class FileChange(namedtuple("FileChange", ("path", "change", "where", "definitions"))):
    """A file `added`, `modified` or `deleted`, `where`: in the `commits` or the `worktree`
    (against HEAD); its definitions' changes (None where they were not compared: binary,
    too large, or past DEFINITIONS_FILES)."""

    __slots__ = ()


class Changes(namedtuple("Changes", ("since", "head", "files", "omitted"))):
    """The commits compared (since..head; since is None when there is nothing to compare
    with), the changed files (those of the commits first), and how many were left out to
    stay within the budget."""

    __slots__ = ()


def changes(index: Index, overlay: WorktreeOverlay, since: str | None = None,
            budget: int = CHANGES_BUDGET) -> Changes:
    """The files and definitions that changed in the commits since `since` (a ref; by default
    the commit the index stood at before its last move) and in the working tree."""
    repo = overlay.repo
    head = head_commit(repo.git_dir)
    base = since_commit(index, repo, since)
    found = []
    reader = BlobReader(repo.common_dir)
    try:
        if base and head and base != head:
            for path, _, _, old, new in tree_diff(repo.common_dir, base, head):
                found.append(file_change(path, "commits", Side(reader, blob=old),
                                         Side(reader, blob=new), len(found)))
        if head and overlay.top is not None:
            touched = sorted(overlay.edited | overlay.deleted)
            at_head = {}  # (asked in runs: a command line holds only so many paths)
            for first in range(0, len(touched), PATHS_PER_CALL):
                at_head.update(blobs_at(repo.common_dir, head,
                                        touched[first:first + PATHS_PER_CALL]))
            for path in touched:
                now = Side(reader) if path in overlay.deleted else \
                    Side(reader, top=overlay.top, path=path)
                found.append(file_change(path, "worktree",
                                         Side(reader, blob=at_head.get(path, "")), now,
                                         len(found)))
    finally:
        reader.close()
    kept, used = [], 0
    for change in found:
        used += len(change.path) + 20 + sum(len(d.symbol) + 24 for d in change.definitions or ())
        if kept and used > budget:
            break
        kept.append(change)
    return Changes(base, head, kept, len(found) - len(kept))


def since_commit(index: Index, repo, since: str | None) -> str | None:
    """The commit to compare HEAD with: the ref given (CqError if it names no commit), else
    the one the index stood at before its last move (None if it never moved)."""
    if since is None:
        return index.previous_commit(repo.git_dir)
    if not isinstance(since, str) or not since.strip() or since.startswith("-"):
        raise CqError("since must name a commit: a branch, a tag, a sha or e.g. HEAD~3")
    commit = resolve_commit(repo.common_dir, since.strip())
    if commit is None:
        raise CqError(f"{since!r} names no commit of this repository: give a branch, a tag, "
                      "a sha or e.g. HEAD~3")
    return commit


class Side:
    """One side of a change: a blob, a file of the work tree, or nothing (the file is absent
    on that side)."""

    def __init__(self, reader: BlobReader, blob: str = "", top: str = "", path: str = ""):
        self.reader, self.blob, self.top, self.path = reader, blob, top, path

    @property
    def present(self) -> bool:
        """Whether the file exists on this side."""
        return bool(self.blob or self.top)

    def text(self) -> str | None:
        """The file's text on this side ('' if absent; None: binary or too large)."""
        if self.blob:
            _, data = self.reader.read(self.blob, CHANGE_BYTES_MAX)
        elif self.top:
            try:
                data = read_worktree_file(self.top, self.path)
            except CqError:
                data = None
            data = None if data is None or len(data) > CHANGE_BYTES_MAX else data
        else:
            return ""
        return None if data is None or looks_binary(data) else data.decode("utf-8", "replace")


def file_change(path: str, where: str, before: Side, after: Side, number: int) -> FileChange:
    """One changed file, its definitions compared unless it is the DEFINITIONS_FILES-th or
    later, binary or too large."""
    change = "added" if not before.present else "deleted" if not after.present else "modified"
    if number >= DEFINITIONS_FILES:
        return FileChange(path, change, where, None)
    old, new = before.text(), after.text()
    if old is None or new is None:
        return FileChange(path, change, where, None)
    return FileChange(path, change, where, definition_changes(path, old, new))


def definition_changes(path: str, before: str, after: str) -> list[DefinitionChange]:
    """The definitions added, removed, or changed (their body's text differs) between two
    versions of a file."""
    old, new = bodies(path, before), bodies(path, after)
    found = [DefinitionChange("added", kind, symbol, line)
             for (kind, symbol), (line, _) in new.items() if (kind, symbol) not in old]
    found += [DefinitionChange("changed", kind, symbol, line)
              for (kind, symbol), (line, body) in new.items()
              if (kind, symbol) in old and old[(kind, symbol)][1] != body]
    found += [DefinitionChange("removed", kind, symbol, line)
              for (kind, symbol), (line, _) in old.items() if (kind, symbol) not in new]
    return sorted(found, key=lambda d: (d.line, d.symbol))


def bodies(path: str, text: str) -> dict:
    """(kind, qualified symbol) -> (first line, body text) of a version's definitions."""
    if not text:
        return {}
    doc = document_text(path, text.encode("utf-8", "surrogateescape"), words=False)
    lines = text.split("\n")
    found = {}
    for e in doc["entries"]:
        if e["kind"] in ("import", "heading"):
            continue
        end = e.get("end") or e["line"]
        found.setdefault((e["kind"], qualified(e, doc["language"])),
                         (e["line"], "\n".join(lines[e["line"] - 1:end]).strip()))
    return found
