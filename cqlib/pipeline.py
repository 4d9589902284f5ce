"""What the tasks do: bring the index to HEAD without losing work.

Owns: sync (a worktree's path -> blob map brought to its HEAD by a diff, or from its tree),
reconcile (every worktree compared with the index, whatever is missing queued again), the
lexical pass (each file's language and words, swept from the index 512 files a commit, so a
large tree is soon searchable) and the full pass (the built-in documenter, a batch a
commit), and containing a file that keeps killing the worker (it is tried alone, then keeps
its names only).
Must not: import Huey (tasks get the queue they came from) or parse CLI arguments.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

from cqlib.config import Config
from cqlib.documenters import document_text, looks_binary, minimal_record, skip_status
from cqlib.errors import CqError
from cqlib.gitio import (
    BlobReader,
    changed_blobs,
    commit_exists,
    head_commit,
    new_blobs,
    thread_blob_reader,
    tree_entries,
    tree_listing,
    worktree_git_dirs,
)
from cqlib.index.database import is_damage
from cqlib.index.schema import CRASHED, LEXICAL
from cqlib.index.store import Failure, Index, Record
from cqlib.lifecycle import Progress, Shutdown, SummaryWork, WorkerStopping
from cqlib.pool import DIED_TWICE, Documented, Job, run_jobs, shared_pool
from cqlib.state import Repo, log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator


DOCUMENT_BATCH = 128  # files a task documents with one commit
LEXICAL_PART = 512  # files a sweep of the lexical pass documents with one commit
SWEEP_PARTS = 4  # parts a sweep takes before it makes way for other tasks (see sweep_words)
LEXICAL_FIRST = 200  # more files with no record than this get the lexical pass first
CRASH_LIMIT = 2  # a file in flight at more unexpected deaths of the worker than this is skipped
# Two syncs of one worktree (a hook's and a reconcile's, at a start) take turns: run together,
# both would list the whole tree for one to find the other had moved the map (the second a
# first index spent on two cores).
SYNC_TURNS: dict = {}  # git dir -> its lock
SYNC_TURNS_GUARD = threading.Lock()


def queue_missing(queue, index: Index, git_dir: str | None, among: list | None = None) -> int:
    """Queue what one worktree (or every one: git_dir None) lacks, of the blobs `among` if
    given; returns how many files were queued (those with no record counted only up to
    LEXICAL_FIRST + 1 where the lexical pass sweeps for them).  Where more than LEXICAL_FIRST
    have no record at all, the lexical pass goes first: its sweeps find them in the index
    themselves (a first index holds no list of them all), queue each part's full pass, and
    run before any full pass (their priority is higher), so the whole tree is soon
    searchable by its words; the files the lexical pass recorded before get their full
    pass queued here.  Fewer go straight to the full pass."""
    unrecorded = list(index.missing_blobs(git_dir, among, recorded=False,
                                          limit=LEXICAL_FIRST + 1))
    if len(unrecorded) <= LEXICAL_FIRST:
        return queue_full_pass(queue, index.missing_blobs(git_dir, among))
    queue_sweeps(queue)
    return len(unrecorded) + queue_full_pass(queue, index.missing_blobs(git_dir, among,
                                                                       recorded=True))


def queue_documents(queue, blobs: list) -> int:
    """Queue (blob, path) pairs that have no record: the lexical pass's sweeps where there
    are more than LEXICAL_FIRST (see queue_missing), else their full pass; returns how many."""
    if len(blobs) > LEXICAL_FIRST:
        queue_sweeps(queue)
        return len(blobs)
    return queue_full_pass(queue, blobs)


def queue_sweeps(queue) -> None:
    """Queue a sweep of the lexical pass for each worker thread: they share out its parts."""
    token = f"{os.getpid()}.{time.time_ns()}"  # the sweeps of one call (see LexicalSweep)
    for _ in range(queue.config.workers):
        queue.lexical(token)


def queue_full_pass(queue, blobs: Iterable[tuple[str, str]]) -> int:
    """Queue the full pass of (blob, path) pairs, DOCUMENT_BATCH a task, taking the pairs as
    they come; returns how many."""
    count = 0
    for batch in batches(blobs, DOCUMENT_BATCH):
        queue.document(batch)
        count += len(batch)
    return count


def batches(items: Iterable, size: int) -> Iterator[list]:
    """Lists of `size` items (the last may be shorter), taken from items as they come."""
    import itertools

    items = iter(items)
    while batch := list(itertools.islice(items, size)):
        yield batch


def sync_worktree(repo: Repo, queue) -> None:
    """Bring one worktree's path -> blob map to its HEAD and queue what needs documenting."""
    import functools

    known = {os.path.realpath(d) for d in worktree_git_dirs(repo.common_dir)}
    if os.path.realpath(repo.git_dir) not in known:
        log(f"sync: {repo.git_dir!r} is not a worktree of this repository (any more); skipped")
        return
    config = queue.settings(repo)
    with SYNC_TURNS_GUARD:
        turn = SYNC_TURNS.setdefault(repo.git_dir, threading.Lock())
    with turn, Index(repo) as index:
        for _ in range(5):
            indexed = index.worktree_commit(repo.git_dir)
            known = repo.git_dir in index.worktrees()
            head = head_commit(repo.git_dir)
            if head == indexed and known:
                return
            # git runs outside the write lock; the map changes only if no other sync of this
            # worktree (several worker threads) moved it meanwhile, else we start over.
            among = None  # the blobs that may be new: all, unless a diff says which
            if head is None:
                apply = functools.partial(index.replace_worktree, repo.git_dir, None, (), config)
            elif indexed and commit_exists(repo.common_dir, indexed):
                changes = changed_blobs(repo.common_dir, indexed, head)
                # (a diff of more than 500 scans the whole map: SQLite limits variables)
                among = new_blobs(changes) if len(changes) <= 500 and known else None
                apply = functools.partial(index.apply_changes, repo.git_dir, head, changes,
                                          config)
            else:
                listing = tree_listing(repo.common_dir, head)
                apply = functools.partial(index.replace_worktree, repo.git_dir, head, (
                    (path, mode, sha) for path, mode, sha, _ in tree_entries(listing)), config)
            with index.transaction():
                if (index.worktree_commit(repo.git_dir), repo.git_dir in index.worktrees()) == \
                        (indexed, known):
                    apply()
                    break
        queue_missing(queue, index, repo.git_dir, among)


def reconcile_index(repo: Repo, queue) -> None:
    """Compare every worktree with the index and queue whatever is missing; prune orphans."""
    config = queue.settings(repo)
    with Index(repo) as index:
        known = set(index.worktrees())
        live = set(worktree_git_dirs(repo.common_dir))
        for gone in known - live:
            index.forget_worktree(gone)
        behind = [d for d in sorted(live) if index.worktree_commit(d) != head_commit(d)]
        index.prune(config.prune_after_days * 86400)
        missing = 0 if behind or queue.pending_count() else \
            queue_missing(queue, index, None)
    for git_dir in behind:
        queue.sync(git_dir)
    if missing:
        log(f"reconcile: {missing} blob(s) or more were missing from the index; queued again")


def document_blobs(repo: Repo, blobs: list, queue) -> None:
    """Document each (blob, path) that is still referenced and not yet documented: as one
    batch, except blobs in flight when the worker died, which go one at a time, so that a
    file that kills the worker is told apart from its batch and skipped after CRASH_LIMIT."""
    config = queue.settings(repo)
    reader = thread_blob_reader(repo.common_dir)
    with Index(repo) as index:
        todo = index.to_document(blobs)
        crashes = index.crash_counts(todo)
        fresh = [(blob, path) for blob, path in todo if blob not in crashes]
        if fresh and not document_batch(config, index, reader, fresh):
            return
        for blob, path in todo:
            if blob in crashes and not document_blob(config, index, reader, blob, path):
                return
    if todo and config.documenter:
        SummaryWork.wake()  # only then: a wake costs the documenting threads the GIL


def document_batch(config: Config, index: Index, reader: BlobReader, blobs: list) -> bool:
    """Document blobs and store the records with one commit; False if the worker is stopping
    (what is left is found missing later).  Their attempts are noted in one commit of their
    own (see Index.begin_attempts) before the worker documents any of them itself, or else
    before it stores their records, where a file could end it; not before the documenting
    processes take them, which a file can end only themselves: a batch's files go to the
    processes without waiting for another thread's writing."""
    reused = index.lexical_only(blobs)  # their words are in the index already
    noted = []  # the attempts' commit, once made

    def note_attempts() -> None:
        if not noted:
            index.begin_attempts(blobs)
            noted.append(True)

    try:
        made = batch_records(config, reader, blobs, False, reused, before_here=note_attempts)
        if made is not None:
            note_attempts()
            index.store_all(*made)
    except BaseException:
        index.end_attempts(blobs)  # ended by an error, not a crash
        raise
    if made is None:
        index.end_attempts(blobs)
        return False
    return True


def batch_records(config: Config, reader: BlobReader, blobs: list, lexical: bool,
                  reused: set = frozenset(), before_here=None) -> tuple | None:
    """The Records of the lexical or the full pass for (blob, path) pairs, and the Failures
    (reused: blobs whose words the lexical pass stored), as a pair; None if the
    worker is stopping.  Each blob is read and documented in the documenting processes
    where there are enough of them (the worker then holds none of their bytes), else here,
    after calling before_here (see run_jobs)."""
    jobs = [job_of(config, blob, path, reader.common_dir, lexical, blob not in reused)
            for blob, path in blobs]
    answers = run_jobs(jobs, reader, before_here)
    if answers is None:
        return None
    records, failures = [], []
    for (blob, path), answer in zip(blobs, answers):
        if isinstance(answer, Exception):
            log(f"failed to document {path} ({blob[:12]}): {answer}", error=True)
            failures.append(failure(blob, path, answer))
        elif answer.size >= 0:
            records.append(answer_record(blob, path, answer, lexical))
        elif not lexical:  # the lexical pass leaves a missing blob to the full one
            failures.append(failure(blob, path, missing_blob(blob)))
    return records, failures


def job_of(config: Config, blob: str, path: str, git_dir: str, lexical: bool = False,
           words: bool = True) -> Job:
    """The documenting job of a blob at a path, in the lexical or the full pass."""
    return Job(LEXICAL if lexical else "full", path, blob, config.parse_budget, words,
               config.max_file_size, git_dir)


def answer_record(blob: str, path: str, answer: Documented, lexical: bool) -> Record:
    """The record of what a job found (see answer_job); raises CqError for a blob the object
    database does not have."""
    size, doc = answer
    if size < 0:
        raise missing_blob(blob)
    if isinstance(doc, str):  # too large or binary
        return Record(blob, doc, size, None, path)
    return Record(blob, LEXICAL, size, doc, path) if lexical else \
        full_record(blob, path, size, doc)


def failure(blob: str, path: str, exc: Exception) -> Failure:
    """The failure to store of a blob at a path."""
    return Failure(blob, path, f"{type(exc).__name__}: {exc}")


def missing_blob(blob: str) -> CqError:
    """The error of a blob the object database does not have."""
    return CqError(f"blob {blob} is missing from the object database")


def document_blob(config: Config, index: Index, reader: BlobReader, blob: str,
                  path: str) -> bool:
    """Document one blob and store the result, or the failure; False if the worker is
    stopping.  A blob that was being documented when the worker died more than CRASH_LIMIT
    times gets a minimal record instead, so no file can keep killing the worker."""
    import sqlite3

    if Shutdown.requested:
        return False
    try:
        size, data = reader.read(blob, config.max_file_size)
        if size >= 0 and data is not None and not looks_binary(data) and \
                index.begin_attempt(blob, path) > CRASH_LIMIT:
            log(f"{path} ({blob[:12]}) was being documented when the worker died "
                f"{CRASH_LIMIT + 1} times; it keeps its names only", error=True)
            index.store(Record(blob, CRASHED, size, minimal_record(path, data, CRASHED), path))
        else:
            try:
                index.store(suspect_record(config, reader, blob, path, size, data))
            except BaseException:
                index.end_attempts([(blob, path)])  # ended, not by a crash
                raise
    except WorkerStopping:
        return False
    except sqlite3.OperationalError:
        raise  # the index is busy or broken, not this file: the task fails
    except Exception as exc:  # one bad file must not stop the batch
        if is_damage(exc):
            raise
        log(f"failed to document {path} ({blob[:12]}): {exc}", error=True)
        index.store_all([], [failure(blob, path, exc)])
    Progress.made()
    return True


def suspect_record(config: Config, reader: BlobReader, blob: str, path: str, size: int,
                   data: bytes | None) -> Record:
    """built_in_record for a blob in flight at a death of the worker, parsed in a documenting
    process: if it kills the parser, only that process dies, and the worker's other files
    are not blamed; where two processes die on it, it keeps its names only.  Here, in the
    worker, where no process can start."""
    if size < 0 or skipped_record(blob, path, size, data):
        return built_in_record(config, blob, path, size, data)
    try:
        answers = shared_pool().run([[job_of(config, blob, path, reader.common_dir)]])
        if answers is None:
            raise WorkerStopping
        answered = answers[0]
    except OSError as exc:
        log(f"documenting {path} in the worker: no documenting process could start ({exc})",
            error=True)
        answered = None
    if answered == DIED_TWICE:
        log(f"{path} ({blob[:12]}) ended two documenting processes; it keeps its names only",
            error=True)
        return Record(blob, CRASHED, size, minimal_record(path, data, CRASHED), path)
    if answered is None:
        return built_in_record(config, blob, path, size, data)
    return answer_record(blob, path, answered[0], False)


def built_in_record(config: Config, blob: str, path: str, size: int, data: bytes | None,
                    words: bool = True) -> Record:
    """The record the built-in documenter makes of a blob
    (without its words, which the lexical pass stored, unless `words`); an external
    documenter's summary follows later, from the summarizer threads."""
    if size < 0:
        raise missing_blob(blob)
    skipped = skipped_record(blob, path, size, data)
    if skipped:
        return skipped
    return full_record(blob, path, size, document_text(path, data, config.parse_budget, words))


def full_record(blob: str, path: str, size: int, doc: dict) -> Record:
    """The record of the full pass for a doc of the built-in documenter."""
    return Record(blob, "error" if doc["error"] else "ok", size, doc, path)


def skipped_record(blob: str, path: str, size: int, data: bytes | None) -> Record | None:
    """The record of a blob too large or binary to document (by either pass), else None."""
    status = skip_status(data)
    return Record(blob, status, size, None, path) if status else None


def sweep_words(repo: Repo, queue, token: str | None = None) -> None:
    """The lexical pass: a record of the language and words of each blob a worktree
    references that has no record yet, so that a large tree is searchable by its words long
    before every file is documented.  The sweeps of the worker threads share the blobs out
    (see LexicalSweep), LEXICAL_PART at a time, each part stored with one commit, its full
    pass queued before it is documented, whatever becomes of it.  After SWEEP_PARTS parts a
    sweep queues its sequel and ends, so that a sync (a hook's commit) or a stop waits for
    a few parts, not for the whole tree.  No parser runs, so no attempt is noted: nothing
    here can crash the worker."""
    config = queue.settings(repo)
    reader = thread_blob_reader(repo.common_dir)
    with LEXICAL_SWEEP.joined(token), Index(repo) as index:
        for _ in range(SWEEP_PARTS):
            part = [] if Shutdown.requested else LEXICAL_SWEEP.next_part(index)
            if not part:
                return
            try:
                part.sort(key=lambda pair: pair[1])  # in path order, as the full pass goes
                queue_full_pass(queue, part)
                made = batch_records(config, reader, part, True)
                if made is None:
                    return  # the worker is stopping
                index.store_all(made[0])
            finally:
                LEXICAL_SWEEP.done(part)
        queue.lexical(token)  # the sequel, behind any sync: it goes on where the parts are


class LexicalSweep:
    """The blobs the sweeps of the lexical pass share out: each takes the next LEXICAL_PART
    with no record, in blob order after the last part taken (read from the index: no list
    of them all is held), until none is left.  A sweep queued later that joins them under
    way may be about files behind the parts already taken: they then go round once more,
    past the parts still in flight.  When the last sweep ends, the next starts afresh."""

    def __init__(self):
        self.lock = threading.Lock()
        self.tokens: set = set()  # of the sweeps under way: those queued together share one
        self.running = 0
        self.after = ""  # the last blob of the parts taken
        self.again = False  # go round once more
        self.in_flight: set = set()  # the blobs of the parts taken and not yet stored

    @contextlib.contextmanager
    def joined(self, token: str | None):
        """A sweep under way, queued with `token` (None: of its own)."""
        with self.lock:
            if self.running and (token is None or token not in self.tokens):
                self.again = True
            self.tokens.add(token)
            self.running += 1
        try:
            yield
        finally:
            with self.lock:
                self.running -= 1
                if not self.running:
                    self.tokens, self.after, self.again = set(), "", False

    def next_part(self, index: Index) -> list[tuple[str, str]]:
        """The next (blob, path) pairs for a sweep to record; none once all are taken."""
        with self.lock:
            while True:
                part = list(index.missing_blobs(None, recorded=False, after=self.after,
                                                limit=LEXICAL_PART))
                if not part and self.again:
                    self.again, self.after = False, ""
                    continue
                if not part:
                    return []
                self.after = part[-1][0]
                part = [pair for pair in part if pair[0] not in self.in_flight]
                if part:
                    self.in_flight.update(blob for blob, _ in part)
                    return part

    def done(self, part: list[tuple[str, str]]) -> None:
        """A part is stored (or given up)."""
        with self.lock:
            self.in_flight.difference_update(blob for blob, _ in part)


LEXICAL_SWEEP = LexicalSweep()  # the worker's, shared by its threads
