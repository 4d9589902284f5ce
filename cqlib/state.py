"""Where a repository's state lives and how cq opens it safely.

Owns: the state directory (`$(git rev-parse --git-common-dir)/cq`, mode 0700, files 0600,
never through a symlink or another user's file), the names of the files in it, writing a file
atomically, the pid and heartbeat record format (`key=value` lines, parsed without json), the
markers a hook leaves when HEAD moved, the hook log, the worker log's `log()`, and how cq
runs itself again (the archive it came from, or cq.py from source).
Must not: know SQLite, Huey or git; it is on every hot path.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import time

from cqlib.errors import CqError
from cqlib.text import path_text

STATE_DIR_NAME = "cq"
PID_FILE = "worker.pid"
HEARTBEAT_FILE = "heartbeat"
IDLE_STOP_FILE = "idle-stop"  # why the last worker stopped itself (see WorkerLoop.stop_idle)
LOG_FILE = "worker.log"
HOOK_LOG_FILE = "hook.log"
START_LOCK_FILE = "start.lock"
WAKE_FIFO = "wake"
PENDING_DIR = "pending"
QUEUE_DB = "queue.db"
INDEX_DB = "index.db"
PYZ_COPY = "cq.pyz"
PYTHON_FILE = "python"
HOOK_LOG_MAX_BYTES = 64 * 1024
RECORD_MAX_BYTES = 64 * 1024


class Repo:
    """The locations of one worktree of a git repository, and of cq's state for it."""

    def __init__(self, common_dir: str, git_dir: str):
        self.common_dir = common_dir
        self.git_dir = git_dir
        self.state_dir = os.path.join(common_dir, STATE_DIR_NAME)

    def state_path(self, name: str) -> str:
        """Absolute path of a file in the state directory."""
        return os.path.join(self.state_dir, name)


def ensure_state_dir(repo: Repo) -> str:
    """Create the state directory (0700) if needed and refuse one that is not cq's own."""
    path = repo.state_dir
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise CqError(f"cannot create {path}: {exc.strerror}") from exc
    check_own_directory(path)
    pending = os.path.join(path, PENDING_DIR)
    try:
        os.mkdir(pending, 0o700)
    except FileExistsError:
        pass
    check_own_directory(pending)
    return path


def check_own_directory(path: str) -> None:
    """Refuse a symlink, a non-directory or another user's directory where cq keeps state."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise CqError(f"{path} is a symlink; cq never writes through one (remove it and retry)")
    if not stat.S_ISDIR(st.st_mode):
        raise CqError(f"{path} is not a directory (move it away and retry)")
    if st.st_uid != os.getuid():
        raise CqError(f"{path} belongs to another user; cq only uses its own state")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


def symlink_refused(path: str) -> str:
    """What cq says of a symlink where it keeps a file of its own."""
    return f"{path} is a symlink; cq never follows one (remove it and retry)"


def check_own_file(path: str, st: os.stat_result) -> None:
    """Refuse a symlink, a non-regular file or another user's file where cq keeps a file."""
    if stat.S_ISLNK(st.st_mode):
        raise CqError(symlink_refused(path))
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
        raise CqError(f"{path} is not a regular file of this user; cq refuses to use it "
                      "(remove it and retry)")


def open_state_file(path: str, flags: int, mode: int = 0o600) -> int:
    """Open a state file without following symlinks; refuse anything that is not our own file."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CqError(symlink_refused(path)) from exc
        raise
    try:
        check_own_file(path, os.fstat(fd))
    except CqError:
        os.close(fd)
        raise
    os.set_blocking(fd, True)
    return fd


def read_state_file(path: str, limit: int = RECORD_MAX_BYTES) -> bytes | None:
    """The first `limit` bytes of a state file, or None if it does not exist."""
    try:
        fd = open_state_file(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return os.read(fd, limit)
    finally:
        os.close(fd)


def write_state_file(path: str, data: bytes, durable: bool = False) -> None:
    """Replace a state file atomically (write a private temporary file, then rename);
    durable also flushes it to disk before the rename."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = open_state_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable:  # the rename itself lives in the directory
        dir_fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def append_hook_log(repo: Repo, message: str) -> None:
    """Record a hook-time problem where `cq worker status` will show it; never raise."""
    path = repo.state_path(HOOK_LOG_FILE)
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}\n".encode()
    try:
        fd = open_state_file(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            if os.fstat(fd).st_size > HOOK_LOG_MAX_BYTES:
                os.ftruncate(fd, 0)
            os.write(fd, line)
        finally:
            os.close(fd)
    except (OSError, CqError):
        pass  # The hook log is the last resort: there is nowhere left to report to.


def tail_lines(path: str, count: int) -> list[str]:
    """The last `count` lines of a state file."""
    try:
        fd = open_state_file(path, os.O_RDONLY)
    except FileNotFoundError:
        return []
    try:
        size = os.fstat(fd).st_size
        chunk = min(size, max(4096, count * 400))
        data = os.pread(fd, chunk, size - chunk)
    finally:
        os.close(fd)
    lines = data.decode(errors="replace").splitlines()
    if chunk < size and lines:
        lines = lines[1:]
    return lines[-count:] if count else []


def clear_hook_problems(repo: Repo) -> None:
    """A hook got through: earlier problems become history (kept in hook.log.1)."""
    try:
        os.replace(repo.state_path(HOOK_LOG_FILE), repo.state_path(HOOK_LOG_FILE + ".1"))
    except FileNotFoundError:
        pass


def last_hook_problem(repo: Repo) -> str | None:
    """The newest line of the hook log, if any."""
    try:
        data = read_state_file(repo.state_path(HOOK_LOG_FILE), HOOK_LOG_MAX_BYTES * 2)
    except (OSError, CqError):
        return None
    lines = (data or b"").decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else None


# The folder holding cq.py and the cqlib package: the archive itself when cq runs from cq.pyz.
TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def running_archive() -> str | None:
    """Absolute path of the cq.pyz this code runs from, or None when run from source."""
    return TOP if os.path.isfile(TOP) else None


def bundled_file(name: str) -> bytes:
    """A file shipped with cq (`hooks/post-commit`): from the archive, or from beside cq.py."""
    if running_archive():
        return __loader__.get_data(name)  # the archive's loader takes a name inside it
    with open(os.path.join(TOP, name), "rb") as f:
        return f.read()


DOCUMENTING_PROCESS = "--documenting-process"  # `cq worker --documenting-process`: a child


def self_command(archive: str | None = None) -> list[str]:
    """The argv prefix that runs cq again (this same one unless another archive is given),
    isolated from the user's environment (where -I leaves cq.py's folder off sys.path, so a
    run from source puts it back)."""
    archive = archive or running_archive()
    if archive:
        return [sys.executable, "-I", "-S", archive]
    return [sys.executable, "-I", "-c",
            f"import sys; sys.path.insert(0, {TOP!r}); import cq; sys.exit(cq.main())"]


def format_record(record: dict) -> bytes:
    """A pid or heartbeat record as `key=value` lines: readable by eye, and parsed without
    importing json (whose import pulls in re and enum, ~5 ms of `worker status`)."""
    return "".join(f"{key}={value}\n" for key, value in record.items()).encode()


def parse_record(data: bytes) -> dict | None:
    """The record in a pid or heartbeat file (numbers converted), or None if it is not one."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return None
    record: dict = {}
    for line in text.split("\n"):
        if not line:
            continue  # the heartbeat is padded with newlines to a fixed size
        key, sep, value = line.partition("=")
        if not sep or not key.isidentifier():
            return None
        for convert in (int, float, str):
            try:
                record[key] = convert(value)
                break
            except ValueError:
                continue
    return record or None


WORKER_LOG_NAME = "cq"


def log(message: str, error: bool = False) -> None:
    """Write to the worker log (a no-op outside the worker, where logging is not set up); a
    file name's undecodable bytes are written as escapes (see path_text)."""
    if "logging" in sys.modules:
        import logging

        logging.getLogger(WORKER_LOG_NAME).log(logging.ERROR if error else logging.INFO,
                                               path_text(message))


def mark_moved(repo: Repo) -> None:
    """Record durably that this worktree's HEAD moved (the worker consumes the marker)."""
    import hashlib

    ensure_state_dir(repo)
    name = hashlib.sha1(os.fsencode(repo.git_dir)).hexdigest()
    write_state_file(os.path.join(repo.state_path(PENDING_DIR), name),
                     os.fsencode(repo.git_dir), durable=True)
