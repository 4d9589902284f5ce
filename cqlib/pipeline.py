"""What the tasks do: bring the index to HEAD without losing work.

Owns: sync (a worktree's path -> blob map brought to its HEAD by a diff, or from its tree),
reconcile (every worktree compared with the index, whatever is missing queued again), the
lexical pass (each file's language and words, 512 files a commit, so a large tree is soon
searchable) and the full pass (the built-in documenter, a batch a commit), and containing a
file that keeps killing the worker (it is tried alone, then keeps its names only).
Must not: import Huey (tasks get the queue they came from) or parse CLI arguments.
"""

from __future__ import annotations

import os
import threading

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
from cqlib.pool import DIED_TWICE, Documented, Job, run_jobs, thread_pool
from cqlib.state import Repo, log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator


DOCUMENT_BATCH = 128  # files a task documents with one commit
LEXICAL_BATCH = 512  # files a task of the lexical pass indexes with one commit
LEXICAL_FIRST = 200  # more files missing than this get the lexical pass before the full one
CRASH_LIMIT = 2  # a file in flight at more unexpected deaths of the worker than this is skipped
# Two syncs of one worktree (a hook's and a reconcile's, at a start) take turns: run together,
# both would list the whole tree for one to find the other had moved the map (the second a
# first index spent on two cores).
SYNC_TURNS: dict = {}  # git dir -> its lock
SYNC_TURNS_GUARD = threading.Lock()


def queue_documents(queue, blobs: Iterable[tuple[str, str]]) -> int:
    """Queue (blob, path) pairs for documenting, in batches, taking the pairs one at a time
    (a first index holds no list of them all); returns how many.  Where there are more than
    LEXICAL_FIRST, the lexical pass goes first: each lexical task queues the full pass of
    its files when done, and runs before any full pass (its priority is higher), so the
    whole tree is soon searchable by its words."""
    import itertools

    blobs = iter(blobs)
    first = list(itertools.islice(blobs, LEXICAL_FIRST + 1))
    lexical = len(first) > LEXICAL_FIRST
    task = queue.lexical if lexical else queue.document
    count = 0
    for batch in batches(itertools.chain(first, blobs), LEXICAL_BATCH if lexical
                         else DOCUMENT_BATCH):
        task(batch)
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
        queue_documents(queue, index.missing_blobs(repo.git_dir, among))


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
            queue_documents(queue, index.missing_blobs(None))
    for git_dir in behind:
        queue.sync(git_dir)
    if missing:
        log(f"reconcile: {missing} blob(s) were missing from the index; queued again")


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
    """Document blobs with one commit to note the attempts and one to store the records;
    False if the worker is stopping (what is left is found missing later)."""
    index.begin_attempts(blobs)
    reused = index.lexical_only(blobs)  # their words are in the index already
    try:
        made = batch_records(config, reader, blobs, False, reused)
        if made is not None:
            index.store_all(*made)
    except BaseException:
        index.end_attempts(blobs)  # ended by an error, not a crash
        raise
    if made is None:
        index.end_attempts(blobs)
        return False
    return True


def batch_records(config: Config, reader: BlobReader, blobs: list, lexical: bool,
                  reused: set = frozenset()) -> tuple | None:
    """The Records of the lexical or the full pass for (blob, path) pairs, and the Failures
    (reused: blobs whose words the lexical pass stored), as a pair; None if the
    worker is stopping.  Each blob is read and documented in this thread's pool of processes
    where there are enough of them (the worker then holds none of their bytes), else here."""
    jobs = [job_of(config, blob, path, reader.common_dir, lexical, blob not in reused)
            for blob, path in blobs]
    answers = run_jobs(jobs, config.workers, reader)
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
        answers = thread_pool(config.workers).run([[job_of(config, blob, path,
                                                           reader.common_dir)]])
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


def index_words(repo: Repo, blobs: list, queue) -> None:
    """The lexical pass: a record of each blob's language and words, with one commit for
    the batch, so that a large tree is searchable by its words long before every file is
    documented; then the full pass of the batch is queued.  No parser runs, so no attempt
    is noted: nothing here can crash the worker."""
    config = queue.settings(repo)
    reader = thread_blob_reader(repo.common_dir)
    try:
        with Index(repo) as index:
            made = batch_records(config, reader, index.to_document(blobs, lexical=True), True)
            if made is not None:  # else the worker is stopping
                index.store_all(made[0])
    finally:  # the full pass, behind the lexical one, whatever became of this task
        for batch in batches(blobs, DOCUMENT_BATCH):
            queue.document(batch)
