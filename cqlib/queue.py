"""The queue and its tasks: the only module that imports Huey.

Owns: TaskQueue, a repository's Huey queue (SQLite, queue.db, no result storage) with cq's
four tasks (sync a worktree, the lexical pass, the full pass, reconcile), the settings its
tasks run with, the worker's consumer (thread workers, graceful stop on SIGTERM, never the
re-exec Huey does on SIGHUP), and feeding the worker's activity from Huey's task signals.
Tasks are hints: the index, not the queue, decides what is missing, so a task lost to
`kill -9` or a power cut loses no work.  A task's name in queue.db is `cq.NAME` wherever its
code lives, so a queue outlives a move of the code (cq 0.5 kept every task in cq.py).
Must not: document or store anything itself (a task's work is the pipeline's), and be
imported by the hot paths (`hook run`, `worker status`): Huey costs 40 to 110 ms.
"""

from __future__ import annotations

import signal
import sqlite3
import time

from cqlib.config import Config, config_files_state, load_config
from cqlib.control import request_repair
from cqlib.errors import CqError
from cqlib.index.database import (
    DatabaseDamaged,
    RowCount,
    UnsyncedConnection,
    check_database_files,
    is_damage,
    needs_repair,
    sqlite_uri,
)
from cqlib.index.store import Index
from cqlib.index.summaries import Summaries
from cqlib.lifecycle import Problems, Progress, WorkerActivity
from cqlib.pipeline import (
    document_blobs,
    queue_documents,
    reconcile_index,
    sweep_words,
    sync_worktree,
)
from cqlib.state import QUEUE_DB, Repo, log

TASK_NAMESPACE = "cq"  # what a task's name in the queue begins with (Huey takes the module's)
CONFIG_RECHECK = 10.0  # seconds a task trusts unchanged config files (includes are not seen)
_QUEUES: dict = {}  # common dir -> its TaskQueue, one a process


class TaskQueue:
    """A repository's queue of cq's tasks, and the settings they run with."""

    def __init__(self, repo: Repo):
        from huey import SqliteHuey

        self.repo = repo
        path = repo.state_path(QUEUE_DB)
        check_database_files(path)
        try:
            self.huey = SqliteHuey(name="cq", filename=sqlite_uri(path, "rwc"), uri=True,
                                   results=False, utc=True, timeout=30, factory=UnsyncedConnection)
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise DatabaseDamaged(path, str(exc)) from exc
            raise
        self.config = Config()  # the worker sets the settings it started with
        self.config_read: tuple | None = None  # the config files' state when last read
        self.config_at = 0.0
        self.tasks = self.register()

    def register(self) -> dict:
        """cq's tasks on this queue, by name.  Higher priorities run first: a move of HEAD is
        mapped at once, and the lexical pass of a large change runs before any full pass,
        whatever order they were queued in."""
        common, huey, repo = self.repo.common_dir, self.huey, self.repo

        def named(work):  # the queue names it cq.NAME, whatever module its code is in
            work.__module__ = TASK_NAMESPACE
            return work

        @huey.task(name="sync", priority=2)
        @named
        def sync(git_dir: str) -> None:
            repair_if_damaged(repo, sync_worktree, Repo(common, git_dir), self)

        @huey.task(name="lexical", priority=1)
        @named
        def lexical(token: str | None = None) -> None:  # (cq 0.6 queued a list of files)
            repair_if_damaged(repo, sweep_words, Repo(common, common), self,
                              token if isinstance(token, str) else None)

        @huey.task(name="document")
        @named
        def document(blobs: list) -> None:
            repair_if_damaged(repo, document_blobs, Repo(common, common), blobs, self)

        @huey.task(name="reconcile")
        @named
        def reconcile() -> None:
            repair_if_damaged(repo, reconcile_index, Repo(common, common), self)

        return {"sync": sync, "lexical": lexical, "document": document, "reconcile": reconcile}

    def sync(self, git_dir: str) -> None:
        """Queue a sync of one worktree's map with its HEAD."""
        self.tasks["sync"](git_dir)

    def lexical(self, token: str | None) -> None:
        """Queue a sweep of the lexical pass (which queues the full pass of what it records);
        the sweeps queued together share a token."""
        self.tasks["lexical"](token)

    def document(self, blobs: list) -> None:
        """Queue the full pass of (blob, path) pairs."""
        self.tasks["document"](blobs)

    def reconcile(self) -> None:
        """Queue a comparison of every worktree with the index."""
        self.tasks["reconcile"]()

    def pending_count(self) -> int:
        """The number of queued tasks."""
        return self.huey.pending_count()

    def pending(self) -> list[tuple[str, str]]:
        """(name, what it is about) of each queued task."""
        return [(task.name, describe_task(task)) for task in self.huey.pending()]

    def purge(self) -> None:
        """Drop every queued task."""
        self.huey.storage.flush_queue()

    def flush_locks(self) -> set:
        """Release the task locks a killed worker held; their names."""
        return self.huey.flush_locks()

    def close(self) -> None:
        """Close the queue's connection."""
        self.huey.storage.close()

    def settings(self, repo: Repo) -> Config:
        """The settings as they are now for a worktree's task; while they are invalid, the
        last valid ones, with the problem shown by `cq worker status` (a typo in git config
        must not stall the index).  They are read again (a git process) only when a config
        file changed, or after CONFIG_RECHECK seconds: a task of the initial index would
        otherwise spend more time reading them than documenting."""
        files, now = config_files_state(repo), time.monotonic()
        if self.config_read == files and now - self.config_at < CONFIG_RECHECK:
            return self.config
        try:
            self.config = load_config(repo)
            self.config_read, self.config_at = files, now
            Problems.clear("config")
        except CqError as exc:
            Problems.report("config", f"{exc}; using the last valid settings")
        return self.config

    def watch(self, activity: WorkerActivity) -> None:
        """Feed the worker's activity (and its problems) from Huey's task signals; a task Huey
        deleted before an immediate stop interrupted it is queued again, so it is not lost."""
        from huey import signals as S

        huey = self.huey

        @huey.signal(S.SIGNAL_EXECUTING)
        def executing(signal, task, *args):
            activity.started(task.id, task.name, describe_task(task))

        @huey.signal(S.SIGNAL_COMPLETE, S.SIGNAL_ERROR, S.SIGNAL_INTERRUPTED)
        def finished(signal, task, *args):
            outcome = {S.SIGNAL_COMPLETE: "done", S.SIGNAL_ERROR: "failed"}.get(signal)
            activity.ended(task.id, outcome)
            if signal == S.SIGNAL_ERROR:
                Problems.report("task", f"{task.name} failed: {args[0] if args else '?'}")
            elif signal == S.SIGNAL_COMPLETE:
                Problems.clear("task")
                Progress.made()
            if signal == S.SIGNAL_INTERRUPTED:
                huey.enqueue(task)
                log(f"task {task.name} {task.id} was interrupted; queued again")

    def start_consumer(self, config: Config):
        """The worker's consumer, started (its signal handlers set): thread workers, no
        periodic tasks, locks a killed worker held released, SIGTERM graceful (with
        cq.shutdownTimeout), SIGHUP a graceful stop too (Huey's restart by os.execl would
        drop the worker's lock)."""
        consumer = self.huey.create_consumer(
            workers=config.workers, worker_type="thread", periodic=False, flush_locks=True,
            graceful_signal="TERM", shutdown_timeout=config.shutdown_timeout,
            initial_delay=0.02, backoff=1.5, max_delay=0.1, check_worker_health=True)
        consumer._signal_actions[signal.SIGHUP] = (False, True)
        consumer.start()
        return consumer

    def run_consumer(self, consumer) -> None:
        """Run the consumer's loop until a stop signal ends it, then put back the tasks still
        in flight (Huey deleted them from the queue when it took them)."""
        from huey.consumer import ConsumerStopped

        health = time.monotonic()
        while True:
            try:
                health = consumer.loop(health)
            except ConsumerStopped:
                break
        self.huey.notify_interrupted_tasks()


def task_queue(repo: Repo) -> TaskQueue:
    """This repository's TaskQueue (one a process)."""
    if repo.common_dir not in _QUEUES:
        _QUEUES[repo.common_dir] = TaskQueue(repo)
    return _QUEUES[repo.common_dir]


def forget_queue(repo: Repo) -> None:
    """Close and forget this process's TaskQueue of the repository (before queue.db moves)."""
    queue = _QUEUES.pop(repo.common_dir, None)
    if queue is not None:
        queue.close()


def queued_tasks(repo: Repo) -> list[tuple[str, str]]:
    """(name, what it is about) of each task queued in this repository, without creating
    queue.db where there is none."""
    if not check_database_files(repo.state_path(QUEUE_DB)):
        return []
    return task_queue(repo).pending()


def retry_failures(repo: Repo) -> tuple[int, int]:
    """Forget every failure, so that the files and their summaries are tried again, and queue
    the files: (files queued, summaries to ask for again)."""
    with Index(repo) as index:
        failed = index.clear_failures()
        queue_documents(task_queue(repo), failed)
        summaries = Summaries(index).clear_failures()
    return len(failed), len(summaries)


def queued_task_count(repo: Repo) -> RowCount:
    """A count of the tasks in the queue (Huey's `task` table) that waits at most 0.2 s for a
    writer, on a connection of its own: the heartbeat's, never behind Huey's lock."""
    return RowCount(repo.state_path(QUEUE_DB), "task", 200)


def huey_version() -> str:
    """The bundled Huey's version, or a note that it is missing."""
    try:
        import huey
    except ImportError:
        return "not available"
    return huey.__version__


def repair_if_damaged(repo: Repo, work, *args) -> None:
    """Run a task; if it meets a damaged or unreadable database, have `cq index --repair` (a
    process of its own, which stops this worker first) put it right and restart the worker."""
    try:
        work(*args)
    except Exception as exc:
        if needs_repair(exc):
            request_repair(repo, f"a database is damaged or unreadable ({exc})")
        raise


def describe_task(task) -> str:
    """A short human description of a queued task."""
    args = task.args or ()
    if task.name == "lexical":
        return "every file with no record yet"
    if task.name == "document" and args:
        paths = [p for _, p in args[0]]
        return f"{len(paths)} file(s): {', '.join(paths[:3])}{' ...' if len(paths) > 3 else ''}"
    if task.name == "sync" and args:
        return f"worktree {args[0]}"
    return ""
