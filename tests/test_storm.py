"""The storm: commits, amends, switches, hard resets and rebases across three linked worktrees,
with the worker killed at random, four worker threads and searches running throughout.  When
it is over, every worktree's index must equal its HEAD exactly."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import threading
import time

from conftest import kill_workers_of, make_repo, wait_until

STORM_SECONDS = 45


def git_out(cwd, *args) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          check=False).stdout.strip()


def head_blobs(cwd) -> dict[bytes, str]:
    """path -> blob of every file at HEAD of the worktree in cwd."""
    out = subprocess.run(["git", "ls-tree", "-r", "-z", "--full-tree", "HEAD"], cwd=cwd,
                         capture_output=True, check=True).stdout
    blobs = {}
    for record in filter(None, out.split(b"\0")):
        meta, _, path = record.partition(b"\t")
        blobs[path] = meta.split()[2].decode()
    return blobs


def indexed_blobs(repo, git_dir: str) -> dict[bytes, str]:
    """path -> blob the index maps for one worktree, and whether each blob is documented."""
    db = sqlite3.connect(f"file:{repo.state / 'index.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT f.path, f.blob, d.blob IS NOT NULL FROM files f LEFT JOIN "
                          "docs d ON d.blob = f.blob WHERE f.git_dir = ?",
                          (os.fsencode(git_dir),)).fetchall()
    finally:
        db.close()
    return {path: blob for path, blob, documented in rows if documented}


def storm_step(rng: random.Random, repo, worktrees: list, counter: list) -> None:
    """One random operation in one random worktree; each worktree writes only its own folder,
    so rebases never conflict."""
    index = rng.randrange(len(worktrees))
    cwd = worktrees[index]
    own = cwd / f"area{index}"
    counter[0] += 1
    n = counter[0]
    choice = rng.random()
    if choice < 0.45:  # commit: add, change or delete files
        own.mkdir(exist_ok=True)
        for _ in range(rng.randint(1, 4)):
            target = own / f"m{rng.randrange(12)}.py"
            if target.exists() and rng.random() < 0.25:
                target.unlink()
            else:
                target.write_text(f"def storm_{index}_{n}():\n    '''Step {n}.'''\n")
        git_out(cwd, "add", "-A")
        git_out(cwd, "commit", "-q", "--allow-empty", "-m", f"step {n}")
    elif choice < 0.55:  # amend
        own.mkdir(exist_ok=True)
        (own / "amended.py").write_text(f"def amended_{n}():\n    pass\n")
        git_out(cwd, "add", "-A")
        git_out(cwd, "commit", "-q", "--amend", "--no-edit")
    elif choice < 0.65:  # switch away and back
        if git_out(cwd, "rev-parse", "-q", "--verify", "HEAD~1"):
            git_out(cwd, "checkout", "-q", "--detach", "HEAD~1")
        git_out(cwd, "checkout", "-q", "main" if index == 0 else f"b{index}")
    elif choice < 0.75:  # hard reset: fires no hook
        if git_out(cwd, "rev-parse", "-q", "--verify", "HEAD~1"):
            git_out(cwd, "reset", "-q", "--hard", "HEAD~1")
    elif choice < 0.85:  # rebase onto another worktree's branch
        other = rng.choice([b for b in ["main", "b1", "b2"] if b != git_out(
            cwd, "rev-parse", "--abbrev-ref", "HEAD")])
        if subprocess.run(["git", "rebase", "-q", other], cwd=cwd, capture_output=True,
                          check=False).returncode:
            git_out(cwd, "rebase", "--abort")
    else:  # the worker dies
        pid = repo.worker_pid()
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_storm_across_worktrees_with_kills_converges_to_every_head(tmp_path, cq_pyz):
    try:
        run_storm(tmp_path, cq_pyz)
    finally:
        kill_workers_of(tmp_path)


def run_storm(tmp_path, cq_pyz) -> None:
    """The storm, then the check that every worktree's index equals its HEAD."""
    repo = make_repo(tmp_path / "main", cq_pyz)
    repo.git("config", "cq.workers", "4")
    repo.git("config", "cq.reconcileInterval", "3")
    repo.commit({f"src/f{i}.py": f"def base_{i}():\n    pass\n" for i in range(20)})
    assert repo.cq("init").returncode == 0
    worktrees = [repo.path]
    for i in (1, 2):
        worktrees.append(tmp_path / f"wt{i}")
        repo.git("worktree", "add", "-q", "-b", f"b{i}", str(worktrees[-1]))
    stop, problems = threading.Event(), []

    def search_all_the_time():
        rng = random.Random(7)
        while not stop.is_set():
            proc = repo.cq("search", "storm", cwd=rng.choice(worktrees))
            if proc.returncode not in (0, 1) or "Traceback" in proc.stderr:
                problems.append(proc.stderr)

    searcher = threading.Thread(target=search_all_the_time)
    searcher.start()
    rng, counter = random.Random(2026), [0]
    try:
        deadline = time.monotonic() + STORM_SECONDS
        while time.monotonic() < deadline:
            storm_step(rng, repo, worktrees, counter)
    finally:
        stop.set()
        searcher.join()
    assert problems == []
    assert repo.cq("worker", "start").returncode == 0
    for cwd in worktrees:
        git_dir = os.path.realpath(git_out(cwd, "rev-parse", "--absolute-git-dir"))
        wait_until(lambda c=cwd, g=git_dir: indexed_blobs(repo, g) == head_blobs(c),
                   timeout=180, what=f"the index of {cwd} to equal its HEAD")
        status = repo.cq("index", "status", "--json", cwd=cwd)
        assert status.returncode == 0 and '"complete": true' in status.stdout
    db = sqlite3.connect(f"file:{repo.state / 'index.db'}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
