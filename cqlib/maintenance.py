"""Stopping the worker, cleaning up after a crash, and repairing a damaged database.

Owns: `cq worker stop` (graceful, SIGKILL only with --force, and only once every documenter
it ran is gone), `cq worker cleanup` (a stale pid record, a stale heartbeat, leftover
processes of a killed worker), `cq index --repair` (a damaged queue or index moved aside with
the worker stopped, and rebuilt from git), and the checks a worker makes as it starts.
Must not: run in a hook: it imports the queue and the index.
"""

from __future__ import annotations

import os

from cqlib.config import config_or_defaults
from cqlib.control import StartLock, mark_all_moved, start_locked
from cqlib.detector import WorkerHandle, WorkerState, lock_is_held, open_pidfd, probe_worker
from cqlib.errors import CqError
from cqlib.index.database import DatabaseDamaged, database_problem, move_aside
from cqlib.index.store import Index, create_index
from cqlib.pipeline import CRASH_LIMIT
from cqlib.queue import forget_queue, task_queue
from cqlib.state import HEARTBEAT_FILE, INDEX_DB, PID_FILE, QUEUE_DB, Repo, open_state_file


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


def halt_worker(repo: Repo, state: WorkerState, timeout: float, force: bool) -> str:
    """Send the live worker SIGTERM and wait until it is gone; with force, SIGKILL it after
    timeout.  Returns a message; CqError if it is still there."""
    import signal

    pid = state.record["pid"]
    handle = WorkerHandle(repo, state.record)
    try:
        handle.send(signal.SIGTERM)
        if handle.wait_gone(timeout):
            return f"stopped the worker (PID {pid})"
        if not force:
            doing = "is hung (no heartbeat)" if state.state == "hung" else \
                "is still finishing its task"
            raise CqError(f"the worker (PID {pid}) {doing} after {timeout:.0f}s; wait, run "
                          "cq worker stop again to interrupt the task now (it is queued "
                          "again), or use --force to kill the worker")
        handle.send(signal.SIGKILL)
        if handle.wait_gone(10):
            return f"killed the worker (PID {pid}); unfinished work will be redone"
        raise CqError(f"the worker (PID {pid}) survived SIGKILL")
    finally:
        handle.close()


def stray_kind(pid: int, repo: Repo, live_worker: int | None) -> str | None:
    """What process pid is, if it is one cq started for this repository that no live worker
    accounts for: "worker" (a `cq worker run` that is not the live worker) or "documenter"
    (marked by CQ_STATE_DIR, and by a CQ_WORKER_PID that is not the live worker's)."""
    if pid in (os.getpid(), live_worker):
        return None
    try:
        if os.stat(f"/proc/{pid}").st_uid != os.getuid():
            return None
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [os.fsdecode(a) for a in f.read().split(b"\0")]
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read().split(b"\0")
    except OSError:
        return None
    if is_worker_command(argv, repo):
        return "worker"
    if os.fsencode(f"CQ_STATE_DIR={repo.state_dir}") in environ and \
            os.fsencode(f"CQ_WORKER_PID={live_worker}") not in environ:
        return "documenter"  # started by a worker that is not the live one
    return None


def is_worker_command(argv: list[str], repo: Repo) -> bool:
    """True if argv is `... cq -C <this repository> worker run ...`."""
    for i, arg in enumerate(argv[:-3]):
        if arg == "-C" and argv[i + 2:i + 4] == ["worker", "run"]:
            return os.path.realpath(argv[i + 1]) == repo.common_dir
    return False


def kill_strays(repo: Repo, live_worker: int | None) -> list[str]:
    """SIGKILL stray processes of ours (call with the StartLock held); says what it did."""
    import signal

    if not os.path.isdir("/proc"):
        return []
    done = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or stray_kind(int(name), repo, live_worker) is None:
            continue
        pid, pidfd = int(name), None
        try:
            pidfd = open_pidfd(pid)
            kind = stray_kind(pid, repo, live_worker)  # again, now that the pidfd pins it
            if kind is None:
                continue
            if pidfd is None:
                os.kill(pid, signal.SIGKILL)
            else:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            done.append(f"killed leftover {kind} process {pid}")
        except ProcessLookupError:
            pass
        finally:
            if pidfd is not None:
                os.close(pidfd)
    return done


def repair_databases(repo: Repo) -> list[str]:
    """Check the queue and the index (PRAGMA quick_check), and where either is damaged or
    unreadable, stop the worker (closing its connections) and check again: one its WAL was
    removed under reads well once the worker has closed it; one still damaged is moved
    aside, and the worker rebuilds it (the index is derived from git, the queue holds only
    hints).  The worker is started again, every worktree marked to catch up with its HEAD.
    Returns what was done."""
    paths = [repo.state_path(QUEUE_DB), repo.state_path(INDEX_DB)]
    with StartLock(repo):  # no worker starts while the files move
        problems = {path: database_problem(path) for path in paths}
        problems = {path: problem for path, problem in problems.items() if problem}
        if not problems:
            return []
        state = probe_worker(repo)
        if state.state == "unknown":
            raise CqError(f"cannot repair while it is unclear whether a worker runs: "
                          f"{state.detail}")
        config = config_or_defaults(repo)
        if state.alive:  # its connections must be closed before a file moves
            halt_worker(repo, state, config.shutdown_timeout + 5, force=True)
        forget_queue(repo)
        done, rebuild = [], False
        for path, problem in problems.items():
            name = os.path.basename(path)
            if database_problem(path) is None:
                done.append(f"{name} could not be used ({problem}) while the worker had it "
                            "open; it reads well now that the worker has closed it")
                continue
            done.append(f"{name} was damaged ({problem}); moved it aside to "
                        f"{move_aside(path)} and started a new one")
            rebuild = rebuild or path == repo.state_path(INDEX_DB)
        cleanup_locked(repo)
        create_index(repo)  # a fresh, empty index: readers see it at once
        mark_all_moved(repo)
        if state.alive or (rebuild and config.autostart):
            start_locked(repo, None, 10.0)
            done.append("the worker is rebuilding the index from git (see: cq index status)"
                        if rebuild else "the worker is catching up with HEAD again")
        elif rebuild:
            done.append("start the worker to rebuild the index from git: cq worker start")
    return done

