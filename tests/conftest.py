"""Shared fixtures: the built cq.pyz, throw-away git repositories, and a cq runner.

Everything here is real: the archive is built by build_zipapp.py, repositories are made by git
in temporary directories, workers are real processes, and every worker a test starts is killed
at teardown so that no test leaks processes into the next one.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HUEY_WHEEL = "huey-3.5.4-py3-none-any.whl"


def wait_until(predicate, timeout: float = 60.0, interval: float = 0.05, what: str = ""):
    """Poll predicate until it returns something truthy; fail the test after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


@pytest.fixture(scope="session", autouse=True)
def private_code_cache(tmp_path_factory):
    """cq.pyz caches its compiled code under $XDG_CACHE_HOME, one entry (half a megabyte)
    per archive path, kept 30 days; every test repository runs its own copy of the archive,
    so the session's cq processes cache into a temporary directory, not the user's."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(scope="session")
def huey_wheel(tmp_path_factory) -> Path:
    """The pinned Huey wheel: from $CQ_HUEY_WHEEL_DIR if CI fetched it, else from pip."""
    cached = os.environ.get("CQ_HUEY_WHEEL_DIR")
    if cached and (Path(cached) / HUEY_WHEEL).is_file():
        return Path(cached) / HUEY_WHEEL
    target = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    "--only-binary", ":all:", "--dest", str(target), "huey==3.5.4"], check=True)
    return target / HUEY_WHEEL


def build_pyz(output: Path, wheel: Path) -> Path:
    """Run the real build script."""
    subprocess.run([sys.executable, str(ROOT / "build_zipapp.py"), "--output", str(output),
                    "--huey-wheel", str(wheel)], check=True, stdout=subprocess.DEVNULL)
    return output


@pytest.fixture(scope="session")
def cq_pyz(tmp_path_factory, huey_wheel) -> Path:
    """cq.pyz built once per test session."""
    return build_pyz(tmp_path_factory.mktemp("build") / "cq.pyz", huey_wheel)


def git(cwd, *args, check=True, env=None, input=None) -> str:
    """Run git in cwd and return its stdout."""
    proc = subprocess.run(["git", *args], cwd=cwd, check=False, capture_output=True,
                          env=env, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr.decode()}")
    return proc.stdout.decode(errors="replace")


class Repository:
    """A throw-away git repository with a cq runner bound to it."""

    def __init__(self, path: Path, pyz: Path):
        self.path = path
        self.pyz = pyz

    @property
    def state(self) -> Path:
        """cq's state directory for this repository."""
        return self.path / ".git" / "cq"

    def git(self, *args, **kwargs) -> str:
        """git in this repository."""
        return git(self.path, *args, **kwargs)

    def cq(self, *args, python: str = sys.executable, timeout: float = 120, env=None,
           cwd=None, input=None) -> subprocess.CompletedProcess:
        """Run the built cq.pyz against this repository and capture text output."""
        return subprocess.run([python, "-I", "-S", str(self.pyz), "-C", str(cwd or self.path),
                               *args], capture_output=True, text=True, timeout=timeout,
                              errors="surrogateescape", env=env, input=input, check=False)

    def status(self) -> dict:
        """`cq worker status --json`, parsed, with the exit code added."""
        proc = self.cq("worker", "status", "--json")
        report = json.loads(proc.stdout)
        report["returncode"] = proc.returncode
        return report

    def write(self, rel: str, content) -> None:
        """Write a file in the working tree (str or bytes)."""
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode() if isinstance(content, str) else content)

    def commit(self, files: dict | None = None, message: str = "change") -> str:
        """Write files, commit everything, return the new HEAD."""
        for rel, content in (files or {}).items():
            self.write(rel, content)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD").strip()

    def index_status(self) -> dict:
        """`cq index status --json`, parsed."""
        proc = self.cq("index", "status", "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def wait_indexed(self, timeout: float = 90) -> dict:
        """Wait until the index of this worktree matches HEAD."""
        return wait_until(lambda: (s := self.index_status())["complete"] and s,
                          timeout=timeout, what="the index to match HEAD")

    def search(self, *query: str, extra=()) -> list[dict]:
        """`cq search --json`, parsed."""
        proc = self.cq("search", *query, "--json", *extra)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def worker_pid(self) -> int | None:
        """The PID in the worker's pid file, if it holds one."""
        return read_record(self.state / "worker.pid").get("pid")


def read_record(path: Path) -> dict:
    """A `key=value` record file (pid file, heartbeat) as a dict of strings and ints."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    record = {}
    for line in lines:
        key, _, value = line.partition("=")
        record[key] = int(value) if value.isdigit() else value
    return record


def write_record(path: Path, record: dict) -> None:
    """Write a `key=value` record file as cq does (mode 0600)."""
    path.write_text("".join(f"{k}={v}\n" for k, v in record.items()))
    path.chmod(0o600)


def kill_workers_of(path: Path) -> None:
    """SIGKILL every cq process whose command line mentions this directory (test teardown).
    Hooks run cq in the background and may autostart a worker just after a test ends, so
    this keeps looking until 0.6 s pass with none left."""
    needle = str(path).encode()
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < 0.6:
        for pid, read in live_processes():
            cmdline = read("cmdline")
            if needle in cmdline and (b"worker" in cmdline or b"hook" in cmdline):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                quiet_since = time.monotonic()
        time.sleep(0.1)


def live_processes():
    """(pid, read) for every live, non-zombie process but this one, where read(name) gives
    /proc/PID/name as bytes (b"" once the process is gone)."""
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue

        def read(field: str, pid: str = name) -> bytes:
            try:
                with open(f"/proc/{pid}/{field}", "rb") as f:
                    return f.read()
            except OSError:
                return b""

        stat = read("stat")
        if stat and stat.rsplit(b")", 1)[1].split()[0] != b"Z":
            yield int(name), read


def make_repo(path: Path, pyz: Path) -> Repository:
    """git init with a user, fast cq timings and one commit."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    for key, value in (("user.email", "test@example.com"), ("user.name", "Test"),
                       ("cq.heartbeatInterval", "0.2"), ("cq.shutdownTimeout", "10")):
        git(path, "config", key, value)
    repo = Repository(path, pyz)
    repo.commit({"README.md": "# Demo\n\nA demo repository.\n"}, "initial")
    return repo


@pytest.fixture
def repo(tmp_path, cq_pyz):
    """A fresh repository; any worker started in it is killed afterwards."""
    repository = make_repo(tmp_path / "repo", cq_pyz)
    yield repository
    kill_workers_of(tmp_path)


@contextlib.contextmanager
def indexed_repository(tmp_path_factory, pyz: Path, name: str, files: dict):
    """A repository holding files, after `cq init`; its worker is killed at the end (for
    module-scoped fixtures that many read-only tests share)."""
    base = tmp_path_factory.mktemp(name)
    repository = make_repo(base / "repo", pyz)
    repository.commit(files)
    proc = repository.cq("init")
    assert proc.returncode == 0, proc.stderr
    try:
        yield repository
    finally:
        kill_workers_of(base)


@pytest.fixture
def started(repo):
    """A repository with a running worker."""
    proc = repo.cq("worker", "start")
    assert proc.returncode == 0, proc.stderr
    return repo


@pytest.fixture
def initialised(repo):
    """A repository after `cq init` (hooks installed, worker running, HEAD indexed)."""
    proc = repo.cq("init")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return repo


def with_default_sigint(argv: list[str]) -> list[str]:
    """argv run with SIGINT's default disposition (a ^C ends it), whatever this process
    inherited: under `nohup` or a shell's `&`, SIGINT comes ignored, and so would be the
    ^C a test sends."""
    restore = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
               "os.execv(sys.argv[1], sys.argv[1:])")
    return [sys.executable, "-c", restore, *argv]


def spawn_sleeper() -> subprocess.Popen:
    """An unrelated live process (for PID-reuse and forged pid-file tests)."""
    return subprocess.Popen(["sleep", "300"])


def start_time_of(pid: int) -> int:
    """Field 22 of /proc/PID/stat."""
    data = Path(f"/proc/{pid}/stat").read_bytes()
    return int(data[data.rfind(b")") + 2:].split()[19])


def boot_id() -> str:
    """This machine's boot id."""
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def find_python(version: str) -> str | None:
    """A real interpreter for this minor version (PATH first, then pyenv's versions)."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = [shutil.which(f"python{version}")]
    candidates += sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"))
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"],
                               capture_output=True, text=True, check=False)
        if probe.returncode == 0 and probe.stdout.strip() == str(
                tuple(int(p) for p in version.split("."))):
            return candidate
    return None


def slow_to_parse(name: str) -> str:
    """A Python file that takes CPython's own parser about a second (distinct per name),
    defining the function `name`: long enough to catch its documenting in flight."""
    return f"# {name}\n" + "@a\n" * 400_000 + f"def {name}():\n    pass\n"


def documenters_of(repo) -> list[int]:
    """Live processes carrying this repository's documenter mark."""
    mark = f"CQ_STATE_DIR={repo.state}".encode()
    return [pid for pid, read in live_processes() if mark in read("environ").split(b"\0")]


def on_terminal(argv: list[str], timeout: float = 120) -> tuple[int, bytes]:
    """Run argv with a pseudo-terminal as its stdout and stderr (as a user would see it);
    its exit code and everything it wrote."""
    import pty

    controller, terminal = pty.openpty()
    proc = subprocess.Popen(argv, stdout=terminal, stderr=terminal)
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    return proc.wait(timeout=timeout), output


def mcp_command(repo, *extra) -> list[str]:
    """The argv of `cq mcp` serving repo, with extra arguments."""
    return [sys.executable, "-I", "-S", str(repo.pyz), "-C", str(repo.path), "mcp", *extra]


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mcp_http(repo, *extra) -> tuple[subprocess.Popen, int]:
    """`cq mcp --http` on a free loopback port, once it listens: its process and port."""
    import socket

    port = free_port()
    proc = subprocess.Popen(mcp_command(repo, "--http", f"127.0.0.1:{port}", *extra),
                            stderr=subprocess.PIPE)

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    wait_until(listening, what="the HTTP server to listen")
    return proc, port


def post_mcp(port: int, body: bytes, headers: dict | None = None) -> tuple[int, bytes]:
    """POST body to the MCP endpoint on port: the status and the body of the answer."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}/mcp", data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
