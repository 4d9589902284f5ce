"""Where the index stands for a worktree: the one answer `cq index status`, `--wait`, `init`
and every MCP answer give.

Owns: IndexState (HEAD, the commit the worktree's map was brought to, and the counts of its
files) and what follows from it: current, searchable, complete, catching up, and the note an
answer carries.  Two callers asking at the same moment get the same answer.
Must not: wait, wake the worker or format output (its callers do).
"""

from __future__ import annotations

from collections import namedtuple

from cqlib.gitio import head_commit
from cqlib.index.store import Index
from cqlib.state import Repo


class IndexState(namedtuple("IndexState", ("head", "indexed_commit", "known", "counts"))):
    """One worktree's index as it stands: its HEAD, the commit its map was last brought to
    (None before the first), whether the index knows the worktree at all, and Index.status's
    counts (files, documented, pending, lexical, failed, skipped)."""

    __slots__ = ()

    @property
    def current(self) -> bool:
        """The worktree's map is at its HEAD (its files may still be documented)."""
        return self.known and self.indexed_commit == self.head

    @property
    def searchable(self) -> bool:
        """Every file of HEAD is found by its words at least (the lexical pass)."""
        return self.current and self.counts["pending"] == self.counts["lexical"]

    @property
    def complete(self) -> bool:
        """Every file of HEAD is documented (or skipped, or failed, with the reason)."""
        return self.current and self.counts["pending"] == 0

    @property
    def catching_up(self) -> bool:
        """Answers may not reflect HEAD yet: the map is behind it, or files are pending."""
        return not self.complete

    def note(self) -> str:
        """What an answer from this index should say about its freshness ('' if complete)."""
        notes = [] if self.current else \
            ["the index is catching up with HEAD: some hits may be stale"]
        if self.counts["pending"]:
            notes.append(f"{self.counts['pending']} files are still being indexed")
        return "; ".join(notes)

    def report(self) -> dict:
        """The counts with HEAD, the indexed commit and whether all is searchable: the fields
        of `cq index status --json` that describe progress."""
        return {**self.counts, "head": self.head, "indexed_commit": self.indexed_commit,
                "searchable": self.searchable}


def index_state(index: Index, git_dir: str, head: str | None = None,
                problems: bool = False) -> IndexState:
    """Where the index stands for the worktree of git_dir, its counts and its commit read at
    one moment (HEAD as read just before, by the caller if it has it); with problems, the
    counts also list the skipped and failed files (`skipped_files`, `failed_files`)."""
    head = head_commit(git_dir) if head is None else head
    with index.snapshot():
        counts = index.status(git_dir)
        if problems:
            counts.update(index.problem_files(git_dir))
        return IndexState(head, index.worktree_commit(git_dir), git_dir in index.worktrees(),
                          counts)


def read_index_state(repo: Repo, problems: bool = False) -> IndexState:
    """index_state of this worktree, from a read of its own."""
    with Index(repo, readonly=True) as index:
        return index_state(index, repo.git_dir, problems=problems)
