"""Helpers shared by the benchmarks: build cq.pyz, fetch public code bases, make repositories,
run cq."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(target: Path, pyz: Path | None = None) -> Path:
    """The cq.pyz to measure: the one given, or a fresh build of this checkout."""
    if pyz:
        return pyz.resolve()
    out = target / "cq.pyz"
    subprocess.run([sys.executable, str(ROOT / "build_zipapp.py"), "--output", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    return out


def git(repo: Path, *args: str) -> str:
    """Run git in repo."""
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout


def new_repo(path: Path) -> Path:
    """An empty repository with a committer identity."""
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    git(path, "config", "user.email", "bench@example.com")
    git(path, "config", "user.name", "Bench")
    git(path, "config", "gc.auto", "0")  # no gc in the background of a measurement
    return path


def fetch_corpus(cache: Path, name: str, client: str, spec: str, folder: str) -> Path:
    """A public code base, unpacked under cache/unpacked/NAME (fetched once by its ordinary
    client: npm, Debian's apt, or pip for a source distribution); the folder it holds."""
    target = cache / "unpacked" / name
    if target.exists():
        return target / folder
    download = cache / "downloads" / name
    download.mkdir(parents=True, exist_ok=True)
    if client == "npm":
        command = ["npm", "pack", "--silent", spec]
    elif client == "apt":
        command = ["apt-get", "download", *spec.split()]
    else:
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary",
                   ":all:", spec, "-d", str(download)]
    proc = subprocess.run(command, cwd=download, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"fetching {spec} failed: {proc.stderr.strip()}")
    staging = Path(tempfile.mkdtemp(dir=cache))
    for archive in sorted(download.iterdir()):
        if archive.suffix == ".deb":
            subprocess.run(["dpkg-deb", "-x", str(archive), str(staging)], check=True)
        else:
            with tarfile.open(archive) as tar:
                if hasattr(tarfile, "data_filter"):  # 3.12+ warns without a filter
                    tar.extractall(staging, filter="data")
                else:
                    tar.extractall(staging)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(target)
    return target / folder


def imported_repo(repo: Path, source: Path, parts: tuple = ()) -> Path:
    """A repository at repo holding source (or only these parts of it), committed once."""
    if (repo / ".git").exists():
        return repo
    new_repo(repo)
    for part in parts:
        shutil.copytree(source / part, repo / part)
    if not parts:
        shutil.copytree(source, repo, dirs_exist_ok=True, symlinks=True)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "import")
    return repo


def cq(pyz: Path, repo: Path, *args: str, check: bool = True) -> str:
    """Run cq against repo and return its stdout."""
    proc = subprocess.run([sys.executable, "-I", "-S", str(pyz), "-C", str(repo), *args],
                          capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"cq {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


def searchable_after(repo: Path, marker: str, deadline: float) -> float:
    """Seconds until the index has a definition named marker (looked up by the term of its
    squashed name, as `cq search` does), polled every 5 ms."""
    db = sqlite3.connect(f"file:{repo / '.git' / 'cq' / 'index.db'}?mode=ro", uri=True)
    name = 'squashed : "' + marker.replace("_", "").lower() + '\ue000"'  # cq's NAME_MARK
    start = time.perf_counter()
    try:
        while time.perf_counter() - start < deadline:
            try:
                if db.execute("SELECT 1 FROM entries_fts WHERE entries_fts MATCH ? LIMIT 1",
                              (name,)).fetchone():
                    return time.perf_counter() - start
            except sqlite3.OperationalError:  # the index is not made yet
                pass
            time.sleep(0.005)
    finally:
        db.close()
    return float("inf")
