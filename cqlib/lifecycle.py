"""What the worker's threads share about the process's life.

Owns: the stop flag (set once by the main thread; long work checks it and unwinds with
WorkerStopping), the external documenter's process groups to kill at a stop, the proof that
documenting threads progress (they beat for a starved heartbeat thread), the problems shown
in the heartbeat, what the worker is doing (WorkerActivity), and the summarizer's wake-up.
Must not: start threads or processes, or know what a task does.
"""

from __future__ import annotations

import os
import time

from cqlib.detector import open_pidfd
from cqlib.state import log


class Problems:
    """The worker's current problems by source ("config", "task"), for its heartbeat."""

    current: dict = {}  # one worker per process

    @classmethod
    def report(cls, source: str, message: str) -> None:
        """Remember a problem (and log it, once while it lasts)."""
        message = " ".join(message.split())  # one line: it goes into the heartbeat record
        if cls.current.get(source, (0, ""))[1] != message:
            log(f"{source}: {message}", error=True)
            cls.current[source] = (time.time(), message)

    @classmethod
    def clear(cls, source: str) -> None:
        """Forget the problem of one source: it went away."""
        cls.current.pop(source, None)

    @classmethod
    def latest(cls) -> tuple[float, str] | None:
        """The most recent current problem, as (time, message)."""
        return max(list(cls.current.values()), default=None)  # a copy: threads report


RUNNING_DOCUMENTERS: set = set()  # the process groups of external documenter calls in flight


class Shutdown:
    """Set once, by the worker's main thread, when the worker stops."""

    requested = False


class WorkerStopping(Exception):
    """Raised inside a task when the worker stops under it (not a failure of the file)."""


class Progress:
    """Proof that the documenting threads are working: when one last finished a unit of work
    (for the heartbeat), and the hook the worker sets to beat when its heartbeat thread is
    starved of the GIL by them."""

    last = 0.0  # one worker a process
    on_made = None  # set by WorkerLoop: beats if the heartbeat is overdue

    @classmethod
    def made(cls) -> None:
        """A documenting thread finished a unit of work: the worker is alive and working."""
        cls.last = time.time()
        if cls.on_made is not None:
            cls.on_made()


def kill_process_group(pid: int) -> None:
    """SIGKILL a documenter and everything it started (it leads its own session)."""
    import signal

    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def kill_marked(name: str, value: str) -> int:
    """SIGKILL every process of this user whose environment holds name=value: a call's mark
    is inherited by all a documenter starts, in its process group or out of it (setsid).
    Each is pinned by a pidfd before its mark is read, so a reused PID is never signalled.
    Returns how many; nothing where there is no /proc."""
    import signal

    needle = f"{name}={value}".encode()
    try:
        names = os.listdir("/proc")
    except OSError:
        return 0
    killed = 0
    for entry in names:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            pidfd = open_pidfd(int(entry))
        except ProcessLookupError:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            if pidfd is None:
                os.kill(int(entry), signal.SIGKILL)
            else:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            killed += 1
        except OSError:  # gone meanwhile, or another user's
            continue
        finally:
            if pidfd is not None:
                os.close(pidfd)
    return killed


class WorkerActivity:
    """What the worker is doing, for its heartbeat: counters and tasks in flight (fed by the
    queue's task signals and by the summarizer threads), and the external documenter's pause."""

    def __init__(self):
        import threading

        self.lock = threading.Lock()
        self.done = 0
        self.failed = 0
        self.current: dict = {}
        self.paused: tuple | None = None  # (until, why) of the external documenter
        self.sharing: tuple | None = None  # (when, ok, what) of the last background share

    def started(self, key: str, task: str, detail: str) -> None:
        """Work started: a task (key: its id) or a call (key: its thread)."""
        with self.lock:
            self.current[key] = {"task": task, "since": time.time(), "detail": detail}

    def ended(self, key: str, outcome: str | None = None) -> None:
        """Work ended: counted when its outcome is "done" or "failed"."""
        with self.lock:
            self.current.pop(key, None)
            if outcome == "done":
                self.done += 1
            elif outcome == "failed":
                self.failed += 1

    def calling(self, path: str) -> None:
        """A summarizer thread sends path to the external documenter."""
        import threading

        self.started(f"summarize-{threading.get_ident()}", "summarize", path)

    def called(self, path: str) -> None:
        """The call about path is over."""
        import threading

        self.ended(f"summarize-{threading.get_ident()}")

    def snapshot_current(self) -> list:
        """The tasks in flight."""
        with self.lock:
            return list(self.current.values())

    def snapshot(self, most: int = 64) -> dict:
        """The counters, and (at most `most` of) the tasks in flight as one JSON value."""
        import json

        with self.lock:
            paused = {"documenter_paused_until": self.paused[0],
                      "documenter_pause_reason": " ".join(self.paused[1].split())} \
                if self.paused else {}
            if self.sharing:
                paused.update(sharing_at=self.sharing[0], sharing_ok=int(self.sharing[1]),
                              sharing=" ".join(self.sharing[2].split())[:400])
            return {"tasks_done": self.done, "tasks_failed": self.failed,
                    "progress_at": Progress.last, **paused,
                    "current": json.dumps(list(self.current.values())[:most])}


class SummaryWork:
    """Set when new built-in records arrive, so that the summarizer looks for work at once."""

    arrived = None  # a threading.Event, in the worker only

    @classmethod
    def wake(cls) -> None:
        """There may be new files to summarise."""
        if cls.arrived is not None:
            cls.arrived.set()
