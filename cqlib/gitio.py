"""Every git call cq makes, with the hook variables scrubbed from the environment.

Owns: running git (posix_spawn on the hot paths, whose callers cannot pay for subprocess's
import), locating a repository and its worktrees, HEAD and what changed between two commits,
listing a tree, the working tree's `git status`, and reading blobs: through one long-lived
`git cat-file --batch`, or from the work tree where a loose blob's file holds exactly it.
Must not: decide what to index (config and the pipeline do) or let a hook's GIT_DIR or
GIT_INDEX_FILE reach a child (they point git at the wrong repository or index).
"""

from __future__ import annotations

import os
import stat

from cqlib.errors import EXIT_USAGE, CqError
from cqlib.state import Repo

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator


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
    return PendingGit(args, cwd, env).answer()


class PendingGit:
    """A git command started now and answered later (see spawn_git): a command line's search
    starts its settings' and HEAD's git calls, then loads its modules while they run."""

    def __init__(self, args: list[str], cwd: str | None = None, env: dict | None = None):
        read_end, write_end = os.pipe()
        devnull = os.open(os.devnull, os.O_RDWR)
        argv = ["git", *(["-C", cwd] if cwd else []), *args]
        try:
            self.pid = os.posix_spawnp("git", argv, os.environ if env is None else env,
                                       file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0),
                                                     (os.POSIX_SPAWN_DUP2, write_end, 1),
                                                     (os.POSIX_SPAWN_DUP2, devnull, 2)])
        except FileNotFoundError as exc:
            os.close(read_end)
            raise CqError("git is not installed or not on PATH") from exc
        finally:
            os.close(write_end)
            os.close(devnull)
        self.read_end = read_end

    def answer(self) -> tuple[int, bytes]:
        """(exit code, stdout), once git has exited (asked once)."""
        chunks = []
        while True:
            chunk = os.read(self.read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(self.read_end)
        return os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1]), b"".join(chunks)


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


def network_git(common_dir: str, args: list[str], timeout: float) -> tuple[int, str]:
    """Run a git command that may reach a remote (fetch, push): never a prompt (no terminal,
    no askpass: a missing credential is an error), and within `timeout` seconds, after which
    git and every process of its group are killed, and its answer is not waited for
    (a helper that left the group may hold a pipe: stderr goes to a file).  (exit code, its
    stderr with control characters escaped: a remote writes it)."""
    import signal
    import subprocess
    import tempfile

    from cqlib.text import display

    env = dict(scrubbed_env(), GIT_TERMINAL_PROMPT="0", SSH_ASKPASS_REQUIRE="never",
               GIT_ASKPASS="/bin/false")
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(["git", "--git-dir", common_dir, *args], env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=err, start_new_session=True)
        except FileNotFoundError as exc:
            raise CqError("git is not installed or not on PATH") from exc
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = -1
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # with the ssh or https helper it started
            except ProcessLookupError:
                pass
            proc.wait()
        if code == -1:
            return -1, f"no answer within {timeout:g} s (cq.shareTimeout)"
        err.seek(0)
        text = err.read()[-20_000:]
    return code, display(os.fsdecode(text), keep_newlines=True)


def head_commit(git_dir: str, pending: PendingGit | None = None) -> str | None:
    """The commit HEAD of this worktree points at, or None on an unborn branch; read now, or
    the answer of `pending` (see start_head_commit)."""
    code, out = (pending or start_head_commit(git_dir)).answer()
    return out.decode().strip() or None if code == 0 else None


def start_head_commit(git_dir: str) -> PendingGit:
    """Start reading HEAD's commit, for head_commit to answer later."""
    return PendingGit(["--git-dir", git_dir, "rev-parse", "-q", "--verify", "HEAD^{commit}"],
                      env=scrubbed_env())


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
    return [(path, new_mode, new_blob)
            for path, _, new_mode, _, new_blob in tree_diff(common_dir, old, new)]


def tree_diff(common_dir: str, old: str, new: str) -> list[tuple[str, str, str, str, str]]:
    """(path, old mode, new mode, old blob, new blob) for every path that differs between
    two commits; the side where a path is absent has mode and blob ''."""
    out = run_git(["diff-tree", "-r", "-z", "--raw", "--no-renames", old, new],
                  git_dir=common_dir).stdout
    fields = out.split(b"\0")
    changes = []
    for i in range(0, len(fields) - 1, 2):
        meta = fields[i].decode()
        if not meta.startswith(":"):
            continue
        old_mode, new_mode, old_sha, new_sha, status = meta[1:].split(" ")
        added, deleted = status.startswith("A"), status.startswith("D")
        changes.append((os.fsdecode(fields[i + 1]), "" if added else old_mode,
                        "" if deleted else new_mode, "" if added else old_sha,
                        "" if deleted else new_sha))
    return changes


def blobs_at(common_dir: str, commit: str, paths: list[str]) -> dict[str, str]:
    """path -> blob of each of these paths that is a file of the commit."""
    if not paths:
        return {}
    out = run_git(["ls-tree", "-r", "-z", commit, "--", *paths], git_dir=common_dir,
                  check=False).stdout
    found = {}
    for record in out.split(b"\0"):
        meta, _, path = record.partition(b"\t")
        fields = meta.split()
        if len(fields) == 3 and fields[1] == b"blob":
            found[os.fsdecode(path)] = fields[2].decode()
    return found


def resolve_commit(common_dir: str, ref: str) -> str | None:
    """The commit a ref, branch, tag or sha names, or None if it names none."""
    proc = run_git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"],
                   git_dir=common_dir, check=False)
    return proc.stdout.decode().strip() or None if proc.returncode == 0 else None


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
    """Streams blob contents through one long-lived `git cat-file --batch` process, started at
    its first read: a worker thread whose files all go to its documenting processes (which
    read through readers of their own) starts none (two idle readers were 12 MB of the
    process tree at its peak)."""

    def __init__(self, common_dir: str):
        self.common_dir = common_dir
        self.started = None  # the git process, once started

    @property
    def proc(self):
        """The git process, started if it is not yet."""
        import subprocess

        if self.started is None:
            # A blob id means its own content, as in the work tree (see WorkTreeFiles),
            # whatever refs/replace says.  Packs are mapped a little at a time: with git's
            # 1 GiB windows, a reader that goes through a whole pack stays as large as the
            # pack (23 MB at 50,000 files, against 7 MB, in the same CPU).
            self.started = subprocess.Popen(
                ["git", "--no-replace-objects", "-c", "core.packedGitWindowSize=256k", "-c",
                 "core.packedGitLimit=1m", "--git-dir", self.common_dir, "cat-file", "--batch"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                env=scrubbed_env())
        return self.started

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
            if answered < len(shas) and self.started:
                self.started.kill()  # it may be blocked writing answers nobody will read
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
        """True while the git process can still answer (or is not started yet)."""
        return self.started is None or (self.started.poll() is None and
                                        not self.started.stdin.closed)

    def close(self) -> None:
        """End the git process, if one was started."""
        if self.started is None:
            return
        try:
            self.started.stdin.close()
        except BrokenPipeError:
            pass
        self.started.wait()


def thread_blob_reader(common_dir: str) -> BlobReader:
    """This thread's long-lived BlobReader (a worker thread reads every batch through one
    `git cat-file`), replaced when it has ended."""
    import threading

    thread = threading.current_thread()
    reader = getattr(thread, "cq_blob_reader", None)
    if reader is None or not reader.alive() or reader.common_dir != common_dir:
        reader = thread.cq_blob_reader = BlobReader(common_dir)
    return reader


class WorkTreeStatus:
    """`git status` of a work tree, started at once (it runs while the caller does other
    work) and read when asked.  --no-optional-locks: no refresh of git's index, so never an
    index.lock in the user's way."""

    def __init__(self, top: str):
        import subprocess

        self.proc = subprocess.Popen(
            ["git", "--no-optional-locks", "-C", top, "status", "--porcelain=v1", "-z",
             "--untracked-files=all", "--no-renames"], stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=scrubbed_env())

    def changes(self) -> tuple[set, set, bool]:
        """(paths modified, added or untracked and not ignored; paths deleted; whether git
        status succeeded), once it has ended."""
        out, _ = self.proc.communicate()
        edited, deleted = set(), set()
        for record in out.split(b"\0"):
            if len(record) >= 4:
                path = os.fsdecode(record[3:])
                (deleted if b"D" in record[:2] else edited).add(path)
        return edited, deleted, self.proc.returncode == 0


def main_work_tree(common_dir: str) -> str:
    """The main work tree of a repository whose git directory is its `.git` ('' if none),
    where a blob's file may be read instead of the blob (see WorkTreeFiles)."""
    return os.path.dirname(common_dir) if os.path.basename(common_dir) == ".git" else ""


class WorkTreeFiles:
    """Files of a work tree, each opened once without following a link (every folder on the
    way opened in the one before, relative to its descriptor), and read only if what was
    opened is a regular file within the limit: a link swapped in, a device or a FIFO is
    never read.  Folders are kept open until close().

    Also loose blobs read from their files in the main work tree, where a file holds exactly
    its blob: git unpacks each loose object (a freshly committed tree has only those) with a
    file opened and mapped, 0.55 s for 10,000 small blobs against 0.17 s to read and hash
    their files."""

    def __init__(self, tree: str, common_dir: str = ""):
        self.tree, self.common_dir = tree, common_dir
        self.folders: dict = {}  # folder -> its descriptor (see folder_fd)

    @classmethod
    def of_repository(cls, common_dir: str) -> WorkTreeFiles:
        """The main work tree's files of a repository (none where it has no `.git` folder)."""
        return cls(main_work_tree(common_dir), common_dir)

    def __enter__(self) -> WorkTreeFiles:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the folders opened."""
        for fd in self.folders.values():
            os.close(fd)
        self.folders = {}

    def read_file(self, path: str, limit: int) -> bytes | None:
        """The content of a regular file of the tree (path from its top), or None where it is
        not one (a link, a folder, a device, a FIFO), is over limit bytes, or cannot be read."""
        folder, _, name = path.rpartition("/")
        if not self.tree or name in ("", ".", ".."):
            return None
        try:
            parent = folder_fd(self.tree, folder, self.folders)
            if not stat.S_ISREG(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                return None  # opening a device acts, and a FIFO waits
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY |
                         os.O_CLOEXEC, dir_fd=parent)
        except (OSError, ValueError):  # not there, a link, a path git would not write
            return None
        try:
            st = os.fstat(fd)  # what was opened, whatever the name held a moment before
            return read_exactly(fd, st.st_size) if stat.S_ISREG(st.st_mode) and \
                st.st_size <= limit else None
        except OSError:
            return None
        finally:
            os.close(fd)

    def read(self, path: str, blob: str, limit: int) -> tuple | None:
        """(size, content) of a loose blob from its file in the work tree, or None unless that
        is a regular file within the limit that hashes to the blob: whatever the work tree
        holds (a local change, a filter's output, a link), only the blob is read."""
        import hashlib

        try:
            # Only for a loose object: git reads a pack as fast, and in order where the files
            # of a work tree not read for a while are scattered on the disk.
            os.stat(os.path.join(self.common_dir, "objects", blob[:2], blob[2:]))
        except OSError:
            return None
        data = self.read_file(path, limit)
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


def hooks_dir(repo: Repo, cwd: str) -> str:
    """Where git looks for hooks in this worktree (honours core.hooksPath and worktrees)."""
    out = run_git(["rev-parse", "--git-path", "hooks"], cwd=cwd, env=os.environ).stdout
    return os.path.normpath(os.path.join(cwd, os.fsdecode(out).strip()))


def work_tree(cwd: str) -> str | None:
    """The top of the working tree, or None in a bare repository."""
    proc = run_git(["rev-parse", "--show-toplevel"], cwd=cwd, check=False, env=os.environ)
    return os.fsdecode(proc.stdout).strip() or None if proc.returncode == 0 else None


def git_ignores(cwd: str, path: str) -> bool:
    """True if git ignores path (so a file written there is never committed)."""
    return run_git(["check-ignore", "-q", path], cwd=cwd, check=False,
                   env=os.environ).returncode == 0
