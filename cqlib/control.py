"""Starting, waking and stopping the worker process from outside it.

Owns: the start lock (two `start`s never spawn two workers), spawning a detached process of
cq's (every stream detached, hook variables scrubbed) and the worker's readiness handshake,
waking the worker through its FIFO (and starting it where asked: one function for every
caller), and spawning `cq index --repair` when a process finds a database damaged.
Must not: import Huey or sqlite3: `hook run` starts the worker through this module.
"""

from __future__ import annotations

import errno
import os
import stat

from cqlib.config import load_config
from cqlib.detector import lock_within, probe_worker
from cqlib.errors import CqError
from cqlib.gitio import scrubbed_env, worktree_git_dirs
from cqlib.state import (
    LOG_FILE,
    START_LOCK_FILE,
    WAKE_FIFO,
    Repo,
    ensure_state_dir,
    log,
    mark_moved,
    open_state_file,
    self_command,
    tail_lines,
)

REPAIRS_REQUESTED: set[str] = set()  # the state directories this process asked to repair


def request_repair(repo: Repo, why: str) -> None:
    """Start `cq index --repair` in a process of its own, once a process (the repair stops
    the worker, and with it the caller when the caller is the worker, before it moves a
    damaged database aside), and log why."""
    if repo.state_dir not in REPAIRS_REQUESTED:
        REPAIRS_REQUESTED.add(repo.state_dir)
        log(f"{why}; starting cq index --repair", error=True)
        spawn_detached([*self_command(), "-C", repo.common_dir, "index", "--repair"], repo)


def open_wake_fifo(repo: Repo, flags: int) -> int:
    """Open (creating if needed) the FIFO that hooks poke; refuse anything else in its place."""
    path = repo.state_path(WAKE_FIFO)
    try:
        os.mkfifo(path, 0o600)
    except FileExistsError:
        pass
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    st = os.fstat(fd)
    if not stat.S_ISFIFO(st.st_mode) or st.st_uid != os.getuid():
        os.close(fd)
        raise CqError(f"{path} is not cq's FIFO; remove it and retry")
    return fd


class StartLock:
    """Held while a worker is started or cleaned up after, so that two `start`s never spawn
    two workers and a cleanup never mistakes a starting worker's processes for leftovers."""

    def __init__(self, repo: Repo):
        self.repo, self.fd = repo, None

    def __enter__(self) -> StartLock:
        ensure_state_dir(self.repo)
        self.fd = open_state_file(self.repo.state_path(START_LOCK_FILE), os.O_RDWR | os.O_CREAT)
        if not lock_within(self.fd, 40.0):  # a start waits up to 10 s for its handshake
            os.close(self.fd)
            raise CqError("another cq is starting or cleaning up the worker and did not finish")
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


def start_worker(repo: Repo, archive: str | None = None,
                 wait: float = 10.0) -> tuple[int, bool]:
    """Start the worker detached (from archive, by default the running cq) unless one runs;
    returns (pid, was_already_running)."""
    load_config(repo)  # a bad setting fails here, in one line, not in the detached worker
    with StartLock(repo):
        return start_locked(repo, archive, wait)


def start_locked(repo: Repo, archive: str | None, wait: float) -> tuple[int, bool]:
    """start_worker's work, with the StartLock held."""
    state = probe_worker(repo)
    if state.alive:
        return state.pid, True
    if state.state == "unknown":
        raise CqError(f"cannot tell whether a worker runs: {state.detail}")
    return spawn_worker(repo, archive, wait), False


def spawn_detached(argv: list[str], repo: Repo, pass_fds: tuple = ()):
    """Start a process of ours in a session of its own: stdin from /dev/null, output appended
    to the worker log, hook variables scrubbed.  Returns its Popen."""
    import subprocess

    log_fd = open_state_file(repo.state_path(LOG_FILE), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                                pass_fds=pass_fds, start_new_session=True, cwd=repo.state_dir,
                                env=scrubbed_env())
    finally:
        os.close(log_fd)


def spawn_worker(repo: Repo, archive: str | None, wait: float) -> int:
    """Spawn `cq worker run` detached and wait for its readiness handshake; returns its PID."""
    import select
    import signal
    import subprocess

    read_end, write_end = os.pipe()
    try:
        proc = spawn_detached([*self_command(archive), "-C", repo.common_dir, "worker", "run",
                               "--ready-fd", str(write_end)], repo, pass_fds=(write_end,))
    finally:
        os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], wait)
        answer = os.read(read_end, 64) if ready else b""
    finally:
        os.close(read_end)
    if answer.startswith(b"ready"):
        return proc.pid
    try:  # the pipe closed: the worker has exited, or is about to
        code = proc.wait(timeout=5) if ready else proc.poll()
    except subprocess.TimeoutExpired:
        code = None
    if code in (0, -signal.SIGTERM, -signal.SIGINT, -signal.SIGHUP):
        raise CqError("the worker was stopped while it started (by a concurrent cq worker "
                      "stop?); start it again if you want it running")
    last = next((line for line in reversed(tail_lines(repo.state_path(LOG_FILE), 10))
                 if line.strip()), "")
    why = f"exited with status {code}" if code is not None else \
        f"did not report ready within {wait:.0f}s"
    raise CqError(f"the worker failed to start ({why}); the log ends with: {last.strip()} "
                  "(see: cq worker logs)")


def poke_worker(repo: Repo) -> bool:
    """Wake the worker through its FIFO; False if no worker is listening."""
    try:
        fd = open_wake_fifo(repo, os.O_WRONLY)
    except FileNotFoundError:
        return False  # no state directory yet: no worker either
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return False  # a FIFO with no reader: no worker
        raise
    try:
        os.write(fd, b"w")
    except BlockingIOError:
        pass  # the FIFO is full of pokes already
    finally:
        os.close(fd)
    return True


def wake_worker(repo: Repo, start: bool) -> bool:
    """Wake the worker (it reads the worktrees marked as moved); where none is listening,
    start one first if `start` says so.  True if a worker is listening now."""
    if poke_worker(repo):
        return True
    if not start:
        return False
    start_worker(repo)
    return poke_worker(repo)


def mark_all_moved(repo: Repo) -> None:
    """Mark every worktree of the repository as moved, so the worker brings each to its HEAD
    (after a rebuild, a repair, or a start that may have missed hooks)."""
    for git_dir in worktree_git_dirs(repo.common_dir):
        mark_moved(Repo(repo.common_dir, git_dir))
