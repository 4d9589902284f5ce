"""Helpers shared by the benchmarks: build cq.pyz, make repositories, run cq."""

from __future__ import annotations

import subprocess
import sys
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


def cq(pyz: Path, repo: Path, *args: str, check: bool = True) -> str:
    """Run cq against repo and return its stdout."""
    proc = subprocess.run([sys.executable, "-I", "-S", str(pyz), "-C", str(repo), *args],
                          capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"cq {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout
