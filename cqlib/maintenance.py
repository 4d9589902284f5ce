"""Stopping the worker, cleaning up after a crash, and repairing a damaged database.

Owns: `cq worker stop` (graceful, SIGKILL only with --force, and only once every documenter
it ran is gone), `cq worker cleanup` (a stale pid record, a stale heartbeat, leftover
processes of a killed worker), `cq index --repair` (a damaged queue or index moved aside with
the worker stopped, and rebuilt from git), the checks a worker makes as it starts, and
whether a running worker is of this cq and schema.
Must not: run in a hook: it imports the queue and the index.
"""

from __future__ import annotations

import os

from cqlib import VERSION
from cqlib.config import config_or_defaults
from cqlib.control import StartLock, halt_worker, kill_strays, mark_all_moved, start_locked
from cqlib.detector import lock_is_held, probe_worker
from cqlib.errors import CqError
from cqlib.index.database import DatabaseDamaged, database_problem, move_aside
from cqlib.index.schema import SCHEMA_VERSION
from cqlib.index.store import Index, create_index
from cqlib.pipeline import CRASH_LIMIT
from cqlib.queue import forget_queue, task_queue
from cqlib.state import HEARTBEAT_FILE, INDEX_DB, PID_FILE, QUEUE_DB, Repo, open_state_file


def runs_this_cq(record: dict) -> bool:
    """True if a worker's pid record is of this cq and index schema (a worker of another
    would fight this one over the index, each rebuilding it for its own schema)."""
    return record.get("version") == VERSION and record.get("schema") == SCHEMA_VERSION


def repair_at_start(repo: Repo) -> list[str]:
    """Before the worker opens its queue: move a damaged queue or index aside (this process
    has no connection to either yet), and count the files its predecessor died documenting.
    The queue is small, so it gets a full check; the index only an open (a cheap header and
    schema check); damage found later starts `cq index --repair`."""
    done = []
    queue = repo.state_path(QUEUE_DB)
    problem = database_problem(queue)
    if problem:
        done.append(f"queue.db was damaged ({problem}); moved it aside to {move_aside(queue)}; "
                    "reconciliation queues again what the index needs")
    try:
        index = Index(repo)
    except DatabaseDamaged as exc:
        done.append(f"{exc}; moved it aside to {move_aside(exc.path)}; rebuilding from git")
        index = Index(repo)
    with index:
        crashed = index.close_attempts(crashed=True)
    if crashed:
        done.append(f"the last worker died while documenting {crashed} file(s); each is "
                    f"skipped after {CRASH_LIMIT + 1} such deaths")
    return done


def stop_worker(repo: Repo, timeout: float | None, force: bool) -> str:
    """Stop the worker gracefully, escalating to SIGKILL only with force; returns a message.
    It returns only once the worker and every documenter it ran are gone."""
    config = config_or_defaults(repo)
    state = probe_worker(repo)
    if state.state == "unknown":
        raise CqError(f"not stopping anything: {state.detail}")
    if state.alive:
        message = halt_worker(repo, state, config.shutdown_timeout + 5 if timeout is None
                              else timeout, force)
    else:
        message = "the worker is not running"
    if state.state != "stopped":
        with StartLock(repo):  # documenters left by a kill -9, a stale record after --force
            cleanup_locked(repo)
    return message


def cleanup_worker(repo: Repo) -> list[str]:
    """Make state consistent after a crash, keeping queued work; returns what was done."""
    with StartLock(repo):
        return cleanup_locked(repo)


def cleanup_locked(repo: Repo) -> list[str]:
    """cleanup_worker's work, with the StartLock held."""
    state = probe_worker(repo)
    if state.state == "unknown":
        raise CqError(f"not cleaning up: {state.detail}")
    done = kill_strays(repo, state.pid)
    if state.state == "dead":
        fd = open_state_file(repo.state_path(PID_FILE), os.O_RDWR)
        try:
            if not lock_is_held(fd):
                os.ftruncate(fd, 0)
                done.append(f"cleared the stale pid record (PID {state.record.get('pid')})")
        finally:
            os.close(fd)
    if not state.alive:
        if os.path.exists(repo.state_path(HEARTBEAT_FILE)):
            os.unlink(repo.state_path(HEARTBEAT_FILE))
            done.append("removed the stale heartbeat")
        if os.path.exists(repo.state_path(QUEUE_DB)):
            flushed = task_queue(repo).flush_locks()
            if flushed:
                done.append(f"released stuck task locks: {', '.join(sorted(flushed))}")
    return done


def repair_databases(repo: Repo) -> list[str]:
    """Check the queue and the index (PRAGMA quick_check); move a damaged one aside, with
    the worker stopped, and let the worker rebuild it: the index is derived from git, the
    queue holds only hints.  Returns what was done."""
    paths = [repo.state_path(QUEUE_DB), repo.state_path(INDEX_DB)]
    with StartLock(repo):  # no worker starts while the files move
        problems = {path: database_problem(path) for path in paths}
        damaged = {path: problem for path, problem in problems.items() if problem}
        if not damaged:
            return []
        state = probe_worker(repo)
        if state.state == "unknown":
            raise CqError(f"cannot repair while it is unclear whether a worker runs: "
                          f"{state.detail}")
        config = config_or_defaults(repo)
        if state.alive:  # its connections must be closed before a file moves
            halt_worker(repo, state, config.shutdown_timeout + 5, force=True)
        forget_queue(repo)
        done = []
        for path, problem in damaged.items():
            aside = move_aside(path)
            done.append(f"{os.path.basename(path)} was damaged ({problem}); moved it aside "
                        f"to {aside} and started a new one")
        cleanup_locked(repo)
        create_index(repo)  # a fresh, empty index: readers see it at once
        mark_all_moved(repo)
        rebuild = repo.state_path(INDEX_DB) in damaged
        if state.alive or (rebuild and config.autostart):
            start_locked(repo, None, 10.0)
            if rebuild:
                done.append("the worker is rebuilding the index from git (see: cq index status)")
        elif rebuild:
            done.append("start the worker to rebuild the index from git: cq worker start")
    return done
