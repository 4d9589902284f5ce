"""Is the worker alive?  Stdlib only: importable without Huey or sqlite3.

Owns: the probe (the live worker holds an exclusive flock on its pid file for its whole life;
a shared lock that cannot be taken means alive, and the kernel drops the lock on any death),
proving that a PID is still the process that wrote the record (start time, boot id, the lock
seen through /proc), WorkerState with its LSB code, WorkerHandle (signals through a pidfd, so
a reused PID is never signalled), and the report of `cq worker status`.
Must not: import Huey or sqlite3, or signal a process whose identity it has not proven.
"""

from __future__ import annotations

import errno
import os
import time

from cqlib.errors import (
    STATUS_BLOCKED,
    STATUS_DEAD,
    STATUS_HUNG,
    STATUS_RUNNING,
    STATUS_STOPPED,
    STATUS_UNKNOWN,
    CqError,
)
from cqlib.state import (
    HEARTBEAT_FILE,
    IDLE_STOP_FILE,
    PID_FILE,
    RECORD_MAX_BYTES,
    Repo,
    last_hook_problem,
    open_state_file,
    parse_record,
    read_state_file,
)


def proc_stat_fields(pid: int) -> list[bytes]:
    """The fields of /proc/PID/stat after the command name, its state first (Linux); raises
    OSError where the process or /proc is not there."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    return data[data.rfind(b")") + 2:].split()


def proc_start_time(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (Linux), or None if unknown."""
    try:
        return int(proc_stat_fields(pid)[19])
    except (OSError, IndexError, ValueError):
        return None


def boot_id() -> str | None:
    """This boot's random id (Linux), so a record from before a reboot never matches."""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:  # binary: text mode
            return f.read().decode().strip()  # would import locale machinery (~15 ms)
    except OSError:
        return None


def process_identity(pid: int) -> dict:
    """What proves, later, that a PID still names the same process."""
    return {"pid": pid, "start_time": proc_start_time(pid), "boot_id": boot_id()}


def fdinfo_locks(pid: int, fd: int) -> list[list[str]]:
    """The `lock:` lines of /proc/PID/fdinfo/FD (the locks that open file holds), split."""
    with open(f"/proc/{pid}/fdinfo/{fd}", "rb") as f:
        lines = f.read().decode(errors="replace").splitlines()
    return [line.split()[1:] for line in lines if line.startswith("lock:")]


def holds_worker_lock(pid: int, their_fd: object, lock_fd: int) -> bool | None:
    """Whether descriptor their_fd of process pid is the worker's pid file and holds its
    exclusive flock, from /proc/.../fdinfo (Linux); None where that cannot be read.

    The file is matched by stat through /proc/PID/fd (the lock line's device number differs
    from stat's on btrfs, so only its inode is compared).  /proc/locks would say the same,
    but its first read in a process waits for an RCU grace period: 10 ms or more."""
    if not isinstance(their_fd, int) or their_fd < 0:
        return False
    ours = os.fstat(lock_fd)
    try:
        theirs = os.stat(f"/proc/{pid}/fd/{their_fd}")  # the open file itself, via stat
        locks = fdinfo_locks(pid, their_fd)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
        return False
    inode = f":{ours.st_ino}"
    return any("FLOCK" in lock and "WRITE" in lock and any(p.endswith(inode) for p in lock)
               for lock in locks)


def identity_matches(record: dict, lock_fd: int | None = None) -> bool:
    """True if the record's PID is the very process that wrote it (and holds the lock)."""
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if os.path.isdir("/proc/self"):
        current = process_identity(pid)
        if current["start_time"] is None or current["start_time"] != record.get("start_time"):
            return False
        if current["boot_id"] != record.get("boot_id"):
            return False
        if lock_fd is not None:
            return holds_worker_lock(pid, record.get("lock_fd"), lock_fd) is not False
        return True
    # No /proc (macOS): the lock is the proof of life; that the PID is a process of this
    # user's (as the worker is) is all we can add.
    return pid_owner(pid) == "this user"


def pid_owner(pid: int) -> str:
    """Whose process a PID is, as signal 0 tells: "this user" (it may be signalled),
    "another user" (it exists, but EPERM), or "none" (no such process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "none"
    except PermissionError:
        return "another user"
    return "this user"


def lock_is_held(fd: int) -> bool:
    """True if another open file description holds an flock on this file."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


class WorkerState:
    """What the detector found: a state name, its LSB exit code and the evidence."""

    CODES = {"running": STATUS_RUNNING, "dead": STATUS_DEAD,
             "stopped": STATUS_STOPPED, "unknown": STATUS_UNKNOWN,
             "hung": STATUS_HUNG, "blocked": STATUS_BLOCKED}

    def __init__(self, state: str, detail: str, record: dict | None = None,
                 heartbeat: dict | None = None):
        self.state = state
        self.code = self.CODES[state]
        self.detail = detail
        self.record = record or {}
        self.heartbeat = heartbeat or {}

    @property
    def alive(self) -> bool:
        """True when our worker process exists (running, hung or blocked)."""
        return self.state in ("running", "hung", "blocked")

    @property
    def pid(self) -> int | None:
        """The worker's PID when known."""
        return self.record.get("pid") if self.alive else None


def stale_after(heartbeat: dict) -> float:
    """Seconds without a heartbeat after which a live worker counts as hung: five missed
    beats at the interval the worker itself announced (so status needs no config)."""
    interval = heartbeat.get("interval")
    return max(5 * interval, 1.0) if isinstance(interval, (int, float)) else 10.0


def probe_worker(repo: Repo) -> WorkerState:
    """Decide, without side effects, whether this repository's worker is alive."""
    path = repo.state_path(PID_FILE)
    try:
        fd = open_state_file(path, os.O_RDONLY)
    except FileNotFoundError:
        return WorkerState("stopped", "no worker has run here")
    except CqError as exc:
        return WorkerState("unknown", str(exc))
    except OSError as exc:
        return WorkerState("unknown", f"cannot open {path}: {exc.strerror}")
    try:
        held = lock_is_held(fd)
        record = None
        for _ in range(3):  # A record being rewritten can read torn; it settles at once.
            data = os.pread(fd, RECORD_MAX_BYTES, 0)
            record = parse_record(data)
            if record is not None or not data.strip():
                break
            time.sleep(0.005)
        if not held:
            if not data.strip():
                return WorkerState("stopped", idle_stop_detail(repo) or "not running")
            return WorkerState("dead", "not running, but the pid file of a worker that did not "
                               "stop cleanly is left (run: cq worker cleanup)", record)
        if record is None:
            return WorkerState("unknown", "the pid file is locked but holds no valid record")
        if not identity_matches(record, fd):
            return WorkerState("unknown", f"the pid file is locked, but PID {record.get('pid')} "
                               "is not the process that holds it", record)
    finally:
        os.close(fd)
    heartbeat = parse_record(read_heartbeat(repo)) or {}
    age = time.time() - heartbeat.get("time", record.get("started_at", 0))
    if age > stale_after(heartbeat):
        why = state_unwritable(repo)
        if why:
            return WorkerState("blocked", f"alive, but it cannot write its state: {why} (no "
                               f"heartbeat for {age:.1f}s)", record, heartbeat)
        return WorkerState("hung", f"alive, but no heartbeat for {age:.1f}s", record, heartbeat)
    return WorkerState("running", "running, with a fresh heartbeat", record, heartbeat)


def read_heartbeat(repo: Repo) -> bytes:
    """The raw heartbeat file, or b'' when absent or unusable.  The worker rewrites it in
    place, so it is read until two reads agree (a read never sees half of one write then)."""
    try:
        fd = open_state_file(repo.state_path(HEARTBEAT_FILE), os.O_RDONLY)
    except (OSError, CqError):
        return b""
    try:
        data = None
        for _ in range(5):
            previous, data = data, os.pread(fd, RECORD_MAX_BYTES, 0)
            if data == previous:
                break
        return data
    except OSError:
        return b""
    finally:
        os.close(fd)


def state_unwritable(repo: Repo) -> str | None:
    """Why the worker cannot write its state (a read-only or full file system), or None."""
    try:
        st = os.statvfs(repo.state_dir)
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return "its file system is read-only"
    if (st.f_bfree if os.geteuid() == 0 else st.f_bavail) == 0:
        return "its disk is full"
    return None


def open_pidfd(pid: int) -> int | None:
    """A pidfd pinning process pid (Linux 5.3+), or None where the system offers none;
    ProcessLookupError if the process is gone."""
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        raise
    except OSError:  # ENOSYS on older kernels, EPERM under some sandboxes
        return None


class WorkerHandle:
    """A proven handle on the live worker: signals sent through it reach that process only.

    On Linux 5.3+ it holds a pidfd, which pins the exact process, so the identity proven when
    the handle is made cannot go stale before a signal is sent, and the handle can wait for
    the process itself to end (not just for its lock to drop)."""

    def __init__(self, repo: Repo, record: dict):
        self.pid = record["pid"]
        self.record = record
        try:
            self.pidfd = open_pidfd(self.pid)
        except ProcessLookupError:
            self.pid, self.pidfd = None, None
            return
        fd = open_state_file(repo.state_path(PID_FILE), os.O_RDONLY)
        try:
            ours = lock_is_held(fd) and identity_matches(record, fd)
        finally:
            os.close(fd)
        if not ours:
            self.close()
            raise CqError(f"PID {record['pid']} is not cq's worker; leaving it alone")

    def send(self, signum: int) -> None:
        """Signal the proven process (a no-op once it has ended)."""
        if self.pid is None:
            return
        try:
            if self.pidfd is not None:
                import signal

                signal.pidfd_send_signal(self.pidfd, signum)
            elif identity_matches(self.record):
                os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def wait_gone(self, timeout: float) -> bool:
        """Wait until the process has ended; True if it did within timeout."""
        if self.pid is None:
            return True
        if self.pidfd is not None:
            import select

            return bool(select.select([self.pidfd], [], [], timeout)[0])
        deadline = time.monotonic() + timeout
        while identity_matches(self.record):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def close(self) -> None:
        """Release the pidfd."""
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def process_exists(pid: int) -> bool:
    """True if a live process of this PID exists, whoever owns it (a zombie is dead)."""
    try:
        return proc_stat_fields(pid)[:1] not in ([b"Z"], [b"X"])
    except FileNotFoundError:
        return False
    except OSError:  # no /proc here: ask the kernel whether the PID is taken
        return pid_owner(pid) != "none"


def lock_within(fd: int, seconds: float) -> bool:
    """Take an exclusive flock on fd, retrying for up to `seconds`; True if it was taken."""
    import fcntl

    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def decode_current(value: object) -> list:
    """The heartbeat's list of tasks in flight (json is imported only when there are some)."""
    if not isinstance(value, str) or value in ("", "[]"):
        return []
    import json

    try:
        items = json.loads(value)
    except ValueError:
        return []
    return items if isinstance(items, list) else []


def idle_stop_detail(repo: Repo) -> str | None:
    """Why a stopped worker is not running, where it stopped itself for want of work (the
    note it leaves, which the next worker removes); None otherwise."""
    try:
        note = parse_record(read_state_file(repo.state_path(IDLE_STOP_FILE)) or b"") or {}
    except (OSError, CqError):
        return None
    at, idle = note.get("stopped_at"), note.get("idle_seconds")
    if not isinstance(at, (int, float)) or not isinstance(idle, (int, float)):
        return None
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
    return (f"not running since {when}, when it stopped itself after {idle:g}s without work "
            "(cq.workerIdleExit); a commit, a search or cq mcp starts it again")


def worker_status_report(repo: Repo, state: WorkerState) -> dict:
    """The documented, stable JSON object of `cq worker status --json`."""
    now = time.time()
    hb = state.heartbeat
    return {
        "schema": 1,
        "state": state.state,
        "exit_code": state.code,
        "detail": state.detail,
        "pid": state.pid,
        "started_at": state.record.get("started_at") if state.alive else None,
        "uptime_seconds": round(now - state.record["started_at"], 3)
        if state.alive and "started_at" in state.record else None,
        "heartbeat_age_seconds": round(now - hb["time"], 3) if "time" in hb else None,
        "queue_length": hb.get("queue_length"),
        "tasks_done": hb.get("tasks_done"),
        "tasks_failed": hb.get("tasks_failed"),
        "current": decode_current(hb.get("current")),
        "problem": {"at": hb["problem_at"], "message": hb["problem"]}
        if "problem" in hb and state.alive else None,
        "documenter_paused": {"until": hb["documenter_paused_until"],
                              "reason": str(hb.get("documenter_pause_reason", ""))}
        if "documenter_paused_until" in hb and state.alive else None,
        "sharing": {"at": hb["sharing_at"], "ok": bool(hb.get("sharing_ok")),
                    "message": str(hb.get("sharing", ""))}
        if "sharing_at" in hb and state.alive else None,
        "last_hook_problem": last_hook_problem(repo),
        "state_dir": repo.state_dir,
    }
