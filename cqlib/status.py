"""Where the index stands for a worktree: the one answer `cq index status`, `--wait`, `init`
and every MCP answer give.

Owns: opening the index to read (for the CLI and MCP alike: an index that is missing, or of
another cq, explained and rebuilt), whether a running worker is of this cq and schema,
IndexState (HEAD, the commit the worktree's map was brought to, and the counts of its files)
and what follows from it: current, searchable, complete, catching up, and the note an answer
carries (two callers asking at the same moment get the same answer); and await_head, the
wait (up to cq.mcpWaitMs) for the worker to reach HEAD that the CLI's search and every MCP
answer make before saying what they reflect (fresh_state).
Must not: import the queue or format output (its callers do).
"""

from __future__ import annotations

import os
import time
from collections import namedtuple

from cqlib import VERSION
from cqlib.control import mark_all_moved, wake_worker
from cqlib.detector import probe_worker
from cqlib.errors import CqError
from cqlib.gitio import PendingGit, changed_blobs, commit_exists, head_commit, new_blobs
from cqlib.index.database import NotIndexed
from cqlib.index.schema import SCHEMA_VERSION
from cqlib.index.store import Index
from cqlib.state import PYZ_COPY, Repo, mark_moved


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


class CountCache:
    """The last counts of a long-lived reader (the MCP server): counting again takes 40 ms at
    50,000 files, so it is done only when the indexed commit or HEAD moved, or the index was
    written and COUNTS_FRESH_SECONDS passed.  Two answers given at the same moment say the
    same."""

    COUNTS_FRESH_SECONDS = 2.0

    def __init__(self):
        self.when, self.key, self.counts, self.version = 0.0, None, {}, None

    def counts_of(self, index: Index, key: tuple) -> dict:
        """The counts for key (git dir, indexed commit, HEAD): kept ones while fresh, or
        while nothing was written to the index since (counting takes 40 ms at 50,000
        files)."""
        version = index.data_version()
        if key != self.key or (version != self.version and
                               time.monotonic() - self.when > self.COUNTS_FRESH_SECONDS):
            self.counts = index.status(key[0])
            self.when, self.key, self.version = time.monotonic(), key, version
        return self.counts


def index_state(index: Index, git_dir: str, head: str | None = None,
                problems: bool = False, cache: CountCache | None = None) -> IndexState:
    """Where the index stands for the worktree of git_dir, its counts and its commit read at
    one moment (HEAD as read just before, by the caller if it has it); with problems, the
    counts also list the skipped and failed files (`skipped_files`, `failed_files`); with a
    cache, counts kept from a moment ago may stand in for a count."""
    head = head_commit(git_dir) if head is None else head
    with index.snapshot():
        indexed = index.worktree_commit(git_dir)
        counts = dict(cache.counts_of(index, (git_dir, indexed, head)) if cache else
                      index.status(git_dir))
        if problems:
            counts.update(index.problem_files(git_dir))
        return IndexState(head, indexed, git_dir in index.worktrees(), counts)


def read_index_state(repo: Repo, problems: bool = False) -> IndexState:
    """index_state of this worktree, from a read of its own."""
    with Index(repo, readonly=True) as index:
        return index_state(index, repo.git_dir, problems=problems)


def runs_this_cq(record: dict) -> bool:
    """True if a worker's pid record is of this cq and index schema (a worker of another
    would fight this one over the index, each rebuilding it for its own schema)."""
    return record.get("version") == VERSION and record.get("schema") == SCHEMA_VERSION


def open_index_to_read(repo: Repo) -> Index:
    """The index, read-only, for the CLI and the MCP server alike.  Where cq is set up but the
    index is missing or empty (deleted, truncated, or made by another version), the worker is
    set to rebuild it from git and the CqError says so, rather than asking for cq init."""
    try:
        return Index(repo, readonly=True)
    except NotIndexed:
        if not os.path.isfile(repo.state_path(PYZ_COPY)):
            raise
    state = probe_worker(repo)
    if state.alive and not runs_this_cq(state.record):
        raise CqError(f"the worker running here is cq {state.record.get('version')}, whose "
                      f"index this cq {VERSION} cannot read (upgrade it: cq init)")
    mark_all_moved(repo)
    wake_worker(repo, start=True)
    raise CqError("the index is empty; the worker is building it from git: ask again shortly "
                  "(progress: cq index status)")


AWAITED_FILES_MAX = 200  # a move bringing more files than this is answered at once, as such
WAIT_STEP = 0.05  # seconds between looks at the index while waiting for it


class Freshness(namedtuple("Freshness", ("indexed_commit", "head", "catching_up", "stale",
                                         "note"))):
    """What an answer reflects: the commit the worktree's map is at, HEAD, whether the index
    is still catching up (IndexState.catching_up), the paths HEAD moved past the index (None
    where that is not known, so any may have), and the note an answer carries."""

    __slots__ = ()


def fresh_state(repo: Repo, index: Index, wait_ms: int, autostart: bool,
                cache: CountCache | None = None, cancelled=lambda: False,
                progress=lambda step: None) -> Freshness:
    """Where the index stands, after await_head: what every MCP answer says it reflects."""
    head = await_head(repo, index, wait_ms, autostart, cancelled, progress)
    state = index_state(index, repo.git_dir, head, cache=cache)
    indexed = state.indexed_commit
    stale: set | None = set()
    if indexed != head:
        stale = {p for p, _, _ in changed_blobs(repo.common_dir, indexed, head)} \
            if indexed and head and commit_exists(repo.common_dir, indexed) else None
    return Freshness(indexed, head, state.catching_up, stale, state.note())


def await_head(repo: Repo, index: Index, wait_ms: int, autostart: bool,
               cancelled=lambda: False, progress=lambda step: None,
               pending_head: PendingGit | None = None) -> str | None:
    """Give the worker up to wait_ms to bring the worktree to HEAD (woken, or started with
    autostart) and to document the files the move brought (AWAITED_FILES_MAX at most);
    `progress(step)` is called on each look, and `cancelled()` ends the wait.  HEAD, as read
    before waiting (by `pending_head` where the caller started reading it).  The wait the
    CLI's search and every MCP answer make."""
    head = head_commit(repo.git_dir, pending_head)
    indexed = index.worktree_commit(repo.git_dir)
    if indexed == head:
        return head
    mark_moved(repo)
    wake_worker(repo, start=autostart)
    deadline = time.monotonic() + wait_ms / 1000
    step, before, awaited = 0, indexed, None
    while time.monotonic() < deadline and not cancelled():
        if indexed == head:  # and then the files of the move documented too
            awaited = blobs_to_await(repo, before, head) if awaited is None else awaited
            if not awaited or next(index.missing_blobs(repo.git_dir, awaited), None) is None:
                break
        step += 1
        progress(step)
        time.sleep(WAIT_STEP)
        indexed = index.worktree_commit(repo.git_dir)
    return head


def blobs_to_await(repo: Repo, before: str | None, head: str | None) -> list:
    """The blobs a move of HEAD brought in, to wait for (none when the move is unknown or
    brings more than AWAITED_FILES_MAX, too many to be documented within a wait)."""
    if not (before and head and commit_exists(repo.common_dir, before)):
        return []
    blobs = new_blobs(changed_blobs(repo.common_dir, before, head))
    return blobs if len(blobs) <= AWAITED_FILES_MAX else []
