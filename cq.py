"""cq: keep a searchable documentation index of a git repository fresh in the background.

How the parts fit, in the order data flows through them:

* Git hooks (``hooks/``, copied into the repository by ``cq hook install``) fire after every
  change to HEAD.  They run ``cq hook run`` in the background with every stream detached, so a
  git command never waits for cq.  ``hook run`` records that HEAD moved (a marker file under the
  state directory), pokes the worker through a FIFO, and starts the worker if it is down and
  ``cq.autostart`` is on.  It imports nothing heavy and documents nothing.
* The worker (``cq worker run``, spawned detached by ``cq worker start``) is a Huey consumer with
  thread workers.  It holds an exclusive ``flock`` on its pid file for its whole life: that lock,
  not the PID, is how every other command knows for certain whether it is alive.
* Tasks bring the index to HEAD: ``sync`` diffs the last indexed commit of a worktree against its
  HEAD and updates the path -> blob map; ``document`` reads blobs through ``git cat-file`` and
  documents each one once (work is keyed by blob SHA); ``reconcile`` compares every worktree with
  the index and queues whatever is missing.  The index, not Huey's queue, is the source of truth,
  so a task lost to ``kill -9`` or a power cut is found again by the next reconciliation.
* The index is SQLite with FTS5 (``index.db``); ``cq search`` and ``cq show`` read it.  Only
  SQLite ever opens a database file (its POSIX locks die with any other descriptor), and a
  damaged one is moved aside and rebuilt from git (``repair_databases``).
* Documenting is bounded: the built-in documenters are linear in their input, each file has a
  time budget, and a file that keeps killing the worker is skipped after three deaths.
* An external documenter (``cq.documenter``: the Claude Code preset or any command, usually an
  LLM CLI) summarises files after the built-in pass, in the worker's summarizer threads.  Its
  answers are kept per blob and per settings, so no content is sent twice; usage limits pause
  it, repeated failures open a circuit breaker, and a daily budget caps its spend.
* Search (``search``) ranks by how many query words a result covers, then BM25 weighted by
  kind and path; definitions carry their containers, and every file has a file-level record
  of all its words.  ``cq search`` and the MCP server (``cq mcp``, JSON-RPC over stdio or
  HTTP) call the same function; MCP lays the files edited in the working tree over the index.

All state for a repository lives in ``$(git rev-parse --git-common-dir)/cq/``: mode 0700, files
0600, opened without following symlinks.  Configuration is git config (``cq.*``), never a file
in the working tree, so a cloned repository cannot choose a program for cq to run or a path for
it to write.

Only the queue section imports Huey, and lazily: ``cq hook run`` and ``cq worker status`` stay
fast.  ``build_zipapp.py`` bundles this file and Huey into one ``cq.pyz``.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import time

TYPE_CHECKING = False  # typing is not imported at run time: hooks start lean
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

VERSION = "0.5.0"  # the index schema changed again (11): init replaces workers of 0.4.0

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

# LSB init-script status codes, plus one of our own from the 150-199 range.
STATUS_RUNNING = 0
STATUS_DEAD = 1
STATUS_STOPPED = 3
STATUS_UNKNOWN = 4
STATUS_HUNG = 150
STATUS_BLOCKED = 151


class CqError(Exception):
    """A failure to report to the user as one line, with the exit code to use."""

    def __init__(self, message: str, code: int = EXIT_FAILURE):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------------------------
# Paths and state files: where a repository's state lives and how cq opens it safely.
# ---------------------------------------------------------------------------------------------

STATE_DIR_NAME = "cq"
PID_FILE = "worker.pid"
HEARTBEAT_FILE = "heartbeat"
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


def locate_repo(start_dir: str) -> Repo:
    """Find the repository that contains start_dir, as git itself would."""
    if not os.path.isdir(start_dir):
        raise CqError(f"cannot use -C {start_dir}: not a directory", EXIT_USAGE)
    code, out = spawn_git(["rev-parse", "--git-common-dir", "--git-dir"], start_dir)
    if code != 0:
        raise CqError(f"not a git repository: {os.path.abspath(start_dir)} "
                      "(run cq inside a repository or pass -C DIR)", EXIT_USAGE)
    common, git_dir = os.fsdecode(out).splitlines()[:2]
    # Real paths: each worktree is keyed by its git dir in the index, and must be spelled
    # the same way however cq reached it (a hook, -C, a symlinked directory).
    return Repo(os.path.realpath(os.path.join(start_dir, common)),
                os.path.realpath(os.path.join(start_dir, git_dir)))


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


def running_archive() -> str | None:
    """Absolute path of the cq.pyz this code runs from, or None when run from source."""
    here = os.path.abspath(__file__)
    archive = os.path.dirname(here)
    return archive if os.path.isfile(archive) else None


def self_command(archive: str | None = None) -> list[str]:
    """The argv prefix that runs cq again (this same one unless another archive is given),
    isolated from the user's environment."""
    archive = archive or running_archive()
    if archive:
        return [sys.executable, "-I", "-S", archive]
    return [sys.executable, "-I", os.path.abspath(__file__)]


# ---------------------------------------------------------------------------------------------
# Configuration: git config keys in the cq section, validated into one Config object.
# ---------------------------------------------------------------------------------------------

class Config:
    """cq's settings for one repository, read from git config (local, global or system)."""

    KEYS = {
        # git key, as documented: (attribute, parser, default, hint)
        "cq.workers": ("workers", "int:1:64", 2, "a whole number from 1 to 64"),
        "cq.autostart": ("autostart", "bool", True, "true or false"),
        "cq.shutdownTimeout": ("shutdown_timeout", "float:0.1:3600", 30.0,
                               "seconds, from 0.1 to 3600"),
        "cq.heartbeatInterval": ("heartbeat_interval", "float:0.05:60", 2.0,
                                 "seconds, from 0.05 to 60"),
        "cq.reconcileInterval": ("reconcile_interval", "float:0.1:86400", 60.0,
                                 "seconds, from 0.1 to 86400"),
        "cq.logMaxBytes": ("log_max_bytes", "size:4096:1073741824", 1 << 20,
                           "a size from 4k to 1g"),
        "cq.logBackups": ("log_backups", "int:1:100", 3, "a whole number from 1 to 100"),
        "cq.maxFileSize": ("max_file_size", "size:1:1073741824", 1 << 20,
                           "a size in bytes, with an optional k, m or g, up to 1g"),
        "cq.exclude": ("exclude", "list", (), "gitignore-style patterns, one per value"),
        "cq.demote": ("demote", "list", (), "gitignore-style patterns, one per value"),
        "cq.pruneAfter": ("prune_after_days", "float:0:36500", 7.0, "days, from 0 to 36500"),
        "cq.parseBudget": ("parse_budget", "float:0.1:3600", 5.0,
                           "seconds, from 0.1 to 3600"),
        "cq.mcpWaitMs": ("mcp_wait_ms", "int:0:60000", 1000, "milliseconds, from 0 to 60000"),
        "cq.mcpToken": ("mcp_token", "str", "", "a bearer token for cq mcp --http"),
        "cq.overlayMaxFiles": ("overlay_max_files", "int:0:10000", 50,
                               "a whole number from 0 to 10000"),
        "cq.documenter": ("documenter", "str", "",
                          "claude (Claude Code's CLI, or the path to it) or a shell command"),
        "cq.documenterModel": ("documenter_model", "str", "", "a model name, such as sonnet"),
        "cq.documenterTimeout": ("documenter_timeout", "float:0.1:86400", 300.0,
                                 "seconds, from 0.1 to 86400"),
        "cq.documenterJobs": ("documenter_jobs", "int:1:64", 2, "a whole number from 1 to 64"),
        "cq.documenterMaxBytes": ("documenter_max_bytes", "size:1:1073741824", 100 << 10,
                                  "a size in bytes, with an optional k, m or g, up to 1g"),
        "cq.documenterBudget": ("documenter_budget", "float:0:1000000", 0.0,
                                "US dollars a day, 0 for no cap"),
        "cq.documenterFailures": ("documenter_failures", "int:1:1000", 3,
                                  "a whole number from 1 to 1000"),
        "cq.documenterBackoff": ("documenter_backoff", "float:0.1:86400", 60.0,
                                 "seconds, from 0.1 to 86400"),
    }
    BY_GIT_NAME = {key.lower(): key for key in KEYS}  # git prints keys in lowercase

    def __init__(self, values: dict | None = None):
        for attr, _, default, _ in self.KEYS.values():
            setattr(self, attr, default)
        for key, value in (values or {}).items():
            setattr(self, self.KEYS[key][0], value)


SIZE_SUFFIXES = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_config_value(key: str, raw: str) -> object:
    """Convert one git config value, or raise CqError naming the key and the expected form."""
    _, kind, _, hint = Config.KEYS[key]
    fix = f"(fix with: git config {key} VALUE, or git config --unset-all {key})"
    if kind == "bool":
        lowered = raw.strip().lower()
        if lowered in ("true", "yes", "on", "1", ""):
            return True
        if lowered in ("false", "no", "off", "0"):
            return False
    elif kind in ("list", "str"):
        return raw
    else:
        name, low, high = kind.split(":")
        text = raw.strip().lower()
        scale = 1
        if name == "size" and text[-1:] in SIZE_SUFFIXES:  # git's own k, m, g suffixes
            scale, text = SIZE_SUFFIXES[text[-1:]], text[:-1]
        try:
            value = float(text) if name == "float" else int(text) * scale
        except ValueError:
            value = None
        if value is not None and float(low) <= value <= float(high):
            return value
    raise CqError(f"invalid value {raw!r} for {key}: expected {hint} {fix}", EXIT_USAGE)


def parse_config(pairs: list[tuple[str, str]]) -> Config:
    """Build a Config from (key, value) pairs as git prints them; unknown cq.* keys are errors."""
    values: dict = {}
    for name, raw in pairs:
        key = Config.BY_GIT_NAME.get(name.lower())
        if key is None:
            known = ", ".join(sorted(Config.KEYS))
            raise CqError(f"unknown setting {name} (known: {known}); "
                          f"remove it with: git config --unset-all {name}", EXIT_USAGE)
        value = parse_config_value(key, raw)
        if Config.KEYS[key][1] == "list":
            values[key] = (*values.get(key, ()), value)
        else:
            values[key] = value
    return Config(values)


class FreshConfig:
    """The settings of a long-running reader (the summarizer, the MCP server): read again at
    most every 2 seconds, since each read is a git process; while they are invalid, the last
    valid ones (the defaults at first), with the problem passed to warn."""

    def __init__(self, repo: Repo, warn, config: Config | None = None):
        self.repo, self.warn = repo, warn
        self.read: tuple = (time.monotonic(), config) if config else (0.0, None)

    def __call__(self) -> Config:
        when, config = self.read
        if config is None or time.monotonic() - when > 2:
            try:
                config = load_config(self.repo)
            except CqError as exc:
                self.warn(f"{exc}; using the last valid settings")
                config = config or Config()
            self.read = (time.monotonic(), config)
        return config

    def last(self) -> Config:
        """The settings as last read, without reading (safe in a signal handler)."""
        return self.read[1] or Config()


def config_or_defaults(repo: Repo) -> Config:
    """The settings, or the defaults with a warning where they are invalid: for commands that
    must work even then, such as stopping the worker."""
    try:
        return load_config(repo)
    except CqError as exc:
        print(f"cq: warning: {exc}; using the defaults", file=sys.stderr)
        return Config()


def load_config(repo: Repo) -> Config:
    """Read and validate the cq.* settings that apply to this repository."""
    args = ["config", "-z", "--get-regexp", r"^cq\."]
    code, out = spawn_git(["--git-dir", repo.git_dir, *args], env=scrubbed_env())
    if code not in (0, 1):  # asked again, for what git says on stderr
        proc = run_git(args, git_dir=repo.git_dir, check=False)
        detail = os.fsdecode(proc.stderr).strip().splitlines()
        raise CqError(f"cannot read git config: {detail[-1] if detail else code}", EXIT_USAGE)
    pairs = []
    for item in os.fsdecode(out).split("\0"):
        if item:
            key, _, value = item.partition("\n")
            pairs.append((key, value))
    return parse_config(pairs)


# ---------------------------------------------------------------------------------------------
# Git plumbing: every git call cq makes, with hook variables scrubbed from the environment.
# ---------------------------------------------------------------------------------------------

# What `git rev-parse --local-env-vars` prints (a test keeps this list honest).  A hook runs with
# some of these set; inherited by our children they would point git at the wrong index or repo.
GIT_LOCAL_ENV = (
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_CONFIG", "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT", "GIT_OBJECT_DIRECTORY", "GIT_DIR", "GIT_WORK_TREE",
    "GIT_IMPLICIT_WORK_TREE", "GIT_GRAFT_FILE", "GIT_INDEX_FILE", "GIT_NO_REPLACE_OBJECTS",
    "GIT_REPLACE_REF_BASE", "GIT_PREFIX", "GIT_INTERNAL_SUPER_PREFIX", "GIT_SHALLOW_FILE",
    "GIT_COMMON_DIR",
)
SUBMODULE_MODE = "160000"
SYMLINK_MODE = "120000"


def spawn_git(args: list[str], cwd: str | None = None,
              env: dict | None = None) -> tuple[int, bytes]:
    """Run `git [-C cwd] ARGS` (in the caller's environment unless env is given); return
    (exit code, stdout).

    The hot paths (`worker status`, `hook run`, `search`) use this instead of subprocess,
    whose import alone costs 5 to 10 ms; stderr is discarded."""
    read_end, write_end = os.pipe()
    devnull = os.open(os.devnull, os.O_RDWR)
    argv = ["git", *(["-C", cwd] if cwd else []), *args]
    try:
        pid = os.posix_spawnp("git", argv, os.environ if env is None else env, file_actions=[
            (os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, write_end, 1),
            (os.POSIX_SPAWN_DUP2, devnull, 2)])
    except FileNotFoundError as exc:
        os.close(read_end)
        raise CqError("git is not installed or not on PATH") from exc
    finally:
        os.close(write_end)
        os.close(devnull)
    chunks = []
    while True:
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_end)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), b"".join(chunks)


def scrubbed_env() -> dict:
    """The environment without the repository-local git variables a hook may have set."""
    env = {k: v for k, v in os.environ.items() if k not in GIT_LOCAL_ENV}
    env["GIT_OPTIONAL_LOCKS"] = "0"
    return env


def run_git(args: list[str], git_dir: str | None = None, cwd: str | None = None,
            check: bool = True, env: dict | None = None, input: bytes | None = None):
    """Run git and capture its output; raise CqError on failure when check is set."""
    import subprocess

    cmd = ["git"] + (["--git-dir", git_dir] if git_dir else []) + args
    try:
        proc = subprocess.run(cmd, cwd=cwd, input=input, capture_output=True, check=False,
                              env=env or scrubbed_env(),
                              stdin=None if input is not None else subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise CqError("git is not installed or not on PATH") from exc
    if check and proc.returncode != 0:
        detail = os.fsdecode(proc.stderr).strip().splitlines()
        raise CqError(f"git {args[0]} failed: {detail[-1] if detail else proc.returncode}")
    return proc


def head_commit(git_dir: str) -> str | None:
    """The commit HEAD of this worktree points at, or None on an unborn branch."""
    code, out = spawn_git(["--git-dir", git_dir, "rev-parse", "-q", "--verify",
                           "HEAD^{commit}"], env=scrubbed_env())
    return out.decode().strip() or None if code == 0 else None


def head_signature(repo: Repo) -> tuple:
    """What changes whenever HEAD, git's index or the repository's exclude file may have
    changed, read with a few stat calls (a cache key: no git process)."""
    def mark(path: str) -> tuple:
        try:
            st = os.stat(path)
            return (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            return ()

    try:
        with open(os.path.join(repo.git_dir, "HEAD"), "rb") as f:
            head = f.read(4096).strip()
    except OSError:
        head = b""
    ref = os.fsdecode(head[5:].strip()) if head.startswith(b"ref:") else ""
    return (head, mark(os.path.join(repo.common_dir, ref)) if ref else (),
            mark(os.path.join(repo.common_dir, "packed-refs")),
            mark(os.path.join(repo.git_dir, "index")),
            mark(os.path.join(repo.common_dir, "info", "exclude")))


def commit_exists(common_dir: str, commit: str) -> bool:
    """True if the object database still has this commit."""
    proc = run_git(["cat-file", "-e", f"{commit}^{{commit}}"], git_dir=common_dir, check=False)
    return proc.returncode == 0


def tree_listing(common_dir: str, commit: str, sizes: bool = False) -> bytes:
    """A commit's whole tree as `git ls-tree -r -z` lists it, for tree_entries; with each
    blob's size only if asked, since git then reads every object's header."""
    return run_git(["ls-tree", "-r", "-z", "--full-tree", *(["-l"] if sizes else []), commit],
                   git_dir=common_dir).stdout


def tree_entries(listing: bytes) -> Iterator[tuple]:
    """(path, mode, object id, size) of each entry of a tree listing, the size None unless
    listed (and for what is not a blob).  One at a time: at 50,000 files the listing is a
    few MB, but as Python objects all at once it would be the worker's largest peak."""
    start = 0
    while start < len(listing):
        end = listing.find(b"\0", start)
        end = len(listing) if end < 0 else end
        meta, _, path = listing[start:end].partition(b"\t")
        start = end + 1
        if path:
            mode, kind, sha, *size = meta.decode().split()
            yield os.fsdecode(path), mode, sha, int(size[0]) if size and kind == "blob" else None


def new_blobs(changes: list[tuple[str, str, str]]) -> list[str]:
    """The blobs a diff of changed_blobs brings in, sorted, each once."""
    return sorted({sha for _, _, sha in changes if sha})


def changed_blobs(common_dir: str, old: str, new: str) -> list[tuple[str, str, str]]:
    """(path, new mode, new blob) for every path that differs; deleted paths have blob ''."""
    out = run_git(["diff-tree", "-r", "-z", "--raw", "--no-renames", old, new],
                  git_dir=common_dir).stdout
    fields = out.split(b"\0")
    changes = []
    for i in range(0, len(fields) - 1, 2):
        meta = fields[i].decode()
        if not meta.startswith(":"):
            continue
        _, new_mode, _, new_sha, status = meta[1:].split(" ")
        path = os.fsdecode(fields[i + 1])
        deleted = status.startswith("D")
        changes.append((path, "" if deleted else new_mode, "" if deleted else new_sha))
    return changes


def worktree_git_dirs(common_dir: str) -> list[str]:
    """The git dirs of all worktrees of a repository: the main one, then linked ones."""
    dirs = [common_dir]
    linked = os.path.join(common_dir, "worktrees")
    try:
        names = sorted(os.listdir(linked))
    except FileNotFoundError:
        names = []
    for name in names:
        path = os.path.join(linked, name)
        if os.path.isfile(os.path.join(path, "HEAD")):
            dirs.append(path)
    return dirs


def rebase_in_progress(git_dir: str) -> bool:
    """True while a rebase is replaying commits in this worktree."""
    return any(os.path.isdir(os.path.join(git_dir, d)) for d in ("rebase-merge", "rebase-apply"))


# Bytes of requests sent to `git cat-file` ahead of the answers read: they must fit in its
# stdin pipe, since git, blocked writing answers not yet read, stops reading them.  A pipe
# holds at least a page (less than its usual 64 KiB once a user's pipes take too much room).
READ_AHEAD_BYTES = 4096


class BlobReader:
    """Streams blob contents through one long-lived `git cat-file --batch` process."""

    def __init__(self, common_dir: str):
        import subprocess

        self.common_dir = common_dir
        # A blob id means its own content, as in the work tree (see work_tree_blob), whatever
        # refs/replace says.
        self.proc = subprocess.Popen(["git", "--no-replace-objects", "--git-dir", common_dir,
                                      "cat-file", "--batch"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=scrubbed_env())

    def read(self, sha: str, limit: int) -> tuple[int, bytes | None]:
        """(size, content) of a blob; content is None when missing or larger than limit."""
        return next(self.read_all([sha], limit))

    def read_all(self, shas: list[str], limit: int):
        """(size, content) of each blob in turn, as read: requests are kept READ_AHEAD_BYTES
        ahead of the answers, so git works ahead instead of waiting for a round trip per
        blob.  Left unfinished, the process is ended (its answers are out of step): `alive`
        then says False."""
        ahead = max(2, READ_AHEAD_BYTES // (len(shas[0]) + 1)) if shas else 0
        answered = sent = 0
        try:
            for _ in shas:
                if sent - answered <= ahead // 2 and sent < len(shas):
                    end = min(len(shas), answered + ahead)
                    self.proc.stdin.write(b"".join(sha.encode() + b"\n"
                                                   for sha in shas[sent:end]))
                    self.proc.stdin.flush()
                    sent = end
                answer = self._answer(limit)
                answered += 1
                yield answer
        finally:
            if answered < len(shas):
                self.proc.kill()  # it may be blocked writing answers nobody will read
                self.close()

    def _answer(self, limit: int) -> tuple[int, bytes | None]:
        """The next answer of git cat-file."""
        header = self.proc.stdout.readline().split()
        if len(header) != 3:
            if not header:
                raise CqError("git cat-file ended early")
            return -1, None
        size = int(header[2])
        remaining, chunks = size + 1, []
        while remaining:
            chunk = self.proc.stdout.read(min(remaining, 1 << 20))
            if not chunk:
                raise CqError("git cat-file ended early")
            remaining -= len(chunk)
            if size <= limit:
                chunks.append(chunk)
        return size, b"".join(chunks)[:-1] if size <= limit else None

    def alive(self) -> bool:
        """True while the git process can still answer."""
        return self.proc.poll() is None and not self.proc.stdin.closed

    def close(self) -> None:
        """End the git process."""
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.proc.wait()


def thread_blob_reader(common_dir: str) -> BlobReader:
    """This thread's long-lived BlobReader (a worker thread reads every batch through one
    `git cat-file`), replaced when it has ended."""
    import threading

    thread = threading.current_thread()
    reader = getattr(thread, "cq_blob_reader", None)
    if reader is None or not reader.alive() or reader.common_dir != common_dir:
        reader = thread.cq_blob_reader = BlobReader(common_dir)
    return reader


class LazyBlobReader:
    """A BlobReader started at the first read (no git process for a documenter never set)."""

    def __init__(self, common_dir: str):
        self.common_dir, self.reader = common_dir, None

    def read(self, sha: str, limit: int) -> tuple[int, bytes | None]:
        """As BlobReader.read."""
        self.reader = self.reader or BlobReader(self.common_dir)
        return self.reader.read(sha, limit)

    def close(self) -> None:
        """End the git process, if one was started."""
        if self.reader:
            self.reader.close()


# ---------------------------------------------------------------------------------------------
# The worker detector: stdlib only, never imports Huey.  The live worker holds an exclusive
# flock on its pid file; a probe that cannot take a shared lock knows a worker is alive.
# ---------------------------------------------------------------------------------------------

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
    try:  # No /proc (macOS): the lock is the proof of life; existence is all we can add.
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


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
                return WorkerState("stopped", "not running")
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


# ---------------------------------------------------------------------------------------------
# The queue and tasks: the only section that imports Huey, and only when a task must be queued
# or run.  Tasks are hints; the index decides what is missing, so a lost task loses nothing.
# ---------------------------------------------------------------------------------------------

DOCUMENT_BATCH = 128  # files a task documents with one commit
LEXICAL_BATCH = 512  # files a task of the lexical pass indexes with one commit
LEXICAL_FIRST = 200  # more files missing than this get the lexical pass before the full one
_QUEUES: dict = {}


def task_queue(repo: Repo):
    """The Huey instance (SQLite, no result storage) for this repository, with cq's tasks."""
    if repo.common_dir in _QUEUES:
        return _QUEUES[repo.common_dir]
    import sqlite3

    from huey import SqliteHuey

    class QueueConnection(sqlite3.Connection):
        """The queue's connection, whose commits wait for no fsync (WAL, synchronous NORMAL),
        as the index's: a power cut may lose the last tasks, never the queue, and the index,
        not the queue, decides what is missing.  A first index of 10,000 files waited for
        116 fsyncs instead of 360 (two a task; 0.3 ms each on an SSD, 5 to 10 on a disk)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.execute("PRAGMA synchronous = NORMAL")

    path = repo.state_path(QUEUE_DB)
    check_database_files(path)
    try:
        huey = SqliteHuey(name="cq", filename=sqlite_uri(path, "rwc"), uri=True, results=False,
                          utc=True, timeout=30, factory=QueueConnection)
    except sqlite3.DatabaseError as exc:
        if is_damage(exc):
            raise DatabaseDamaged(path, str(exc)) from exc
        raise
    common = repo.common_dir

    # Higher priorities run first: a move of HEAD is mapped at once, and the lexical pass of
    # a large change runs before any full pass, whatever order they were queued in.
    @huey.task(name="sync", priority=2)
    def sync(git_dir: str) -> None:
        repair_if_damaged(repo, sync_worktree, Repo(common, git_dir), huey)

    @huey.task(name="document")
    def document(blobs: list) -> None:
        repair_if_damaged(repo, document_blobs, Repo(common, common), blobs, huey)

    @huey.task(name="lexical", priority=1)
    def lexical(blobs: list) -> None:
        repair_if_damaged(repo, index_words, Repo(common, common), blobs, huey)

    @huey.task(name="reconcile")
    def reconcile() -> None:
        repair_if_damaged(repo, reconcile_index, Repo(common, common), huey)

    huey.cq_tasks = {"sync": sync, "document": document, "lexical": lexical,
                     "reconcile": reconcile}
    huey.cq_config = Config()  # the worker sets the settings it started with
    _QUEUES[repo.common_dir] = huey
    return huey


class Problems:
    """The worker's current problems by source ("config", "task"), for its heartbeat."""

    current: dict = {}  # one worker per process
    repairing = False  # a repair of a damaged database was started

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


def repair_if_damaged(repo: Repo, work, *args) -> None:
    """Run a task; if it meets a damaged database, have `cq index --repair` (a process of its
    own, which stops this worker first) move the file aside and restart the worker."""
    try:
        work(*args)
    except Exception as exc:
        repair_once(repo, exc)
        raise


def repair_once(repo: Repo, exc: Exception) -> None:
    """Start `cq index --repair` if exc says a database is damaged (once per worker: the
    repair restarts it)."""
    if (is_damage(exc) or isinstance(exc, DatabaseDamaged)) and not Problems.repairing:
        Problems.repairing = True
        log(f"a database is damaged ({exc}); starting cq index --repair", error=True)
        start_repair(repo)


def start_repair(repo: Repo) -> None:
    """Start `cq index --repair` in a process of its own: it stops the worker (and with it
    the caller, when the caller is the worker) before moving a damaged database aside."""
    spawn_detached([*self_command(), "-C", repo.common_dir, "index", "--repair"], repo)


CONFIG_RECHECK = 10.0  # seconds a task trusts unchanged config files (includes are not seen)


def task_config(repo: Repo, huey) -> Config:
    """The settings as they are now; while they are invalid, the last valid ones, with the
    problem shown by `cq worker status` (a typo in git config must not stall the index).
    They are read again (a git process) only when a config file changed, or after
    CONFIG_RECHECK seconds: a task of the initial index would otherwise spend more time
    reading them than documenting."""
    files, now = config_files_state(repo), time.monotonic()
    if getattr(huey, "cq_config_read", None) == files and \
            now - getattr(huey, "cq_config_at", 0.0) < CONFIG_RECHECK:
        return huey.cq_config
    try:
        huey.cq_config = load_config(repo)
        huey.cq_config_read, huey.cq_config_at = files, now
        Problems.clear("config")
    except CqError as exc:
        Problems.report("config", f"{exc}; using the last valid settings")
    return huey.cq_config


def config_files_state(repo: Repo) -> tuple:
    """The size and modification time of every file git reads settings from by default."""
    home = os.environ.get("HOME", "")
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    state = []
    for path in (os.path.join(repo.common_dir, "config"),
                 os.path.join(repo.git_dir, "config.worktree"),
                 os.environ.get("GIT_CONFIG_GLOBAL") or os.path.join(home, ".gitconfig"),
                 os.path.join(xdg, "git", "config"),
                 os.environ.get("GIT_CONFIG_SYSTEM") or "/etc/gitconfig"):
        try:
            info = os.stat(path)
            state.append((info.st_mtime_ns, info.st_size, info.st_ino))
        except OSError:
            state.append(None)
    return tuple(state)


def queue_documents(huey, blobs: Iterable[tuple[str, str]]) -> int:
    """Queue (blob, path) pairs for documenting, in batches, taking the pairs one at a time
    (a first index holds no list of them all); returns how many.  Where there are more than
    LEXICAL_FIRST, the lexical pass goes first: each lexical task queues the full pass of
    its files when done, and runs before any full pass (its priority is higher), so the
    whole tree is soon searchable by its words."""
    import itertools

    blobs = iter(blobs)
    first = list(itertools.islice(blobs, LEXICAL_FIRST + 1))
    lexical = len(first) > LEXICAL_FIRST
    task = huey.cq_tasks["lexical" if lexical else "document"]
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


def sync_worktree(repo: Repo, huey) -> None:
    """Bring one worktree's path -> blob map to its HEAD and queue what needs documenting."""
    import functools

    known = {os.path.realpath(d) for d in worktree_git_dirs(repo.common_dir)}
    if os.path.realpath(repo.git_dir) not in known:
        log(f"sync: {repo.git_dir!r} is not a worktree of this repository (any more); skipped")
        return
    config = task_config(repo, huey)
    with Index(repo) as index:
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
        queue_documents(huey, index.missing_blobs(repo.git_dir, among))


def reconcile_index(repo: Repo, huey) -> None:
    """Compare every worktree with the index and queue whatever is missing; prune orphans."""
    config = task_config(repo, huey)
    with Index(repo) as index:
        known = set(index.worktrees())
        live = set(worktree_git_dirs(repo.common_dir))
        for gone in known - live:
            index.forget_worktree(gone)
        behind = [d for d in sorted(live) if index.worktree_commit(d) != head_commit(d)]
        index.prune(config.prune_after_days * 86400)
        missing = 0 if behind or huey.pending_count() else \
            queue_documents(huey, index.missing_blobs(None))
    for git_dir in behind:
        huey.cq_tasks["sync"](git_dir)
    if missing:
        log(f"reconcile: {missing} blob(s) were missing from the index; queued again")


# ---------------------------------------------------------------------------------------------
# The documenters: turn one file's bytes into a summary and a list of entries (definitions,
# headings, imports).  Built in, stdlib only, bounded in time; never raises on bad input.
# ---------------------------------------------------------------------------------------------

LANGUAGES = {
    ".py": "python", ".pyi": "python",
    ".js": "javascript", ".jsx": "javascript", ".mjs": "javascript", ".cjs": "javascript",
    ".ts": "typescript", ".tsx": "typescript", ".mts": "typescript", ".cts": "typescript",
    ".go": "go", ".rs": "rust", ".java": "java",
    ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp",
    ".hh": "cpp", ".hxx": "cpp",
    ".sh": "shell", ".bash": "shell", ".zsh": "shell",
    ".md": "markdown", ".markdown": "markdown",
}
DEFINITION_KINDS = {"class", "function", "method", "struct", "interface", "enum", "trait",
                    "type", "macro", "module", "constant", "record", "impl"}


def detect_language(path: str, text: str) -> str:
    """The language of a file from its name, or its shebang for scripts without an extension."""
    ext = os.path.splitext(path)[1].lower()
    if ext in LANGUAGES:
        return LANGUAGES[ext]
    first = text[:100].split("\n", 1)[0]
    if first.startswith("#!"):
        if "python" in first:
            return "python"
        if any(sh in first for sh in ("sh", "bash", "zsh")):
            return "shell"
        if "node" in first:
            return "javascript"
    return "text"


IDENTIFIER_WORDS: dict = {}  # identifier -> its words, for the life of a process (they repeat)
IDENTIFIER_WORDS_MAX = 4000  # about 1.5 MB (20,000 held the worker's memory 8 MB higher)
IDENTIFIER_PATTERNS: list = []  # the separators, and the words of an ASCII part, compiled once


def split_identifier(name: str) -> list[str]:
    """The lowercase words of an identifier: parse_config, ParseConfig, HTTPServer2 -> words;
    in any script (größeBerechnen -> größe, berechnen; 関数 -> 関数)."""
    words = IDENTIFIER_WORDS.get(name)
    if words is None:
        if len(IDENTIFIER_WORDS) >= IDENTIFIER_WORDS_MAX:
            IDENTIFIER_WORDS.clear()
        words = IDENTIFIER_WORDS[name] = identifier_parts(name)
    return list(words)


def identifier_patterns() -> list:
    """The separators of an identifier's parts, and the words of an ASCII part, compiled."""
    import re

    if not IDENTIFIER_PATTERNS:
        IDENTIFIER_PATTERNS[:] = [re.compile(r"[\W_]+"), re.compile(
            r"[A-Z]+(?=[A-Z][a-z]|\d|\b)|[A-Z]?[a-z]+|[A-Z]+|\d+")]
    return IDENTIFIER_PATTERNS


def identifier_parts(text: str) -> list[str]:
    """The lowercase words of every identifier in a text, in order (split_identifier without
    its cache, which costs more than it saves where most names are new).  An ASCII text, most
    of them, takes one match over the whole of it, which finds the parts that splitting at
    its separators would: no match takes a separator, and an uppercase run ends at `_` as at
    the end of a part."""
    separators, ascii_words = identifier_patterns()
    if text.isascii():
        return " ".join(ascii_words.findall(text)).lower().split()
    words = []
    for part in separators.split(text):
        words += ascii_words.findall(part) if part.isascii() else case_runs(part)
    return [w.lower() for w in words if w]


def case_runs(part: str) -> list[str]:
    """A non-ASCII identifier part split where lowercase turns upper or letters turn digits."""
    words, current = [], ""
    for ch in part:
        if current and (ch.isdigit() != current[-1].isdigit() or
                        (ch.isupper() and current[-1].islower())):
            words.append(current)
            current = ""
        current += ch
    return [*words, current] if current else words


def entry(kind: str, name: str, line: int, signature: str = "", doc: str = "",
          container: str = "") -> dict:
    """One searchable record of a file's documentation; container is what it is defined in
    (`Builder` for `Builder.WriteString`, `strings` for Go's `strings.Builder`)."""
    return {"kind": kind, "name": name, "line": line, "signature": signature.strip(),
            "doc": (doc or "").strip(), "container": container}


COMMENT_PREFIXES = {  # line comments by language ("/*" marks block comments); C's # is code
    "python": ("#",), "shell": ("#",),
    "c": ("//", "/*"), "cpp": ("//", "/*"), "java": ("//", "/*"), "javascript": ("//", "/*"),
    "typescript": ("//", "/*"), "go": ("//", "/*"), "rust": ("//", "/*"),
    "text": ("#", "//", "--", ";", "/*"), "markdown": (),
}
ATTRIBUTE_PREFIXES = ("#[", "@")  # Rust attributes, Java annotations, decorators
DOC_COMMENT_MAX_CHARS = 4000  # a doc comment keeps its first part: the summary comes first
LONGEST_LINE_MATCHED = 500  # longer lines (minified, generated) are not definitions
PARSE_BUDGET = Config.KEYS["cq.parseBudget"][2]  # seconds the documenter may spend on a file
# CPython 3.9 and 3.10 overflow the C stack (a segfault) in ast.parse on very long chains such
# as 1+1+...+1 (measured: 100,000 terms parse, 120,000 crash with an 8 MiB stack).  A file
# with fewer chain characters than this cannot hold such a chain; one with more is tried in a
# child process first.
PARSER_CHAIN_LIMIT = 10_000
CHAIN_CHARACTERS = "+-*/%@&|^.([~<>"


class OverBudget(Exception):
    """Documenting one file took longer than its time budget."""


class ParserCrash(Exception):
    """This interpreter's parser would crash on the file."""


class Deadline:
    """The time budget for documenting one file, checked between lines of pure Python work
    (a regular expression or ast.parse call cannot be interrupted, so each stays linear)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def check(self) -> None:
        """Raise OverBudget once the budget is spent."""
        if time.monotonic() > self.at:
            raise OverBudget(f"took more than {self.seconds:g}s to document; only its names "
                             "were kept")


def document_python(text: str, deadline: Deadline) -> tuple[str, list[dict]]:
    """Document Python with ast: docstrings, classes, functions, methods, imports."""
    import ast

    if parser_may_crash(text) and not parses_in_a_child(text, deadline):
        raise ParserCrash(f"Python {sys.version_info[0]}.{sys.version_info[1]}'s parser "
                          "crashes on this file; only its names were kept")
    tree = ast.parse(text)
    entries = []
    summary = ast.get_docstring(tree) or ""

    def visit(node, owner: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                bases = ", ".join(ast.unparse(b) for b in child.bases)
                entries.append(entry("class", child.name, child.lineno,
                                     f"class {child.name}({bases})" if bases else
                                     f"class {child.name}", ast.get_docstring(child),
                                     owner or ""))
                visit(child, f"{owner}.{child.name}" if owner else child.name)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                prefix = "async def" if isinstance(child, ast.AsyncFunctionDef) else "def"
                returns = f" -> {ast.unparse(child.returns)}" if child.returns else ""
                qual = f"{owner}.{child.name}" if owner else child.name
                entries.append(entry("method" if owner else "function", child.name,
                                     child.lineno,
                                     f"{prefix} {qual}({ast.unparse(child.args)}){returns}",
                                     ast.get_docstring(child), owner or ""))
                # Function bodies are not walked: nested helpers are implementation detail,
                # and walking every statement of every body doubles the time per file.
            elif isinstance(child, (ast.Import, ast.ImportFrom)):
                if owner is None:
                    entries.extend(import_entries(child))
            elif isinstance(child, (ast.If, ast.Try, ast.With)):
                visit(child, owner)

    visit(tree, None)
    return summary, entries


def import_entries(node) -> list[dict]:
    """One entry per imported name; relative imports keep their dots (from . import x: .x)."""
    module = getattr(node, "module", None) or ""
    base = "." * getattr(node, "level", 0) + module
    names = [f"{base}.{a.name}" if module else f"{base}{a.name}" for a in node.names]
    return [entry("import", name, node.lineno, f"import {name}") for name in names]


def parser_may_crash(text: str) -> bool:
    """True if this interpreter's ast.parse could overflow the C stack on text."""
    return sys.version_info < (3, 11) and \
        sum(map(text.count, CHAIN_CHARACTERS)) > PARSER_CHAIN_LIMIT


def parses_in_a_child(text: str, deadline: Deadline) -> bool:
    """Parse text in a child process (on a thread with half the usual stack, for a margin);
    False if the parser crashed there.  A syntax error is not a crash."""
    import subprocess

    script = ("import ast, sys, threading\nthreading.stack_size(4 << 20)\n"
              "source = sys.stdin.buffer.read()\n"
              "t = threading.Thread(target=ast.parse, args=(source,)); t.start(); t.join()\n")
    try:
        proc = subprocess.run([sys.executable, "-I", "-S", "-c", script], check=False,
                              input=text.encode(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=max(deadline.at - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired as exc:
        raise OverBudget(f"took more than {deadline.seconds:g}s to parse; only its names "
                         "were kept") from exc
    return proc.returncode >= 0


def comment_step(stripped: str, prefixes: tuple, in_block: bool) -> tuple[str | None, bool]:
    """Read one stripped line: (its comment text, or None if it is code; whether a block
    comment is still open after it)."""
    if in_block:
        body, closed, _ = stripped.partition("*/")
        return body.lstrip("*").strip(), not closed
    if stripped.startswith("#!"):
        return None, False
    if "/*" in prefixes and stripped.startswith("/*"):
        body, closed, _ = stripped[2:].partition("*/")
        return body.lstrip("*!").strip(), not closed
    for prefix in prefixes:
        if stripped.startswith(prefix):
            return stripped[len(prefix):].lstrip("/!").strip(), False
    return None, False


class CommentBlock:
    """The lines of one comment block, of which the first DOC_COMMENT_MAX_CHARS are kept."""

    def __init__(self):
        self.parts: list[str] = []
        self.size = 0

    def add(self, text: str) -> None:
        """Add a line (dropped once the block is full)."""
        if self.size < DOC_COMMENT_MAX_CHARS:
            self.parts.append(text)
            self.size += len(text) + 1

    def text(self) -> str:
        """The block as text."""
        return "\n".join(p for p in self.parts if p).strip()[:DOC_COMMENT_MAX_CHARS]


def leading_comment(lines: list[str], prefixes: tuple) -> str:
    """The first comment block of a file (after a shebang and blank lines)."""
    block, in_block = CommentBlock(), False
    for line in lines:
        stripped = line.strip()
        text, in_block = comment_step(stripped, prefixes, in_block)
        if text is None:
            if block.parts or (stripped and not stripped.startswith("#!")):
                break
            continue
        block.add(text)
    return block.text()


def code_lines(lines: list[str], language: str, deadline: Deadline):
    """(index, line, comment block or None) for each line of code, with the comment block
    directly above it, past attributes and annotations; the block's text is worked out only
    for the few lines that define something.  One pass over the file: linear."""
    prefixes = COMMENT_PREFIXES[language]
    starts = tuple({prefix[0] for prefix in prefixes} | {"#"})  # of a comment or a shebang
    doc, in_block = None, False
    for index, line in enumerate(lines):
        if not index & 511:
            deadline.check()
        stripped = line.strip()
        text = None
        if in_block or stripped.startswith(starts):  # else a line of code, or empty
            text, in_block = comment_step(stripped, prefixes, in_block)
        if text is not None:
            doc = doc or CommentBlock()
            doc.add(text)
        elif not stripped:
            doc = None
        elif not stripped.startswith(ATTRIBUTE_PREFIXES):
            yield index, line, doc
            doc = None


IDENTIFIER_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
NOT_JAVA_TYPES = {"return", "new", "throw", "else", "case", "yield", "await", "assert", "do",
                  "try", "super", "this", "if", "for", "while", "switch", "catch"}
NOT_C_TYPES = {"return", "if", "else", "while", "for", "switch", "typedef", "do", "case",
               "goto", "sizeof", "throw", "new", "delete", "using", "namespace"}
# Kinds whose `{` opens a scope: what is defined inside has the scope as its container.
SCOPE_KINDS = {"class", "interface", "struct", "enum", "trait", "impl", "object", "module",
               "type"}


def name_before_paren(code: str) -> tuple[str, str, str]:
    """Split `TYPE NAME(ARGS...` at its first parenthesis: (prefix, name, after)."""
    head, _, after = code.partition("(")
    head = head.rstrip()
    prefix = head.rstrip(IDENTIFIER_CHARS + ":~")
    return prefix, head[len(prefix):], after


def qualified(name: str) -> tuple[str, str] | None:
    """(name, container) from `Container::name` (C++ definitions outside their class)."""
    container, _, last = name.rpartition("::")
    if not (last[:1].isalpha() or last[:1] in ("_", "~")):
        return None
    return last, container.strip(":")


def java_method(code: str) -> tuple[str, str] | None:
    """A Java method or constructor declared on this (normalised) line of a class body
    (with or without a body: interface methods are API too)."""
    prefix, name, _ = name_before_paren(code)
    words = prefix.split()
    if not words or not name[:1].isalpha() or ":" in name or words[0] in NOT_JAVA_TYPES or \
            not PATTERNS["java type"].fullmatch(prefix):
        return None
    return name, ""


def c_function(code: str) -> tuple[str, str] | None:
    """A C or C++ function defined at the start of this (normalised, unindented) line."""
    prefix, name, after = name_before_paren(code)
    words = prefix.split()
    if ";" in after or not words or words[0] in NOT_C_TYPES or \
            prefix[-1:] not in (" ", "*", "&") or not PATTERNS["c type"].fullmatch(prefix):
        return None
    return qualified(name)


def cpp_member(code: str) -> tuple[str, str] | None:
    """A method declared or defined in a C++ class body (with its return type)."""
    prefix, name, _ = name_before_paren(code)
    words = prefix.split()
    if not words or words[0] in NOT_C_TYPES or prefix[-1:] not in (" ", "*", "&") or \
            not PATTERNS["c type"].fullmatch(prefix) or "::" in name:
        return None
    return qualified(name)


def c_typedef(code: str) -> tuple[str, str] | None:
    """The name a C typedef on this line introduces (the last word before its `;`)."""
    if not code.startswith("typedef ") or not code.endswith(";"):
        return None
    body = code[:-1].rstrip()
    name = body[len(body.rstrip(IDENTIFIER_CHARS)):]
    return (name, "") if name[:1].isalpha() or name[:1] == "_" else None


def js_method(code: str) -> tuple[str, str] | None:
    """A method in a JavaScript or TypeScript class body or object literal: `name(...) {`."""
    if not code.endswith("{") or "(" not in code:
        return None
    match = PATTERNS["js method"].match(code)
    return (match.group(1), "") if match else None


def js_assignment(code: str) -> tuple[str, str] | None:
    """`a.b.name = function ...`, `X.prototype.y = (...) =>` and `exports.z = ...`: the name
    with its container (`prototype` dropped, `module.exports` as `exports`)."""
    match = PATTERNS["js assignment"].match(code)
    if not match:
        return None
    container, name, value = match.group(1)[:-1], match.group(2), match.group(3)
    exported = container in ("exports", "module.exports")
    if not exported and not PATTERNS["js function value"].match(value):
        return None
    container = container.replace(".prototype", "").replace("module.exports", "exports")
    return name, container


def compile_rules() -> dict:
    """The rule plans of each language (see rule_plan), and PATTERNS (once, on first use)."""
    import re

    function_value = r"(?:async ?)?(?:function\b|\([^)]*\) ?(?::[^=]*)?=>|[A-Za-z_$][\w$]* ?=>)"
    PATTERNS.update({
        "java type": re.compile(r"[\w<>\[\],.?@ ]+"),
        "c type": re.compile(r"[\w *&:<>,]+"),
        "js method": re.compile(
            r"(?:(?:static|async|public|private|protected|readonly|override|get|set) )*\*? ?"
            r"(?!(?:if|for|while|switch|catch|return|function)\b)"
            r"([A-Za-z_$][\w$]*) ?\([^)]*\) ?(?::[^{]*)?\{$"),
        "js assignment": re.compile(r"((?:[A-Za-z_$][\w$]*\.)+)([A-Za-z_$][\w$]*) ?= ?(.*)"),
        "js function value": re.compile(function_value),
    })
    return {language: {(indented, member): rule_plan([
                rule for rule in rules if not ((rule[2] == "top" and indented) or
                                               (rule[2] == "member" and not member))])
                       for indented in (False, True) for member in (False, True)}
            for language, rules in DEFINITION_RULES.items()}


def rule_plan(rules: list) -> list:
    """The rules that apply to a kind of line, as steps tried in turn: a rule function, or
    one pattern for each run of pattern rules.  That pattern is their alternation, each
    rule's groups renamed by its place (`r3`, holding `name3` and perhaps `container3`):
    the first alternative that matches wins, as when the rules were tried one by one, and
    a line that none matches, most lines, costs one match a run, not one a rule."""
    import re

    steps: list = []  # (kinds, a rule function or the patterns of a run)
    for kind, rule, _ in rules:
        if isinstance(rule, str) and steps and isinstance(steps[-1][1], list):
            steps[-1][0].append(kind)
            steps[-1][1].append(rule)
        else:
            steps.append(([kind], [rule] if isinstance(rule, str) else rule))
    return [(kinds, rule if callable(rule) else re.compile("|".join(
        numbered(pattern, n) for n, pattern in enumerate(rule)))) for kinds, rule in steps]


def numbered(pattern: str, n: int) -> str:
    """A rule's pattern as alternative n of its run (see rule_plan).  Its groups are renamed
    and renumbered, so no rule's pattern may refer to a group (`(?P=name)`, `\\1`)."""
    groups = pattern.replace("(?P<name>", f"(?P<name{n}>")
    return f"(?P<r{n}>{groups.replace('(?P<container>', f'(?P<container{n}>')})"


def plan_match(step: tuple, code: str) -> tuple[str, str, str] | None:
    """(kind, name, container) of the rule of a step (see rule_plan) that matches a line."""
    kinds, rule = step
    if callable(rule):
        found = rule(code)
        return found and (kinds[0], *found)
    match = rule.match(code)
    if not match:
        return None
    n = match.lastgroup[1:]  # the alternative's own group closes last
    groups = match.groupdict()
    return kinds[int(n)], groups[f"name{n}"], groups.get(f"container{n}") or ""


# Each rule: (kind, a pattern matched at the start of the line with its runs of white space
# made single spaces, or a function of that line; where it applies: "any" line, "top" for
# unindented lines, "member" for lines directly in a class, interface or object body).  With
# white space collapsed, no pattern has two adjacent quantifiers that can take the same
# characters, so each match is linear in the line.
JS_NAME = r"(?P<name>[A-Za-z_$][\w$]*)"
JS_FUNCTION = r"(?:async ?)?(?:function\b|\([^)]*\) ?(?::[^=]*)?=>|[A-Za-z_$][\w$]* ?=>)"
RUST_PUB = r"(?:pub(?:\([^)]*\))? )?"
DEFINITION_RULES = {
    "javascript": [
        ("function", rf"(?:export )?(?:default )?(?:declare )?(?:async )?function ?\*? ?{JS_NAME}",
         "any"),
        ("class", rf"(?:export )?(?:default )?(?:declare )?(?:abstract )?class {JS_NAME}", "any"),
        ("function", rf"(?:export )?(?:const|let|var) {JS_NAME} ?(?::[^=]*)?= ?{JS_FUNCTION}",
         "any"),
        ("interface", rf"(?:export )?(?:declare )?interface {JS_NAME}", "any"),
        ("type", rf"(?:export )?(?:declare )?type {JS_NAME} ?(?:<[^>]*>)? ?=", "any"),
        ("enum", rf"(?:export )?(?:declare )?(?:const )?enum {JS_NAME}", "any"),
        ("module", rf"(?:export )?(?:declare )?namespace {JS_NAME}", "any"),
        ("object", rf"(?:export )?(?:const|let|var) {JS_NAME} ?(?::[^=]*)?= ?\{{$", "top"),
        ("object", r"(?:module\.)?(?P<name>exports) ?= ?\{$", "top"),
        ("method", js_assignment, "any"),
        ("method", js_method, "member"),
        ("method", rf"{JS_NAME}\?? ?: ?{JS_FUNCTION}", "member"),
        ("method", rf"{JS_NAME}\?? ?(?:<[^>]*>)? ?\(", "member"),  # in an interface
        ("property", (r"(?:(?:static|readonly|private|public|protected|declare|override|"
                      r"abstract|accessor) )*#?(?P<name>[A-Za-z_$][\w$]*)[?!]? ?(?:: ?[^=;]|=|;$)"),
         "member"),
    ],
    "go": [
        ("package", r"package (?P<name>[A-Za-z_]\w*)", "top"),
        ("method", (r"func \([A-Za-z_]\w* \*?(?P<container>[A-Za-z_]\w*)(?:\[[^\]]*\])?\) ?"
                    r"(?P<name>[A-Za-z_]\w*)"), "top"),
        ("method", r"func \([^)]*\) ?(?P<name>[A-Za-z_]\w*)", "top"),
        ("function", r"func (?P<name>[A-Za-z_]\w*)", "top"),
        ("struct", r"type (?P<name>[A-Za-z_]\w*)(?:\[[^\]]*\])? struct\b", "top"),
        ("interface", r"type (?P<name>[A-Za-z_]\w*)(?:\[[^\]]*\])? interface\b", "top"),
        ("type", r"type (?P<name>[A-Za-z_]\w*)\b", "top"),
    ],
    "rust": [
        ("function", (rf"{RUST_PUB}(?:default )?(?:const )?(?:async )?(?:unsafe )?"
                      r'(?:extern "[^"]*" )?fn (?P<name>[A-Za-z_]\w*)'), "any"),
        ("struct", rf"{RUST_PUB}struct (?P<name>[A-Za-z_]\w*)", "any"),
        ("enum", rf"{RUST_PUB}enum (?P<name>[A-Za-z_]\w*)", "any"),
        ("trait", rf"{RUST_PUB}(?:unsafe )?trait (?P<name>[A-Za-z_]\w*)", "any"),
        ("type", rf"{RUST_PUB}type (?P<name>[A-Za-z_]\w*)", "any"),
        ("module", rf"{RUST_PUB}mod (?P<name>[A-Za-z_]\w*)", "any"),
        ("macro", r"macro_rules! (?P<name>[A-Za-z_]\w*)", "any"),
        ("impl", (r"(?:unsafe )?impl(?:<[^>]*>)? (?:[\w:<>, &']+ for )?(?:[\w]+::)*"
                  r"(?P<name>[A-Za-z_]\w*)"), "any"),
    ],
    "java": [
        ("package", r"package (?P<name>[\w.]+) ?;", "top"),
        ("class", (r"(?:(?:public|private|protected|static|final|abstract|sealed|non-sealed|"
                   r"strictfp) )*(?:class|interface|enum|record|@interface) "
                   r"(?P<name>[A-Za-z_]\w*)"), "any"),
        ("method", java_method, "member"),
    ],
    "c": [
        ("macro", r"# ?define (?P<name>[A-Za-z_]\w*)", "any"),
        ("module", r"namespace (?P<name>[A-Za-z_][\w:]*) ?\{?$", "any"),
        ("struct", (r"(?:typedef )?(?:template ?<[^>]*> )?(?:struct|union|enum|class)"
                    r"(?: [A-Z_]+)? (?P<name>[A-Za-z_]\w*)(?: final)? ?(?:[:{]|$)"), "any"),
        ("function", c_function, "top"),
        ("method", cpp_member, "member"),
        ("type", c_typedef, "any"),
    ],
    "shell": [
        ("function", r"function (?P<name>[A-Za-z_][\w:.-]*)", "any"),
        ("function", r"(?P<name>[A-Za-z_][\w:.-]*) ?\(\)", "any"),
    ],
    "python": [  # only where ast cannot parse the file
        ("class", r"class (?P<name>[A-Za-z_]\w*)", "any"),
        ("function", r"(?:async )?def (?P<name>[A-Za-z_]\w*)", "any"),
    ],
}
DEFINITION_RULES["typescript"] = DEFINITION_RULES["javascript"]
DEFINITION_RULES["cpp"] = DEFINITION_RULES["c"]
CONTAINER_SEPARATOR = {"rust": "::", "cpp": "::", "c": "::"}
COMPILED_RULES: dict = {}
PATTERNS: dict = {}  # the helper patterns of the rule functions, compiled with the rules


class Scopes:
    """The classes, impls, namespaces and object literals open at a line, by brace depth, and
    the package a file declares: what an entry is defined in."""

    def __init__(self, separator: str):
        self.separator = separator
        self.package = ""
        self.open: list[tuple[str, str, int]] = []  # (name, kind, depth of its body)
        self.pending: tuple[str, str] | None = None  # `class X` whose `{` is on a later line
        self.depth = 0

    def container(self, extra: str = "") -> str:
        """The qualified container of a definition at this point."""
        parts = [self.package] + [name for name, _, _ in self.open] + [extra]
        return self.separator.join(p for p in parts if p)

    def at_member_level(self) -> bool:
        """True directly in a class, interface or object body (not in a method's body)."""
        return bool(self.open) and self.depth == self.open[-1][2]

    def advance(self, code: str, opened: tuple[str, str] | None) -> None:
        """Account for a line's braces; `opened` is the scope its definition starts."""
        opens, closes = code.count("{"), code.count("}")
        if opened and opened[1] in SCOPE_KINDS:
            if opens > closes:
                self.open.append((*opened, self.depth + 1))
            elif not opens and not code.endswith((";", ",")) and "=" not in code:
                self.pending = opened  # its `{` comes on a later line
        elif self.pending and opens > closes:
            self.open.append((*self.pending, self.depth + 1))
            self.pending = None
        self.depth = max(self.depth + opens - closes, 0)
        while self.open and self.depth < self.open[-1][2]:
            self.open.pop()


def document_by_patterns(language: str, lines: list[str], deadline: Deadline) -> list[dict]:
    """Definitions found line by line, each with the doc comment above it and the scope it
    is defined in (class, impl, namespace, package, receiver, object literal)."""
    if not COMPILED_RULES:
        COMPILED_RULES.update(compile_rules())
    plans = COMPILED_RULES[language]
    scopes = Scopes(CONTAINER_SEPARATOR.get(language, "."))
    entries = []
    for index, line, doc in code_lines(lines, language, deadline):
        if len(line) > 4 * LONGEST_LINE_MATCHED:
            continue
        plan = plans[line[:1] in (" ", "\t"), scopes.at_member_level()]
        code = line  # made single-spaced only to be matched (most lines of Go have no rule)
        if plan or len(line) > LONGEST_LINE_MATCHED:
            code = " ".join(line.split())
            if len(code) > LONGEST_LINE_MATCHED:
                continue
        opened = None
        for step in plan:
            found = plan_match(step, code)
            if found:
                rule_kind, name, extra = found
                if rule_kind == "package":  # the container of all that follows, in every file
                    scopes.package = name
                    break
                kind = "method" if rule_kind == "function" and scopes.open and \
                    scopes.open[-1][1] in ("class", "impl", "trait", "interface") else rule_kind
                entries.append(entry(kind, name, index + 1, code[:200],
                                     doc.text() if doc else "", scopes.container(extra)))
                opened = (name, kind)
                break
        if opened or "{" in code or "}" in code:  # else the scopes stay as they are
            scopes.advance(code, opened)
    return entries


def document_markdown(lines: list[str], deadline: Deadline) -> tuple[str, list[dict]]:
    """Headings, each with the first paragraph under it (at most 500 characters of it)."""
    entries, summary, in_fence = [], "", False
    for number, line in enumerate(lines):
        if not number & 511:
            deadline.check()
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        if in_fence or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip()
        if not title:
            continue
        paragraph, size, follow = [], 0, number + 1
        while follow < len(lines) and size < 500:
            text = lines[follow].strip()
            if lines[follow].startswith("#") or (paragraph and not text):
                break
            if text:
                paragraph.append(text)
                size += len(text) + 1
            follow += 1
        text = " ".join(paragraph)[:500]
        summary = summary or text
        entries.append(entry("heading", title[:200], number + 1, line.strip()[:200], text))
    return summary, entries


def document_text(path: str, data: bytes, budget: float = PARSE_BUDGET,
                  words: bool = True) -> dict:
    """The built-in documenter: a summary and entries for one file; never raises.  Past its
    time budget, or where the parser would crash, a file keeps a minimal record: its
    language, leading comment and identifiers, with the reason.  Without `words` its
    identifiers are left out (None): the lexical pass has them already."""
    text = data.decode("utf-8", errors="replace")
    lines = text.split("\n")  # as git counts lines (str.splitlines also breaks at \f, \x1c...)
    language = detect_language(path, text)
    deadline = Deadline(budget)
    summary, entries, error = "", [], ""
    try:
        if language == "python":
            summary, entries = document_python(text, deadline)
        elif language == "markdown":
            summary, entries = document_markdown(lines, deadline)
        elif language in DEFINITION_RULES:
            entries = document_by_patterns(language, lines, deadline)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        if language == "python":  # what was just added to a broken file is still found
            entries = fallback_definitions(lines, deadline)
    except (OverBudget, ParserCrash) as exc:
        summary, entries, error = "", [], str(exc)
    summary = summary or leading_comment(lines, COMMENT_PREFIXES.get(language, ("#",)))
    return {"language": language, "summary": summary[:2000], "entries": entries,
            "error": error, "words": file_words(text) if words else None}


def fallback_definitions(lines: list[str], deadline: Deadline) -> list[dict]:
    """Python definitions by pattern, for a file ast cannot parse (within the budget)."""
    try:
        return document_by_patterns("python", lines, deadline)
    except OverBudget:
        return []


FILE_WORDS_MAX = 20_000
WORD_PATTERNS: list = []  # the words of any text, compiled once
# An ASCII text's bytes with every byte that is not part of a word made a space: bytes.split
# then yields its words a fifth faster than the pattern (most code is ASCII).
ASCII_WORD_BYTES = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
ASCII_WORDS_ONLY = bytes(c if c in ASCII_WORD_BYTES else 32 for c in range(256))


def file_words(text: str) -> str:
    """Every distinct word of a file (identifiers of function bodies, comments and strings
    included; camelCase and UPPER_CASE words also by their parts), first occurrences first:
    the file-level record, so that any word `git grep -w` finds in a file finds the file."""
    if text.isascii():
        tokens = b" ".join(dict.fromkeys(text.encode().translate(ASCII_WORDS_ONLY).split())) \
            .decode()
        words = dict.fromkeys(tokens.lower().split())
        split = [token for token in tokens.split() if not token.islower() and not token.isdigit()]
        # Split together, not token by token: a third of the time on Go, whose names are
        # mostly camelCase.
        words.update(dict.fromkeys(identifier_parts(" ".join(split))))
    else:
        if not WORD_PATTERNS:
            import re

            WORD_PATTERNS.append(re.compile(r"\w+"))
        tokens = list(dict.fromkeys(WORD_PATTERNS[0].findall(text)))
        words = dict.fromkeys(token.lower() for token in tokens)
        for token in tokens:
            if not token.islower() and not token.isdigit():
                words.update(dict.fromkeys(split_identifier(token)))
    return " ".join(list(words)[:FILE_WORDS_MAX])


def looks_binary(data: bytes) -> bool:
    """Git's own heuristic: a NUL byte in the first 8000 bytes means binary."""
    return b"\0" in data[:8000]


# ---------------------------------------------------------------------------------------------
# External documenters (`cq.documenter`): the Claude Code preset or any command, run on one file
# at a time with a timeout and an output cap.  Their answers are parsed here; usage limits are
# told apart from failures, because a limit pauses every call while a failure is one file's.
# ---------------------------------------------------------------------------------------------

SUMMARY_PROMPT_VERSION = 1  # part of every summary's key: a new prompt summarises again
SUMMARY_PROMPT = """\
You are writing the entry for one file in a code search index.  The file {path} ({language}) \
follows the line of dashes.  Answer with one JSON object and nothing else:
{{"summary": "what the file is for, in one to three sentences",
 "symbols": {{"a main definition, named as in the file": "what it does, in one sentence"}}}}
Name at most 20 definitions.
----
"""
DOCUMENTER_OUTPUT_CAP = 1 << 20  # bytes of stdout and stderr together; more is a failure
SUMMARY_CHARS = 4000
NOTE_CHARS = 400
MOST_NOTES = 100
BACKOFF_CAP = 3600.0  # seconds: the longest pause when a limit gives no reset time
STATED_RESET_CAP = 8 * 86400.0  # a stated reset further away than this is not believed

# Usage, spend and rate limits as Claude Code and HTTP APIs word them (see DESIGN-NOTES),
# looked for in the last lines a failing documenter printed only.
LIMIT_EPOCH = r"usage limit reached\|(\d{9,11})"
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
LIMIT_CLOCK = (r"limit[^\n]*?\bresets?\s+(?:on\s+)?(?:(" + "|".join(MONTHS) +
               r")[a-z]*\.?\s+(\d{1,2}),?\s+)?(?:at\s+)?(\d{1,2})(?::(\d{2}))?\s*(am|pm)?"
               r"(?:\s*\(([^)\n]+)\))?")
LIMIT_RETRY_AFTER = r"retry[- ]after\W{1,3}(\d{1,6})\b"
LIMIT_WORDS = (r"\b(?:hit|reached) (?:your |the )?(?:\w+ )?limit\b|\blimit reached\b|"
               r"usage limit|spend(?:ing)? limit|rate[ _-]?limit|too many requests|"
               r"credit balance is too low|\boverloaded\b|"
               r"\b(?:status|http|error|code)\W{0,3}(?:429|529)\b|^\s*(?:429|529)\b")
LIMIT_LINES = 3  # of the documenter's output, from the end
JUST_PASSED = 7200.0  # seconds: a stated reset this recent means now, not the same time tomorrow


class LimitReached(Exception):
    """The documenter hit a usage, spend or rate limit: no call can succeed until `until`
    (None when the message names no time)."""

    def __init__(self, message: str, until: float | None, cost: float | None = None):
        super().__init__(message)
        self.until, self.cost = until, cost


class DocumenterFailed(CqError):
    """The external documenter failed on one file (what the call cost, if it said)."""

    def __init__(self, message: str, cost: float | None = None):
        super().__init__(message)
        self.cost = cost


class DocumenterBroken(DocumenterFailed):
    """The external documenter cannot run at all (not any one file's fault)."""


class Answer:
    """What an external documenter said about one file, and what the call cost (in US
    dollars and tokens, where it reports them)."""

    def __init__(self, summary: str, notes: dict, cost: float | None, tokens: int = 0):
        self.summary, self.notes, self.cost, self.tokens = summary, notes, cost, tokens


class ExternalDocumenter:
    """The documenter `cq.documenter` names: `claude` (or a path ending in `/claude`) is the
    Claude Code preset; anything else is a shell command that reads the file on stdin."""

    def __init__(self, config: Config):
        import hashlib
        import json

        command = config.documenter.strip()
        program = os.path.expanduser(command)
        # `claude`, or the path to it (spaces and all): a path to any other file, or words
        # after the program, make a shell command.
        self.preset = command == "claude" or (os.path.basename(program) == "claude" and
                                              os.path.isfile(program))
        self.program, self.command, self.model = program, command, config.documenter_model
        self.name = f"claude ({self.model or 'its default model'})" if self.preset else \
            command if len(command) <= 48 else command[:47] + "\u2026"
        # What decides an answer: a different prompt or model must summarise again, a new
        # path to the same CLI must not.
        what = ["claude", self.model, SUMMARY_PROMPT_VERSION] if self.preset else \
            ["command", command, self.model]
        self.key = hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]

    def argv(self) -> list[str]:
        """The program and its arguments."""
        if self.preset:  # one turn: an answer, no tool calls on the content's say-so
            model = ["--model", self.model] if self.model else []
            return [self.program, "-p", "--output-format", "json", "--max-turns", "1", *model]
        return ["/bin/sh", "-c", self.command]

    def stdin(self, path: str, language: str, data: bytes) -> bytes:
        """What the program reads: the preset's prompt and the file, or the file alone."""
        if not self.preset:
            return data
        return SUMMARY_PROMPT.format(path=path, language=language or "text").encode() + data


def external_documenter(config: Config) -> ExternalDocumenter | None:
    """The configured external documenter, if any."""
    return ExternalDocumenter(config) if config.documenter.strip() else None


def call_documenter(repo: Repo, config: Config, documenter: ExternalDocumenter, path: str,
                    language: str, data: bytes) -> Answer:
    """Run the external documenter on one file and parse its answer.  Raises LimitReached
    for a limit, WorkerStopping when the worker stops under it, DocumenterFailed otherwise."""
    import shutil
    import tempfile

    # CQ_STATE_DIR and CQ_WORKER_PID mark it as ours for `cq worker cleanup` after a kill -9.
    env = dict(scrubbed_env(), CQ_PATH=path, CQ_LANGUAGE=language, CQ_MODEL=documenter.model,
               CQ_STATE_DIR=repo.state_dir, CQ_WORKER_PID=str(os.getpid()))
    # An empty directory of its own, outside the repository: an agent CLI reads instructions
    # (CLAUDE.md, settings) from where it runs and above, and those must not come from the
    # working tree of a stranger's clone.
    room = tempfile.mkdtemp(prefix=f"{ROOM_PREFIX}{os.getpid()}-")
    try:
        code, out, err = run_bounded(documenter.argv(), documenter.stdin(path, language, data),
                                     env, room, config.documenter_timeout)
    finally:
        shutil.rmtree(room, ignore_errors=True)
    if code != 0:
        for stream in (out, err):  # a limit is the CLI's last word on one of them
            tail = stream[-4000:].decode(errors="replace")
            limit = limit_in(tail, time.time())
            if limit is not None:
                raise LimitReached(last_line(tail), limit or None)
        detail = last_line(err[-4000:].decode(errors="replace"))
        raise DocumenterFailed(f"cq.documenter exited with status {code}"
                               + (f": {detail}" if detail else ""))
    return parse_answer(out.decode(errors="replace"), time.time())


ROOM_PREFIX = "cq-documenter-"  # + the worker's PID: the empty directory a call runs in


def remove_stale_rooms() -> None:
    """Remove the directories calls of workers now dead ran in (a kill -9 leaves them)."""
    import shutil
    import tempfile

    base = tempfile.gettempdir()
    for name in os.listdir(base):
        pid = name[len(ROOM_PREFIX):].split("-", 1)[0] if name.startswith(ROOM_PREFIX) else ""
        if not pid.isdigit() or process_exists(int(pid)):
            continue
        path = os.path.join(base, name)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid():
            shutil.rmtree(path, ignore_errors=True)


def process_exists(pid: int) -> bool:
    """True if a live process of this PID exists, whoever owns it (a zombie is dead)."""
    try:
        return proc_stat_fields(pid)[:1] not in ([b"Z"], [b"X"])
    except FileNotFoundError:
        return False
    except OSError:  # no /proc here: ask the kernel whether the PID is taken
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def last_line(text: str) -> str:
    """The last non-empty line of a program's output, shortened."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def run_bounded(argv: list[str], data: bytes, env: dict, cwd: str,
                timeout: float) -> tuple[int, bytes, bytes]:
    """Run a documenter in its own session: feed it data, collect at most
    DOCUMENTER_OUTPUT_CAP bytes of output within timeout, and kill it past either.  Whatever
    it started in the background goes with it when it ends."""
    import subprocess
    import threading

    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, cwd=cwd,
                                start_new_session=True)
    except OSError as exc:
        raise DocumenterBroken(f"cannot run cq.documenter ({argv[0]}): {exc.strerror}") \
            from exc
    RUNNING_DOCUMENTERS.add(proc.pid)
    if Shutdown.requested:  # set after the caller looked: the stop may have missed us
        kill_process_group(proc.pid)
    threading.Thread(target=feed, args=(proc.stdin, data), daemon=True).start()
    chunks: dict = {proc.stdout: [], proc.stderr: []}
    deadline = time.monotonic() + timeout
    try:
        problem = collect_output(chunks, deadline, timeout)
        while not problem and not exited(proc.pid):  # it closed its output but runs on
            if time.monotonic() > deadline:
                problem = f"timed out after {timeout:g}s"
            time.sleep(0.02)
        kill_process_group(proc.pid)  # the leader, dead or alive, still holds the group id
        code = proc.wait()
    finally:
        RUNNING_DOCUMENTERS.discard(proc.pid)
        proc.stdout.close()
        proc.stderr.close()
    if Shutdown.requested:
        raise WorkerStopping
    if problem:
        raise DocumenterFailed(f"cq.documenter {problem}")
    return code, b"".join(chunks[proc.stdout]), b"".join(chunks[proc.stderr])


def collect_output(chunks: dict, deadline: float, timeout: float) -> str:
    """Read the streams in chunks (stream -> list) until both end; what went wrong if the
    output passed DOCUMENTER_OUTPUT_CAP or the deadline came first, else ''."""
    import selectors

    with selectors.DefaultSelector() as selector:
        for stream in chunks:
            selector.register(stream, selectors.EVENT_READ)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return f"timed out after {timeout:g}s"
            for key, _ in selector.select(left):
                chunk = os.read(key.fileobj.fileno(), 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                chunks[key.fileobj].append(chunk)
            if sum(len(c) for part in chunks.values() for c in part) > DOCUMENTER_OUTPUT_CAP:
                return f"printed more than {DOCUMENTER_OUTPUT_CAP >> 20} MiB"
    return ""


def exited(pid: int) -> bool:
    """True once a child has ended (it stays a zombie, unreaped, so its id stays ours)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def feed(stream, data: bytes) -> None:
    """Write data to a child's stdin and close it; a child that stops reading is its business."""
    try:
        stream.write(data)
    except OSError:
        pass
    finally:
        try:
            stream.close()
        except OSError:
            pass


def parse_answer(text: str, now: float) -> Answer:
    """An answer from the documenter's stdout: Claude Code's JSON (`result`, `is_error`,
    `total_cost_usd`), cq's JSON (`summary`, optional `symbols`), or plain text."""
    import json

    obj = json_object(text)
    if obj is None:
        if not text.strip():
            raise CqError("cq.documenter printed nothing")
        return summary_of(text, None)
    if "result" in obj or obj.get("type") == "result":
        result = obj.get("result") if isinstance(obj.get("result"), str) else ""
        subtype = str(obj.get("subtype") or "")
        cost = obj.get("total_cost_usd")
        cost = float(cost) if isinstance(cost, (int, float)) else None
        if obj.get("is_error") or subtype.startswith("error"):
            limit = limit_in(result, now)
            if limit is not None:
                raise LimitReached(last_line(result), limit or None, cost)
            raise DocumenterFailed(f"cq.documenter reported an error: "
                                   f"{last_line(result) or subtype or 'no detail'}", cost)
        if not result.strip():
            raise DocumenterFailed(f"cq.documenter answered with an empty result "
                                   f"({subtype or 'no subtype'})", cost)
        answer = summary_of(result, cost)
        usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
        answer.tokens = sum(v for k, v in usage.items() if k.endswith("tokens") and
                            isinstance(v, int) and not isinstance(v, bool))
        return answer
    if isinstance(obj.get("summary"), str):
        return summary_of(json.dumps(obj), obj.get("cost_usd")
                          if isinstance(obj.get("cost_usd"), (int, float)) else None)
    raise CqError("cq.documenter answered JSON with neither `summary` nor `result`")


def json_object(text: str) -> dict | None:
    """The JSON object text holds (allowing a fenced code block around it), if it is one."""
    import json

    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[-1].rsplit("```", 1)[0].strip()
    if not body.startswith("{"):
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def summary_of(text: str, cost: float | None) -> Answer:
    """A summary and per-symbol notes from a model's text: cq's JSON shape, else prose."""
    obj = json_object(text)
    if obj is None or not isinstance(obj.get("summary"), str):
        return Answer(text.strip()[:SUMMARY_CHARS], {}, cost)
    symbols = obj.get("symbols") or obj.get("notes") or {}
    if isinstance(symbols, list):  # [{"name": ..., "note": ...}, ...]
        symbols = {s.get("name"): s.get("note") or s.get("summary") for s in symbols
                   if isinstance(s, dict)}
    notes = {str(k)[:200]: str(v).strip()[:NOTE_CHARS] for k, v in symbols.items()
             if isinstance(symbols, dict) and k and isinstance(v, str) and v.strip()}
    return Answer(obj["summary"].strip()[:SUMMARY_CHARS],
                  dict(list(notes.items())[:MOST_NOTES]), cost)


def limit_in(text: str, now: float) -> float | None:
    """If the last lines of text report a usage, spend or rate limit: when it resets (epoch
    seconds), or 0.0 when that is not said (or not believable).  None if not a limit."""
    import re

    lines = [line for line in text.splitlines() if line.strip()][-LIMIT_LINES:]
    tail = "\n".join(lines)
    match = re.search(LIMIT_EPOCH, tail, re.IGNORECASE)
    if match and now < int(match.group(1)) <= now + STATED_RESET_CAP:
        return float(match.group(1))
    match = re.search(LIMIT_CLOCK, tail, re.IGNORECASE)
    if match:
        month, day, hour, minute, half, zone = match.groups()
        until = next_clock_time(now, int(hour), int(minute or 0), (half or "").lower(), zone,
                                MONTHS.index(month.lower()[:3]) + 1 if month else None,
                                int(day) if day else None)
        if until is not None:
            return until
    limited = re.search(LIMIT_WORDS, tail, re.IGNORECASE | re.MULTILINE)
    match = re.search(LIMIT_RETRY_AFTER, tail, re.IGNORECASE)
    if limited and match:
        return now + min(float(match.group(1)), STATED_RESET_CAP)
    return 0.0 if limited else None


def next_clock_time(now: float, hour: int, minute: int, half: str, zone: str | None,
                    month: int | None = None, day: int | None = None) -> float | None:
    """The next moment after now that a clock in zone (local time if none is named) shows
    hour:minute (with am/pm, on month/day if given).  None where that is no time, the zone
    is unknown here, or the moment has only just passed (the limit has just reset)."""
    import datetime

    if half:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if half == "pm" else 0)
    if hour > 23 or minute > 59:
        return None
    tz = None
    if zone:
        try:
            import zoneinfo

            tz = zoneinfo.ZoneInfo(zone.strip())
        except (ImportError, ValueError, KeyError, OSError):
            return None  # a guess in the wrong zone could be a day off: back off instead
    current = datetime.datetime.fromtimestamp(now, tz)
    try:
        at = current.replace(month=month or current.month, day=day or current.day, hour=hour,
                             minute=minute, second=0, microsecond=0)
    except ValueError:  # February 30th
        return None
    if at <= current:
        if current.timestamp() - at.timestamp() < JUST_PASSED:
            return None
        at = at.replace(year=at.year + 1) if month else at + datetime.timedelta(days=1)
    until = at.timestamp()
    return until if until - now <= STATED_RESET_CAP else None


RUNNING_DOCUMENTERS: set = set()


class Shutdown:
    """Set once, by the worker's main thread, when the worker stops."""

    requested = False


class WorkerStopping(Exception):
    """Raised inside a task when the worker stops under it (not a failure of the file)."""


def kill_process_group(pid: int) -> None:
    """SIGKILL a documenter and everything it started (it leads its own session)."""
    import signal

    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------------------------------------
# The index: SQLite + FTS5, one writer per transaction.  Documentation is stored once per blob;
# each worktree has its own path -> blob map, so results always match the worktree that asks.
# ---------------------------------------------------------------------------------------------

SCHEMA_VERSION = 11  # PRAGMA user_version; an index of another version is rebuilt from git
# The WAL grows while readers hold old snapshots (a long indexing with searches running); a
# checkpoint that empties it cuts the file back to this size, not to keep it at its largest.
WAL_LIMIT = 4 << 20
# Words are stemmed (porter over unicode61, diacritics folded) on both sides, so `parsing`
# finds `parse`.  entries_fts holds definitions: the name as written, its words (split
# identifier parts and the squashed name), its container's words, signature, doc and note,
# and the squashed name alone, by which an exact name is looked up however common its words
# (that column weighs nothing in the BM25; an FTS5 term costs a few bytes a row where a
# B-tree index of the names cost 15 MB at 50k files, and a quarter of the writing).  It ends
# in NAME_MARK, a private-use character unicode61 keeps in the token: the term is then the
# name's own, neither stemmed nor shared with other columns, whose rows a lookup would scan.
# The same column holds the words of the name behind NAME_MARK (`\ue000parse`, those that
# marked_in_name takes): terms only the definitions named by a word have, so whether any
# definition is named by a query's words is known without reading their every row.
# It keeps no copy of that text (content=''), so deleting a row takes its text again:
# entry_text computes it from the entry, and what it yields may change only with
# SCHEMA_VERSION.  (Word positions stay: with detail=column, a contentless table's BM25 is
# always 0.)  An entry's id is its doc's id shifted by ENTRY_SLOT_BITS plus its number in the
# file, so a blob's entries are one range of ids, with no index.
# files_fts holds one row per blob (rowid = docs.id): every distinct word of the file, and
# its summary (written once: after a lexical pass, the words already hold a built-in one).
# paths_fts holds the words of each path of each worktree (rowid = files.rowid), so a search
# finds the files a word names without reading every path.
# An external documenter's answers live in `summaries`, keyed by blob and by the documenter's
# settings, so no content is sent twice: --rebuild keeps them, with `calls` and `pauses`.  The
# summary in use is copied to docs.llm_summary (and into files_fts), its notes to entries.note.
SCHEMA = """
CREATE TABLE worktrees (git_dir BLOB PRIMARY KEY, commit_id TEXT, updated_at REAL);
CREATE TABLE files (git_dir BLOB, path BLOB, blob TEXT, mode TEXT, excluded TEXT,
                    PRIMARY KEY (git_dir, path));
CREATE INDEX files_blob ON files (blob);
CREATE TABLE docs (id INTEGER PRIMARY KEY, blob TEXT UNIQUE, status TEXT, language TEXT,
                   summary TEXT, error TEXT, size INTEGER, documented_at REAL, orphaned_at REAL,
                   llm_summary TEXT, llm_key TEXT, llm_by TEXT);
CREATE TABLE entries (id INTEGER PRIMARY KEY, kind TEXT, name TEXT, container TEXT,
                      line INTEGER, signature TEXT, doc TEXT, note TEXT DEFAULT '');
CREATE VIRTUAL TABLE entries_fts USING fts5 (name, words, container, body, squashed,
                                             content = '',
                                             tokenize = 'porter unicode61 remove_diacritics 2');
CREATE VIRTUAL TABLE files_fts USING fts5 (words, detail = none,
                                           tokenize = 'porter unicode61 remove_diacritics 2');
CREATE VIRTUAL TABLE paths_fts USING fts5 (words, detail = none,
                                           tokenize = 'unicode61 remove_diacritics 2');
CREATE TABLE failures (blob TEXT PRIMARY KEY, path BLOB, error TEXT, failed_at REAL);
CREATE TABLE attempts (blob TEXT PRIMARY KEY, path BLOB, crashes INTEGER, started_at REAL);
"""
# Paid for, so kept when the rest of the index is rebuilt for a new schema (or --rebuild).
KEPT_SCHEMA = {
    "summaries": "CREATE TABLE summaries (blob TEXT, documenter TEXT, status TEXT, summary TEXT, "
                 "notes TEXT, error TEXT, path BLOB, made_at REAL, PRIMARY KEY (blob, documenter))",
    "calls": "CREATE TABLE calls (day TEXT, documenter TEXT, calls INTEGER, cost REAL, "
             "tokens INTEGER, PRIMARY KEY (day, documenter))",
    "pauses": "CREATE TABLE pauses (documenter TEXT PRIMARY KEY, until REAL, reason TEXT, "
              "strikes INTEGER)",
}
SUMMARY_GRACE = 90 * 86400.0  # seconds an answer no worktree references is kept
ENTRY_SLOT_BITS = 24  # a file keeps at most 2**24 definitions (the rest are dropped)
NAME_MARK = "\ue000"  # ends the term of a squashed name, begins a name word's (see above)
STEMS_ALIKE_AFTER_MARK = frozenset("bcdfghjklmnpqrstvwxz0123456789")
# A contentless table forgets a row by being told its text again.
ENTRY_FTS_INSERT = ("INSERT INTO entries_fts (rowid, name, words, container, body, squashed) "
                    "VALUES (?, ?, ?, ?, ?, ?)")
ENTRY_FTS_DELETE = ("INSERT INTO entries_fts (entries_fts, rowid, name, words, container, body, "
                    "squashed) VALUES ('delete', ?, ?, ?, ?, ?, ?)")


def entry_ids(doc_id: int) -> tuple[int, int]:
    """The first and last entry id a doc's definitions may take."""
    return doc_id << ENTRY_SLOT_BITS, ((doc_id + 1) << ENTRY_SLOT_BITS) - 1


def marks_alike(word: str) -> bool:
    """True if the porter stemmer reduces NAME_MARK + word as it does the word (checked on
    every word of 3 and 4 letters and 300,000 of code): 3 to 61 bytes (FTS5 stems from 3 to
    64, and the mark takes 3), begun by an ASCII consonant (after a vowel or `y` the mark
    would change what the stemmer counts as a syllable), not a number, not `sses` (a suffix
    FTS5 leaves whole only unmarked).  A query word that is not is left out of the check."""
    return 3 <= len(word.encode()) <= 61 and word[0] in STEMS_ALIKE_AFTER_MARK \
        and not word.isdigit() and word != "sses"


def marked_in_name(word: str) -> bool:
    """True if a word of a definition's name is indexed behind NAME_MARK: every word a query
    word that marks_alike could match, stemmed (the same first letter, folded), so more than
    marks_alike takes."""
    return bool(word) and word[0] not in "aeiouy" and not word.isdigit()


def with_search_words(e: dict) -> dict:
    """An entry with the words the index keeps for it (its squashed name, its name's and its
    container's words), computed once: by the documenting process that made it, where one
    did, so that the worker's writing thread does not."""
    if "named" not in e:
        name = e["name"]
        parts = identifier_parts(name)
        # squash(name), sooner: an ASCII name's letters and digits are all in its parts
        e["squashed"] = "".join(parts) if name.isascii() else squash(name)
        e["words"] = name_words(parts, e["squashed"])
        e["container_words"] = " ".join(split_identifier(e["container"] or ""))
        # Every word the name and words columns hold: the words column's (the parts and the
        # squashed name) and the name column's own tokens (unicode61 keeps `barBaz` of
        # `foo_barBaz` whole).
        words = dict.fromkeys(e["words"].split())
        words.update(dict.fromkeys(identifier_patterns()[0].split(name.lower())))
        e["named"] = " ".join([NAME_MARK + w for w in words if marked_in_name(w)])
    return e


def entry_text(e: dict, note: str) -> tuple:
    """The columns of a definition's entries_fts row (name, words, container, body,
    squashed with the marked name words), the same when it is written and when it is
    deleted."""
    e = with_search_words(e)
    return (e["name"], e["words"], e["container_words"],
            f"{e['signature']}\n{e['doc']}\n{note}", f"{e['squashed']}{NAME_MARK} {e['named']}")


def stored_entry(name: str, container: str, signature: str, doc: str) -> dict:
    """An entry as read back from the index (to compute its entries_fts text again)."""
    return {"name": name, "container": container, "signature": signature, "doc": doc}


def fnmatch_exclude(path: str, patterns: tuple) -> str:
    """The first exclude pattern (gitignore style, simplified) that matches path, or ''."""
    if not patterns:  # the usual case, for each path of a first sync
        return ""
    from fnmatch import fnmatchcase

    for pattern in patterns:
        anchored = pattern.startswith("/")
        body = pattern.strip("/")
        if pattern.endswith("/"):
            if path.startswith(body + "/") or f"/{body}/" in f"/{path}":
                return pattern
            continue
        candidates = [path] if anchored or "/" in body else \
            [path, os.path.basename(path)] + ["/".join(path.split("/")[:i + 1])
                                              for i in range(path.count("/"))]
        if any(fnmatchcase(c, body) or fnmatchcase(c, body + "/*") for c in candidates) \
                or fnmatchcase(path, body + "/*"):
            return pattern
    return ""


def skip_reason(path: str, mode: str, config: Config) -> str:
    """Why a tree entry is not documented ('' if it is)."""
    if mode == SUBMODULE_MODE:
        return "submodule"
    if mode == SYMLINK_MODE:
        return "symlink"
    pattern = fnmatch_exclude(path, config.exclude)
    return f"excluded by {pattern}" if pattern else ""


DAMAGED_SUFFIX = ".damaged"
CRASH_LIMIT = 2  # a file in flight at more unexpected deaths of the worker than this is skipped
CRASHED = "crashed the documenter"
LEXICAL = "lexical"  # the status of a record of the lexical pass only: its words, not its entries
URI_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/-_.~")


class NotIndexed(CqError):
    """Nothing is indexed here yet, or only by a cq whose index had another schema."""

    def __init__(self, older: bool = False):
        super().__init__("the index was made by another version of cq and is rebuilt when "
                         "its worker starts (run: cq init)" if older else
                         "nothing is indexed here yet (run: cq init)")


class DatabaseDamaged(CqError):
    """One of cq's SQLite files is damaged: not a database, or malformed."""

    def __init__(self, path: str, detail: str):
        super().__init__(f"{os.path.basename(path)} is damaged ({detail})")
        self.path = path


def is_damage(exc: BaseException) -> bool:
    """True if a SQLite error means the file itself is damaged, not busy, locked or full:
    SQLITE_CORRUPT and SQLITE_NOTADB raise DatabaseError itself, every other failure one of
    its subclasses."""
    import sqlite3

    return type(exc) is sqlite3.DatabaseError


def sqlite_uri(path: str, mode: str) -> str:
    """A file: URI for SQLite (mode ro, rw or rwc), the path's bytes percent-encoded, so any
    path works, one that is not UTF-8 included."""
    quoted = "".join(chr(b) if b in URI_SAFE else f"%{b:02X}" for b in os.fsencode(path))
    return f"file:{quoted}?mode={mode}"


def check_database_files(path: str) -> bool:
    """Refuse a symlink or a foreign file where a database or its -wal or -shm should be;
    True if the database exists.

    This looks with lstat and never opens the file: closing any descriptor of a SQLite file
    drops every POSIX lock that the process's connections hold on it, and SQLite relies on
    those locks (several worker threads then corrupt the index)."""
    exists = False
    for name in (path, path + "-wal", path + "-shm"):
        try:
            check_own_file(name, os.lstat(name))
        except FileNotFoundError:
            continue
        exists = exists or name == path
    return exists


def connect_database(path: str, readonly: bool = False):
    """A connection to one of cq's SQLite files, in autocommit mode with a long busy timeout;
    a read-only one never creates the file (and never checkpoints or deletes its WAL)."""
    import sqlite3

    check_database_files(path)
    db = sqlite3.connect(sqlite_uri(path, "ro" if readonly else "rwc"), uri=True, timeout=30,
                         isolation_level=None)
    db.execute("PRAGMA busy_timeout = 30000")
    return db


def database_problem(path: str) -> str | None:
    """What is wrong with a database file (PRAGMA quick_check), or None if it is sound or
    absent.  It reads every page: for explicit checks and small files, not every open."""
    import sqlite3

    if not check_database_files(path):
        return None
    try:
        db = connect_database(path, readonly=True)
        try:
            rows = db.execute("PRAGMA quick_check(1)").fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        if is_damage(exc):
            return str(exc)
        raise
    return None if rows == [("ok",)] else str(rows[0][0])


def move_aside(path: str) -> str:
    """Rename a damaged database (with its -wal and -shm) to NAME.damaged, replacing an older
    damaged copy; returns the new name.  Only while no connection to it is open."""
    target = path + DAMAGED_SUFFIX
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(target + suffix)
        except FileNotFoundError:
            pass
        try:
            os.rename(path + suffix, target + suffix)
        except FileNotFoundError:
            pass
    return target


# A search is a new process with a cold page cache: reading the index through a memory map
# instead of a copy per page took a sixth off the CPU time of its queries at 50k files.  (The
# worker's and the repair's connections do not map it: an I/O error would be a signal there.)
READER_MMAP_BYTES = 1 << 30


class Index:
    """The documentation index of one repository (all worktrees share it)."""

    def __init__(self, repo: Repo, readonly: bool = False):
        import sqlite3

        self.repo = repo
        path = repo.state_path(INDEX_DB)
        if readonly and not check_database_files(path):
            raise NotIndexed()
        self.db = connect_database(path, readonly)
        if readonly:
            self.db.execute(f"PRAGMA mmap_size = {READER_MMAP_BYTES}")
        try:
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                if readonly:
                    raise NotIndexed(older=self.db.execute(
                        "SELECT COUNT(*) FROM sqlite_master").fetchone()[0] > 0)
                self._create_schema()
            elif not readonly:
                # NORMAL skips an fsync per commit; a power cut can lose the last few
                # records, which reconciliation finds missing and documents again.
                self.db.execute("PRAGMA synchronous = NORMAL")
                self.db.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
        except sqlite3.DatabaseError as exc:
            self.db.close()
            if is_damage(exc):
                raise DatabaseDamaged(path, str(exc)) from exc
            raise
        except CqError:
            self.db.close()
            raise

    def _create_schema(self) -> None:
        """Create the tables, or drop an index of another schema version and start over
        (it is derived from git: the worker rebuilds it); once, whoever gets there first."""
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.db.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
        with self.transaction():
            if self.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
                return
            old = self.db.execute("SELECT type, name, sql FROM sqlite_master WHERE type IN "
                                  "('table', 'view') AND name NOT LIKE 'sqlite_%' AND "
                                  "sql NOT LIKE 'CREATE TABLE ''%'").fetchall()
            kept = set()
            for kind, name, sql in old:
                if KEPT_SCHEMA.get(name) == sql:
                    kept.add(name)
                elif self.db.execute("SELECT 1 FROM sqlite_master WHERE name = ?",
                                     (name,)).fetchone():
                    self.db.execute(f'DROP {kind.upper()} "{name}"')
            for statement in [*SCHEMA.split(";"), *(sql for name, sql in KEPT_SCHEMA.items()
                                                    if name not in kept)]:
                if statement.strip():
                    self.db.execute(statement)
            # FTS5's own `rank` then orders by the weighted BM25, so `ORDER BY rank LIMIT n`
            # runs inside FTS5, before any join.
            self.db.execute("INSERT INTO entries_fts (entries_fts, rank) VALUES ('rank', ?)",
                            (f"bm25({ENTRY_COLUMN_WEIGHTS})",))
            # FTS5 merges its segments while inserting; merging 16 at a time, not 4, cut the
            # inserts of 300,000 definitions by a quarter, with searches as fast as before.
            for table in ("entries_fts", "files_fts"):
                self.db.execute(f"INSERT INTO {table} ({table}, rank) VALUES ('automerge', 16)")
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @classmethod
    def in_memory(cls, repo: Repo) -> Index:
        """An empty index in memory, of the same schema (for files edited in a worktree)."""
        import sqlite3

        index = cls.__new__(cls)
        index.repo = repo
        index.db = sqlite3.connect(":memory:", isolation_level=None)
        index._create_schema()
        return index

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc) -> None:
        self.db.close()

    def transaction(self):
        """A write transaction taken up front, so concurrent writers queue instead of failing."""
        return _Transaction(self.db)

    def worktrees(self) -> list[str]:
        """Git dirs of the worktrees the index knows."""
        return [os.fsdecode(r[0]) for r in self.db.execute("SELECT git_dir FROM worktrees")]

    def worktree_commit(self, git_dir: str) -> str | None:
        """The commit this worktree was last indexed at."""
        row = self.db.execute("SELECT commit_id FROM worktrees WHERE git_dir = ?",
                              (os.fsencode(git_dir),)).fetchone()
        return row[0] if row else None

    def _set_commit(self, git_dir: str, commit: str | None) -> None:
        self.db.execute("INSERT OR REPLACE INTO worktrees VALUES (?, ?, ?)",
                        (os.fsencode(git_dir), commit, time.time()))

    def replace_worktree(self, git_dir: str, commit: str | None,
                         entries: Iterable[tuple[str, str, str]], config: Config) -> None:
        """Set a worktree's whole map from (path, mode, object id) of each file, taken one
        at a time (inside the caller's transaction)."""
        key = os.fsencode(git_dir)
        self._drop_worktree_files(key)
        self.db.executemany("INSERT INTO files VALUES (?, ?, ?, ?, ?)", (
            (key, os.fsencode(path), sha, mode, skip_reason(path, mode, config))
            for path, mode, sha in entries))
        self.db.executemany("INSERT INTO paths_fts (rowid, words) VALUES (?, ?)", (
            (rowid, path_words(os.fsdecode(path))) for rowid, path in self.db.execute(
                "SELECT rowid, path FROM files WHERE git_dir = ?", (key,))))
        self._set_commit(git_dir, commit)

    def _drop_worktree_files(self, key: bytes) -> None:
        """Delete a worktree's map and its paths' words (inside a transaction)."""
        self.db.execute("DELETE FROM paths_fts WHERE rowid IN "
                        "(SELECT rowid FROM files WHERE git_dir = ?)", (key,))
        self.db.execute("DELETE FROM files WHERE git_dir = ?", (key,))

    def apply_changes(self, git_dir: str, commit: str, changes: list, config: Config) -> None:
        """Apply diff-tree changes to a worktree's map (inside the caller's transaction)."""
        key = os.fsencode(git_dir)
        for path, mode, sha in changes:
            row = self.db.execute("SELECT rowid FROM files WHERE git_dir = ? AND path = ?",
                                  (key, os.fsencode(path))).fetchone()
            if sha and row:  # the same path, so the same words
                self.db.execute("UPDATE files SET blob = ?, mode = ?, excluded = ? WHERE "
                                "rowid = ?", (sha, mode, skip_reason(path, mode, config), row[0]))
            elif sha:
                rowid = self.db.execute("INSERT INTO files VALUES (?, ?, ?, ?, ?)", (
                    key, os.fsencode(path), sha, mode, skip_reason(path, mode, config))).lastrowid
                self.db.execute("INSERT INTO paths_fts (rowid, words) VALUES (?, ?)",
                                (rowid, path_words(path)))
            elif row:
                self.db.execute("DELETE FROM files WHERE rowid = ?", row)
                self.db.execute("DELETE FROM paths_fts WHERE rowid = ?", row)
        self._set_commit(git_dir, commit)

    def forget_worktree(self, git_dir: str) -> None:
        """Drop a worktree that no longer exists."""
        with self.transaction():
            key = os.fsencode(git_dir)
            self._drop_worktree_files(key)
            self.db.execute("DELETE FROM worktrees WHERE git_dir = ?", (key,))

    def missing_blobs(self, git_dir: str | None,
                      among: list | None = None) -> Iterator[tuple[str, str]]:
        """(blob, path) pairs referenced (in one worktree, or any) but neither documented
        (beyond the lexical pass) nor failed; only of the blobs `among`, if given (a commit's:
        no scan of the whole map).  One at a time, as SQLite hands them over."""
        where = "AND f.git_dir = ?" if git_dir else ""
        params: tuple = (os.fsencode(git_dir),) if git_dir else ()
        if among is not None:
            if not among:
                return
            where += f" AND f.blob IN ({','.join('?' * len(among))})"
            params += tuple(among)
        files = "files f INDEXED BY files_blob" if among else "files f"  # not the whole map
        sql = (f"SELECT f.blob, MIN(f.path) FROM {files} "
               f"LEFT JOIN docs d ON d.blob = f.blob AND d.status != '{LEXICAL}' "
               "LEFT JOIN failures x ON x.blob = f.blob "
               f"WHERE f.excluded = '' AND d.blob IS NULL AND x.blob IS NULL {where} "
               "GROUP BY f.blob ORDER BY MIN(f.path)")
        for blob, path in self.db.execute(sql, params):
            yield blob, os.fsdecode(path)

    def to_document(self, blobs: list, lexical: bool = False) -> list:
        """The (blob, path) pairs still referenced by a worktree and not yet documented (by
        either pass, for the lexical pass)."""
        shas = sorted({blob for blob, _ in blobs})
        marks = ",".join("?" * len(shas))
        done = {r[0] for r in self.db.execute(
            f"SELECT blob FROM docs WHERE blob IN ({marks}) AND (? OR status != ?)",
            [*shas, lexical, LEXICAL])}
        referenced = {r[0] for r in self.db.execute(
            f"SELECT DISTINCT blob FROM files WHERE blob IN ({marks})", shas)}
        wanted, todo = referenced - done, []
        for blob, path in blobs:
            if blob in wanted:  # each blob once, at its first path
                wanted.discard(blob)
                todo.append((blob, path))
        return todo

    def lexical_only(self, blobs: list) -> set:
        """The blobs among (blob, path) pairs whose record is of the lexical pass only."""
        shas = [blob for blob, _ in blobs]
        return {r[0] for r in self.db.execute(
            f"SELECT blob FROM docs WHERE status = ? AND blob IN ({','.join('?' * len(shas))})",
            [LEXICAL, *shas])}

    def crash_counts(self, blobs: list) -> dict:
        """How often the worker has died while documenting each of these blobs, where it has."""
        shas = [blob for blob, _ in blobs]
        return dict(self.db.execute(
            f"SELECT blob, crashes FROM attempts WHERE crashes > 0 AND blob IN "
            f"({','.join('?' * len(shas))})", shas))

    def store(self, blob: str, status: str, size: int, doc: dict | None, path: str) -> None:
        """Record one blob's documentation (or why it was skipped); see store_all."""
        self.store_all([(blob, status, size, doc, path)])

    def store_all(self, records: list, failures: list = ()) -> None:
        """Record each (blob, status, size, doc, path) and make it searchable, and each
        (blob, path, error) that failed, in one transaction that also ends their attempts:
        FTS5 writes a segment at every commit, so a batch costs one commit, not one a file.
        A full record takes over the row of one of the lexical pass, whose words stay in
        files_fts (every word of the file, a built-in summary's among them), so they are
        neither computed nor written twice."""
        # A record of the lexical pass ends no attempt: a crash count must survive it.
        blobs = [r[0] for r in records if r[1] != LEXICAL] + [f[0] for f in failures]
        with self.transaction():
            self.db.executemany("DELETE FROM attempts WHERE blob = ?", [(b,) for b in blobs])
            self.db.executemany("INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?)",
                                [(blob, os.fsencode(path), error[:2000], time.time())
                                 for blob, path, error in failures])
            marks = ",".join("?" * len(records))
            earlier = {blob: (doc_id, status == LEXICAL) for blob, doc_id, status in  # or by
                       self.db.execute(f"SELECT blob, id, status FROM docs WHERE blob IN "
                                       f"({marks})", [r[0] for r in records])}  # another task
            fresh = [r for r in records if r[0] not in earlier or
                     (earlier[r[0]][1] and r[1] != LEXICAL)]
            self.db.executemany("DELETE FROM failures WHERE blob = ?",
                                [(r[0],) for r in fresh if r[1] != LEXICAL])
            files, entries, fts, promoted, added = [], [], [], [], []
            # New rows take the ids SQLite would give them, so they go in with executemany.
            next_id = self.db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM docs").fetchone()[0]
            for blob, status, size, record, _ in fresh:
                doc = record or {"language": "", "summary": "", "entries": [], "error": "",
                                 "words": ""}
                fields = (status, doc["language"], doc["summary"], doc["error"], size,
                          time.time())
                if blob in earlier:  # of the lexical pass: the same row, its words kept
                    doc_id = earlier[blob][0]
                    promoted.append((*fields, doc_id))
                elif doc["words"] is None:
                    continue  # it was to keep a lexical record's words, gone since: redone
                else:
                    doc_id, next_id = next_id, next_id + 1
                    added.append((doc_id, *fields, blob))
                    if doc["summary"] or doc["words"]:
                        files.append((doc_id, f"{doc['summary']}\n{doc['words']}"))
                first, last = entry_ids(doc_id)
                for entry_id, e in zip(range(first, last + 1), doc["entries"]):
                    fts.append((entry_id, *entry_text(e, "")))
                    entries.append((entry_id, e["kind"], e["name"], e["container"], e["line"],
                                    e["signature"], e["doc"]))
            self.db.executemany("INSERT INTO docs (id, status, language, summary, error, size, "
                                "documented_at, blob) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", added)
            self.db.executemany("UPDATE docs SET status = ?, language = ?, summary = ?, "
                                "error = ?, size = ?, documented_at = ? WHERE id = ?", promoted)
            self.db.executemany("INSERT INTO files_fts (rowid, words) VALUES (?, ?)", files)
            self.db.executemany(
                "INSERT INTO entries (id, kind, name, container, line, signature, doc) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", entries)
            self.db.executemany(ENTRY_FTS_INSERT, fts)

    def begin_attempts(self, blobs: list) -> None:
        """Note durably, in one commit, that documenting these (blob, path) pairs starts."""
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO attempts VALUES (?, ?, COALESCE((SELECT crashes FROM "
                "attempts WHERE blob = ?), 0), ?)",
                [(blob, os.fsencode(path), blob, time.time()) for blob, path in blobs])

    def end_attempts(self, blobs: list) -> None:
        """Documenting these (blob, path) pairs ended, not by a crash."""
        self.db.executemany("DELETE FROM attempts WHERE blob = ?", [(b,) for b, _ in blobs])

    def begin_attempt(self, blob: str, path: str) -> int:
        """Note durably that documenting blob starts, so that a crash in it is remembered;
        returns how often the worker has died while documenting it."""
        with self.transaction():
            row = self.db.execute("SELECT crashes FROM attempts WHERE blob = ?",
                                  (blob,)).fetchone()
            crashes = row[0] if row else 0
            self.db.execute("INSERT OR REPLACE INTO attempts VALUES (?, ?, ?, ?)",
                            (blob, os.fsencode(path), crashes, time.time()))
        return crashes

    def close_attempts(self, crashed: bool) -> int:
        """Close the attempts left open: at a worker's start they were cut short by its
        predecessor's death (crashed); at a clean stop, by the stop.  Returns their number."""
        with self.transaction():
            return self.db.execute(
                "UPDATE attempts SET crashes = crashes + ?, started_at = NULL "
                "WHERE started_at IS NOT NULL", (int(crashed),)).rowcount

    def failures(self) -> list[tuple[str, str, str, float]]:
        """Blobs whose documenting failed."""
        rows = self.db.execute("SELECT blob, path, error, failed_at FROM failures "
                               "ORDER BY failed_at").fetchall()
        return [(blob, os.fsdecode(path), error, at) for blob, path, error, at in rows]

    def clear_failures(self) -> list[tuple[str, str]]:
        """Forget all failures and return them as (blob, path) to queue again."""
        with self.transaction():
            rows = self.db.execute("SELECT blob, path FROM failures").fetchall()
            self.db.execute("DELETE FROM failures")
            for blob, _ in rows:
                self._forget_blob(blob)  # a record kept despite the failure is redone too
        return [(blob, os.fsdecode(path)) for blob, path in rows]

    def _forget_blob(self, blob: str) -> None:
        """Delete a blob's documentation and search entries (inside a transaction)."""
        row = self.db.execute("SELECT id FROM docs WHERE blob = ?", (blob,)).fetchone()
        if row is None:
            return
        self.db.executemany(ENTRY_FTS_DELETE, [(i, *entry_text(stored_entry(*text), note))
                                               for i, *text, note in self._entries(row[0])])
        self.db.execute("DELETE FROM entries WHERE id BETWEEN ? AND ?", entry_ids(row[0]))
        self.db.execute("DELETE FROM files_fts WHERE rowid = ?", (row[0],))
        self.db.execute("DELETE FROM docs WHERE id = ?", (row[0],))

    def _entries(self, doc_id: int) -> list[tuple]:
        """(id, name, container, signature, doc, note) of a doc's definitions."""
        return self.db.execute("SELECT id, name, container, signature, doc, note FROM entries "
                               "WHERE id BETWEEN ? AND ?", entry_ids(doc_id)).fetchall()

    def prune(self, grace_seconds: float) -> int:
        """Forget documentation no worktree has referenced for grace_seconds; returns count."""
        now = time.time()
        with self.transaction():
            self.db.execute("UPDATE docs SET orphaned_at = NULL WHERE orphaned_at IS NOT NULL "
                            "AND blob IN (SELECT blob FROM files)")
            self.db.execute("UPDATE docs SET orphaned_at = ? WHERE orphaned_at IS NULL "
                            "AND blob NOT IN (SELECT blob FROM files)", (now,))
            doomed = [r[0] for r in self.db.execute(
                "SELECT blob FROM docs WHERE orphaned_at IS NOT NULL AND orphaned_at <= ?",
                (now - grace_seconds,))]
            for blob in doomed:
                self._forget_blob(blob)
            self.db.execute("DELETE FROM summaries WHERE made_at <= ? AND blob NOT IN "
                            "(SELECT blob FROM files)", (now - max(grace_seconds,
                                                                   SUMMARY_GRACE),))
            self.db.execute("DELETE FROM failures WHERE blob NOT IN (SELECT blob FROM files)")
        return len(doomed)

    def clear(self) -> None:
        """Forget everything but the external documenter's answers (for --rebuild)."""
        with self.transaction():
            for table in ("worktrees", "files", "paths_fts", "docs", "entries", "files_fts",
                          "failures"):
                self.db.execute(f"DELETE FROM {table}")
            self.db.execute("INSERT INTO entries_fts (entries_fts) VALUES ('delete-all')")

    def status(self, git_dir: str) -> dict:
        """Counts for one worktree: files, documented, pending (with those of the lexical
        pass only, already searchable by their words), skipped by reason, failed."""
        rows = self.db.execute(
            "SELECT f.excluded, d.status, x.blob IS NOT NULL, COUNT(*) FROM files f "
            "LEFT JOIN docs d ON d.blob = f.blob LEFT JOIN failures x ON x.blob = f.blob "
            "WHERE f.git_dir = ? GROUP BY 1, 2, 3", (os.fsencode(git_dir),)).fetchall()
        counts = {"files": 0, "documented": 0, "pending": 0, "lexical": 0, "failed": 0,
                  "skipped": {}}
        for excluded, status, failed, n in rows:
            counts["files"] += n
            reason = excluded or (status if status not in (None, "ok", "error", LEXICAL)
                                  else "")
            if reason:
                key = "excluded" if reason.startswith("excluded") else reason
                counts["skipped"][key] = counts["skipped"].get(key, 0) + n
            elif failed:
                counts["failed"] += n
            elif status and status != LEXICAL:
                counts["documented"] += n
            else:
                counts["pending"] += n
                counts["lexical"] += n if status else 0
        return counts

    def problem_files(self, git_dir: str) -> dict:
        """The files of a worktree that were skipped (with the reason) or failed (with the
        error), each list sorted by path."""
        skipped = self.db.execute(
            "SELECT f.path, CASE WHEN f.excluded != '' THEN f.excluded ELSE d.status END "
            "FROM files f LEFT JOIN docs d ON d.blob = f.blob WHERE f.git_dir = ? AND "
            "(f.excluded != '' OR d.status NOT IN ('ok', 'error', ?)) ORDER BY f.path",
            (os.fsencode(git_dir), LEXICAL)).fetchall()
        failed = self.db.execute(
            "SELECT f.path, x.error FROM files f JOIN failures x ON x.blob = f.blob "
            "WHERE f.git_dir = ? AND f.excluded = '' ORDER BY f.path",
            (os.fsencode(git_dir),)).fetchall()
        return {"skipped_files": [{"path": os.fsdecode(p), "reason": r} for p, r in skipped],
                "failed_files": [{"path": os.fsdecode(p), "error": e} for p, e in failed]}

    def file_doc(self, git_dir: str, path: str) -> dict | None:
        """The stored documentation of one path in a worktree."""
        row = self.db.execute(
            "SELECT f.blob, f.excluded, d.status, d.language, d.summary, d.error, "
            "d.llm_summary, d.llm_by, d.size, d.id FROM files f "
            "LEFT JOIN docs d ON d.blob = f.blob WHERE f.git_dir = ? AND f.path = ?",
            (os.fsencode(git_dir), os.fsencode(path))).fetchone()
        if row is None:
            return None
        blob, excluded, status, language, summary, error, llm_summary, llm_by, size, doc_id = row
        entries = [] if doc_id is None else [
            dict(zip(("kind", "name", "container", "line", "signature", "doc", "note"), r))
            for r in self.db.execute("SELECT kind, name, container, line, signature, doc, note "
                                     "FROM entries WHERE id BETWEEN ? AND ? ORDER BY line, id",
                                     entry_ids(doc_id))]
        state = excluded or status or "pending"
        return {"path": path, "blob": blob, "status": state, "language": language or "",
                "summary": llm_summary or summary or "", "summary_by": llm_by or "built-in",
                "built_in_summary": summary or "", "error": error or "", "size": size or 0,
                "entries": entries}


    def pending_summaries(self, key: str, max_bytes: int, most: int) -> list[tuple]:
        """(blob, path, language) of the text files the external documenter `key` has yet to
        summarise (its failures aside), the most recently documented first."""
        rows = self.db.execute(
            "SELECT d.blob, MIN(f.path), d.language FROM docs d JOIN files f ON f.blob = d.blob "
            "AND f.excluded = '' WHERE d.status IN ('ok', 'error') AND d.size <= ? AND "
            "d.llm_key IS NOT ? AND NOT EXISTS (SELECT 1 FROM summaries s WHERE s.blob = d.blob "
            "AND s.documenter = ? AND s.status = 'failed') GROUP BY d.id ORDER BY d.id DESC "
            "LIMIT ?", (max_bytes, key, key, most)).fetchall()
        return [(blob, os.fsdecode(path), language) for blob, path, language in rows]

    def known_summary(self, blob: str, key: str) -> tuple[str, dict] | None:
        """The summary and notes documenter `key` already gave for this content."""
        import json

        row = self.db.execute("SELECT summary, notes FROM summaries WHERE blob = ? AND "
                              "documenter = ? AND status = 'ok'", (blob, key)).fetchone()
        return (row[0], json.loads(row[1] or "{}")) if row else None

    def store_summary(self, blob: str, key: str, name: str, path: str, answer: Answer) -> None:
        """Keep an external documenter's answer and put it to use (inside a transaction)."""
        import json

        self.db.execute("INSERT OR REPLACE INTO summaries VALUES (?, ?, 'ok', ?, ?, '', ?, ?)",
                        (blob, key, answer.summary, json.dumps(answer.notes), os.fsencode(path),
                         time.time()))
        self.use_summary(blob, key, name, answer.summary, answer.notes)

    def use_summary(self, blob: str, key: str, name: str, summary: str, notes: dict) -> None:
        """Show and search this summary (and notes) for the blob (inside a transaction)."""
        row = self.db.execute("SELECT id, llm_summary FROM docs WHERE blob = ?",
                              (blob,)).fetchone()
        if row is None:
            return  # pruned meanwhile
        doc_id, previous = row
        words = self.db.execute("SELECT words FROM files_fts WHERE rowid = ?",
                                (doc_id,)).fetchone()
        words = words[0] if words else ""
        if previous and words.startswith(previous + "\n"):
            words = words[len(previous) + 1:]
        self.db.execute("DELETE FROM files_fts WHERE rowid = ?", (doc_id,))
        self.db.execute("INSERT INTO files_fts (rowid, words) VALUES (?, ?)",
                        (doc_id, f"{summary}\n{words}"))
        self.db.execute("UPDATE docs SET llm_summary = ?, llm_key = ?, llm_by = ? WHERE id = ?",
                        (summary, key, name, doc_id))
        for entry_id, entry_name, container, signature, doc, old_note in self._entries(doc_id):
            note = notes.get(entry_name) or notes.get(f"{container}.{entry_name}") or ""
            if note == old_note:
                continue
            self.db.execute("UPDATE entries SET note = ? WHERE id = ?", (note, entry_id))
            stored = stored_entry(entry_name, container, signature, doc)
            self.db.execute(ENTRY_FTS_DELETE, (entry_id, *entry_text(stored, old_note)))
            self.db.execute(ENTRY_FTS_INSERT, (entry_id, *entry_text(stored, note)))

    def record_summary_failure(self, blob: str, key: str, path: str, error: str) -> None:
        """Remember that the external documenter failed on this content (until a retry)."""
        self.db.execute("INSERT OR REPLACE INTO summaries VALUES (?, ?, 'failed', '', '', ?, ?, ?)",
                        (blob, key, error[:2000], os.fsencode(path), time.time()))

    def count_call(self, key: str, cost: float | None, tokens: int = 0) -> None:
        """Add one call (and its cost and tokens, where the documenter reported them) to
        today's tally."""
        self.db.execute("INSERT INTO calls VALUES (?, ?, 1, ?, ?) ON CONFLICT (day, documenter) "
                        "DO UPDATE SET calls = calls + 1, cost = cost + excluded.cost, "
                        "tokens = tokens + excluded.tokens", (today(), key, cost or 0.0, tokens))

    def spent_today(self) -> float:
        """US dollars reported by every external documenter today."""
        return self.db.execute("SELECT COALESCE(SUM(cost), 0) FROM calls WHERE day = ?",
                               (today(),)).fetchone()[0]

    def pause(self, key: str) -> tuple[float, str, int]:
        """(until, reason, strikes) of the documenter's pause; until is 0 when not paused."""
        row = self.db.execute("SELECT until, reason, strikes FROM pauses WHERE documenter = ?",
                              (key,)).fetchone()
        return tuple(row) if row else (0.0, "", 0)

    def set_pause(self, key: str, until: float, reason: str, strikes: int) -> None:
        """Pause the documenter until then (strikes: pauses in a row, for the back-off)."""
        self.db.execute("INSERT OR REPLACE INTO pauses VALUES (?, ?, ?, ?)",
                        (key, until, reason[:500], strikes))

    def summary_status(self, git_dir: str, key: str, max_bytes: int) -> dict:
        """For one worktree and external documenter: summarised, pending, failed, too large;
        its calls and cost today and in all."""
        rows = self.db.execute(
            "SELECT d.llm_key = ?, d.size > ?, s.status = 'failed', COUNT(*) FROM files f "
            "JOIN docs d ON d.blob = f.blob LEFT JOIN summaries s ON s.blob = d.blob AND "
            "s.documenter = ? WHERE f.git_dir = ? AND f.excluded = '' AND "
            "d.status IN ('ok', 'error') GROUP BY 1, 2, 3",
            (key, max_bytes, key, os.fsencode(git_dir))).fetchall()
        counts = {"done": 0, "pending": 0, "failed": 0, "too_large": 0}
        for done, large, failed, n in rows:
            name = "done" if done else "too_large" if large else "failed" if failed else \
                "pending"
            counts[name] += n
        day = today()
        calls = self.db.execute(
            "SELECT COALESCE(SUM(calls), 0), COALESCE(SUM(cost), 0), COALESCE(SUM(tokens), 0), "
            "COALESCE(SUM(CASE WHEN day = ? THEN calls END), 0), "
            "COALESCE(SUM(CASE WHEN day = ? THEN cost END), 0) FROM calls WHERE documenter = ?",
            (day, day, key)).fetchone()
        counts.update(zip(("calls", "cost_usd", "tokens", "calls_today", "cost_usd_today"),
                          calls))
        counts["cost_usd"] = round(counts["cost_usd"], 6)
        counts["cost_usd_today"] = round(counts["cost_usd_today"], 6)
        counts["failed_files"] = [  # path by path, as counted above
            {"path": os.fsdecode(p), "error": e} for p, e in self.db.execute(
                "SELECT f.path, s.error FROM summaries s JOIN files f ON f.blob = s.blob "
                "JOIN docs d ON d.blob = s.blob WHERE f.git_dir = ? AND f.excluded = '' AND "
                "s.documenter = ? AND s.status = 'failed' AND d.size <= ? AND "
                "d.status IN ('ok', 'error') AND d.llm_key IS NOT ? ORDER BY 1",
                (os.fsencode(git_dir), key, max_bytes, key))]
        return counts

    def clear_summary_failures(self) -> list[str]:
        """Forget the external documenters' failures, so their files are sent again, and
        close any open circuit breaker (a usage limit stays)."""
        with self.transaction():
            rows = self.db.execute("SELECT path FROM summaries WHERE status = 'failed'").fetchall()
            self.db.execute("DELETE FROM summaries WHERE status = 'failed'")
            self.db.execute("DELETE FROM pauses WHERE reason LIKE 'circuit breaker:%'")
        return [os.fsdecode(p) for (p,) in rows]


def today() -> str:
    """The local date, which a daily budget runs by."""
    return time.strftime("%Y-%m-%d")


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error."""

    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, value, tb):
        self.db.execute("ROLLBACK" if kind else "COMMIT")


def squash(text: str) -> str:
    """An identifier reduced to lowercase letters and digits, so its spellings compare equal."""
    return identifier_patterns()[0].sub("", text.lower())


def name_words(parts: list[str], whole: str) -> str:
    """The words column of a definition: its identifier parts and its squashed name."""
    return " ".join([*parts, whole] if whole and [whole] != parts else parts)


# ---------------------------------------------------------------------------------------------
# Search: a query becomes words (never FTS syntax); candidates come from the definitions, the
# file-level records and the paths; results rank by how many of the query's distinct words
# they cover, then by BM25 weighted by kind and by path (tests, examples and vendored or
# generated copies below source), and one file holds at most a few of the top slots.
# ---------------------------------------------------------------------------------------------

STOP_WORDS = frozenset({
    "a", "about", "after", "also", "an", "and", "are", "as", "at", "be", "before", "by", "can",
    "do", "does", "for", "from", "how", "i", "if", "in", "into", "is", "it", "its", "of", "on",
    "onto", "or", "should", "so", "that", "the", "then", "this", "to", "via", "was", "we",
    "what", "when", "where", "which", "who", "why", "will", "with", "within"})
DEFINITION_WEIGHT = 2.0
KIND_WEIGHT = {"import": 0.5, "file": 0.5, "property": 1.2, "heading": 1.2, "object": 1.2}
EXACT_NAME_BONUS = 100.0  # a definition whose (qualified) name is the query; others get 1/5
# bm25 weights: name, words, container, body, and the squashed name, which finds (EXACT_SQL)
# but adds nothing to a rank.  A query's words are not filtered by column (a filter costs
# FTS5 half as much again), so a prefix (`runni*`) also finds a name by its unstemmed term.
ENTRY_COLUMN_WEIGHTS = "10.0, 5.0, 2.0, 1.0, 0.0"
CANDIDATES = 300
PER_FILE = 3
# Where code that is not the source itself lives, and how far down it ranks.
PATH_CLASSES = {
    "test": ({"test", "tests", "__tests__", "testdata", "testing", "spec", "specs", "e2e",
              "fixtures", "__mocks__"},
             ("*_test.go", "*_test.py", "test_*.py", "*.test.*", "*.spec.*", "*Test.java",
              "*Tests.java", "*_test.rs", "conftest.py")),
    "example": ({"example", "examples", "bench", "benches", "benchmark", "benchmarks", "demo",
                 "samples"}, ()),
    "copy": ({"vendor", "node_modules", "third_party", "dist", "build", "out", "target",
              "generated", "bower_components"},
             ("*.min.js", "*.min.css", "*-min.js", "*.bundle.js", "*.map", "*.pb.go",
              "*_pb2.py", "*.generated.*")),
}
PATH_CLASSES["history"] = (set(), ("CHANGELOG*", "CHANGES*", "HISTORY*", "History.*", "NEWS*",
                                    "changelog*", "RELEASE*NOTES*"))
PATH_PRIOR = {"source": 1.0, "test": 0.5, "example": 0.6, "copy": 0.25, "demoted": 0.25,
              "history": 0.25}
# How many words of coverage a path class gives up: a test, or a bundled copy that holds
# every word of its library, must not outrank the source that covers one word less.
COVERAGE_PENALTY = {"source": 0.0, "test": 0.5, "example": 0.5, "copy": 1.0, "demoted": 1.0,
                    "history": 1.0}


class Term:
    """One thing a result can cover: a word, or a quoted phrase."""

    def __init__(self, words: list[str], prefix: bool = False):
        self.words = words
        quoted = " ".join(words)
        self.entries = f'"{quoted}"' + ("*" if prefix else "")  # a phrase in entries_fts
        # What a definition named by this term must hold in the squashed column: the marked
        # forms of its words that the stemmer treats alike (see marks_alike); "" if none.
        self.named = " AND ".join(f'"{NAME_MARK}{w}"' + ("*" if prefix and w == words[-1] else "")
                                  for w in words if marks_alike(w))
        self.files = " ".join(f'"{w}"' for w in words) + ("*" if prefix else "")  # no phrases


class SearchQuery:
    """A query reduced to its words: the terms to cover, and the squashed identifier it may
    name (`Builder.WriteString`, `parse config`)."""

    def __init__(self, text: str):
        import re

        phrases = [identifier_parts(p) for p in re.findall(r'"([^"]*)"', text)]
        tokens = re.findall(r"\w+\*?", re.sub(r'"[^"]*"', " ", text))
        words: dict = {}
        for token in tokens:
            parts = split_identifier(token.rstrip("*"))
            for i, part in enumerate(parts):
                words[part] = words.get(part, False) or (token.endswith("*") and
                                                          i == len(parts) - 1)
        for phrase in phrases:
            if len(phrase) == 1:
                words.setdefault(phrase[0], False)
        meaningful = {w: p for w, p in words.items() if w not in STOP_WORDS} or words
        self.terms = [Term(p) for p in phrases if len(p) > 1] + \
            [Term([w], prefix) for w, prefix in meaningful.items()]
        if not self.terms:
            raise CqError(f"nothing to search for in {text!r}: use words or identifiers",
                          EXIT_USAGE)
        self.words = set(meaningful)
        self.whole = squash("".join(t.rstrip("*") for t in tokens))
        self.last = squash(tokens[-1].rstrip("*")) if tokens else ""
        self.qualifiers = [p for t in tokens[:-1] for p in split_identifier(t.rstrip("*"))]


PATH_CLASS_CACHE: dict = {}  # (path, demote) -> class, for the life of a process


def path_class(path: str, demote: tuple) -> str:
    """source, test, example, copy (vendored, bundled, minified, generated), history
    (changelogs) or demoted (by the cq.demote patterns)."""
    found = PATH_CLASS_CACHE.get((path, demote))
    if found is None:
        found = PATH_CLASS_CACHE[(path, demote)] = classify_path(path, demote)
        if len(PATH_CLASS_CACHE) > 200_000:
            PATH_CLASS_CACHE.clear()
    return found


def classify_path(path: str, demote: tuple) -> str:
    """path_class, computed."""
    import re
    from fnmatch import translate

    if demote and fnmatch_exclude(path, demote):
        return "demoted"
    if not PATTERNS.get("path classes"):
        PATTERNS["path classes"] = {kind: re.compile("|".join(map(translate, names)) or "(?!)")
                                    for kind, (_, names) in PATH_CLASSES.items()}
    *folders, name = path.split("/")
    for kind in ("copy", "test", "example", "history"):
        if any(folder.lower() in PATH_CLASSES[kind][0] for folder in folders) or \
                PATTERNS["path classes"][kind].match(name):
            return kind
    return "source"


def path_matcher(spec: str | None):
    """A test of a path against --path: a glob if it has glob characters, else a folder or
    path prefix (`storage`, `storage/`, `src/stor`); None for no filter."""
    from fnmatch import fnmatchcase

    if spec is None:
        return None
    spec = spec.removeprefix("./")
    if any(ch in spec for ch in "*?["):
        return lambda path: fnmatchcase(path, spec)
    return lambda path: path.startswith(spec)


PATH_WORDS: dict = {}  # path -> its words, for the life of a process (paths repeat a lot)


def path_words(path: str) -> str:
    """The text paths_fts holds for a path: the words of its folders and file name."""
    return " ".join(identifier_parts(os.path.splitext(path)[0]))


def words_of_path(path: str) -> set[str]:
    """The words of a path's folders and file name (its extension left out)."""
    words = PATH_WORDS.get(path)
    if words is None:
        words = PATH_WORDS[path] = set(path_words(path).split())
        if len(PATH_WORDS) > 200_000:
            PATH_WORDS.clear()
    return words


def covers_path_word(term: Term, words: set[str]) -> bool:
    """True if every word of a term is in a path, exactly or as a stem of at least 4 letters
    (`strings` and `string`, `parsing` and `parse`)."""
    def near(word: str) -> bool:
        return word in words or any(
            min(len(word), len(w)) >= 4 and (w.startswith(word[:-1] if len(word) > 4 else word)
                                             or word.startswith(w)) for w in words)
    return all(near(word) for word in term.words)


class Candidate:
    """An entry or a file-level record that may be a result, with what it covers."""

    def __init__(self, kind: str, rowid: int, path: str, language: str, line: int = 1,
                 name: str = "", container: str = "", signature: str = "", doc: str = ""):
        self.kind, self.rowid, self.path, self.language = kind, rowid, path, language
        self.line, self.name, self.container = line, name, container
        self.signature, self.doc = signature, doc
        self.bm25 = self.score = 0.0
        self.summary_by = ""  # the external documenter whose summary doc is, if any
        self.covered: set[int] = set()
        self.coverage = 0.0  # how many terms it covers, less its path's penalty

    def symbol(self) -> str:
        """The name as people write it: `Builder.WriteString`, `Regex::replace`, a file name."""
        if self.kind == "file":
            return os.path.basename(self.path)
        if not self.container:
            return self.name
        separator = CONTAINER_SEPARATOR.get(self.language, ".")
        return f"{self.container.replace('::', '.').rsplit('.', 1)[-1]}{separator}{self.name}"

    def exact(self, query: SearchQuery) -> bool:
        """True if the query names this definition, plainly or qualified."""
        return self.kind != "file" and names_exactly(query, self.name, self.container)


def names_exactly(query: SearchQuery, name: str, container: str) -> bool:
    """True if the query is the name, or the name qualified by (the end of) its container."""
    last = container.replace("::", ".").rsplit(".", 1)[-1]
    return query.whole in (squash(name), squash(last + name), squash(container + name))


def search(index: Index, git_dir: str, text: str, limit: int = 10, path: str | None = None,
           language: str | None = None, tests: bool = False, all_entries: bool = False,
           demote: tuple = (), spare: int = 0) -> list[dict]:
    """Ranked results for a query in one worktree: what the CLI prints and MCP returns.

    Definitions that cover every term come from an AND query, which is selective and fast;
    only where they fill fewer than `limit` source files does the search take in file-level
    records, then any term (OR) with what each candidate covers, then paths.  `spare` more
    results are returned, without widening for them (for a caller that drops some)."""
    query = SearchQuery(text)
    matches = path_matcher(path)
    db = index.db
    db.create_function("path_matches", 1, lambda raw: matches(os.fsdecode(raw)),
                       deterministic=True)
    where = (os.fsencode(git_dir), path, language, language)
    every = range(len(query.terms))
    candidates = entry_candidates(db, query.terms, where)
    if query.whole:
        candidates += [c for c in exact_candidates(db, query, where) if c.exact(query)]
    if len(source_paths(candidates, demote)) < limit:
        candidates += file_candidates(db, " AND ".join(t.files for t in query.terms), where)
    for c in candidates:
        c.covered.update(every)
    if len(source_paths(candidates, demote)) < limit:
        seen = {(c.kind == "file", c.rowid, c.path) for c in candidates}
        candidates += [c for c in any_term_candidates(db, query, where)
                       if (c.kind == "file", c.rowid, c.path) not in seen]
        candidates += path_candidates(db, query, where,
                                      {c.path for c in candidates if c.kind == "file"})
    for c in candidates:
        if len(c.covered) < len(query.terms):
            c.covered.update(n for n, term in enumerate(query.terms) if n not in c.covered
                             and covers_path_word(term, words_of_path(c.path)))
        c.coverage = len(c.covered) - coverage_penalty(c.path, bool(path or tests), demote)
        c.score = rank_score(c, query, path, tests, demote)
    unique = {(c.kind, c.rowid, c.path): c for c in reversed(candidates)}.values()
    best_entry: dict = {}
    for c in unique:
        if c.kind != "file":
            best_entry[c.path] = max(best_entry.get(c.path, c.coverage), c.coverage)
    # A file's own record adds nothing where one of its definitions covers as much.
    kept = [c for c in unique if c.kind != "file" or c.coverage > best_entry.get(c.path, -9)]
    ranked = sorted(kept, key=lambda c: (-c.coverage, -c.score, c.path, c.line))
    return [result(c, query) for c in grouped(ranked, limit + spare, all_entries)]


def coverage_penalty(path: str, lifted: bool, demote: tuple) -> float:
    """The words of coverage a path gives up for its class (none once --path or --tests
    says what the user wants)."""
    return 0.0 if lifted else COVERAGE_PENALTY[path_class(path, demote)]


def source_paths(candidates: list[Candidate], demote: tuple) -> set[str]:
    """The source files (not tests, examples or copies) among candidates."""
    return {c.path for c in candidates if path_class(c.path, demote) == "source"}


def entry_candidates(db, terms: list[Term], where: tuple) -> list[Candidate]:
    """Definitions matching every term, best first, within the filters."""
    candidates = []
    expression = " AND ".join(t.entries for t in terms)
    named = " AND ".join(t.named for t in terms if t.named)
    for rowid, kind, name, container, line, signature, doc, raw, lang, rank in best_rows(
            db, "entries_fts", expression, where, CANDIDATES, named):
        candidates.append(Candidate(kind, rowid, os.fsdecode(raw), lang or "", line, name,
                                    container or "", signature or "", doc or ""))
        candidates[-1].bm25 = -rank
    return candidates


# The best matches come from FTS5 first (its `rank` is the weighted BM25), then are joined
# with the worktree's files and filtered; where filters leave too few, the search widens.
# Ranking costs FTS5 a lookup per match (after a pass over each word's rows, for its weight),
# so an expression matched by more than POOL rows is ranked within a pool: its newest POOL
# matches (the current versions of files come last).  For definitions the pool is first of
# its matches in a name (which weighs most in the BM25), and only where those fill fewer rows
# than asked, of all its matches as well.  Whether any definition is named by the words at
# all is asked first of their marked terms: the column filter reads every row of every word
# (17 ms for three common words at 50k files), those terms 1 to 2 ms.  If the worktree and
# the filters leave too few rows, every match is ranked.
POOL = 1500
HITS_SQL = "SELECT rowid, rank FROM {table} WHERE {table} MATCH ? ORDER BY rank LIMIT ?"
POOLED_HITS_SQL = (f"SELECT rowid, rank FROM (SELECT rowid, rank FROM {{table}} WHERE {{table}} "
                   f"MATCH ? ORDER BY rowid DESC LIMIT {POOL}) ORDER BY rank LIMIT ?")
ENTRY_COLUMNS = ("e.id, e.kind, e.name, e.container, e.line, e.signature, "
                 "CASE WHEN e.doc = '' THEN e.note ELSE e.doc END, f.path, d.language")
ENTRY_SQL = (
    f"SELECT {ENTRY_COLUMNS}, hits.rank FROM ({{hits}}) AS hits "
    "JOIN entries e ON e.id = hits.rowid "
    f"JOIN docs d ON d.id = e.id >> {ENTRY_SLOT_BITS} "
    "JOIN files f ON f.blob = d.blob AND f.git_dir = ? "
    "WHERE (? IS NULL OR path_matches(f.path)) AND (? IS NULL OR d.language = ?) "
    "ORDER BY hits.rank LIMIT ?")
EXACT_SQL = (  # one term's rows: an exact name is found however common its words are
    f"SELECT {ENTRY_COLUMNS}, 0.0 FROM entries_fts "  # CROSS JOIN: the term's rows first
    "CROSS JOIN entries e ON e.id = entries_fts.rowid "
    f"CROSS JOIN docs d ON d.id = e.id >> {ENTRY_SLOT_BITS} "
    "CROSS JOIN files f ON f.blob = d.blob AND f.git_dir = ? "
    "WHERE entries_fts MATCH ? AND (? IS NULL OR path_matches(f.path)) "
    "AND (? IS NULL OR d.language = ?) LIMIT ?")
FILE_SQL = (
    "SELECT d.id, f.path, d.language, COALESCE(d.llm_summary, d.summary), d.llm_by, hits.rank "
    "FROM ({hits}) AS hits "
    "JOIN docs d ON d.id = hits.rowid JOIN files f ON f.blob = d.blob AND f.git_dir = ? "
    "WHERE (? IS NULL OR path_matches(f.path)) AND (? IS NULL OR d.language = ?) "
    "ORDER BY hits.rank LIMIT ?")
WIDER = 4  # FTS5 hands over this many times the rows wanted before joins and filters
PATH_SQL = (  # paths_fts narrows by words' first letters; path_has_word() decides
    "SELECT d.id, f.path, d.language, COALESCE(d.llm_summary, d.summary), d.llm_by, 0.0 "
    "FROM paths_fts p CROSS JOIN files f ON f.rowid = p.rowid JOIN docs d ON d.blob = f.blob "
    "WHERE paths_fts MATCH ? AND f.git_dir = ? AND path_has_word(f.path) "
    "AND (? IS NULL OR path_matches(f.path)) AND (? IS NULL OR d.language = ?) LIMIT ?")


def best_rows(db, table: str, expression: str, where: tuple, limit: int,
              named: str = "") -> list:
    """The first `limit` rows of a ranked query within the filters: FTS5 hands over a few
    times that many (from a pool, for a common word), and all of its matches, fully ranked,
    if the filters left too few.  `named`: for definitions, the expression's marked name
    words (which only rows named by them hold)."""
    git_dir, path, language, _ = where
    sql = ENTRY_SQL if table == "entries_fts" else FILE_SQL
    wanted = WIDER * limit if path or language else limit + limit // 4  # few rows are lost

    def ranked(hits: str, text: str, count: int) -> list:
        return db.execute(sql.format(hits=hits.format(table=table)), (
            text, count, git_dir, path, language, language, limit)).fetchall()

    if not matches_more_than(db, table, expression, POOL):
        rows = ranked(HITS_SQL, expression, wanted)
    elif table != "entries_fts":
        rows = ranked(POOLED_HITS_SQL, expression, wanted)
    else:
        rows = []  # the marked name words tell cheaply whether any definition is named so
        if not named or matches_more_than(db, table, named, 0):
            rows = ranked(POOLED_HITS_SQL, f"{{name words}} : ({expression})", wanted)
        if len(rows) < limit:  # too few are named by it: its other matches count as well
            rows = sorted({row[0]: row for row in reversed(
                rows + ranked(POOLED_HITS_SQL, expression, wanted))}.values(),
                key=lambda row: row[-1])[:limit]
    if len(rows) < limit and matches_more_than(db, table, expression, len(rows)):
        rows = ranked(HITS_SQL, expression, -1)  # rare: most matches are elsewhere
    return rows


def matches_more_than(db, table: str, expression: str, count: int) -> bool:
    """True if an FTS expression matches more than count rows (reading at most count + 1)."""
    return db.execute(f"SELECT COUNT(*) FROM (SELECT rowid FROM {table} WHERE {table} MATCH ? "
                      "LIMIT ?)", (expression, count + 1)).fetchone()[0] > count


def exact_candidates(db, query: SearchQuery, where: tuple) -> list[Candidate]:
    """Definitions whose squashed name is the whole query or its last word (qualified by the
    others), looked up by that name's term."""
    found = named_candidates(db, query.whole, where)
    if query.last and query.last != query.whole:
        found += named_candidates(db, query.last, where)
    return found


def named_candidates(db, squashed: str, where: tuple) -> list[Candidate]:
    """Definitions whose squashed name is this, looked up by its term (which, with its
    diacritics folded, may also be another name's: those are left out)."""
    git_dir, path, language, _ = where
    if not squashed:
        return []
    return [Candidate(kind, rowid, os.fsdecode(raw), lang or "", line, name, container or "",
                      signature or "", doc or "")
            for rowid, kind, name, container, line, signature, doc, raw, lang, _ in db.execute(
                EXACT_SQL, (git_dir, f'squashed : "{squashed}{NAME_MARK}"', path, language,
                            language, POOL))
            if squash(name) == squashed]


def term_candidates(db, term: Term, where: tuple) -> list[Candidate]:
    """A term's best definitions and file-level records; definitions named by the term are
    looked up (and ranked) as well, since a pool of a common word may not hold them."""
    found = entry_candidates(db, [term], where)
    known = {c.rowid for c in found}
    named = [c for c in named_candidates(db, squash("".join(term.words)), where)
             if c.rowid not in known][:50]  # each is ranked by a lookup of its own
    if named:
        marks = ",".join("?" * len(named))
        ranks = dict(db.execute(f"SELECT rowid, rank FROM entries_fts WHERE entries_fts MATCH ? "
                                f"AND rowid IN ({marks})", (term.entries,
                                                            *(c.rowid for c in named))))
        for c in named:
            c.bm25 = -ranks.get(c.rowid, 0.0)
    return found + named + file_candidates(db, term.files, where)


def any_term_candidates(db, query: SearchQuery, where: tuple) -> list[Candidate]:
    """Definitions and file-level records that match some of the terms, each term's best
    found on its own (so a common word cannot crowd out a rare one), with the terms each
    covers and their BM25 summed, as one OR query would."""
    if len(query.terms) < 2:
        return []
    found: dict = {}
    terms = rarest_terms(db, query)
    for number, term in terms:
        for c in term_candidates(db, term, where):
            key = (c.kind == "file", c.rowid, c.path)
            if key in found:
                found[key].bm25 += c.bm25
            found.setdefault(key, c).covered.add(number)
    measure_coverage(db, terms, list(found.values()))
    return list(found.values())


def file_candidates(db, expression: str, where: tuple) -> list[Candidate]:
    """File-level records matching an FTS expression, best first, within the filters."""
    candidates = []
    for rowid, raw, lang, summary, by, rank in best_rows(db, "files_fts", expression, where,
                                                         CANDIDATES):
        candidates.append(Candidate("file", rowid, os.fsdecode(raw), lang or "",
                                    doc=summary or ""))
        candidates[-1].bm25, candidates[-1].summary_by = -rank, by or ""
    return candidates


def path_candidates(db, query: SearchQuery, where: tuple, known: set) -> list[Candidate]:
    """Files whose path holds a query word (not found by their words already)."""
    git_dir, path, language, _ = where
    db.create_function("path_has_word", 1, lambda raw: any(
        covers_path_word(t, words_of_path(os.fsdecode(raw))) for t in query.terms),
        deterministic=True)
    # Every path word covers_path_word accepts begins with the query word's first 4 letters.
    narrow = " OR ".join(sorted({f'"{w[:4]}"*' for t in query.terms for w in t.words}))
    candidates = []
    for rowid, raw, lang, summary, by, _ in db.execute(PATH_SQL, (
            narrow, git_dir, path, language, language, CANDIDATES)):
        if os.fsdecode(raw) not in known:
            candidates.append(Candidate("file", rowid, os.fsdecode(raw), lang or "",
                                        doc=summary or ""))
            candidates[-1].summary_by = by or ""
    return candidates


PROBE_RATIO = 100  # a term with this many matches per candidate is asked row by row


MOST_TERMS = 8  # a longer query widens by its rarest terms only (each costs a few lookups)


def rarest_terms(db, query: SearchQuery) -> list[tuple[int, Term]]:
    """(number, term) of the query's rarest MOST_TERMS terms (all, for a shorter query)."""
    numbered = list(enumerate(query.terms))
    if len(numbered) <= MOST_TERMS:
        return numbered
    return sorted(numbered, key=lambda item: sum(
        matches_more_than(db, "entries_fts", item[1].entries, n) for n in (10, 100, POOL)))[
            :MOST_TERMS]


def measure_coverage(db, terms: list[tuple[int, Term]], candidates: list[Candidate]) -> None:
    """Add the terms a candidate covers in its text but was not found by: a term's matching
    rows are read as a set, unless it has so many that asking about these rows is cheaper."""
    groups = {"entries_fts": [c for c in candidates if c.kind != "file"],
              "files_fts": [c for c in candidates if c.kind == "file"]}
    for table, group in groups.items():
        for number, term in terms:
            unknown = [c for c in group if number not in c.covered]
            if not unknown:
                continue
            expression = term.entries if table == "entries_fts" else term.files
            matching: set = set()
            # A lookup per row costs FTS5 about a hundred times what reading a match does.
            if matches_more_than(db, table, expression, PROBE_RATIO * len(unknown)):
                for i in range(0, len(unknown), 500):  # within SQLite's limit on variables
                    chunk = [c.rowid for c in unknown[i:i + 500]]
                    matching.update(rowid for (rowid,) in db.execute(
                        f"SELECT rowid FROM {table} WHERE {table} MATCH ? AND rowid IN "
                        f"({','.join('?' * len(chunk))})", (expression, *chunk)))
            else:
                matching.update(rowid for (rowid,) in db.execute(
                    f"SELECT rowid FROM {table} WHERE {table} MATCH ?", (expression,)))
            for c in unknown:
                if c.rowid in matching:
                    c.covered.add(number)


def rank_score(c: Candidate, query: SearchQuery, path: str | None, tests: bool,
               demote: tuple) -> float:
    """BM25 weighted by kind, path and exact word forms, plus a bonus for the exact name."""
    definition = c.kind in DEFINITION_KINDS
    weight = DEFINITION_WEIGHT if definition else KIND_WEIGHT.get(c.kind, 1.0)
    kind = path_class(c.path, demote)
    prior = 1.0 if path else PATH_PRIOR[kind]
    if tests and kind == "test":
        prior = 2.0
    exact_forms = len(query.words & set(split_identifier(c.name))) if c.name else 0
    score = (c.bm25 + 0.1) * weight * prior * (1 + 0.25 * exact_forms)
    if c.exact(query):
        score += prior * (EXACT_NAME_BONUS if definition else EXACT_NAME_BONUS / 5)
    return score


def grouped(ranked: list[Candidate], limit: int, all_entries: bool) -> list[Candidate]:
    """The first `limit` candidates, with at most PER_FILE from any one file."""
    chosen, per_file = [], {}
    for c in ranked:
        if not all_entries and per_file.get(c.path, 0) >= PER_FILE:
            continue
        per_file[c.path] = per_file.get(c.path, 0) + 1
        chosen.append(c)
        if len(chosen) == limit:
            break
    return chosen


def result(c: Candidate, query: SearchQuery) -> dict:
    """One search result as the CLI prints it and MCP returns it."""
    first_doc = (c.doc.strip().splitlines() or [""])[0]
    return {"path": c.path, "line": c.line, "kind": c.kind, "symbol": c.symbol(),
            "name": c.name or os.path.basename(c.path), "container": c.container,
            "language": c.language, "signature": c.signature[:200], "doc": first_doc[:200],
            "snippet": (c.signature or first_doc)[:200],
            "covered": len(c.covered), "of": len(query.terms),
            "score": round(c.score, 4), "matched_summary_by": matched_summary_by(c, query)}


def matched_summary_by(c: Candidate, query: SearchQuery) -> str:
    """The external documenter whose summary of a file holds a query word ('' if none)."""
    if not c.summary_by:
        return ""
    words = set(identifier_parts(c.doc))
    stems = {w[:5] for w in query.words}
    return c.summary_by if any(w[:5] in stems for w in words) else ""


class WorktreeOverlay:
    """The files of a worktree that differ from HEAD (modified, added, untracked and not
    ignored), documented in memory with the built-in documenter, and the deleted ones: what
    an assistant changed a minute ago is found, and what it deleted is not.  `git status`
    starts at once and runs while the caller searches the index; the first look at what it
    found waits for it."""

    def __init__(self, repo: Repo, config: Config, cwd: str):
        import subprocess

        self.repo, self.config, self.top = repo, config, work_tree(cwd)
        # --no-optional-locks: no index refresh, so never an index.lock in the user's way.
        self.status = None if self.top is None else subprocess.Popen(
            ["git", "--no-optional-locks", "-C", self.top, "status", "--porcelain=v1", "-z",
             "--untracked-files=all", "--no-renames"], stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=scrubbed_env())
        self.found: tuple | None = None  # (edited, deleted, index, complete)
        self.failed = False  # git status failed: nothing is known to be edited

    def finish(self) -> tuple:
        """Wait for `git status` and document what it lists (once)."""
        if self.found is None:
            edited, deleted = set(), set()
            if self.status is not None:
                out, _ = self.status.communicate()
                self.failed = self.status.returncode != 0
                for record in out.split(b"\0"):
                    if len(record) >= 4:
                        path = os.fsdecode(record[3:])
                        (deleted if b"D" in record[:2] else edited).add(path)
            index = Index.in_memory(self.repo)
            complete = len(edited) <= self.config.overlay_max_files
            if complete and self.top is not None:
                self.document(index, edited)
            self.found = (edited, deleted, index, complete)
        return self.found

    @property
    def edited(self) -> set:
        """Paths modified, added or untracked (and not ignored)."""
        return self.finish()[0]

    @property
    def deleted(self) -> set:
        """Paths deleted in the working tree."""
        return self.finish()[1]

    @property
    def index(self) -> Index:
        """The in-memory index of the edited files (empty when there are too many)."""
        return self.finish()[2]

    @property
    def complete(self) -> bool:
        """False when more files are edited than cq.overlayMaxFiles: they are marked only."""
        return self.finish()[3]

    def document(self, index: Index, edited: set) -> None:
        """Document the edited files into the in-memory index."""
        config, entries = self.config, {}
        for path in sorted(edited):
            full = os.path.join(self.top, path)
            try:
                st = os.lstat(full)
                if not stat.S_ISREG(st.st_mode) or st.st_size > config.max_file_size:
                    continue
                with open(full, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            blob = f"worktree:{path}"
            entries[path] = ("100644", blob)
            if not looks_binary(data):
                index.store(blob, "ok", len(data), document_text(path, data,
                                                                 config.parse_budget), path)
        with index.transaction():
            index.replace_worktree(self.repo.git_dir, None,
                                   ((p, mode, sha) for p, (mode, sha) in entries.items()), config)


class WorktreeWatch:
    """Linux inotify on every directory of a work tree (but .git), through ctypes: a
    long-lived reader (the MCP server over stdio) asks `git status` again only when something
    there changed, which at 50,000 files saves a tenth of a second a query.  Watches are set
    up by a background thread; until then `changed()` says yes every time, and for good where
    inotify is missing or its limits are reached.  A directory moved away or renamed, or a
    queue overflow, starts the watch over (its paths would be stale)."""

    MASK = 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800  # writes, moves...
    MOVED_FROM, MOVED_TO, CREATE, OVERFLOW, ISDIR = 0x40, 0x80, 0x100, 0x4000, 0x40000000

    def __init__(self, top: str, repo: Repo):
        import threading

        self.top, self.repo = top, repo
        self.lock = threading.Lock()
        self.fd, self.dirs, self.ready, self.first = -1, {}, False, True
        self.generation, self.broken, self.libc = 0, False, None
        self.restart()

    def restart(self) -> None:
        """Drop every watch and set them up again in the background."""
        import threading

        with self.lock:
            self.generation += 1
            old, self.fd, self.dirs, self.ready, self.first = self.fd, -1, {}, False, True
            generation = self.generation
        if old >= 0:
            os.close(old)
        if not self.broken:
            threading.Thread(target=self.start, args=(generation,), name="worktree-watch",
                             daemon=True).start()

    def close(self) -> None:
        """Release the inotify descriptor and its watches for good."""
        self.broken = True
        self.restart()

    def start(self, generation: int) -> None:
        """Open inotify and watch every directory; give up (noted on stderr) on failure."""
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd < 0:
                raise OSError(ctypes.get_errno(), "inotify_init1")
        except (OSError, AttributeError) as exc:
            self.give_up(exc)
            return
        dirs: dict = {}
        try:
            self.watch_tree(libc, fd, self.top, dirs)
        except OSError as exc:
            os.close(fd)
            self.give_up(exc)
            return
        with self.lock:
            if generation != self.generation:  # started over (or closed) meanwhile
                os.close(fd)
                return
            self.libc, self.fd, self.dirs, self.ready = libc, fd, dirs, True

    def give_up(self, exc: OSError | AttributeError) -> None:
        """No watching from here on: every query runs git status."""
        self.broken = True
        print(f"cq: note: not watching the work tree ({exc}); every query runs git status",
              file=sys.stderr)

    def watch_tree(self, libc, fd: int, top: str, dirs: dict) -> None:
        """Watch top and every directory under it, each before it is listed, so nothing made
        in it meanwhile is missed (OSError past the system's watch limit)."""
        import ctypes

        stack = [top]
        while stack:
            directory = stack.pop()
            wd = libc.inotify_add_watch(fd, os.fsencode(directory), self.MASK)
            if wd < 0:
                if ctypes.get_errno() in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                    continue  # gone meanwhile (its parent's event says so), or unreadable
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")
            dirs[wd] = directory
            try:
                with os.scandir(directory) as entries:
                    stack.extend(e.path for e in entries
                                 if e.name != ".git" and e.is_dir(follow_symlinks=False))
            except OSError:
                continue  # gone or unreadable: as above

    def changed(self) -> bool:
        """True if anything in the work tree may have changed since the last call (always,
        while the watch is not ready); new directories are watched as they appear."""
        import struct

        if not self.ready:
            return True
        changed, self.first = self.first, False
        try:
            while True:
                data = os.read(self.fd, 65536)
                offset = 0
                while offset + 16 <= len(data):
                    wd, mask, _, length = struct.unpack_from("iIII", data, offset)
                    name = data[offset + 16:offset + 16 + length].rstrip(b"\0")
                    offset += 16 + length
                    changed = True
                    if mask & self.OVERFLOW or (mask & self.ISDIR and mask & self.MOVED_FROM):
                        self.restart()
                        return True
                    if mask & self.ISDIR and mask & (self.CREATE | self.MOVED_TO) and \
                            name != b".git":
                        self.watch_tree(self.libc, self.fd, os.path.join(
                            self.dirs.get(wd, self.top), os.fsdecode(name)), self.dirs)
        except BlockingIOError:
            pass
        except OSError as exc:
            self.close()
            self.give_up(exc)
        return changed or not self.ready


def search_worktree(index: Index, repo: Repo, text: str, overlay: WorktreeOverlay,
                    limit: int = 10, **filters) -> list[dict]:
    """search() over the index with the working tree laid over it: edited files answer from
    the overlay, deleted ones not at all."""
    slack = PER_FILE * (overlay.config.overlay_max_files + 10)  # room for what is hidden
    found = search(index, repo.git_dir, text, limit, spare=slack, **filters)  # while git runs
    hidden = overlay.edited | overlay.deleted if overlay.complete else overlay.deleted
    if PER_FILE * len(hidden) > slack:
        found = search(index, repo.git_dir, text, limit, spare=PER_FILE * len(hidden),
                       **filters)
    base = [r for r in found if r["path"] not in hidden]
    extra = search(overlay.index, repo.git_dir, text, limit, **filters)
    lifted, demote = bool(filters.get("path") or filters.get("tests")), filters.get("demote", ())
    merged = sorted(base + extra, key=lambda r: (
        -(r["covered"] - coverage_penalty(r["path"], lifted, demote)), -r["score"]))
    for r in merged:
        r["edited"] = r["path"] in overlay.edited
    return merged[:limit]


def document_blobs(repo: Repo, blobs: list, huey) -> None:
    """Document each (blob, path) that is still referenced and not yet documented: as one
    batch, except blobs in flight when the worker died, which go one at a time, so that a
    file that kills the worker is told apart from its batch and skipped after CRASH_LIMIT."""
    config = task_config(repo, huey)
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
    """The records of the lexical or the full pass for (blob, path) pairs, and the (blob,
    path, error) failures (reused: blobs whose words the lexical pass stored); None if the
    worker is stopping.  Each blob is read and documented in this thread's pool of processes
    where there are enough of them (the worker then holds none of their bytes), else here."""
    kind = LEXICAL if lexical else "full"
    jobs = [(kind, path, blob, config.parse_budget, blob not in reused, config.max_file_size,
             reader.common_dir) for blob, path in blobs]
    answers = run_jobs(jobs, config.workers, reader)
    if answers is None:
        return None
    records, failures = [], []
    for (blob, path), answer in zip(blobs, answers):
        if isinstance(answer, Exception):
            log(f"failed to document {path} ({blob[:12]}): {answer}", error=True)
            failures.append(failure(blob, path, answer))
        elif answer[0] >= 0:
            records.append(answer_record(blob, path, answer, lexical))
        elif not lexical:  # the lexical pass leaves a missing blob to the full one
            failures.append(failure(blob, path, missing_blob(blob)))
    return records, failures


def answer_record(blob: str, path: str, answer: tuple, lexical: bool) -> tuple:
    """The record (blob, status, size, doc, path) of a job's answer (see answer_job); raises
    CqError for a blob the object database does not have."""
    size, doc = answer
    if size < 0:
        raise missing_blob(blob)
    if isinstance(doc, str):  # too large or binary
        return blob, doc, size, None, path
    return (blob, LEXICAL, size, doc, path) if lexical else full_record(blob, path, size, doc)


def failure(blob: str, path: str, exc: Exception) -> tuple:
    """A (blob, path, error) failure to store."""
    return blob, path, f"{type(exc).__name__}: {exc}"


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
            index.store(blob, CRASHED, size, minimal_record(path, data, CRASHED), path)
        else:
            try:
                index.store(*suspect_record(config, reader, blob, path, size, data))
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
    WorkerActivity.progress()
    return True


def suspect_record(config: Config, reader: BlobReader, blob: str, path: str, size: int,
                   data: bytes | None) -> tuple:
    """built_in_record for a blob in flight at a death of the worker, parsed in a documenting
    process: if it kills the parser, only that process dies, and the worker's other files
    are not blamed; where two processes die on it, it keeps its names only.  Here, in the
    worker, where no process can start."""
    if size < 0 or skipped_record(blob, path, size, data):
        return built_in_record(config, blob, path, size, data)
    try:
        answers = thread_pool(config.workers).run([[("full", path, blob, config.parse_budget,
                                                      True, config.max_file_size,
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
        return blob, CRASHED, size, minimal_record(path, data, CRASHED), path
    if answered is None:
        return built_in_record(config, blob, path, size, data)
    return answer_record(blob, path, answered[0], False)


def built_in_record(config: Config, blob: str, path: str, size: int, data: bytes | None,
                    words: bool = True) -> tuple:
    """The record (blob, status, size, doc, path) the built-in documenter makes of a blob
    (without its words, which the lexical pass stored, unless `words`); an external
    documenter's summary follows later, from the summarizer threads."""
    if size < 0:
        raise missing_blob(blob)
    skipped = skipped_record(blob, path, size, data)
    if skipped:
        return skipped
    return full_record(blob, path, size, document_text(path, data, config.parse_budget, words))


def full_record(blob: str, path: str, size: int, doc: dict) -> tuple:
    """The record of the full pass for a doc of the built-in documenter."""
    return blob, "error" if doc["error"] else "ok", size, doc, path


def skipped_record(blob: str, path: str, size: int, data: bytes | None) -> tuple | None:
    """The record of a blob too large or binary to document (by either pass), else None."""
    status = skip_status(data)
    return (blob, status, size, None, path) if status else None


def skip_status(data: bytes | None) -> str | None:
    """Why a blob's content (None: over cq.maxFileSize) is not documented, or None."""
    if data is None:
        return "too large"
    return "binary" if looks_binary(data) else None


def index_words(repo: Repo, blobs: list, huey) -> None:
    """The lexical pass: a record of each blob's language and words, with one commit for
    the batch, so that a large tree is searchable by its words long before every file is
    documented; then the full pass of the batch is queued.  No parser runs, so no attempt
    is noted: nothing here can crash the worker."""
    config = task_config(repo, huey)
    reader = thread_blob_reader(repo.common_dir)
    try:
        with Index(repo) as index:
            made = batch_records(config, reader, index.to_document(blobs, lexical=True), True)
            if made is not None:  # else the worker is stopping
                index.store_all(made[0])
    finally:  # the full pass, behind the lexical one, whatever became of this task
        for batch in batches(blobs, DOCUMENT_BATCH):
            huey.cq_tasks["document"](batch)


def minimal_record(path: str, data: bytes, reason: str) -> dict:
    """A file's language and words: all the lexical pass records, and all a file the full
    documenter cannot take keeps."""
    text = data.decode("utf-8", errors="replace")
    return {"language": detect_language(path, text), "summary": "", "error": reason,
            "entries": [], "words": file_words(text)}


# A batch's reading and CPU-bound work (the documenters) runs in child processes, so that
# every core works while the worker writes SQLite; the index keeps one writer.  A process
# leaves after POOL_IDLE seconds without work, or when the worker is gone.
POOL_MIN_FILES = 24  # a batch with fewer files to document is documented in the worker itself
POOL_GROUP = 16  # files sent to a process at once (a round trip each)
POOL_MAX = 4  # processes at most, one per core up to this
POOL_IDLE = 60.0
POOL_REST = 60.0  # seconds without processes after they kept ending
POOL_DEPTH = 2  # jobs a process has at once
# A job sent while the process has another is this small at most: a pipe holds a page at
# least, so once the process has read the job before, this one fits whole, and the write
# cannot block while the process, blocked writing its answer, reads nothing.
POOL_AHEAD_BYTES = 4096
DIED_TWICE = "died twice"  # the answer to a job two processes ended on
DOCUMENTING_PROCESS = "--documenting-process"  # argv of a child: `worker --documenting-process`


class DocumentingPool:
    """The documenting processes of one worker thread, started when first needed.  Each has
    up to POOL_DEPTH jobs at once, so that it starts the next while its answer to the last
    one waits for this thread (busy writing the index, say) to read it."""

    def __init__(self, size: int):
        self.size, self.procs = size, []
        self.resting_until = 0.0  # after processes kept ending, none is started until then

    def run(self, jobs: list) -> list | None:
        """The answers to each job (a group of jobs, see answer_job), in order: the list of
        their answers, DIED_TWICE where a process died twice on the job, or None where none
        was run (processes kept ending).  None if the worker is stopping meanwhile."""
        import selectors

        answers: list = [None] * len(jobs)
        if time.monotonic() < self.resting_until:
            return answers
        self.waiting = list(range(len(jobs) - 1, -1, -1))  # popped from the end: in order
        self.deaths = [0] * len(jobs)
        self.procs = [p for p in self.procs if p.poll() is None]
        while len(self.procs) < min(self.size, len(jobs)):
            self.procs.append(start_documenting_process())
        self.busy = {}  # stdout's descriptor -> its process, which has jobs to answer
        try:
            with selectors.DefaultSelector() as self.selector:
                while self.waiting or self.busy:
                    if Shutdown.requested:
                        self.close()
                        return None
                    if sum(self.deaths) > self.size + 2:  # they keep ending: the rest here
                        log("documenting processes keep ending; the worker documents alone "
                            f"for {POOL_REST:g} s", error=True)
                        self.close()
                        self.resting_until = time.monotonic() + POOL_REST
                        return answers
                    for proc in list(self.procs):
                        while self.waiting and len(proc.jobs) < POOL_DEPTH and \
                                self.give(proc, jobs):
                            pass
                    for key, _ in self.selector.select(timeout=0.25):
                        proc = self.busy[key.fd]
                        answer = receive_message(proc.stdout)
                        if answer is None:
                            self.died(proc, jobs)
                            continue
                        answers[proc.jobs.pop(0)] = answer
                        WorkerActivity.progress()
                        if not proc.jobs:
                            self.idle(proc)
        except BaseException:
            self.close()  # answers still due would come out of step
            raise
        return [DIED_TWICE if self.deaths[n] >= 2 else answer for n, answer in enumerate(answers)]

    def give(self, proc, jobs: list) -> bool:
        """Send a process the next job; False if it was not sent: too large to send ahead of
        an answer (see POOL_AHEAD_BYTES), or the process had ended (see died)."""
        import selectors

        message = message_bytes(jobs[self.waiting[-1]])
        if proc.jobs and len(message) > POOL_AHEAD_BYTES:
            return False
        proc.jobs.append(self.waiting.pop())
        if proc.stdout.fileno() not in self.busy:
            self.busy[proc.stdout.fileno()] = proc
            self.selector.register(proc.stdout, selectors.EVENT_READ)
        try:
            write_all(proc.stdin, message)
            return True
        except BrokenPipeError:  # it ended before taking the job (or could not start)
            self.died(proc, jobs)
            return False

    def idle(self, proc) -> None:
        """A process has answered all its jobs: no more waiting on it."""
        del self.busy[proc.stdout.fileno()]
        self.selector.unregister(proc.stdout)

    def died(self, proc, jobs: list) -> None:
        """A process ended on its oldest job: replace it, give that job once more, and the
        others it had again."""
        culprit, *innocent = proc.jobs
        self.deaths[culprit] += 1
        log(f"a documenting process ended on one of {len(jobs[culprit])} files from "
            f"{jobs[culprit][0][1]}; "
            + ("trying once more" if self.deaths[culprit] < 2 else "documenting it here"),
            error=True)
        self.waiting += innocent[::-1]
        if self.deaths[culprit] < 2:
            self.waiting.append(culprit)
        self.idle(proc)
        self.replace(proc)

    def replace(self, proc) -> None:
        """Start a new process in place of one that ended."""
        proc.kill()
        proc.wait()
        self.procs[self.procs.index(proc)] = start_documenting_process()

    def close(self) -> None:
        """End every process now (answers still due would come out of step)."""
        for proc in self.procs:
            proc.kill()
            proc.wait()
        self.procs = []


def start_documenting_process():
    """A child that answers documenting jobs (see serve_documenting), with none yet."""
    import subprocess

    proc = subprocess.Popen([*self_command(), "worker", DOCUMENTING_PROCESS],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=scrubbed_env())
    proc.jobs = []  # the indexes of the jobs it was sent and has not answered, oldest first
    return proc


def thread_pool(workers: int) -> DocumentingPool:
    """This worker thread's DocumentingPool: the cores shared among the worker threads."""
    import threading

    thread = threading.current_thread()
    if getattr(thread, "cq_pool", None) is None:
        thread.cq_pool = DocumentingPool(min(POOL_MAX, max(1, usable_cores() // workers)))
    return thread.cq_pool


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, which `taskset` and a container's
    cpuset narrow (os.cpu_count() counts the machine's, and more processes than cores only
    cost memory)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no affinity to ask for (not Linux)
        return os.cpu_count() or 1


def run_jobs(jobs: list, workers: int, reader: BlobReader) -> list | None:
    """The answer to each documenting job (see answer_job), or the exception it raised: in
    this thread's pool where there are enough jobs, else (or where no process could answer)
    here, reading through `reader`.  None if the worker is stopping."""
    answers: list | None = [None] * len(jobs)
    if len(jobs) >= POOL_MIN_FILES:
        groups = [jobs[i:i + POOL_GROUP] for i in range(0, len(jobs), POOL_GROUP)]
        try:
            grouped = thread_pool(workers).run(groups)
            answers = None if grouped is None else [
                answer for group, answered in zip(groups, grouped)
                for answer in (answered if isinstance(answered, list) else [None] * len(group))]
        except OSError as exc:
            log(f"documenting in this process: no documenting process could start ({exc})",
                error=True)
    if answers is None:
        return None
    left = [n for n, answer in enumerate(answers) if answer is None]
    for n, (size, data) in zip(left, read_jobs([jobs[n] for n in left], reader)):
        WorkerActivity.progress()
        try:
            answers[n] = answer_job(jobs[n], size, data)
        except Exception as exc:  # noqa: BLE001 - logged by the caller, as the file's failure
            answers[n] = exc
    return answers


def read_jobs(jobs: list, reader: BlobReader) -> Iterator[tuple]:
    """(size, content) of each job's blob in turn, POOL_GROUP jobs at a time: from its file
    in the work tree where git keeps it loose and that file holds exactly the blob, else
    through one git process (left unfinished, it is ended: see BlobReader.read_all).  Git
    unpacks each loose object (a freshly committed tree has only those) with a file opened
    and mapped: 0.55 s for 10,000 small blobs, against 0.17 s to read and hash their files."""
    for start in range(0, len(jobs), POOL_GROUP):
        group, folders = jobs[start:start + POOL_GROUP], {}
        tree = main_work_tree(group[0][6])  # a batch's jobs are of one repository
        try:
            found = [work_tree_blob(job, tree, folders) for job in group]
        finally:
            for fd in folders.values():
                os.close(fd)
        missing = [job[2] for job, content in zip(group, found) if content is None]
        contents = reader.read_all(missing, group[0][5])
        try:
            for content in found:
                yield content if content is not None else next(contents)
        finally:
            contents.close()


def main_work_tree(common_dir: str) -> str:
    """The main work tree of a repository whose git directory is its `.git` ('' if none),
    where a blob's file may be read instead of the blob (see work_tree_blob)."""
    return os.path.dirname(common_dir) if os.path.basename(common_dir) == ".git" else ""


def work_tree_blob(job: tuple, tree: str, folders: dict) -> tuple | None:
    """(size, content) of a job's loose blob from its file in the work tree (see
    main_work_tree), or None unless that is a regular file within the limit that hashes to
    the blob: whatever the work tree holds (a local change, a filter's output, a link), only
    the blob is read, and nothing but a regular file inside the tree is opened.  folders: the
    open folders (see folder_fd)."""
    import hashlib
    import stat

    path, blob, limit = job[1], job[2], job[5]
    folder, _, name = path.rpartition("/")
    if not tree or name in ("", ".", ".."):
        return None
    try:
        # Only for a loose object: git reads a pack as fast, and in order where the files of
        # a work tree not read for a while are scattered on the disk.
        os.stat(os.path.join(job[6], "objects", blob[:2], blob[2:]))
        parent = folder_fd(tree, folder, folders)
        if not stat.S_ISREG(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
            return None  # opening a device acts, and a FIFO waits
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY |
                     os.O_CLOEXEC, dir_fd=parent)
    except (OSError, ValueError):  # not there, a link, a path git would not write
        return None
    try:
        st = os.fstat(fd)
        data = read_exactly(fd, st.st_size) if stat.S_ISREG(st.st_mode) and \
            st.st_size <= limit else None
    except OSError:
        data = None
    finally:
        os.close(fd)
    if data is None:
        return None
    digest = (hashlib.sha1 if len(blob) == 40 else hashlib.sha256)(b"blob %d\0" % len(data))
    digest.update(data)
    return (len(data), data) if digest.hexdigest() == blob else None


def folder_fd(tree: str, folder: str, folders: dict) -> int:
    """A descriptor of a folder of the work tree, each of its parts opened in the one before
    without following a link (none leads out of the tree, even if one is made meanwhile);
    kept in folders, which the caller closes.  Raises OSError, or ValueError for a part that
    names no folder below (`..`, `.`, an empty one)."""
    if folder not in folders:
        if not folder:
            fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        else:
            parent, _, part = folder.rpartition("/")
            if part in ("", ".", ".."):
                raise ValueError(f"no folder below: {part!r}")
            fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                         dir_fd=folder_fd(tree, parent, folders))
        folders[folder] = fd
    return folders[folder]


def answer_job(job: tuple, size: int, data: bytes | None) -> tuple:
    """The answer (size, doc) to a job (kind, path, blob, parse budget, words wanted, size
    limit, git directory) whose blob was read: doc is the documenter's, or why the blob is not
    documented (a string: too large, binary), or None where git did not have it."""
    kind, path, _, budget, words = job[:5]
    if size < 0:
        return size, None
    skipped = skip_status(data)
    if skipped:
        return size, skipped
    if kind == LEXICAL:
        return size, minimal_record(path, data, "")
    doc = document_text(path, data, budget, words)
    for e in doc["entries"]:
        with_search_words(e)
    return size, doc


def serve_documenting() -> int:
    """A documenting process: answer each group of jobs read from stdin on stdout, reading
    their blobs through a `git cat-file` of its own, until stdin ends or POOL_IDLE seconds
    pass without one."""
    import select
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C in the worker's terminal is its to take
    readers: dict = {}  # git directory -> its BlobReader
    try:
        while select.select([sys.stdin], [], [], POOL_IDLE)[0]:
            group = receive_message(sys.stdin.buffer.raw)
            if group is None:
                break
            reader = readers.get(group[0][6])
            if reader is None or not reader.alive():
                reader = readers[group[0][6]] = BlobReader(group[0][6])
            send_message(sys.stdout.buffer.raw, [answer_job(job, size, data) for job, (size, data)
                                                 in zip(group, read_jobs(group, reader))])
    except BrokenPipeError:  # the worker is gone or gave up on this answer (or git ended)
        pass
    finally:
        for reader in readers.values():
            reader.close()
    return EXIT_OK


def send_message(stream, value) -> None:
    """Write one value (marshal, after its length) to a pipe."""
    write_all(stream, message_bytes(value))


def message_bytes(value) -> bytes:
    """One value as send_message writes it."""
    import marshal

    body = marshal.dumps(value)
    return len(body).to_bytes(8, "big") + body


def write_all(stream, data: bytes) -> None:
    """Write all of data to a pipe."""
    view = memoryview(data)
    while view:
        view = view[os.write(stream.fileno(), view):]


def receive_message(stream):
    """Read one value written by send_message; None if the pipe ended first."""
    import marshal

    header = read_exactly(stream.fileno(), 8)
    body = header and read_exactly(stream.fileno(), int.from_bytes(header, "big"))
    return None if body is None else marshal.loads(body)


def read_exactly(fd: int, size: int) -> bytes | None:
    """size bytes from a file descriptor, or None if it ends first."""
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------------------------------------
# The worker process: the Huey consumer, its pid-file lock, heartbeat, wake-up FIFO and log.
# ---------------------------------------------------------------------------------------------

WORKER_LOG_NAME = "cq"


def log(message: str, error: bool = False) -> None:
    """Write to the worker log (a no-op outside the worker, where logging is not set up)."""
    if "logging" in sys.modules:
        import logging

        logging.getLogger(WORKER_LOG_NAME).log(logging.ERROR if error else logging.INFO, message)


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


def acquire_worker_lock(repo: Repo) -> int:
    """Take the pid-file lock that marks the live worker; CqError if another worker has it."""
    fd = open_state_file(repo.state_path(PID_FILE), os.O_RDWR | os.O_CREAT)
    # A probe holds a shared lock for microseconds; a worker holds it for good.
    if not lock_within(fd, 2.0):
        os.close(fd)
        raise CqError("a worker is already running for this repository")
    return fd


def runs_this_cq(record: dict) -> bool:
    """True if a worker's pid record is of this cq and index schema (a worker of another
    would fight this one over the index, each rebuilding it for its own schema)."""
    return record.get("version") == VERSION and record.get("schema") == SCHEMA_VERSION


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


class WorkerActivity:
    """Counters and in-flight tasks, fed by Huey signals and read by the heartbeat; and the
    progress of documenting threads, which beat for the heartbeat thread when it is starved."""

    last_progress = 0.0  # when a documenting thread last finished a file (one worker a process)
    on_progress = None  # set by WorkerLoop: beats if the heartbeat is overdue

    def __init__(self):
        import threading

        self.lock = threading.Lock()
        self.done = 0
        self.failed = 0
        self.current: dict = {}
        self.paused: tuple | None = None  # (until, why) of the external documenter

    @classmethod
    def progress(cls) -> None:
        """A documenting thread finished a unit of work: the worker is alive and working."""
        cls.last_progress = time.time()
        if cls.on_progress is not None:
            cls.on_progress()

    def connect(self, huey) -> None:
        """Subscribe to the Huey signals that change what the worker is doing."""
        from huey import signals as S

        @huey.signal(S.SIGNAL_EXECUTING)
        def executing(signal, task, *args):
            with self.lock:
                self.current[task.id] = {"task": task.name, "since": time.time(),
                                         "detail": describe_task(task)}

        @huey.signal(S.SIGNAL_COMPLETE, S.SIGNAL_ERROR, S.SIGNAL_INTERRUPTED)
        def finished(signal, task, *args):
            with self.lock:
                self.current.pop(task.id, None)
                if signal == S.SIGNAL_COMPLETE:
                    self.done += 1
                elif signal == S.SIGNAL_ERROR:
                    self.failed += 1
            if signal == S.SIGNAL_ERROR:
                Problems.report("task", f"{task.name} failed: {args[0] if args else '?'}")
            elif signal == S.SIGNAL_COMPLETE:
                Problems.clear("task")
                self.progress()
            if signal == S.SIGNAL_INTERRUPTED:
                # Huey deleted the task before running it; put it back so it is not lost.
                huey.enqueue(task)
                log(f"task {task.name} {task.id} was interrupted; queued again")

    def calling(self, path: str) -> None:
        """A summarizer thread sends path to the external documenter."""
        import threading

        with self.lock:
            self.current[f"summarize-{threading.get_ident()}"] = {
                "task": "summarize", "since": time.time(), "detail": path}

    def called(self, path: str) -> None:
        """The call about path is over."""
        import threading

        with self.lock:
            self.current.pop(f"summarize-{threading.get_ident()}", None)

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
            return {"tasks_done": self.done, "tasks_failed": self.failed,
                    "progress_at": self.last_progress, **paused,
                    "current": json.dumps(list(self.current.values())[:most])}


class SummaryWork:
    """Set when new built-in records arrive, so that the summarizer looks for work at once."""

    arrived = None  # a threading.Event, in the worker only

    @classmethod
    def wake(cls) -> None:
        """There may be new files to summarise."""
        if cls.arrived is not None:
            cls.arrived.set()


def backoff_seconds(config: Config, strikes: int) -> float:
    """The pause after `strikes` limits (with no stated reset) or breaker trips in a row."""
    base = config.documenter_backoff
    return min(base * 2 ** min(strikes - 1, 30), max(BACKOFF_CAP, base))


def next_midnight(now: float) -> float:
    """The start of the next local day, when a daily budget starts afresh."""
    import datetime

    day = datetime.datetime.fromtimestamp(now).date() + datetime.timedelta(days=1)
    return datetime.datetime.combine(day, datetime.time()).timestamp()


def documenter_pause(index: Index, config: Config, documenter: ExternalDocumenter,
                     now: float) -> tuple[float, str]:
    """(until, why) the external documenter is paused: a usage limit, the circuit breaker or
    the daily budget; (0, '') when it may be called."""
    if config.documenter_budget and index.spent_today() >= config.documenter_budget:
        return next_midnight(now), (f"spent ${index.spent_today():.2f} today; the daily "
                                    f"budget, cq.documenterBudget, is "
                                    f"${config.documenter_budget:g}")
    until, reason, _ = index.pause(documenter.key)
    return (until, reason) if until > now else (0.0, "")


class Summarizer:
    """The external documenter's threads (cq.documenterJobs of them).  Built-in records come
    first (they are Huey tasks); these threads then send each text file to the documenter,
    the most recently documented first, and store the answers.  The index is the to-do list:
    a call cut short by a stop or a kill -9 is simply still to do.  A usage limit pauses all
    calls until it resets; cq.documenterFailures failures in a row open a circuit breaker."""

    def __init__(self, repo: Repo, config: Config, activity: WorkerActivity):
        import threading

        self.repo, self.activity = repo, activity
        self.config = FreshConfig(repo, lambda problem: log(f"summarizer: {problem}",
                                                            error=True), config)
        self.stop_taking = threading.Event()
        self.lock = threading.Lock()
        self.claimed: set = set()
        self.queue: list = []
        self.queue_key = ""
        self.failures_in_row = 0
        self.half_open = False  # the breaker closed again: one more failure reopens it
        self.trial = False  # a half-open breaker's one call is in flight
        SummaryWork.arrived = threading.Event()
        self.threads = [threading.Thread(target=self.run, name=f"summarizer-{n}", daemon=True)
                        for n in range(config.documenter_jobs)]

    def start(self) -> None:
        """Start the threads."""
        for thread in self.threads:
            thread.start()

    def stop(self, deadline: float) -> None:
        """Take no more calls; wait (until the monotonic deadline) for those in flight."""
        self.stop_taking.set()
        SummaryWork.wake()
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def run(self) -> None:
        """One thread: summarise until the worker stops; an error (logged) costs a pause and
        a fresh connection and git reader, never the thread."""
        while not self.stop_taking.is_set():
            reader = LazyBlobReader(self.repo.common_dir)
            try:
                with Index(self.repo) as index:
                    while not self.stop_taking.is_set():
                        wait = self.step(index, reader)
                        if wait and SummaryWork.arrived.wait(wait):
                            SummaryWork.arrived.clear()
                            self.queue = []  # new records go ahead of the rest
            except Exception as exc:  # noqa: BLE001 - logged; the thread carries on
                repair_once(self.repo, exc)
                log(f"summarizer: {type(exc).__name__}: {exc}", error=True)
                self.stop_taking.wait(5.0)
            finally:
                reader.close()

    def step(self, index: Index, reader: LazyBlobReader) -> float:
        """Summarise one file; how long to wait before the next (0 to go on at once)."""
        config = self.config()
        documenter = external_documenter(config)
        if documenter is None:
            self.activity.paused = None
            return 2.0
        now = time.time()
        until, why = documenter_pause(index, config, documenter, now)
        self.activity.paused = (until, why) if until else None
        if until:
            return min(until - now, 5.0)
        with self.lock:
            if self.trial:
                return 0.5  # the breaker's trial call decides first
            trial = self.trial = self.half_open
        job = None
        try:
            job = self.claim(index, documenter, config)
            if job is None:
                return 15.0  # new records and pokes wake it sooner
            self.summarize(index, reader, config, documenter, *job)
        finally:
            with self.lock:
                self.claimed.discard(job and job[0])
                self.trial = self.trial and not trial
        return 0.0 if self.failures_in_row == 0 else 0.5  # no spinning on failures

    def claim(self, index: Index, documenter: ExternalDocumenter,
              config: Config) -> tuple | None:
        """The next file no other thread is on, or None when all are done."""
        with self.lock:
            if self.queue_key != documenter.key:
                self.queue, self.queue_key = [], documenter.key
            if not self.queue:
                self.queue = [job for job in index.pending_summaries(
                    documenter.key, config.documenter_max_bytes, 16 + len(self.claimed))
                    if job[0] not in self.claimed]
            while self.queue:
                job = self.queue.pop(0)
                if job[0] not in self.claimed:
                    self.claimed.add(job[0])
                    return job
        return None

    def summarize(self, index: Index, reader: LazyBlobReader, config: Config,
                  documenter: ExternalDocumenter, blob: str, path: str, language: str) -> None:
        """Send one file (unless the same documenter summarised this content before)."""
        known = index.known_summary(blob, documenter.key)
        if known:
            with index.transaction():
                index.use_summary(blob, documenter.key, documenter.name, *known)
            return
        size, data = reader.read(blob, config.documenter_max_bytes)
        if data is None:  # the pending query saw it fit: so it is gone from git
            index.record_summary_failure(blob, documenter.key, path,
                                         f"blob {blob} is missing from the object database")
            return
        self.activity.calling(path)
        try:
            answer = call_documenter(self.repo, config, documenter, path, language, data)
            if not answer.summary:
                raise DocumenterFailed("cq.documenter answered with an empty summary",
                                       answer.cost)
        except WorkerStopping:  # the call was made: it counts, though nothing came of it
            self.count(index, documenter, None)
            log(f"summary of {path} cut short by the stop; it is asked for again later")
            return
        except LimitReached as exc:
            self.count(index, documenter, exc.cost)
            self.limited(index, config, documenter, exc)
            return
        except DocumenterFailed as exc:
            self.count(index, documenter, exc.cost)
            self.failed(index, config, documenter, blob, path, exc)
            return
        finally:
            self.activity.called(path)
        with index.transaction():
            index.count_call(documenter.key, answer.cost, answer.tokens)
            index.store_summary(blob, documenter.key, documenter.name, path, answer)
        with self.lock, index.transaction():
            self.failures_in_row, self.half_open = 0, False
            until, _, strikes = index.pause(documenter.key)
            if strikes and until <= time.time():  # a pause still running stays
                index.set_pause(documenter.key, 0.0, "", 0)
        log(f"summarised {path} ({size} bytes) with {documenter.name}")
        WorkerActivity.progress()

    def count(self, index: Index, documenter: ExternalDocumenter, cost: float | None) -> None:
        """Tally one call that brought no summary."""
        with index.transaction():
            index.count_call(documenter.key, cost)

    def limited(self, index: Index, config: Config, documenter: ExternalDocumenter,
                exc: LimitReached) -> None:
        """Pause every call until the limit resets (or for the back-off when it says not)."""
        with self.lock, index.transaction():
            until, _, strikes = index.pause(documenter.key)
            now = time.time()
            if until > now and (exc.until or 0) <= until:
                return  # paused as long already (another call met the same limit)
            until = exc.until or now + backoff_seconds(config, strikes + 1)
            index.set_pause(documenter.key, until, f"usage limit: {exc}", strikes + 1)
        log(f"{documenter.name} hit a usage limit ({exc}); paused until "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(until))}", error=True)

    def failed(self, index: Index, config: Config, documenter: ExternalDocumenter, blob: str,
               path: str, exc: DocumenterFailed) -> None:
        """Record one failure (not the file's when the documenter cannot run at all); open
        the breaker after cq.documenterFailures in a row, or one after it closed again."""
        if not isinstance(exc, DocumenterBroken):
            index.record_summary_failure(blob, documenter.key, path, str(exc))
        log(f"{documenter.name} failed on {path}: {exc}", error=True)
        with self.lock, index.transaction():
            self.failures_in_row += 1
            if self.failures_in_row < config.documenter_failures and not self.half_open:
                return
            until, _, strikes = index.pause(documenter.key)
            if until > time.time():
                return
            until = time.time() + backoff_seconds(config, strikes + 1)
            reason = (f"circuit breaker: {self.failures_in_row} failure(s) in a row, the last: "
                      f"{exc}")
            index.set_pause(documenter.key, until, reason, strikes + 1)
            self.failures_in_row, self.half_open = 0, True
        log(f"{documenter.name}: {reason}; no calls until "
            f"{time.strftime('%H:%M:%S', time.localtime(until))}", error=True)


def describe_task(task) -> str:
    """A short human description of a queued task."""
    args = task.args or ()
    if task.name in ("document", "lexical") and args:
        paths = [p for _, p in args[0]]
        return f"{len(paths)} file(s): {', '.join(paths[:3])}{' ...' if len(paths) > 3 else ''}"
    if task.name == "sync" and args:
        return f"worktree {args[0]}"
    return ""


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


class WorkerLoop:
    """The worker's own threads: the heartbeat and the FIFO listener that turns hook pokes and
    timers into sync and reconcile tasks."""

    def __init__(self, repo: Repo, config: Config, huey, activity: WorkerActivity):
        import threading

        self.repo, self.config, self.huey, self.activity = repo, config, huey, activity
        self.stopping = threading.Event()
        self.started_at = time.time()
        self.threads = [threading.Thread(target=self.guard, args=(f,), name=f.__name__,
                                         daemon=True)
                        for f in (self.beat_forever, self.listen_forever)]
        self.beat_lock = threading.Lock()
        self.last_beat = 0.0
        self.queue_length = huey.pending_count()
        self.queue_reader = None  # the heartbeat thread's own connection to queue.db
        self.heartbeat = Heartbeat(repo.state_path(HEARTBEAT_FILE))

    def start(self) -> None:
        """Start the heartbeat and listener threads."""
        self.beat()
        WorkerActivity.on_progress = self.beat_if_due
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        """Stop both threads and remove the heartbeat."""
        WorkerActivity.on_progress = None
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
        import sqlite3

        try:
            if self.queue_reader is None:
                self.queue_reader = connect_database(self.repo.state_path(QUEUE_DB), True)
                self.queue_reader.execute("PRAGMA busy_timeout = 200")
            self.queue_length = self.queue_reader.execute(
                "SELECT COUNT(*) FROM task").fetchone()[0]
        except sqlite3.Error as exc:
            log(f"heartbeat: could not count the queue ({exc}); showing the last count")
        return self.queue_length

    def beat_forever(self) -> None:
        """Beat every heartbeat interval until stopped."""
        try:
            while not self.stopping.wait(self.config.heartbeat_interval):
                self.count_queue()
                self.beat()
        finally:
            if self.queue_reader is not None:
                self.queue_reader.close()
                self.queue_reader = None

    def listen_forever(self) -> None:
        """Wait for pokes on the FIFO; sync poked worktrees; reconcile on a timer."""
        import select

        fifo = open_wake_fifo(self.repo, os.O_RDONLY)
        keep_open = os.open(self.repo.state_path(WAKE_FIFO),
                            os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # never see EOF
        try:
            # Work left queued by the last worker may have been cut short by a crash, which
            # reconciliation only sees once that queue has run: look again when it drains.
            recheck_when_drained = self.huey.pending_count() > 0
            self.huey.cq_tasks["reconcile"]()
            next_reconcile = time.monotonic() + self.config.reconcile_interval
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
                    self.huey.cq_tasks["reconcile"]()
                    next_reconcile = time.monotonic() + self.config.reconcile_interval
        finally:
            os.close(fifo)
            os.close(keep_open)

    def idle(self) -> bool:
        """True when nothing is queued or running."""
        return not self.activity.snapshot_current() and self.huey.pending_count() == 0

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
                self.huey.cq_tasks["sync"](git_dir)


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
        from huey.consumer import ConsumerStopped

        for done in repair_at_start(repo):
            log(done, error=True)
        remove_stale_rooms()
        limit_malloc_arenas()
        huey = task_queue(repo)
        huey.cq_config = config
        activity = WorkerActivity()
        activity.connect(huey)
        consumer = huey.create_consumer(
            workers=config.workers, worker_type="thread", periodic=False, flush_locks=True,
            graceful_signal="TERM", shutdown_timeout=config.shutdown_timeout,
            initial_delay=0.02, backoff=1.5, max_delay=0.1, check_worker_health=True)
        # Huey restarts on SIGHUP with os.execl, which would drop our lock: stop gracefully.
        consumer._signal_actions[signal.SIGHUP] = (False, True)
        loop = WorkerLoop(repo, config, huey, activity)
        summarizer = Summarizer(repo, config, activity)
        consumer.start()
        stopping = stop_summarizer_on_signals(summarizer)
        loop.start()
        summarizer.start()
        log(f"worker {os.getpid()} started (cq {VERSION}, {config.workers} thread(s))")
        if ready_fd is not None:
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)
        health = time.monotonic()
        while True:
            try:
                health = consumer.loop(health)
            except ConsumerStopped:
                break
        huey.notify_interrupted_tasks()
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
        return EXIT_OK
    finally:
        os.close(lock_fd)


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
    tail = "\n".join(tail_lines(repo.state_path(LOG_FILE), 10))
    why = f"exited with status {code}" if code is not None else \
        f"did not report ready within {wait:.0f}s"
    raise CqError(f"the worker failed to start ({why}); the log ends with:\n{tail}")


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
        cached = _QUEUES.pop(repo.common_dir, None)
        if cached is not None:
            cached.storage.close()
        done = []
        for path, problem in damaged.items():
            aside = move_aside(path)
            done.append(f"{os.path.basename(path)} was damaged ({problem}); moved it aside "
                        f"to {aside} and started a new one")
        cleanup_locked(repo)
        Index(repo).db.close()  # a fresh, empty index: readers see it at once
        for git_dir in worktree_git_dirs(repo.common_dir):
            mark_moved(Repo(repo.common_dir, git_dir))
        rebuild = repo.state_path(INDEX_DB) in damaged
        if state.alive or (rebuild and config.autostart):
            start_locked(repo, None, 10.0)
            if rebuild:
                done.append("the worker is rebuilding the index from git (see: cq index status)")
        elif rebuild:
            done.append("start the worker to rebuild the index from git: cq worker start")
    return done


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


def follow_log(path: str, count: int) -> None:
    """Print the last lines, then follow the log across rotations until interrupted."""
    for line in tail_lines(path, count):
        print(display(line), flush=True)
    fd = open_state_file(path, os.O_RDONLY)
    inode, position = os.fstat(fd).st_ino, os.fstat(fd).st_size
    try:
        while True:
            data = os.pread(fd, 65536, position)
            if data:
                position += len(data)
                sys.stdout.write(display(data.decode(errors="replace"), keep_newlines=True))
                sys.stdout.flush()
                continue
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            if current is not None and current.st_ino != inode:
                # Rotated: drain what the old file still had (done above), then reopen.
                os.close(fd)
                fd = open_state_file(path, os.O_RDONLY)
                inode, position = os.fstat(fd).st_ino, 0
                continue
            if current is not None and current.st_size < position:
                position = 0
            time.sleep(0.1)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# The hooks: the copy-in scripts in hooks/, installing and chaining them, and `cq hook run`.
# ---------------------------------------------------------------------------------------------

HOOK_NAMES = ("post-commit", "post-merge", "post-checkout", "post-rewrite")
HOOK_MARKER = b"# cq-hook"
CHAINED_SUFFIX = ".cq-chained"


def hook_script() -> bytes:
    """The hook script shipped with this cq (from the archive or the source tree)."""
    if running_archive():
        return __loader__.get_data("hooks/post-commit")  # a name inside the archive
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "hooks", "post-commit"),
              "rb") as f:
        return f.read()


def hooks_dir(repo: Repo, cwd: str) -> str:
    """Where git looks for hooks in this worktree (honours core.hooksPath and worktrees)."""
    out = run_git(["rev-parse", "--git-path", "hooks"], cwd=cwd, env=os.environ).stdout
    return os.path.normpath(os.path.join(cwd, os.fsdecode(out).strip()))


def work_tree(cwd: str) -> str | None:
    """The top of the working tree, or None in a bare repository."""
    proc = run_git(["rev-parse", "--show-toplevel"], cwd=cwd, check=False, env=os.environ)
    return os.fsdecode(proc.stdout).strip() or None if proc.returncode == 0 else None


def is_cq_hook(path: str) -> bool:
    """True if the file at path is one of cq's hook scripts (any version)."""
    try:
        with open(path, "rb") as f:
            return HOOK_MARKER in f.read(4096)
    except OSError:
        return False


def hook_states(directory: str) -> dict[str, str]:
    """Each hook's state: installed, out of date, foreign (not chained) or missing."""
    script = hook_script()
    states = {}
    for name in HOOK_NAMES:
        path = os.path.join(directory, name)
        if not os.path.lexists(path):
            states[name] = "missing"
        elif is_cq_hook(path):
            with open(path, "rb") as f:
                current = f.read() == script
            chained = os.path.lexists(path + CHAINED_SUFFIX)
            states[name] = ("installed" if current else "out of date") + \
                (", chains a foreign hook" if chained else "")
        else:
            states[name] = "foreign hook, cq not installed"
    return states


def install_hooks(repo: Repo, cwd: str) -> list[str]:
    """Install cq's hooks, keeping foreign ones as chained hooks; returns what was done."""
    directory = os.path.realpath(hooks_dir(repo, cwd))  # symlinks resolved before judging
    if all(state.startswith("installed") for state in hook_states(directory).values()):
        return []  # in place already, perhaps copied by hand where cq will not write
    top = work_tree(cwd)
    top = os.path.realpath(top) if top else None
    inside = [repo.common_dir] + ([top] if top else [])
    if not any(os.path.commonpath([directory, root]) == root for root in inside):
        refuse_hooks_dir(repo, directory, "is outside this repository (core.hooksPath)")
    in_git_dir = os.path.commonpath([directory, repo.common_dir]) == repo.common_dir
    if top and not in_git_dir and os.path.commonpath([directory, top]) == top and \
            not git_ignores(cwd, os.path.join(directory, HOOK_NAMES[0])):
        refuse_hooks_dir(repo, directory, "is in the working tree and not ignored by git "
                         "(husky before v9?), so cq's hooks could be committed")
    os.makedirs(directory, exist_ok=True)
    script = hook_script()
    done = []
    for name in HOOK_NAMES:
        path = os.path.join(directory, name)
        if os.path.lexists(path) and not is_cq_hook(path):
            if os.path.lexists(path + CHAINED_SUFFIX):
                raise CqError(f"both {path} and {path}{CHAINED_SUFFIX} exist; move one away")
            os.rename(path, path + CHAINED_SUFFIX)
            done.append(f"{name}: kept the existing hook as {name}{CHAINED_SUFFIX}, run first")
        elif os.path.lexists(path):
            with open(path, "rb") as f:
                if f.read() == script:
                    continue
        write_executable(path, script)
        done.append(f"{name}: installed")
    return done


def refuse_hooks_dir(repo: Repo, directory: str, why: str) -> None:
    """Refuse to install into directory, printing the exact manual step instead."""
    write_hook_copies(repo)
    raise CqError(f"hooks path {directory} {why}; cq will not write there. To install by "
                  f"hand: {'; '.join(manual_install(repo, directory))}")


def manual_install(repo: Repo, directory: str) -> list[str]:
    """Shell commands that install cq's hooks into directory as `hook install` would: a hook
    that is there already is kept, as the chained one, and runs first."""
    import shlex

    script = hook_script()
    commands = [] if os.path.isdir(directory) else [f"mkdir -p {shlex.quote(directory)}"]
    for name in HOOK_NAMES:
        source = shlex.quote(os.path.join(repo.state_path("hooks"), name))
        target = os.path.join(directory, name)
        if is_cq_hook(target):
            with open(target, "rb") as f:
                if f.read() == script:
                    continue
        elif os.path.lexists(target):
            if os.path.lexists(target + CHAINED_SUFFIX):
                raise CqError(f"both {target} and {target}{CHAINED_SUFFIX} exist; move one "
                              "away")
            commands.append(f"mv {shlex.quote(target)} {shlex.quote(target + CHAINED_SUFFIX)}")
        commands.append(f"cp {source} {shlex.quote(target)}")
    return commands


def git_ignores(cwd: str, path: str) -> bool:
    """True if git ignores path (so a file written there is never committed)."""
    return run_git(["check-ignore", "-q", path], cwd=cwd, check=False,
                   env=os.environ).returncode == 0


def write_executable(path: str, data: bytes) -> None:
    """Replace path with an executable file, never writing through a symlink planted at the
    temporary name (a hooks directory may be in the working tree)."""
    tmp = f"{path}.cq-tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o755)
    except FileExistsError:
        os.unlink(tmp)  # removes a link itself, never its target
        fd = os.open(tmp, flags, 0o755)
    try:
        os.fchmod(fd, 0o755)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_hook_copies(repo: Repo) -> None:
    """Put ready-to-copy hook scripts under the state directory for manual installs."""
    ensure_state_dir(repo)
    target = repo.state_path("hooks")
    try:
        os.mkdir(target, 0o700)
    except FileExistsError:
        pass
    check_own_directory(target)
    for name in HOOK_NAMES:
        write_executable(os.path.join(target, name), hook_script())


def uninstall_hooks(repo: Repo, cwd: str) -> list[str]:
    """Remove cq's hooks and put chained foreign hooks back, byte for byte."""
    directory = hooks_dir(repo, cwd)
    done = []
    for name in HOOK_NAMES:
        path = os.path.join(directory, name)
        if is_cq_hook(path):
            os.unlink(path)
            done.append(f"{name}: removed")
        if os.path.lexists(path + CHAINED_SUFFIX) and not os.path.lexists(path):
            os.rename(path + CHAINED_SUFFIX, path)
            done.append(f"{name}: restored the original hook")
    return done


def hook_acts(name: str, args: list[str], git_dir: str) -> bool:
    """Whether this hook event can have moved HEAD in a way the index must follow."""
    if name == "post-commit":
        return not rebase_in_progress(git_dir)  # a rebase is handled once, by post-rewrite
    if name == "post-checkout":
        return len(args) >= 3 and args[2] == "1" and args[0] != args[1]
    if name == "post-rewrite":
        return bool(args) and args[0] == "rebase"  # amend already fired post-commit
    return name == "post-merge"


def poke_worker(repo: Repo) -> bool:
    """Wake the worker through its FIFO; False if no worker is listening."""
    try:
        fd = open_wake_fifo(repo, os.O_WRONLY)
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


def mark_moved(repo: Repo) -> None:
    """Record durably that this worktree's HEAD moved (the worker consumes the marker)."""
    import hashlib

    ensure_state_dir(repo)
    name = hashlib.sha1(os.fsencode(repo.git_dir)).hexdigest()
    write_state_file(os.path.join(repo.state_path(PENDING_DIR), name),
                     os.fsencode(repo.git_dir), durable=True)


def run_hook(repo: Repo, name: str, args: list[str]) -> None:
    """The hot path behind every hook: record, poke or start the worker, return."""
    if name not in HOOK_NAMES:
        raise CqError(f"unknown hook {name!r}; expected one of {', '.join(HOOK_NAMES)}",
                      EXIT_USAGE)
    if not hook_acts(name, args, repo.git_dir):
        return
    mark_moved(repo)
    if not poke_worker(repo):
        config = load_config(repo)
        if not config.autostart:
            append_hook_log(repo, f"{name}: the worker is not running and cq.autostart is "
                            "off; the change is recorded (run: cq worker start)")
            return
        start_worker(repo)
    clear_hook_problems(repo)


# ---------------------------------------------------------------------------------------------
# The MCP server: the index served to AI assistants over the Model Context Protocol, as
# newline-delimited JSON-RPC 2.0 on stdio (or POSTed over HTTP), with the working tree laid
# over it.  A table of tools (name, schemas, handler); the handlers call what the CLI calls.
# ---------------------------------------------------------------------------------------------

MCP_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")  # newest first
MCP_TEXT_CAP = 16_000  # characters of one answer's text (about 4,000 tokens)
MCP_HARD_CAP = 36_000  # no answer is longer, whatever a client asks for
MCP_BODY_CAP = 1 << 20  # bytes of one HTTP request
MCP_INSTRUCTIONS = ("cq searches a documentation index of this git repository, kept fresh by a "
                    "background worker. Use search for code by words or identifiers, symbol "
                    "for where a name is defined, outline for one file, files to list files, "
                    "status for freshness. Hits say whether they are fresh, edited in the "
                    "working tree, or stale.")
HIT_SCHEMA = {"type": "object", "properties": {
    "path": {"type": "string"}, "line": {"type": "integer"}, "kind": {"type": "string"},
    "symbol": {"type": "string"}, "signature": {"type": "string"}, "doc": {"type": "string"},
    "score": {"type": "number"}, "freshness": {"enum": ["fresh", "edited", "stale"]},
    "matched_summary_by": {"type": "string"}},
    "required": ["path", "line", "kind", "symbol", "freshness"]}
STATE_SCHEMA = {"indexed_commit": {"type": ["string", "null"]},
                "head": {"type": ["string", "null"]}, "catching_up": {"type": "boolean"},
                "note": {"type": "string"}}
PAGED_SCHEMA = {"next_cursor": {"type": ["string", "null"]}}


def tool(description: str, properties: dict, required: tuple, output: dict) -> dict:
    """One tools/list entry: read-only, idempotent, with both schemas."""
    return {"description": description,
            "inputSchema": {"type": "object", "properties": properties,
                            "required": list(required), "additionalProperties": False},
            "outputSchema": {"type": "object", "properties": {**output, **STATE_SCHEMA}},
            "annotations": {"readOnlyHint": True, "idempotentHint": True,
                            "openWorldHint": False}}


MCP_TOOLS = {
    "search": tool(
        "Search code by words or identifiers (any may match; more matched words rank first).",
        {"query": {"type": "string", "description": "words or identifiers, e.g. 'retry "
                   "backoff' or 'Builder.WriteString'"},
         "path": {"type": "string", "description": "folder, path prefix or glob"},
         "language": {"type": "string", "description": "e.g. python, go, typescript"},
         "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
         "cursor": {"type": "string", "description": "next_cursor of an earlier answer"}},
        ("query",), {"results": {"type": "array", "items": HIT_SCHEMA}, **PAGED_SCHEMA}),
    "symbol": tool(
        "Where a name is defined (plain or qualified: 'parse_config', 'Regex::replace').",
        {"name": {"type": "string", "description": "the identifier"}},
        ("name",), {"results": {"type": "array", "items": HIT_SCHEMA}}),
    "outline": tool(
        "One file's documentation as it is in the working tree now: summary and definitions.",
        {"path": {"type": "string", "description": "path from the repository's top"}},
        ("path",), {"path": {"type": "string"}, "language": {"type": "string"},
                    "summary": {"type": "string"}, "summary_by": {"type": "string"},
                    "freshness": {"type": "string"},
                    "entries": {"type": "array", "items": {"type": "object"}}}),
    "files": tool(
        "Indexed files under a path, with language and one-line summary, page by page.",
        {"path_glob": {"type": "string", "description": "folder, prefix or glob"},
         "cursor": {"type": "string"}},
        (), {"files": {"type": "array", "items": {"type": "object"}}, **PAGED_SCHEMA}),
    "status": tool(
        "Index freshness per worktree (indexed commit vs HEAD), pending and failed files, "
        "the worker's state, the external documenter's progress.", {}, (),
        {"worktrees": {"type": "array"}, "worker": {"type": "string"},
         "summaries": {"type": ["object", "null"]}}),
}


class ToolError(Exception):
    """A tool call the model can correct: a result with isError, never a protocol error."""


class McpServer:
    """One MCP session: a JSON-RPC dispatcher over the tools, on one read connection."""

    def __init__(self, repo: Repo | None, cwd: str, send, watch_tree: bool = True):
        import threading

        self.repo, self.cwd, self.send = repo, cwd, send
        self.watch_tree = watch_tree  # a session of its own (stdio): worth an inotify watch
        self.cancelled: set = set()
        self.index: Index | None = None
        self.index_identity: tuple | None = None  # (device, inode) of the file it reads
        self.watch: WorktreeWatch | None = None
        self.last_overlay: tuple | None = None  # (what it reflects, WorktreeOverlay)
        self.client_roots = False
        self.roots_answered = threading.Event()  # set once the client's roots/list answer came
        self.version = MCP_VERSIONS[0]
        self.pending_checked = (0.0, 0)  # (when, count): the pending count, at most every 2 s
        self.settings: FreshConfig | None = None

    # -- JSON-RPC ---------------------------------------------------------------------------

    def handle(self, message) -> dict | None:
        """The reply to one message (None for notifications and cancelled requests)."""
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            return rpc_error(None, -32600, "not a JSON-RPC 2.0 message")
        request_id, method = message.get("id"), message.get("method")
        if method is None:
            if "result" not in message and "error" not in message:
                return rpc_error(request_id, -32600, "a request needs a method")
            if request_id == "cq-roots" and not self.roots_answered.is_set():
                self.take_roots(message)  # the answer to our roots/list; others are ignored
            return None
        if not isinstance(method, str):
            return rpc_error(request_id, -32600, "method must be a string")
        params = message.get("params") or {}
        if request_id is None:  # a notification: acted on, never answered
            if method == "notifications/cancelled" and isinstance(params, dict):
                self.cancelled.add(json_key(params.get("requestId")))
            elif method == "notifications/initialized":
                self.initialized(None, params)
            return None
        handler = MCP_METHODS.get(method)
        if handler is None:
            return rpc_error(request_id, -32601, f"method not found: {method}")
        if not isinstance(params, dict):
            return rpc_error(request_id, -32602, "params must be an object")
        try:
            result = handler(self, request_id, params)
        except McpInvalid as exc:
            return rpc_error(request_id, -32602, str(exc))
        if json_key(request_id) in self.cancelled:
            self.cancelled.discard(json_key(request_id))
            return None
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    def dispatch(self, message) -> dict | list | None:
        """The reply to a message or a batch of them (None when nothing is owed); an error
        inside one request is that request's -32603, never the end of the session."""
        if isinstance(message, list):
            if not message:
                return rpc_error(None, -32600, "an empty batch")
            replies = [r for r in map(self.safe_handle, message) if r is not None]
            return replies or None
        return self.safe_handle(message)

    def safe_handle(self, message) -> dict | None:
        """handle(), with unexpected errors reported as -32603."""
        try:
            return self.handle(message)
        except Exception as exc:  # noqa: BLE001 - one bad request must not end the session
            print(f"cq mcp: {type(exc).__name__}: {exc}", file=sys.stderr)
            request_id = message.get("id") if isinstance(message, dict) else None
            return rpc_error(request_id, -32603, f"internal error: {exc}")

    def initialize(self, request_id, params: dict) -> dict:
        """The handshake: the client's protocol version if we speak it, else our newest."""
        asked = params.get("protocolVersion")
        self.version = asked if asked in MCP_VERSIONS else MCP_VERSIONS[0]
        capabilities = params.get("capabilities")
        self.client_roots = isinstance(capabilities, dict) and "roots" in capabilities
        return {"protocolVersion": self.version,
                "capabilities": {"tools": {"listChanged": False}, "resources": {},
                                 "logging": {}},
                "serverInfo": {"name": "cq", "version": VERSION},
                "instructions": MCP_INSTRUCTIONS}

    def initialized(self, request_id, params: dict) -> None:
        """After the handshake: ask for roots when started outside a repository."""
        if self.repo is None and self.client_roots:
            self.send({"jsonrpc": "2.0", "id": "cq-roots", "method": "roots/list"})
        else:
            self.roots_answered.set()

    def take_roots(self, message: dict) -> None:
        """Serve the first root that is a git repository."""
        try:
            result = message.get("result")
            roots = result.get("roots") if isinstance(result, dict) else None
            self.choose_root(roots if isinstance(roots, list) else [])
        finally:
            self.roots_answered.set()

    def choose_root(self, roots: list) -> None:
        """The first root (a file: URI) that is a git repository becomes the one served."""
        from urllib.parse import unquote, urlsplit

        for root in roots:
            uri = root.get("uri") if isinstance(root, dict) else None
            parts = urlsplit(uri) if isinstance(uri, str) else None
            if parts is None or parts.scheme != "file" or parts.netloc not in ("", "localhost"):
                continue
            path = unquote(parts.path)
            try:
                self.repo, self.cwd = locate_repo(path), path
                return
            except CqError:
                continue

    def call_tool(self, request_id, params: dict) -> dict:
        """tools/call: a result with structuredContent and the same as text, or isError."""
        name, arguments = params.get("name"), params.get("arguments") or {}
        if not isinstance(name, str) or name not in MCP_TOOLS:
            raise McpInvalid(f"unknown tool: {name!r}")
        if not isinstance(arguments, dict):
            raise McpInvalid("arguments must be an object")
        meta = params.get("_meta")
        if self.repo is None and self.client_roots:
            self.roots_answered.wait(10)  # the answer to our roots/list may still be coming
        try:
            if self.repo is None:
                raise ToolError("cq is not serving a git repository: start `cq mcp` inside "
                                "one (or with -C DIR), or offer a root that is one")
            structured = MCP_HANDLERS[name](self, arguments,
                                            meta if isinstance(meta, dict) else {}, request_id)
        except (ToolError, CqError) as exc:
            return {"content": [{"type": "text", "text": str(exc)}], "isError": True}
        except Exception as exc:
            if type(exc).__module__ != "sqlite3":
                raise
            self.close_index()  # reopened on the next call, perhaps after a repair
            if is_damage(exc):
                start_repair(self.repo)
            return {"content": [{"type": "text", "text": f"the index could not be read "
                                 f"({exc}); ask again in a moment"}], "isError": True}
        text = compact_json(structured)
        return {"content": [{"type": "text", "text": text[:MCP_HARD_CAP]}],
                "structuredContent": structured, "isError": False}

    # -- the index, fresh ----------------------------------------------------------------------

    def open_index(self) -> Index:
        """The one read connection to the index, opened again when the file was replaced
        (a repair moves a damaged index aside and starts a new one)."""
        try:
            st = os.stat(self.repo.state_path(INDEX_DB))
            identity = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            identity = None
        if self.index is not None and identity != self.index_identity:
            self.close_index()
        if self.index is None:
            try:
                self.index = Index(self.repo, readonly=True)
            except NotIndexed as exc:
                ensure_worker(self.repo)
                raise ToolError(f"{exc}; the worker is building the index, ask again "
                                "shortly") from exc
            self.index_identity = identity
        return self.index

    def close_index(self) -> None:
        """Drop the read connection."""
        if self.index is not None:
            self.index.db.close()
            self.index = None

    def fresh_state(self, meta: dict, request_id) -> dict:
        """Bring the index to HEAD if the worker can within cq.mcpWaitMs (with progress
        notifications), and say what the answer reflects."""
        index = self.open_index()
        config = self.config()
        head = head_commit(self.repo.git_dir)
        indexed = index.worktree_commit(self.repo.git_dir)
        if indexed != head:
            mark_moved(self.repo)
            if not poke_worker(self.repo) and config.autostart:
                start_worker(self.repo)
                poke_worker(self.repo)
            deadline = time.monotonic() + config.mcp_wait_ms / 1000
            token, step, before, changed = meta.get("progressToken"), 0, indexed, None
            while time.monotonic() < deadline and json_key(request_id) not in self.cancelled:
                if indexed == head:  # and then the files of the move documented too
                    changed = self.blobs_to_await(before, head) if changed is None else changed
                    if not changed or next(index.missing_blobs(self.repo.git_dir, changed),
                                           None) is None:
                        break
                if token is not None:
                    step += 1
                    self.send({"jsonrpc": "2.0", "method": "notifications/progress",
                               "params": {"progressToken": token, "progress": step,
                                          "message": "waiting for the index to reach HEAD"}})
                time.sleep(0.05)
                indexed = index.worktree_commit(self.repo.git_dir)
        stale: set | None = set()  # None: which paths changed is unknown, so all may be
        if indexed != head:
            stale = {p for p, _, _ in changed_blobs(self.repo.common_dir, indexed, head)} \
                if indexed and head and commit_exists(self.repo.common_dir, indexed) else None
        catching_up = indexed != head
        pending = self.pending_files(index)
        note = "the index is catching up with HEAD: some hits may be stale" if catching_up \
            else ""
        if pending:
            note = (note + "; " if note else "") + f"{pending} files are still being indexed"
        return {"indexed_commit": indexed, "head": head, "catching_up": catching_up,
                "stale": stale, "note": note}

    def blobs_to_await(self, before: str | None, head: str | None) -> list:
        """The blobs a move of HEAD brought in, to wait for (none to wait for when the move
        is unknown or too large to be documented within the wait)."""
        if not (before and head and commit_exists(self.repo.common_dir, before)):
            return []
        blobs = new_blobs(changed_blobs(self.repo.common_dir, before, head))
        return blobs if len(blobs) <= LEXICAL_FIRST else []

    def pending_files(self, index: Index) -> int:
        """Files of this worktree not documented yet (counted at most every 2 seconds)."""
        when, count = self.pending_checked
        if time.monotonic() - when > 2:
            count = index.status(self.repo.git_dir)["pending"]
            self.pending_checked = (time.monotonic(), count)
        return count

    def overlay(self) -> WorktreeOverlay:
        """The working tree's edited files, documented now: the last overlay again when
        nothing in the work tree, HEAD or git's index changed since it was made."""
        if not self.watch_tree:
            return WorktreeOverlay(self.repo, self.config(), self.cwd)
        if self.watch is None or self.watch.repo is not self.repo:
            if self.watch is not None:
                self.watch.close()
            top = work_tree(self.cwd)
            if top is None:
                return WorktreeOverlay(self.repo, self.config(), self.cwd)
            self.watch, self.last_overlay = WorktreeWatch(top, self.repo), None
        config = self.config()
        key = (head_signature(self.repo), config.overlay_max_files, config.max_file_size,
               config.parse_budget)
        if self.watch.changed() or self.last_overlay is None or self.last_overlay[0] != key \
                or self.last_overlay[1].failed:
            self.last_overlay = (key, WorktreeOverlay(self.repo, config, self.cwd))
        return self.last_overlay[1]

    def config(self) -> Config:
        """The settings, read at most every 2 seconds (each read is a git process)."""
        if self.settings is None or self.settings.repo is not self.repo:
            self.settings = FreshConfig(self.repo, lambda problem: print(
                f"cq: warning: {problem}", file=sys.stderr))
        return self.settings()


class McpInvalid(Exception):
    """Bad params of a JSON-RPC request (-32602)."""


def compact_json(value) -> str:
    """A value as compact JSON text (json is imported only here and where JSON is read: the
    hot paths never need it)."""
    import json

    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def json_key(value) -> str:
    """A hashable key for a JSON-RPC id or a listing's arguments."""
    return compact_json(value)


def rpc_error(request_id, code: int, message: str) -> dict:
    """A JSON-RPC error response."""
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def freshness(path: str, edited: set, state: dict) -> str:
    """fresh, edited (differs from HEAD in the working tree) or stale (HEAD moved on)."""
    if path in edited:
        return "edited"
    stale = state["stale"]
    return "stale" if stale is None or path in stale else "fresh"


def public_state(state: dict) -> dict:
    """What every answer says it reflects."""
    return {k: state[k] for k in ("indexed_commit", "head", "catching_up", "note")}


def hit(result: dict, edited: set, state: dict) -> dict:
    """One search or symbol hit as MCP returns it."""
    return {"path": result["path"], "line": result["line"], "kind": result["kind"],
            "symbol": result["symbol"], "signature": result["signature"],
            "doc": result["doc"], "score": result["score"],
            "freshness": freshness(result["path"], edited, state),
            **({"matched_summary_by": result["matched_summary_by"]}
               if result.get("matched_summary_by") else {})}


def encode_cursor(kind: str, key: str, offset: int) -> str:
    """An opaque cursor: which listing, for which arguments, and where to go on."""
    import base64

    return base64.urlsafe_b64encode(compact_json([kind, key, offset]).encode()).decode()


def decode_cursor(cursor, kind: str, key: str) -> int:
    """The offset in a cursor made by encode_cursor for the same listing and arguments."""
    import base64
    import json

    if cursor is None:
        return 0
    try:
        found = json.loads(base64.urlsafe_b64decode(str(cursor).encode()))
        if isinstance(found, list) and found[:2] == [kind, key] and int(found[2]) >= 0:
            return int(found[2])
    except (ValueError, TypeError, IndexError, OverflowError):
        pass
    raise ToolError("that cursor does not belong to this listing; ask again without it")


def capped(items: list, budget: int = MCP_TEXT_CAP) -> int:
    """How many of the items fit the text budget (at least one)."""
    used = 0
    for count, item in enumerate(items):
        used += len(compact_json(item)) + 1
        if used > budget:
            return max(count, 1)
    return len(items)


def tool_search(server: McpServer, args: dict, meta: dict, request_id) -> dict:
    """search: the same ranking as cq search, the working tree laid over the index."""
    query = args.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ToolError("query must be a non-empty string of words or identifiers")
    limit = args.get("limit", 10)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100:
        raise ToolError("limit must be a whole number from 1 to 100")
    for key in ("path", "language"):
        if not isinstance(args.get(key, ""), str):
            raise ToolError(f"{key} must be a string")
    language = canonical_language(args["language"]) if args.get("language") else None
    key = json_key([query, args.get("path"), language])
    offset = decode_cursor(args.get("cursor"), "search", key)
    overlay = server.overlay()  # its git status runs while the index is consulted
    state = server.fresh_state(meta, request_id)
    config = server.config()
    results = search_worktree(server.open_index(), server.repo, query, overlay,
                              offset + limit + 1, path=args.get("path"), language=language,
                              demote=config.demote)
    page = [hit(r, overlay.edited, state) for r in results[offset:offset + limit]]
    shown = capped(page)
    more = offset + shown < len(results)
    note = state["note"] or ("" if overlay.complete else
                             f"more than {config.overlay_max_files} files are edited: they "
                             "are marked, not searched as they are now (cq.overlayMaxFiles)")
    if more:
        note = (note + "; " if note else "") + "more results: ask again with next_cursor"
    return {"results": page[:shown], **public_state(state), "note": note,
            "next_cursor": encode_cursor("search", key, offset + shown) if more else None}


def tool_symbol(server: McpServer, args: dict, meta: dict, request_id) -> dict:
    """symbol: the definitions a (qualified) name names; several when ambiguous."""
    name = args.get("name")
    if not isinstance(name, str) or not SearchQuery(name).last:
        raise ToolError("name must be an identifier, plain or qualified (Class.method)")
    state = server.fresh_state(meta, request_id)
    overlay = server.overlay()
    query = SearchQuery(name)
    results = [r for r in search_worktree(server.open_index(), server.repo, name, overlay, 50)
               if r["kind"] in DEFINITION_KINDS and
               names_exactly(query, r["name"], r["container"])]
    page = [hit(r, overlay.edited, state) for r in results]
    return {"results": page[:capped(page)], **public_state(state)}


def tool_outline(server: McpServer, args: dict, meta: dict, request_id) -> dict:
    """outline: one file's documentation, as the file is in the working tree now."""
    path = args.get("path")
    if not isinstance(path, str) or not path.strip():
        raise ToolError("path must be a file's path from the repository's top")
    path = os.path.normpath(path).removeprefix("./")
    try:
        os.fsencode(path)
    except UnicodeError as exc:
        raise ToolError("path holds characters no file name can have") from exc
    state = server.fresh_state(meta, request_id)
    overlay = server.overlay()
    if path in overlay.deleted:
        raise ToolError(f"{path} is deleted in the working tree")
    source = overlay.index if path in overlay.edited and overlay.complete else \
        server.open_index()
    doc = source.file_doc(server.repo.git_dir, path)
    if doc is None:
        raise ToolError(f"{path} is not a file of this repository (see the files tool)")
    entries = doc["entries"][:capped(doc["entries"])]
    return {"path": path, "language": doc["language"], "summary": doc["summary"],
            "summary_by": doc["summary_by"],
            "freshness": freshness(path, overlay.edited, state), "entries": entries,
            **public_state(state)}


def tool_files(server: McpServer, args: dict, meta: dict, request_id) -> dict:
    """files: the indexed files under a path, with language and one-line summary."""
    glob = args.get("path_glob")
    if glob is not None and not isinstance(glob, str):
        raise ToolError("path_glob must be a string: a folder, prefix or glob")
    offset = decode_cursor(args.get("cursor"), "files", json_key(glob))
    state = server.fresh_state(meta, request_id)
    matches = path_matcher(glob) or (lambda path: True)
    rows = server.open_index().db.execute(
        "SELECT f.path, d.language, d.summary FROM files f LEFT JOIN docs d ON d.blob = f.blob "
        "WHERE f.git_dir = ? AND f.excluded = '' ORDER BY f.path",
        (os.fsencode(server.repo.git_dir),)).fetchall()
    files = [{"path": os.fsdecode(p), "language": lang or "",
              "summary": (summary or "").strip().split("\n", 1)[0][:160]}
             for p, lang, summary in rows if matches(os.fsdecode(p))]
    if glob and not files:
        raise ToolError(f"no indexed file matches {glob!r}; try a folder such as 'src'")
    page = files[offset:offset + 200]
    shown = capped(page)
    more = offset + shown < len(files)
    return {"files": page[:shown], **public_state(state),
            "next_cursor": encode_cursor("files", json_key(glob), offset + shown)
            if more else None}


def tool_status(server: McpServer, args: dict, meta: dict, request_id) -> dict:
    """status: per worktree, indexed commit vs HEAD and counts; the worker's state."""
    index = server.open_index()
    worktrees = []
    for git_dir in worktree_git_dirs(server.repo.common_dir):
        counts = index.status(git_dir)
        worktrees.append({"git_dir": git_dir, "head": head_commit(git_dir),
                          "indexed_commit": index.worktree_commit(git_dir),
                          "files": counts["files"], "pending": counts["pending"],
                          "failed": counts["failed"]})
    this = next((w for w in worktrees if w["git_dir"] == server.repo.git_dir), worktrees[0])
    catching_up = this["head"] != this["indexed_commit"] or this["pending"] > 0
    summaries = summary_progress(index, server.repo.git_dir, server.config())
    if summaries:
        summaries = {k: v for k, v in summaries.items() if k != "failed_files"}
    return {"worktrees": worktrees, "worker": probe_worker(server.repo).state,
            "summaries": summaries,
            "indexed_commit": this["indexed_commit"], "head": this["head"],
            "catching_up": catching_up,
            "note": f"{this['pending']} files still to document" if this["pending"] else ""}


MCP_HANDLERS = {"search": tool_search, "symbol": tool_symbol, "outline": tool_outline,
                "files": tool_files, "status": tool_status}
MCP_METHODS = {
    "initialize": McpServer.initialize,
    "ping": lambda server, request_id, params: {},
    "tools/list": lambda server, request_id, params: {
        "tools": [{"name": name, **spec} for name, spec in MCP_TOOLS.items()]},
    "tools/call": McpServer.call_tool,
    "resources/list": lambda server, request_id, params: {"resources": []},
    "resources/templates/list": lambda server, request_id, params: {"resourceTemplates": []},
    "logging/setLevel": lambda server, request_id, params: {},
}


def serve_stdio(repo: Repo | None, cwd: str) -> int:
    """Serve MCP on stdin/stdout until EOF.  A reader thread takes messages (and marks
    cancellations at once); requests run one at a time on the one index connection."""
    import json
    import queue
    import threading

    out = sys.stdout.buffer
    write_lock = threading.Lock()

    def send(message: dict | list) -> None:
        data = compact_json(message).encode()
        with write_lock:
            out.write(data + b"\n")
            out.flush()

    server = McpServer(repo, cwd, send)
    requests: queue.Queue = queue.Queue()

    def read() -> None:
        for line in sys.stdin.buffer:
            try:
                take(line)
            except Exception as exc:  # noqa: BLE001 - the reader must outlive any one line
                print(f"cq mcp: {type(exc).__name__}: {exc}", file=sys.stderr)
        requests.put(None)

    def take(line: bytes) -> None:
        if not line.strip():
            return
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            send(rpc_error(None, -32700, "parse error: not JSON"))
            return
        if isinstance(message, dict) and "id" not in message and \
                message.get("method") == "notifications/cancelled":
            server.handle(message)  # at once: the request it names may be running
        elif isinstance(message, dict) and "method" not in message and \
                ("result" in message or "error" in message):
            server.handle(message)  # an answer to our roots/list, awaited by a request
        elif isinstance(message, dict) and message.get("method") == "server/discover":
            send(rpc_error(message.get("id"), -32601, "method not found: server/discover "
                           "(this server speaks the initialize handshake)"))
        else:
            requests.put(message)

    threading.Thread(target=read, daemon=True).start()
    while True:
        message = requests.get()
        if message is None:
            return EXIT_OK
        reply = server.dispatch(message)
        if reply is not None:
            send(reply)


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def serve_http(repo: Repo | None, cwd: str, address: str, token: str | None) -> int:
    """Serve MCP's Streamable HTTP transport: JSON-RPC POSTed to /mcp, JSON answers, a
    thread per request.  Loopback by default; any other address needs a bearer token;
    browsers' Origin headers must name this host (the DNS-rebinding rule)."""
    import hmac
    import json
    import socket
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    host, _, port = address.rpartition(":")
    host = host.strip("[]").lower() or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise CqError(f"--http takes [HOST:]PORT, not {address!r}", EXIT_USAGE)
    if host not in LOOPBACK_HOSTS and not token:
        raise CqError(f"serving on {host} needs a bearer token: git config cq.mcpToken TOKEN, "
                      "or --token-file FILE", EXIT_USAGE)

    class Handler(BaseHTTPRequestHandler):
        """One HTTP request: one JSON-RPC message (or batch)."""

        timeout = 30  # seconds a client may take to send its request
        def do_POST(self) -> None:  # the name http.server calls
            origin = self.headers.get("Origin")
            if origin and origin_host(origin) not in (*LOOPBACK_HOSTS, host):
                return self.answer(403, {"error": "origin not allowed"})
            if token and not hmac.compare_digest(
                    self.headers.get("Authorization", "").encode(), f"Bearer {token}".encode()):
                return self.answer(401, {"error": "a bearer token is required"})
            length = self.headers.get("Content-Length", "")
            if not (length.isascii() and length.isdigit()):
                return self.answer(400, rpc_error(None, -32600, "Content-Length is required"))
            if int(length) > MCP_BODY_CAP:  # read what a client would still be sending
                remaining = min(int(length), 16 * MCP_BODY_CAP)
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 65536))
                    if not chunk:
                        break
                    remaining -= len(chunk)
                self.close_connection = True
                return self.answer(413, rpc_error(None, -32600, "request too large"))
            try:
                message = json.loads(self.rfile.read(int(length)))
            except (ValueError, RecursionError):
                return self.answer(400, rpc_error(None, -32700, "parse error: not JSON"))
            if isinstance(message, dict) and message.get("method") == "server/discover":
                return self.answer(200, rpc_error(message.get("id"), -32601,
                                                  "method not found: server/discover"))
            reply = McpServer(repo, cwd, lambda notification: None,
                              watch_tree=False).dispatch(message)
            return self.answer(202, None) if reply is None else self.answer(200, reply)

        def do_GET(self) -> None:  # no server-sent events stream here
            self.answer(405, {"error": "POST JSON-RPC messages to this endpoint"})

        def answer(self, code: int, body) -> None:
            data = b"" if body is None else compact_json(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, form: str, *args) -> None:
            print(f"cq mcp: {form % args}", file=sys.stderr)

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = type("Server", (ThreadingHTTPServer,), {"address_family": family})(
        (host, int(port)), Handler)
    print(f"cq mcp: serving on http://{address if ':' in address else host + ':' + port}/mcp",
          file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return EXIT_OK


def origin_host(origin: str) -> str:
    """The host of an Origin header (scheme://host[:port]), lowercase, without brackets."""
    from urllib.parse import urlsplit

    try:
        return urlsplit(origin).hostname or ""
    except ValueError:
        return ""


def mcp_command(repo: Repo, archive: str | None) -> list[str]:
    """The command line an MCP client runs to start cq's server for this repository."""
    copy = repo.state_path(PYZ_COPY)
    pyz = copy if os.path.isfile(copy) else (archive or os.path.abspath(__file__))
    top = work_tree(repo.git_dir) or repo.common_dir
    return [sys.executable, "-I", "-S", pyz, "-C", top, "mcp"]


def mcp_client_config(repo: Repo, client: str, top: str) -> str:
    """What to paste for a client: Claude Code's command, or Cursor's or VS Code's JSON."""
    import json
    import shlex

    command = mcp_command(repo, running_archive())
    command[command.index("-C") + 1] = top
    if client == "claude":
        return "claude mcp add --transport stdio --scope project cq -- " + \
            " ".join(shlex.quote(c) for c in command)
    entry = {"type": "stdio", "command": command[0], "args": command[1:]}
    if client == "cursor":
        return f"# .cursor/mcp.json\n{json.dumps({'mcpServers': {'cq': entry}}, indent=2)}"
    return f"# .vscode/mcp.json\n{json.dumps({'servers': {'cq': entry}}, indent=2)}"


# ---------------------------------------------------------------------------------------------
# The argparse CLI: commands, output formatting, and the one place errors become exit codes.
# ---------------------------------------------------------------------------------------------

def display(text: str, keep_newlines: bool = False) -> str:
    """Text for a terminal: control characters (from file names or file contents) shown as
    escapes, so nothing in a repository can move the cursor or forge output lines."""
    return "".join(ch if (" " <= ch < "\x7f" or ch >= "\xa0" or ch == "\t" or
                          (keep_newlines and ch == "\n")) else repr(ch)[1:-1] for ch in text)


def print_json(value: object) -> None:
    """Print machine-readable output."""
    import json

    print(json.dumps(value, indent=2, sort_keys=True))


def human_seconds(seconds: float) -> str:
    """3725 -> '1h02m05s'."""
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def local_time(when: float) -> str:
    """A moment in local time: the time of day when it is today, else date and time."""
    shown = time.localtime(when)
    if time.strftime("%Y-%m-%d", shown) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", shown)
    return time.strftime("%Y-%m-%d %H:%M", shown)


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
        "last_hook_problem": last_hook_problem(repo),
        "state_dir": repo.state_dir,
    }


def print_worker_status(report: dict, verbose: bool) -> None:
    """Human-readable status lines."""
    if report["state"] in ("running", "hung", "blocked"):
        print(f"worker: {report['state']} (PID {report['pid']}, up "
              f"{human_seconds(report['uptime_seconds'] or 0)}, heartbeat "
              f"{report['heartbeat_age_seconds']}s ago)")
        print(f"queue: {report['queue_length']} pending; tasks: {report['tasks_done']} done, "
              f"{report['tasks_failed']} failed")
        if verbose:
            for item in report["current"] or []:
                print(display(f"working on: {item['task']} {item['detail']} "
                              f"(for {time.time() - item['since']:.1f}s)"))
            if not report["current"]:
                print("working on: nothing")
    else:
        print(f"worker: {report['state']}: {report['detail']}")
    if report["state"] in ("hung", "blocked"):
        print(f"warning: {report['detail']}")
    if report["documenter_paused"]:
        print(display(f"documenter: paused until {local_time(report['documenter_paused']['until'])}"
                      f" ({report['documenter_paused']['reason']})"))
    if report["problem"]:
        age = human_seconds(time.time() - report["problem"]["at"])
        print(display(f"problem ({age} ago): {report['problem']['message']}"))
    if report["last_hook_problem"]:
        print(f"last hook problem: {display(report['last_hook_problem'])}")
    if verbose:
        print(f"state: {report['state_dir']}")


def cmd_worker(args, repo: Repo) -> int:
    """cq worker start|run|stop|restart|status|logs|cleanup."""
    action = args.worker_command
    if action == "status":
        state = probe_worker(repo)
        if args.quiet:
            return state.code
        report = worker_status_report(repo, state)
        if args.json:
            print_json(report)
        else:
            print_worker_status(report, args.verbose)
        return state.code
    if action == "run":
        return run_worker(repo, args.ready_fd)
    if action in ("start", "restart"):
        if action == "restart":
            print(stop_worker(repo, args.timeout, args.force))
        pid, already = start_worker(repo)
        print(f"the worker is already running (PID {pid})" if already
              else f"started the worker (PID {pid})")
        return EXIT_OK
    if action == "stop":
        print(stop_worker(repo, args.timeout, args.force))
        return EXIT_OK
    if action == "logs":
        path = repo.state_path(LOG_FILE)
        if args.follow:
            ensure_state_dir(repo)
            os.close(open_state_file(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND))
            try:
                follow_log(path, args.lines)
            except KeyboardInterrupt:
                pass
            return EXIT_OK
        for line in tail_lines(path, args.lines):
            print(display(line))
        return EXIT_OK
    if action == "cleanup":
        done = cleanup_worker(repo)
        print("\n".join(done) if done else "nothing to clean up")
        return EXIT_OK
    raise CqError(f"unknown worker command {action}", EXIT_USAGE)


def cmd_hook(args, repo: Repo) -> int:
    """cq hook install|uninstall|status|run."""
    cwd = args.directory
    if args.hook_command == "run":
        try:
            run_hook(repo, args.name, args.args)
        except Exception as exc:  # noqa: BLE001 - a hook never fails git; status shows this
            append_hook_log(repo, f"{args.name}: {type(exc).__name__}: {exc}")
        return EXIT_OK
    if args.hook_command == "status":
        directory = hooks_dir(repo, cwd)
        print(f"hooks directory: {directory}")
        states = hook_states(directory)
        for name, state in states.items():
            print(f"{name}: {state}")
        set_up = os.path.isfile(repo.state_path(PYZ_COPY))
        if not set_up:
            print("cq is not set up in this repository: the hooks do nothing until you run "
                  "cq init")
        # 0 only when every hook is cq's current one and acts, so scripts can check it.
        return EXIT_OK if set_up and all(v.startswith("installed") for v in states.values()) \
            else EXIT_FAILURE
    done = install_hooks(repo, cwd) if args.hook_command == "install" else \
        uninstall_hooks(repo, cwd)
    print("\n".join(done) if done else "nothing to do: already as asked")
    return EXIT_OK


def ensure_worker(repo: Repo) -> None:
    """Poke the worker, starting it first if it is not running."""
    if not poke_worker(repo):
        start_worker(repo)
        poke_worker(repo)


def index_progress(repo: Repo, problems: bool = False) -> tuple[dict, bool]:
    """Counts for this worktree (with the skipped and failed files if asked) and whether the
    index matches HEAD completely."""
    with Index(repo, readonly=True) as index:
        counts = index.status(repo.git_dir)
        indexed = index.worktree_commit(repo.git_dir)
        known = repo.git_dir in index.worktrees()
        if problems:
            counts.update(index.problem_files(repo.git_dir))
    counts["head"] = head_commit(repo.git_dir)
    counts["indexed_commit"] = indexed
    current = known and indexed == counts["head"]
    counts["searchable"] = current and counts["pending"] == counts["lexical"]
    return counts, current and counts["pending"] == 0


def summary_progress(index: Index, git_dir: str, config: Config) -> dict | None:
    """The external documenter's progress in a worktree, its calls, cost and pause (None
    when no external documenter is set): for `cq index status` and MCP's status tool."""
    documenter = external_documenter(config)
    if documenter is None:
        return None
    counts = index.summary_status(git_dir, documenter.key, config.documenter_max_bytes)
    until, why = documenter_pause(index, config, documenter, time.time())
    return {"name": documenter.name, **counts, "paused_until": until or None,
            "pause_reason": why or None}


def read_summary_progress(repo: Repo) -> dict | None:
    """summary_progress for this worktree, from a fresh read of the index and settings."""
    with Index(repo, readonly=True) as index:
        return summary_progress(index, repo.git_dir, config_or_defaults(repo))


def print_summary_progress(counts: dict) -> None:
    """The external documenter's lines of `cq index status`."""
    print(display(f"documenter {counts['name']}: {counts['done']} summarised, "
                  f"{counts['pending']} pending, {counts['failed']} failed, "
                  f"{counts['too_large']} over cq.documenterMaxBytes (built-in record only)"))
    print(f"calls: {counts['calls_today']} today (${counts['cost_usd_today']:.2f}), "
          f"{counts['calls']} in all (${counts['cost_usd']:.2f})")
    if counts["paused_until"]:
        print(display(f"paused until {local_time(counts['paused_until'])}: "
                      f"{counts['pause_reason']}"))
    for item in counts["failed_files"][:20]:
        print(display(f"failed summary: {item['path']}: {item['error']}"))


PASSES = ("searchable", "documented")  # the progress bars of `cq index --wait`, in order
# A wait reads the index's counts at most this share of its time: at 50k files a reading
# takes 0.1 s of CPU, which a wait polling every 0.2 s took from the worker it waits for.
POLL_SHARE = 0.1
POLL_MIN, POLL_MAX = 0.2, 2.0  # seconds between two readings (a bar still moves)


def wait_for_index(repo: Repo, timeout: float | None = None) -> dict:
    """Block until the index matches HEAD, drawing a progress bar on a terminal for each
    pass: until every file is searchable (by its words, at least), then documented."""
    tty = sys.stdout.isatty()
    started = time.monotonic()
    first, phase = None, "searchable"
    while True:
        reading = time.monotonic()
        try:
            counts, complete = index_progress(repo)
        except NotIndexed:  # a moment before the worker has made the schema
            counts, complete = {"files": 0, "pending": 0, "lexical": 0, "searchable": False}, \
                False
        total = counts["files"]
        done = total - counts["pending"]  # documented, failed, or skipped for a reason
        progress = {"searchable": done + counts["lexical"], "documented": done}
        first = first or progress
        elapsed = max(time.monotonic() - started, 1e-3)
        last = {"searchable": complete or counts["searchable"], "documented": complete}
        for name in PASSES[PASSES.index(phase):]:  # a finished pass's bar is drawn no more
            rate = (progress[name] - first[name]) / elapsed
            draw_progress(tty, name, progress[name], total, f"{rate:.0f} files/s", last[name])
            if not last[name]:
                break
            phase = "documented"
        if complete:
            return counts
        if timeout is not None and time.monotonic() - started > timeout:
            raise CqError("the index did not catch up in time (see: cq worker status)")
        require_worker(repo, "indexing")
        pause_after_reading(reading)


def pause_after_reading(started: float) -> None:
    """Sleep between two readings of a wait, so that reading takes at most POLL_SHARE of it
    (or a reading at least every POLL_MAX seconds, however long it takes)."""
    time.sleep(min(POLL_MAX, max(POLL_MIN, (time.monotonic() - started) * (1 / POLL_SHARE - 1))))


def draw_progress(tty: bool, label: str, done: int, total: int, rate: str, last: bool) -> None:
    """One progress bar line on a terminal (ended after the last one), nothing elsewhere."""
    if tty:
        bar = "#" * (30 * done // max(total, 1))
        sys.stdout.write(f"\r{label} [{bar:<30}] {done}/{total} files, {rate} " +
                         ("\n" if last else ""))
        sys.stdout.flush()


def require_worker(repo: Repo, doing: str) -> None:
    """Raise CqError if the worker, which a wait depends on, is no longer alive."""
    state = probe_worker(repo)
    if not state.alive:
        raise CqError(f"the worker stopped while {doing} ({state.detail}); see: cq worker logs")


def estimate_summaries(repo: Repo, config: Config) -> str:
    """What the external documenter (or the Claude Code preset, when none is set) would be
    sent for HEAD of this worktree, content by content: files and bytes, less what it
    answered before (or failed on, until `cq queue retry`)."""
    documenter = external_documenter(config) or ExternalDocumenter(
        Config({"cq.documenter": "claude", "cq.documenterModel": config.documenter_model}))
    head = head_commit(repo.git_dir)
    kinds: dict = {}
    try:
        with Index(repo, readonly=True) as index:
            kinds = dict(index.db.execute(
                "SELECT d.blob, CASE WHEN d.status NOT IN ('ok', 'error', ?) THEN 'other' END "
                "FROM docs d", (LEXICAL,)))
            kinds.update(index.db.execute(
                "SELECT blob, CASE status WHEN 'ok' THEN 'done' ELSE 'failed' END "
                "FROM summaries WHERE documenter = ?", (documenter.key,)))
    except NotIndexed:
        pass
    sizes = {sha: size for path, mode, sha, size in (
        tree_entries(tree_listing(repo.common_dir, head, sizes=True)) if head else [])
        if size is not None and not skip_reason(path, mode, config)}
    counts = {"send": 0, "done": 0, "failed": 0, "large": 0, "other": 0}
    sent = 0
    for blob, size in sizes.items():
        kind = kinds.get(blob) or ("large" if size > config.documenter_max_bytes else "send")
        counts[kind] += 1
        sent += size if kind == "send" else 0
    unset = "" if config.documenter.strip() else " (not set: git config cq.documenter claude)"
    lines = [f"documenter: {documenter.name}{unset}",
             (f"would send {counts['send']} files, {sent} bytes (about {sent // 4} tokens of "
              f"file content, plus a prompt for each)"),
             (f"not sent: {counts['done']} summarised before with these settings, "
              f"{counts['failed']} failed (sent again after cq queue retry), {counts['large']} "
              f"over cq.documenterMaxBytes ({config.documenter_max_bytes} bytes), "
              f"{counts['other']} binary or skipped")]
    if not kinds and counts["send"]:
        lines.append("(nothing is indexed yet: binary files are counted as text)")
    return "\n".join(lines)


def wait_for_summaries(repo: Repo) -> dict | None:
    """After the built-in pass: block until the external documenter has summarised every
    file it takes, or is paused (a limit, the breaker, the budget), with its own bar."""
    tty = sys.stdout.isatty()
    while True:
        reading = time.monotonic()
        counts = read_summary_progress(repo)
        if counts is None:
            return None
        total = counts["done"] + counts["pending"] + counts["failed"]
        last = counts["pending"] == 0 or bool(counts["paused_until"])
        draw_progress(tty, "summaries", total - counts["pending"], total,
                      f"{counts['calls_today']} calls today", last)
        if last:
            return counts
        require_worker(repo, "summarising")
        pause_after_reading(reading)


def cmd_init(args, repo: Repo) -> int:
    """Set up cq in a repository: copy cq.pyz, install hooks, start the worker, index HEAD."""
    archive = running_archive()
    if not archive:
        raise CqError("cq init must run from the built cq.pyz (build it: python3 build_zipapp.py)")
    load_config(repo)  # a bad setting is reported here, as by every other command
    ensure_state_dir(repo)
    copy = repo.state_path(PYZ_COPY)
    if os.path.abspath(archive) != copy:
        with open(archive, "rb") as f:
            write_state_file(copy, f.read())
    write_state_file(repo.state_path(PYTHON_FILE), os.fsencode(sys.executable) + b"\n")
    state = probe_worker(repo)
    if state.alive and not runs_this_cq(state.record):
        print(stop_worker(repo, None, False))  # before its index is upgraded under it
    Index(repo).db.close()  # the schema exists (or is upgraded) before anyone waits on it
    try:
        for line in install_hooks(repo, args.directory):
            print(f"hook {line}")
    except CqError as exc:  # the index works without hooks; reconciliation still catches up
        print(f"cq: warning: {exc}", file=sys.stderr)
    pid, _ = start_worker(repo, archive=copy)  # the copy, so that hooks and worker agree
    print(f"worker running (PID {pid})")
    for git_dir in worktree_git_dirs(repo.common_dir):
        mark_moved(Repo(repo.common_dir, git_dir))
    poke_worker(repo)
    if args.no_wait:
        print("indexing in the background (see: cq index status)")
        return EXIT_OK
    counts = wait_for_index(repo)
    print(f"indexed {counts['documented']} files at {(counts['head'] or 'no commit')[:12]} "
          f"({sum(counts['skipped'].values())} skipped, {counts['failed']} failed)")
    print("for Claude Code: " + mcp_client_config(repo, "claude", work_tree(args.directory)
                                                   or repo.common_dir))
    return EXIT_OK


def cmd_index(args, repo: Repo) -> int:
    """cq index [--wait] [--rebuild] | cq index status [--json]."""
    if args.index_command == "status":
        try:
            open_for_reading(repo).db.close()
            counts, complete = index_progress(repo, problems=True)
        except CqError as exc:  # not indexed yet, or being rebuilt
            if not args.json:
                raise
            print_json({"schema": 1, "indexed": False, "complete": False, "message": str(exc)})
            return EXIT_FAILURE
        problems = counts
        counts.update(schema=1, indexed=True, complete=complete,
                      documenter=read_summary_progress(repo))
        if args.json:
            print_json(counts)
            return EXIT_OK
        print(f"HEAD {(counts['head'] or 'none')[:12]}, indexed at "
              f"{(counts['indexed_commit'] or 'nothing yet')[:12]}"
              f"{'' if complete else ' (catching up)'}")
        print(f"{counts['files']} files: {counts['documented']} documented, "
              f"{counts['pending']} pending, {counts['failed']} failed")
        if counts["lexical"]:
            print(f"lexical pass only: {counts['lexical']} of the pending files (searchable by "
                  "their words; definitions come with the full pass)")
        for reason, n in sorted(counts["skipped"].items()):
            paths = [f["path"] for f in problems["skipped_files"] if f["reason"] == reason or
                     (reason == "excluded" and f["reason"].startswith("excluded"))]
            print(display(f"skipped ({reason}): {n}: {', '.join(paths[:5])}"
                          + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")))
        for item in problems["failed_files"][:20]:
            print(display(f"failed: {item['path']}: {item['error']}"))
        if counts["failed"] > 20:
            print(f"... and {counts['failed'] - 20} more failed (see: cq queue list)")
        if counts["documenter"]:
            print_summary_progress(counts["documenter"])
        return EXIT_OK
    if args.estimate:
        print(estimate_summaries(repo, config_or_defaults(repo)))
        return EXIT_OK
    if args.repair:
        done = repair_databases(repo)
        print("\n".join(done) if done else "index.db and queue.db are sound")
        return EXIT_OK
    ensure_state_dir(repo)
    with Index(repo) as index:
        if args.rebuild:
            index.clear()
    for git_dir in worktree_git_dirs(repo.common_dir):
        mark_moved(Repo(repo.common_dir, git_dir))
    ensure_worker(repo)
    if args.wait:
        counts = wait_for_index(repo)
        print(f"index complete: {counts['documented']} files documented, "
              f"{counts['failed']} failed" + (" (see: cq queue list)" if counts["failed"] else ""))
        summaries = wait_for_summaries(repo)
        if summaries and summaries["paused_until"]:
            print(display(f"summaries: {summaries['done']} done, {summaries['pending']} "
                          f"waiting: paused until {local_time(summaries['paused_until'])} "
                          f"({summaries['pause_reason']})"))
        elif summaries:
            print(f"summaries complete: {summaries['done']} done, {summaries['failed']} failed"
                  f", {summaries['too_large']} too large")
    else:
        print("queued; the worker is bringing the index to HEAD (see: cq index status)")
    return EXIT_OK


def cmd_queue(args, repo: Repo) -> int:
    """cq queue [list|retry|purge]: what is queued or failed; retry failures; drop work."""
    action = args.queue_command or "list"
    if action == "list":  # reads only: creates neither database
        exists = check_database_files(repo.state_path(QUEUE_DB))
        tasks = task_queue(repo).pending() if exists else []
        print(f"{len(tasks)} queued task(s)")
        for task in tasks:
            print(display(f"  {task.name} {describe_task(task)}"))
        try:
            with Index(repo, readonly=True) as index:
                failures = index.failures()
        except NotIndexed:
            failures = []
        print(f"{len(failures)} failed file(s)")
        for blob, path, error, _ in failures:
            print(display(f"  {path} ({blob[:12]}): {error}"))
        try:
            summaries = read_summary_progress(repo)
        except NotIndexed:
            summaries = None
        if summaries:
            print(f"{summaries['failed']} failed summar{'y' if summaries['failed'] == 1 else 'ies'}"
                  f" by {summaries['name']}")
            for item in summaries["failed_files"]:
                print(display(f"  {item['path']}: {item['error']}"))
        return EXIT_OK
    ensure_state_dir(repo)
    huey = task_queue(repo)
    with Index(repo) as index:
        if action == "retry":
            rows = index.clear_failures()
            queue_documents(huey, rows)
            print(f"queued {len(rows)} failed file(s) again")
            summaries = index.clear_summary_failures()
            if summaries:
                print(f"{len(summaries)} failed summar{'y' if len(summaries) == 1 else 'ies'} "
                      "will be asked for again")
            poke_worker(repo)  # which wakes the summarizer too
            return EXIT_OK
    count = huey.pending_count()
    if not args.yes:
        if not sys.stdin.isatty():
            raise CqError(f"refusing to drop {count} queued task(s) without --yes", EXIT_USAGE)
        answer = input(f"drop {count} queued task(s)? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing dropped")
            return EXIT_OK
    huey.storage.flush_queue()
    print(f"dropped {count} queued task(s); reconciliation queues again what HEAD still needs")
    return EXIT_OK


def repo_relative(repo: Repo, cwd: str, path: str) -> str:
    """A user's path (relative to cwd) as a path relative to the top of the working tree."""
    top = work_tree(cwd)
    if top is None:
        raise CqError("this repository has no working tree; give the path from its top")
    full = os.path.normpath(os.path.join(os.path.abspath(cwd), path))
    # Resolve the directories (cwd may be reached through a symlink) but not the file
    # itself, which may be a tracked symlink.
    full = os.path.join(os.path.realpath(os.path.dirname(full)), os.path.basename(full))
    rel = os.path.relpath(full, os.path.realpath(top))
    if rel.startswith(".."):
        raise CqError(f"{path} is outside the repository", EXIT_USAGE)
    return rel


LANGUAGE_ALIASES = {"py": "python", "js": "javascript", "jsx": "javascript",
                    "ts": "typescript", "tsx": "typescript", "golang": "go", "rs": "rust",
                    "c++": "cpp", "cxx": "cpp", "sh": "shell", "bash": "shell", "zsh": "shell",
                    "md": "markdown", "txt": "text"}


def canonical_language(name: str) -> str:
    """A --lang value as the index names languages (py -> python); CqError if unknown."""
    name = LANGUAGE_ALIASES.get(name.lower(), name.lower())
    known = sorted(set(LANGUAGES.values()) | {"text"})
    if name not in known:
        raise CqError(f"unknown language {name!r}; use one of: {', '.join(known)}", EXIT_USAGE)
    return name


def open_for_reading(repo: Repo) -> Index:
    """The index, read-only.  Where cq is set up but the index is missing or empty (deleted,
    truncated, or made by another version), the worker is set to rebuild it from git and the
    CqError says so, instead of telling the user to run cq init again."""
    try:
        return Index(repo, readonly=True)
    except NotIndexed:
        if not os.path.isfile(repo.state_path(PYZ_COPY)):
            raise
    state = probe_worker(repo)
    if state.alive and not runs_this_cq(state.record):
        raise CqError(f"the worker running here is cq {state.record.get('version')}, whose "
                      f"index this cq {VERSION} cannot read (upgrade it: cq init)")
    for git_dir in worktree_git_dirs(repo.common_dir):
        mark_moved(Repo(repo.common_dir, git_dir))
    ensure_worker(repo)
    raise CqError("the index is empty; the worker is rebuilding it from git (see: cq index "
                  "status)")


def note_if_behind(repo: Repo, index: Index) -> None:
    """If the index is behind HEAD (a move that fired no hook, or a commit a moment ago),
    say so on stderr and have the worker catch up now rather than at its next check."""
    indexed, head = index.worktree_commit(repo.git_dir), head_commit(repo.git_dir)
    if indexed == head:
        return
    mark_moved(repo)
    catching_up = poke_worker(repo)
    print(f"cq: note: the index is at {(indexed or 'nothing')[:12]}, HEAD is at "
          f"{(head or 'no commit')[:12]}: results may be out of date"
          + ("; the worker is catching up" if catching_up else "; start the worker: "
             "cq worker start"), file=sys.stderr)


SEARCH_LIMIT_MAX = 10_000


def cmd_search(args, repo: Repo) -> int:
    """cq search QUERY: ranked results from this worktree's index."""
    language = canonical_language(args.lang) if args.lang else None
    config = config_or_defaults(repo)  # a typo in git config must not stop a search
    filters = {"path": args.path, "language": language, "tests": args.tests,
               "all_entries": args.all_entries, "demote": config.demote}
    with open_for_reading(repo) as index:
        if args.worktree:
            results = search_worktree(index, repo, " ".join(args.query),
                                      WorktreeOverlay(repo, config, args.directory),
                                      args.limit, **filters)
        else:
            results = search(index, repo.git_dir, " ".join(args.query), args.limit, **filters)
        note_if_behind(repo, index)
    if args.json:
        print_json(results)
        return EXIT_OK
    for r in results:
        edited = " (edited, not committed)" if r.get("edited") else ""
        by = f" (from the summary by {r['matched_summary_by']})" \
            if r.get("matched_summary_by") else ""
        print(display(f"{r['path']}:{r['line']}: {r['kind']} {r['symbol']}  {r['snippet']}"
                      f"{by}{edited}"))
    if not results:
        print("no results")
    return EXIT_OK


def cmd_show(args, repo: Repo) -> int:
    """cq show PATH: the stored documentation of one file at HEAD."""
    rel = repo_relative(repo, args.directory, args.path)
    with open_for_reading(repo) as index:
        doc = index.file_doc(repo.git_dir, rel)
        note_if_behind(repo, index)
    if doc is None:
        full = os.path.join(args.directory, args.path)
        if os.path.isdir(full):
            raise CqError(f"{rel} is a directory; show takes a file", EXIT_USAGE)
        raise CqError(f"{rel} is not in HEAD of this worktree (not committed, or a typo?); "
                      "see: git ls-files")
    if args.json:
        print_json(doc)
        return EXIT_OK
    print(display(f"{doc['path']} ({doc['language'] or 'unknown'}, {doc['status']})"))
    if doc["summary"]:
        by = "" if doc["summary_by"] == "built-in" else f" (summary by {doc['summary_by']})"
        print(display(doc["summary"] + by, keep_newlines=True))
    config = config_or_defaults(repo)
    if config.documenter.strip() and doc["size"] > config.documenter_max_bytes:
        print(f"not sent to the external documenter: {doc['size']} bytes, over "
              f"cq.documenterMaxBytes ({config.documenter_max_bytes})")
    if doc["error"]:
        print(display(f"parse error: {doc['error']}"))
    for item in doc["entries"]:
        print(display(f"  {item['line']:>5}  {item['kind']:<9} "
                      f"{item['signature'] or item['name']}"))
        for text in (item["doc"], item["note"]):
            if text:
                print(f"{'':18}{display(text.splitlines()[0])}")
    return EXIT_OK


def huey_version() -> str:
    """The bundled Huey's version, or a note that it is missing."""
    try:
        import huey
    except ImportError:
        return "not available"
    return huey.__version__


class HotArgs:
    """Parsed arguments of a hot-path command line (the fields argparse would have set)."""

    def __init__(self, **fields):
        self.__dict__.update({"version": False, "directory": ".", **fields})


def parse_hot_path(argv: list[str]) -> HotArgs | None:
    """`[-C DIR] worker status [--json|-v|-q]...`, `[-C DIR] hook run NAME [ARGS...]` and
    `[-C DIR] search [--] WORD...` parsed without argparse, whose import and parser set-up
    would double the run time of the first two and add a sixth to a search; None for
    anything else (argparse then handles it, errors included)."""
    directory = "."
    if argv[:1] == ["-C"] and len(argv) > 1:
        directory, argv = argv[1], argv[2:]
    if argv[:1] == ["search"]:
        marked = argv[1:2] == ["--"]  # after `--`, a word may start with a dash
        words = argv[2:] if marked else argv[1:]
        if not words or (not marked and any(w.startswith("-") for w in words)):
            return None
        return HotArgs(directory=directory, command="search", query=words, limit=10,
                       json=False, path=None, lang=None, tests=False, all_entries=False,
                       worktree=False)
    if argv[:2] == ["worker", "status"]:
        flags = {"--json": "json", "-v": "verbose", "--verbose": "verbose", "-q": "quiet",
                 "--quiet": "quiet"}
        if not set(argv[2:]) <= set(flags):
            return None
        chosen = {flags[f] for f in argv[2:]}
        return HotArgs(directory=directory, command="worker", worker_command="status",
                       **{name: name in chosen for name in ("json", "verbose", "quiet")})
    if argv[:2] == ["hook", "run"] and len(argv) > 2 and not argv[2].startswith("-"):
        return HotArgs(directory=directory, command="hook", hook_command="run", name=argv[2],
                       args=argv[3:])
    return None


def command_words(argv: list[str]) -> list[str]:
    """The positional words of a command line (skipping options and -C's value)."""
    words, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "-C":
            skip = True
        elif not arg.startswith("-"):
            words.append(arg)
    return words


def bounded(argparse, kind, low: float, high: float, what: str):
    """An argparse type: a number of `kind` from low to high (NaN and infinities refused)."""
    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return convert


def cli_spec(argparse) -> dict:
    """Every command: name -> (help, arguments, actions), each action -> (help, arguments);
    an argument is (flags, keyword arguments of add_argument)."""
    json_flag = (("--json",), {"action": "store_true", "help": "machine-readable output"})
    seconds = bounded(argparse, float, 0, 86400, "seconds from 0 to 86400")
    stop_args = [(("--timeout",), {"type": seconds, "metavar": "S",
                                   "help": "seconds to wait for a graceful stop"}),
                 (("--force",), {"action": "store_true", "help": "SIGKILL if it will not stop"})]
    return {
        "init": ("set up cq here and index HEAD", [
            (("--no-wait",), {"action": "store_true", "help": "return without waiting"})], {}),
        "worker": ("start, stop and inspect the worker", [], {
            "start": ("start the worker in the background", []),
            "run": ("run the worker in the foreground", [
                (("--ready-fd",), {"type": int, "help": argparse.SUPPRESS})]),
            "stop": ("stop the worker", stop_args),
            "restart": ("restart the worker", stop_args),
            "status": ("is the worker alive (LSB exit codes)", [
                json_flag,
                (("-v", "--verbose"), {"action": "store_true", "help": "show current work"}),
                (("-q", "--quiet"), {"action": "store_true", "help": "exit code only"})]),
            "logs": ("show the worker log", [
                (("-n",), {"dest": "lines", "default": 20, "metavar": "N",
                           "type": bounded(argparse, int, 0, 10**6, "0 to 1000000 lines"),
                           "help": "lines to show (default 20)"}),
                (("-f", "--follow"), {"action": "store_true", "help": "keep following"})]),
            "cleanup": ("make state consistent after a crash", [])}),
        "hook": ("install, remove or inspect the git hooks", [], {
            "install": ("install cq's hooks (foreign hooks are kept and chained)", []),
            "uninstall": ("remove cq's hooks, restoring foreign ones", []),
            "status": ("show each hook's state", []),
            "run": ("what the hook scripts call", [
                (("name",), {}), (("args",), {"nargs": argparse.REMAINDER})])}),
        "index": ("bring the index to HEAD, or show its status", [
            (("--wait",), {"action": "store_true", "help": "wait until complete (and for the "
                           "external documenter's summaries, unless it is paused)"}),
            (("--rebuild",), {"action": "store_true", "help": "forget everything and redo "
                              "(the external documenter's answers are kept)"}),
            (("--estimate",), {"action": "store_true", "help": "print what the external "
                               "documenter would be sent, and send nothing"}),
            (("--repair",), {"action": "store_true", "help": "check the index and the queue; "
                             "move a damaged one aside and rebuild it"})], {
            "status": ("indexed versus HEAD", [json_flag])}),
        "queue": ("inspect, retry or drop queued work", [
            (("queue_command",), {"nargs": "?", "choices": ("list", "retry", "purge"),
                                  "metavar": "ACTION", "help": "list (default), retry or purge"}),
            (("--yes",), {"action": "store_true", "help": "purge without asking"})], {}),
        "search": ("search the index", [
            (("query",), {"nargs": "+"}),
            (("-n",), {"dest": "limit", "default": 10, "type": bounded(
                argparse, int, 1, SEARCH_LIMIT_MAX, f"1 to {SEARCH_LIMIT_MAX} results"),
                       "help": "results (default 10)"}),
            json_flag,
            (("--path",), {"metavar": "PATH", "help": "only paths under a folder or prefix, "
                           "or matching a glob ('src/*.py')"}),
            (("--lang",), {"metavar": "L", "help": "only files in language L"}),
            (("--tests",), {"action": "store_true", "help": "rank test code first"}),
            (("--all-entries",), {"action": "store_true",
                                  "help": "more than three results from one file"}),
            (("--worktree",), {"action": "store_true", "help": "files edited in the working "
                               "tree too, as they are now (not committed)"})], {}),
        "show": ("the stored documentation of one file", [(("path",), {}), json_flag], {}),
        "mcp": ("serve the index to AI assistants (Model Context Protocol) on stdio", [
            (("--http",), {"metavar": "[HOST:]PORT", "help": "serve over HTTP instead "
                           "(127.0.0.1 unless a host is given)"}),
            (("--token-file",), {"metavar": "FILE", "help": "bearer token for --http "
                                 "(else git config cq.mcpToken)"}),
            (("--print-config",), {"choices": ("claude", "cursor", "vscode"),
                                   "help": "print how to register cq with a client"})], {}),
    }


def build_parser(argv: list[str]):
    """The argparse tree, built only as far as argv reaches: each parser costs about 0.5 ms
    (mostly gettext look-ups) and `worker status` must stay fast.  Where argv names no known
    command or action, every choice is built, so help and errors list them all."""
    import argparse

    words = command_words(argv)

    def reached(level: int, names) -> list[str]:
        word = words[level] if len(words) > level else None
        return [word] if word in names else list(names)

    class Parser(argparse.ArgumentParser):
        """argparse, with its errors in one line."""

        def error(self, message: str):
            self.exit(EXIT_USAGE, f"{self.prog}: {message} (see: {self.prog} --help)\n")

    parser = Parser(
        prog="cq", description="Keep a searchable documentation index of a git repository "
                               "fresh in the background.")
    parser.add_argument("--version", action="store_true", help="print versions and exit")
    parser.add_argument("-C", dest="directory", default=".", metavar="DIR",
                        help="run as if started in DIR (like git -C)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    spec = cli_spec(argparse)
    for name in reached(0, spec):
        help_text, arguments, actions = spec[name]
        command = commands.add_parser(name, help=help_text, description=help_text)
        for flags, options in arguments:
            command.add_argument(*flags, **options)
        if actions:
            subs = command.add_subparsers(dest=f"{name}_command", metavar="ACTION",
                                          required=name != "index")
            for action in reached(1, actions):
                action_help, action_arguments = actions[action]
                sub = subs.add_parser(action, help=action_help, description=action_help)
                for flags, options in action_arguments:
                    sub.add_argument(*flags, **options)
    return parser


def cmd_mcp(args, repo: Repo | None) -> int:
    """cq mcp [--http [HOST:]PORT] [--print-config CLIENT]: the MCP server."""
    if args.print_config:
        if repo is None:
            raise CqError("not a git repository: run it inside the repository to serve "
                          "(or pass -C DIR)", EXIT_USAGE)
        print(mcp_client_config(repo, args.print_config, work_tree(args.directory) or
                                repo.common_dir))
        return EXIT_OK
    if repo is not None:
        config = config_or_defaults(repo)
        if config.autostart and not probe_worker(repo).alive:
            try:
                start_worker(repo)
            except CqError as exc:  # searching a stale index beats not answering
                print(f"cq mcp: could not start the worker: {exc}", file=sys.stderr)
    if args.http:
        token = None
        if args.token_file:
            with open(args.token_file, encoding="utf-8") as f:
                token = f.read().strip() or None
        elif repo is not None:
            token = config_or_defaults(repo).mcp_token or None
        return serve_http(repo, args.directory, args.http, token)
    return serve_stdio(repo, args.directory)


COMMANDS = {"init": cmd_init, "worker": cmd_worker, "hook": cmd_hook, "index": cmd_index,
            "queue": cmd_queue, "search": cmd_search, "show": cmd_show, "mcp": cmd_mcp}


def run_command(args, repo: Repo) -> int:
    """Run one command; if it meets a damaged database, repair it (move it aside, rebuild)
    and run the command once more."""
    try:
        return COMMANDS[args.command](args, repo)
    except Exception as exc:
        worker_run = args.command == "worker" and args.worker_command == "run"
        if worker_run or not (isinstance(exc, DatabaseDamaged) or is_damage(exc)):
            raise
        done = repair_databases(repo)
        if not done:
            raise
        for line in done:
            print(f"cq: {line}", file=sys.stderr)
    return COMMANDS[args.command](args, repo)


OS_ERROR_HINTS = {errno.ENOSPC: "free some space and retry", errno.EDQUOT: "over quota",
                  errno.EROFS: "cq keeps its state under the git directory, which must be "
                               "writable", errno.EACCES: "check the permissions"}


def os_error_message(exc: OSError) -> str:
    """One line for a file system error: what failed, where, and what to do."""
    if exc.errno == errno.ELOOP and exc.filename:
        return symlink_refused(exc.filename)
    where = f" {exc.filename}" if exc.filename else ""
    hint = OS_ERROR_HINTS.get(exc.errno)
    return f"cannot use{where}: {exc.strerror or exc}" + (f" ({hint})" if hint else "")


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse arguments, run one command, turn CqError into a one-line message."""
    if sys.version_info < (3, 9):  # noqa: UP036 - from source; the archive checks it first
        print(f"cq: cq needs Python 3.9 or newer (this is {sys.version.split()[0]})",
              file=sys.stderr)
        return EXIT_USAGE
    if sys.platform.startswith("win"):
        print("cq: Windows is not supported (cq needs POSIX flock, FIFOs and signals)",
              file=sys.stderr)
        return EXIT_USAGE
    # File names are bytes to git; write undecodable ones back out as the same bytes.
    sys.stdout.reconfigure(errors="surrogateescape")
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["worker", DOCUMENTING_PROCESS]:
        return serve_documenting()
    args = parse_hot_path(argv) or build_parser(argv).parse_args(argv)
    os.umask(0o077)  # SQLite's -wal and -shm files and every other file cq creates: 0600
    if args.version:
        print(f"cq {VERSION} (huey {huey_version()}, python {sys.version.split()[0]})")
        return EXIT_OK
    if not args.command:
        build_parser([]).print_help()
        return EXIT_USAGE
    args.directory = os.path.abspath(args.directory)
    status = args.command == "worker" and args.worker_command == "status"
    try:
        if args.command == "mcp":  # outside a repository it serves a root the client names
            try:
                repo = locate_repo(args.directory)
            except CqError:
                if not os.path.isdir(args.directory):
                    raise
                repo = None
            return cmd_mcp(args, repo)
        repo = locate_repo(args.directory)
        return run_command(args, repo)
    except CqError as exc:
        print(f"cq: {exc}", file=sys.stderr)
        if status:
            return STATUS_UNKNOWN if exc.code != EXIT_USAGE else exc.code
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except OSError as exc:
        print(f"cq: {os_error_message(exc)}", file=sys.stderr)
        return STATUS_UNKNOWN if status else EXIT_FAILURE
    except Exception as exc:
        if type(exc).__module__ != "sqlite3":
            raise
        print(f"cq: the index or queue could not be used: {exc} (retry; if it persists: "
              "cq index --repair)", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
