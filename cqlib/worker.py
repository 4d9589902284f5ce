"""The worker process: `cq worker run`.

Owns: the order of its life (the pid-file lock taken first and held to the end, repairs at
start, the consumer, the heartbeat and FIFO listener threads, the summarizer threads, the
readiness handshake; at a stop, the summarizer's calls given what is left of the shutdown
timeout, then every documenter killed, the attempts in flight closed as not crashed, the pid
record emptied), its stop when idle for cq.workerIdleExit (and its run again, in the same
process, where work arrived while it stopped), its log, and its heartbeat (rewritten in
place, so a full disk cannot silence a live worker).
Must not: format output, or run anywhere but in the worker process (it takes the lock that
says the worker is alive).
"""

from __future__ import annotations

import os
import sqlite3
import time

from cqlib import VERSION
from cqlib.config import Config, load_config
from cqlib.control import open_wake_fifo, request_repair
from cqlib.detector import lock_within, proc_stat_fields, process_identity
from cqlib.errors import EXIT_OK, CqError
from cqlib.index.schema import SCHEMA_VERSION
from cqlib.index.store import Index
from cqlib.lifecycle import (
    RUNNING_DOCUMENTERS,
    Problems,
    Progress,
    Shutdown,
    SummaryWork,
    WorkerActivity,
    kill_process_group,
)
from cqlib.llm import remove_stale_rooms
from cqlib.maintenance import kill_strays, repair_at_start
from cqlib.pool import POOL_IDLE, reap_ended_processes
from cqlib.queue import TaskQueue, queued_task_count, task_queue
from cqlib.state import (
    HEARTBEAT_FILE,
    IDLE_STOP_FILE,
    LOG_FILE,
    PENDING_DIR,
    PID_FILE,
    WAKE_FIFO,
    WORKER_LOG_NAME,
    Repo,
    ensure_state_dir,
    format_record,
    log,
    open_state_file,
    read_state_file,
    write_state_file,
)
from cqlib.summarizer import Summarizer


def acquire_worker_lock(repo: Repo) -> int:
    """Take the pid-file lock that marks the live worker; CqError if another worker has it."""
    fd = open_state_file(repo.state_path(PID_FILE), os.O_RDWR | os.O_CREAT)
    # A probe holds a shared lock for microseconds; a worker holds it for good.
    if not lock_within(fd, 2.0):
        os.close(fd)
        raise CqError("a worker is already running for this repository")
    return fd


def write_pid_record(fd: int, record: dict | None) -> None:
    """Rewrite the pid file in place (never unlink a file others may lock); None empties it,
    which is how a clean stop is told apart from a crash."""
    data = format_record(record) if record else b""
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def setup_worker_logging(repo: Repo, config: Config):
    """Log to a size-rotated file in the state directory."""
    import logging
    from logging.handlers import RotatingFileHandler

    path = repo.state_path(LOG_FILE)
    os.close(open_state_file(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND))
    handler = RotatingFileHandler(path, maxBytes=config.log_max_bytes,
                                  backupCount=config.log_backups)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    return handler


HEARTBEAT_BYTES = 16384


class Heartbeat:
    """The heartbeat file, rewritten in place at a fixed size: overwriting blocks a file already
    has needs no free space, so a full disk cannot silence a live worker.  Readers read until
    two reads agree (see read_heartbeat)."""

    def __init__(self, path: str):
        self.fd = open_state_file(path, os.O_RDWR | os.O_CREAT)

    def write(self, record: dict) -> None:
        """Replace the record (OSError if even that fails)."""
        data = format_record(record)
        if len(data) > HEARTBEAT_BYTES:  # tasks in flight and a problem make it long
            data = format_record(dict(record, current="[]",
                                      problem=str(record.get("problem", ""))[:1000]))
        os.pwrite(self.fd, data[:HEARTBEAT_BYTES].ljust(HEARTBEAT_BYTES, b"\n"), 0)

    def close(self) -> None:
        """Close the file."""
        os.close(self.fd)


GONE_BEATS = 3  # heartbeats without its repository before a worker stops
# Seconds idle after work (and after its documenting processes left) before the worker reaps
# them and gives its free memory back.
TRIM_AFTER = 2.0
COUNT_BUSY_MS = 200  # the longest the listener waits for another writer to count terms


def removed_wals(state_dir: str) -> set[str]:
    """The names of the WAL files of state_dir this process has open although they were
    removed (/proc/self/fd; nothing where there is no /proc)."""
    removed = set()
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return removed
    for fd in fds:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith("-wal (deleted)") and os.path.dirname(target) == state_dir:
            removed.add(os.path.basename(target)[:-len(" (deleted)")])
    return removed


def is_work(task_name: str) -> bool:
    """True for a task that is work, not the periodic reconcile (which mostly finds none)."""
    return task_name.rsplit(".", 1)[-1] != "reconcile"


class WorkerLoop:
    """The worker's own threads: the heartbeat and the FIFO listener that turns hook pokes and
    timers into sync and reconcile tasks."""

    def __init__(self, repo: Repo, config: Config, queue: TaskQueue, activity: WorkerActivity):
        import threading

        self.repo, self.config, self.queue, self.activity = repo, config, queue, activity
        self.stopping = threading.Event()
        self.started_at = time.time()
        self.threads = [threading.Thread(target=self.guard, args=(f,), name=f.__name__,
                                         daemon=True)
                        for f in (self.beat_forever, self.listen_forever)]
        self.beat_lock = threading.Lock()
        self.last_beat = 0.0
        self.queue_length = queue.pending_count()
        self.queue_count = queued_task_count(repo)  # on the heartbeat thread's connection
        self.heartbeat = Heartbeat(repo.state_path(HEARTBEAT_FILE))
        self.gone_beats = 0  # heartbeats in a row that found the state directory gone
        self.idle_stop = False  # set when the worker stops itself for being idle
        self.removed_before: set = set()  # the WALs removed under us at the last heartbeat

    def start(self) -> None:
        """Start the heartbeat and listener threads."""
        self.beat()
        Progress.on_made = self.beat_if_due
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        """Stop both threads and remove the heartbeat."""
        Progress.on_made = None
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=2)
        self.heartbeat.close()
        try:
            os.unlink(self.repo.state_path(HEARTBEAT_FILE))
        except FileNotFoundError:
            pass

    def guard(self, loop) -> None:
        """Keep a worker thread alive through unexpected errors, logging each one."""
        while not self.stopping.is_set():
            try:
                loop()
            except Exception:
                import logging

                logging.getLogger(WORKER_LOG_NAME).exception("%s failed; retrying", loop.__name__)
                self.stopping.wait(1)

    def beat(self, blocking: bool = True) -> None:
        """Write the heartbeat: liveness, queue length, counters, current tasks, problems.
        A write that fails is itself a problem, shown once the heartbeat gets through."""
        if not self.beat_lock.acquire(blocking=blocking):
            return  # another thread is beating right now
        try:
            record = {"pid": os.getpid(), "time": time.time(), "started_at": self.started_at,
                      "interval": self.config.heartbeat_interval,
                      "queue_length": self.queue_length}
            record.update(self.activity.snapshot())
            latest = Problems.latest()
            if latest:
                record.update(problem_at=latest[0], problem=latest[1])
            try:
                self.heartbeat.write(record)
                Problems.clear("state")
            except OSError as exc:
                Problems.report("state", f"cannot write the heartbeat: {exc.strerror}")
            self.last_beat = time.monotonic()
        finally:
            self.beat_lock.release()

    def beat_if_due(self) -> None:
        """Beat from a documenting thread when the heartbeat thread is overdue (starved of
        the GIL by CPU-bound threads): progress is proof of life."""
        if time.monotonic() - self.last_beat >= self.config.heartbeat_interval:
            self.beat(blocking=False)

    def count_queue(self) -> int:
        """The number of queued tasks, read on a connection of the heartbeat thread's own
        with a short busy timeout (the last count if the queue is busy)."""
        try:
            self.queue_length = self.queue_count()
        except sqlite3.Error as exc:
            log(f"heartbeat: could not count the queue ({exc}); showing the last count")
        return self.queue_length

    def beat_forever(self) -> None:
        """Beat every heartbeat interval until stopped, and look at the worker's state."""
        try:
            while not self.stopping.wait(self.config.heartbeat_interval):
                self.count_queue()
                self.beat()
                self.watch_state()
        finally:
            self.queue_count.close()

    def watch_state(self) -> None:
        """Stop the worker whose repository is gone (`rm -rf`: nothing could stop it then),
        after GONE_BEATS beats; have the databases repaired where a WAL was removed under
        the connections that write it (every new connection then fails), seen twice in a
        row (SQLite removes a WAL itself when its last connection closes)."""
        import signal

        if not os.path.isdir(self.repo.state_dir):
            self.gone_beats += 1
            if self.gone_beats == GONE_BEATS:
                log(f"{self.repo.state_dir} is gone (the repository was removed?); stopping")
                os.kill(os.getpid(), signal.SIGTERM)  # the graceful stop, as from outside
            return
        self.gone_beats = 0
        removed = removed_wals(self.repo.state_dir)
        if removed and removed == self.removed_before:
            request_repair(self.repo, f"{', '.join(sorted(removed))} was removed under the "
                           "worker's connections")
        self.removed_before = removed

    def listen_forever(self) -> None:
        """Wait for pokes on the FIFO; sync poked worktrees; reconcile on a timer."""
        import select

        fifo = open_wake_fifo(self.repo, os.O_RDONLY)
        keep_open = os.open(self.repo.state_path(WAKE_FIFO),
                            os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # never see EOF
        try:
            # Work left queued by the last worker may have been cut short by a crash, which
            # reconciliation only sees once that queue has run: look again when it drains.
            recheck_when_drained = self.queue.pending_count() > 0
            self.queue.reconcile()
            next_reconcile = time.monotonic() + self.config.reconcile_interval
            busy_at, trimmed, counted = time.monotonic(), False, False
            while not self.stopping.is_set():
                timeout = max(0.0, min(next_reconcile - time.monotonic(), 0.5))
                readable, _, _ = select.select([fifo], [], [], timeout)
                if readable:
                    self.drain(fifo)
                    self.sync_pending()
                    SummaryWork.wake()  # a retry of failed summaries pokes too
                if recheck_when_drained and self.idle():
                    recheck_when_drained = False
                    next_reconcile = time.monotonic()
                if time.monotonic() >= next_reconcile:
                    self.queue.reconcile()
                    next_reconcile = time.monotonic() + self.config.reconcile_interval
                if readable or self.busy():
                    busy_at, trimmed, counted = time.monotonic(), False, False
                elif not counted:
                    self.count_common_terms()
                    counted = True  # (tried: the next fall idle tries again)
                elif self.quiet_long_enough(busy_at):
                    self.stop_idle()
                elif not trimmed and time.monotonic() - busy_at >= POOL_IDLE + TRIM_AFTER:
                    reap_ended_processes()
                    trimmed = release_memory()
        finally:
            os.close(fifo)
            os.close(keep_open)

    def count_common_terms(self) -> None:
        """Count the index's common terms again where it changed enough since (see
        Index.count_common_terms), once the work is done; a failure is logged."""
        try:
            with Index(self.repo) as index:  # (the FIFO waits meanwhile: briefly, then)
                if index.count_common_terms(busy_ms=COUNT_BUSY_MS):
                    log("counted the index's common words again")
        except (sqlite3.Error, CqError) as exc:
            log(f"could not count the index's common words: {exc}", error=True)

    def idle(self) -> bool:
        """True when nothing is queued or running."""
        return not self.activity.snapshot_current() and self.queue.pending_count() == 0

    def busy(self) -> bool:
        """True while work (see is_work) is queued or running."""
        if any(is_work(task["task"]) for task in self.activity.snapshot_current()):
            return True
        queued = self.queue.pending_count()  # a few reconciles at most are read by name
        return queued > 2 or (queued > 0 and
                              any(is_work(name) for name, _ in self.queue.pending()))

    def quiet_long_enough(self, busy_at: float) -> bool:
        """True once the worker has been idle for cq.workerIdleExit seconds (never for 0),
        with no worktree marked as moved."""
        return bool(self.config.idle_exit) and not self.idle_stop and \
            time.monotonic() - busy_at >= self.config.idle_exit and \
            not os.listdir(self.repo.state_path(PENDING_DIR))

    def stop_idle(self) -> None:
        """Stop the worker gracefully, as `cq worker stop` would: a hook, `cq mcp` or a
        search that finds HEAD moved starts it again (see restart_if_needed)."""
        import signal

        log(f"idle for {self.config.idle_exit:g}s (cq.workerIdleExit); stopping")
        try:  # for `cq worker status` (a full disk must not keep the worker from stopping)
            write_state_file(self.repo.state_path(IDLE_STOP_FILE), format_record(
                {"stopped_at": time.time(), "idle_seconds": self.config.idle_exit}))
        except (OSError, CqError) as exc:
            log(f"could not note the idle stop for `cq worker status`: {exc}", error=True)
        self.idle_stop = True
        os.kill(os.getpid(), signal.SIGTERM)

    def drain(self, fifo: int) -> None:
        """Empty the FIFO, then wait briefly for a burst of commits to settle."""
        quiet_until = time.monotonic() + 0.05
        give_up = time.monotonic() + 1.0
        while time.monotonic() < min(quiet_until, give_up):
            try:
                if os.read(fifo, 4096):
                    quiet_until = time.monotonic() + 0.05
                    continue
            except BlockingIOError:
                pass
            time.sleep(0.01)

    def sync_pending(self) -> None:
        """Queue a sync for every worktree a hook marked as moved."""
        pending_dir = self.repo.state_path(PENDING_DIR)
        for name in sorted(os.listdir(pending_dir)):
            if ".tmp" in name:
                continue  # a marker a hook is still writing; its rename wakes us again
            path = os.path.join(pending_dir, name)
            data = read_state_file(path) or b""
            os.unlink(path)  # before queueing: the sync reads HEAD after this point
            git_dir = os.fsdecode(data)
            if git_dir:
                self.queue.sync(git_dir)


def run_worker(repo: Repo, ready_fd: int | None) -> int:
    """Run the consumer in the foreground until SIGTERM (graceful) or SIGINT (immediate)."""
    import signal

    if ready_fd is not None:  # no git process the worker starts may hold the handshake open
        os.set_inheritable(ready_fd, False)
    ensure_state_dir(repo)
    config = load_config(repo)
    lock_fd = acquire_worker_lock(repo)
    try:
        write_pid_record(lock_fd, dict(process_identity(os.getpid()), started_at=time.time(),
                                       lock_fd=lock_fd, version=VERSION,
                                       schema=SCHEMA_VERSION))
        setup_worker_logging(repo, config)
        remove_idle_stop_note(repo)
        for done in repair_at_start(repo):
            log(done, error=True)
        for done in kill_strays(repo, os.getpid()):  # a dead worker's calls, say
            log(done, error=True)
        remove_stale_rooms()
        limit_malloc_arenas()
        queue = task_queue(repo)
        queue.config = config
        activity = WorkerActivity()
        queue.watch(activity)
        loop = WorkerLoop(repo, config, queue, activity)
        summarizer = Summarizer(repo, config, activity)
        consumer = queue.start_consumer(config)
        stopping = stop_summarizer_on_signals(summarizer)
        loop.start()
        summarizer.start()
        log(f"worker {os.getpid()} started (cq {VERSION}, {config.workers} thread(s))")
        if ready_fd is not None:
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)
        queue.run_consumer(consumer)
        try:  # calls to the external documenter get what is left of the shutdown timeout
            summarizer.stop(stopping.get("deadline", time.monotonic()))
        except KeyboardInterrupt:  # a second stop signal: stop now
            pass
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # from here on, the stop is quick anyway
        Shutdown.requested = True  # tasks still running abandon their batch, start nothing
        for pid in list(RUNNING_DOCUMENTERS):  # tasks cut short leave no orphans behind
            kill_process_group(pid)
        summarizer.stop(time.monotonic() + 2)  # the calls just killed are noted as such
        loop.stop()
        try:
            with Index(repo) as index:  # files cut short by this stop did not crash anything
                index.close_attempts(crashed=False)
        except Exception as exc:  # noqa: BLE001 - a damaged index must not spoil the stop
            log(f"could not close the attempts in flight: {exc}", error=True)
        log(f"worker {os.getpid()} stopped")
        write_pid_record(lock_fd, None)
    finally:
        os.close(lock_fd)
    if loop.idle_stop:
        restart_if_needed(repo, queue)
    return EXIT_OK


def restart_if_needed(repo: Repo, queue: TaskQueue) -> None:
    """After an idle stop, run again if work arrived meanwhile (a hook that found this worker
    still listening marked its worktree and left): as a new worker in this same process, by
    exec, since the one a detached start made would take this one, still running, for a
    leftover and kill it."""
    import sys

    from cqlib.detector import probe_worker
    from cqlib.state import self_command

    queued = any(is_work(name) for name, _ in queue.pending())
    if not (os.listdir(repo.state_path(PENDING_DIR)) or queued) or probe_worker(repo).alive:
        return
    log("work arrived while stopping; running again")
    end_children()
    argv = [*self_command(), "-C", repo.common_dir, "worker", "run"]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


def end_children() -> None:
    """Kill and reap every child process left (documenting processes, git readers), once
    every thread that started one has ended: the program an exec brings in would not know
    them, and they would stay zombies under it."""
    import signal

    for pid in (int(name) for name in os.listdir("/proc") if name.isdigit()):
        try:
            parent = int(proc_stat_fields(pid)[1])
        except (OSError, IndexError, ValueError):
            continue  # gone
        if parent == os.getpid():
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


def remove_idle_stop_note(repo: Repo) -> None:
    """Remove the note of an idle stop (see WorkerLoop.stop_idle): a worker runs again."""
    try:
        os.unlink(repo.state_path(IDLE_STOP_FILE))
    except FileNotFoundError:
        pass
    except OSError as exc:  # a read-only state directory, say: status would mislead, no more
        log(f"could not remove the note of the last idle stop: {exc.strerror}", error=True)


def release_memory() -> bool:
    """Give the memory a burst of work left free back to the system (glibc keeps it in its
    heaps otherwise, and an idle worker would stay as large as at its busiest); True."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)  # glibc only; elsewhere nothing to do
    except (ImportError, OSError, AttributeError):
        pass
    return True


def limit_malloc_arenas() -> None:
    """Let glibc's malloc keep two arenas at most: it gives each thread one of its own, and
    the worker's threads would hold more resident memory in them than they use."""
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(-8, 2)  # M_ARENA_MAX (glibc only; elsewhere nothing to do)
    except (ImportError, OSError, AttributeError):
        pass


def stop_summarizer_on_signals(summarizer: Summarizer) -> dict:
    """Chain Huey's stop signal handlers so that the summarizer stops taking calls the moment
    a stop begins; returns the dict where the deadline for the calls in flight is written
    (the shutdown timeout after a first SIGTERM or SIGHUP; at once after SIGINT or a second
    signal)."""
    import signal

    stopping: dict = {}

    def install(signum: int) -> None:
        inner = signal.getsignal(signum)

        def handler(number, frame):
            summarizer.stop_taking.set()
            graceful = number != signal.SIGINT and "deadline" not in stopping
            timeout = summarizer.config.last().shutdown_timeout if graceful else 0.0
            stopping["deadline"] = time.monotonic() + timeout
            if callable(inner):
                inner(number, frame)  # Huey's: it may raise KeyboardInterrupt, or swap itself
            if signal.getsignal(number) is not handler:
                install(number)  # out for the handler of its second signal: stay in front

        signal.signal(signum, handler)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # as Huey's are set
        install(signum)
    return stopping
