"""Benchmark: what cq's hooks add to `git commit`, and commit-to-searchable latency.

    python3 benchmarks/bench_hooks.py [--commits N] [--sizes 1000,10000] [--pyz PATH]

Hook overhead: two repositories, one with cq initialised (hooks, worker) and one without;
one-file commits alternate between them (in alternating order, with a pause that lets the
hook's background work finish), so both see the same machine noise; medians and their
difference are printed (target: under +15 ms).

Commit-to-searchable: in repositories of each size, a one-file commit adds a new function;
the time from `git commit` returning until the index can answer for it is measured by
polling the index read-only every 5 ms (target: under 1 s median, flat in repository size).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import build, cq, git, new_repo, searchable_after


def timed_commit(repo: Path, name: str, content: str) -> float:
    """Write one file, stage it, and time `git commit` alone (ms)."""
    (repo / name).write_text(content)
    git(repo, "add", name)
    start = time.perf_counter()
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", name], check=True)
    return (time.perf_counter() - start) * 1000


def hook_overhead(pyz: Path, tmp: Path, commits: int) -> None:
    """Print median commit times with and without cq's hooks."""
    plain = new_repo(tmp / "plain")
    hooked = new_repo(tmp / "hooked")
    for repo in (plain, hooked):
        (repo / "README.md").write_text("# bench\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "init")
    cq(pyz, hooked, "init")
    with_hooks, without = [], []
    for i in range(commits + 3):
        # Alternate which goes first, and let the hooked commit's background work finish
        # before the next commit, so that neither side pays for the other.
        order = [(plain, without), (hooked, with_hooks)][:: 1 if i % 2 else -1]
        for repo, times in order:
            elapsed = timed_commit(repo, f"f{i}.py", f"def f{i}():\n    pass\n")
            if i >= 3:  # warm-up
                times.append(elapsed)
            time.sleep(0.3)
    cq(pyz, hooked, "worker", "stop")
    w, wo = statistics.median(with_hooks), statistics.median(without)
    print(f"hook overhead, {commits} commits each (medians):")
    print(f"  git commit without hooks   {wo:6.1f} ms")
    print(f"  git commit with cq hooks   {w:6.1f} ms   (+{w - wo:.1f} ms; target +15 ms)")


def commit_to_searchable(pyz: Path, tmp: Path, size: int, commits: int) -> list[float]:
    """Latencies (s) of one-file commits in a repository of `size` files."""
    repo = new_repo(tmp / f"size{size}")
    for i in range(size):
        folder = repo / f"d{i // 500}"
        folder.mkdir(exist_ok=True)
        (folder / f"m{i}.py").write_text(f"def existing_{i}():\n    return {i}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "bulk")
    start = time.perf_counter()
    cq(pyz, repo, "init")
    initial = time.perf_counter() - start
    latencies = []
    try:
        for i in range(commits):
            marker = f"fresh_function_{i}"
            (repo / "hot.py").write_text(f"def {marker}():\n    pass\n")
            git(repo, "add", "hot.py")
            subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", marker], check=True)
            latencies.append(searchable_after(repo, marker, 30))
            time.sleep(0.2)
    finally:
        cq(pyz, repo, "worker", "stop")
    print(f"  {size:6d} files: initial index {initial:5.1f} s; commit-to-searchable median "
          f"{statistics.median(latencies) * 1000:5.0f} ms, max {max(latencies) * 1000:5.0f} ms")
    return latencies


def main() -> int:
    """Run both measurements."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=25)
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--pyz", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        pyz = build(tmp_path, args.pyz)
        print(f"python {sys.version.split()[0]}")
        hook_overhead(pyz, tmp_path, args.commits)
        print(f"commit-to-searchable, {min(args.commits, 15)} one-file commits per size:")
        for size in (int(s) for s in args.sizes.split(",")):
            commit_to_searchable(pyz, tmp_path, size, min(args.commits, 15))
    return 0


if __name__ == "__main__":
    sys.exit(main())
