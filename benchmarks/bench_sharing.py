"""Benchmark: the external documenter's answers shared through git notes (`cq share`).

    python3 benchmarks/bench_sharing.py [--notes 50000] [--files 2000] [--seconds 0.2]
                                        [--pyz PATH]

Notes at scale: a clone of a repository of `--notes` small files holds one answer per file
(written into its index as the worker would), `cq share push` exports and pushes them to a
bare remote, and a second clone, indexed, takes them all with `cq share fetch` (fetch, merge,
import).  Prints both times and the size of refs/notes/cq against the answers' text.

Shards: `--files` files summarised by a stand-in that takes `--seconds` a call (no model is
called), 4 calls at a time per clone: once by one clone, then by four clones at once with
`cq index --shard K/4`, each pushing its answers; a fifth clone then fetches and indexes.
Prints the wall times side by side and the calls each clone made.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import build, cq, git, new_repo

# The same command in every clone (so the same settings key); each logs its own calls.
STAND_IN = 'sleep {seconds}; echo "$CQ_PATH" >> "$CQ_STATE_DIR/calls"; echo "summary of $CQ_PATH"'
WORDS = ("parse", "request", "cache", "token", "stream", "buffer", "merge", "route", "retry",
         "handler", "session", "client", "server", "record", "index", "search", "window")


def remote_with_files(base: Path, files: int) -> Path:
    """A bare remote holding one commit of `files` small Python files."""
    seed = new_repo(base / "seed")
    for i in range(files):
        folder = seed / f"pkg{i // 500:03d}"
        folder.mkdir(exist_ok=True)
        (folder / f"m{i}.py").write_text(f"def handler_{i}(event):\n    return event + {i}\n")
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "files")
    remote = base / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    git(seed, "push", "-q", str(remote), "main")
    return remote


def clone(remote: Path, path: Path, **settings: str) -> Path:
    """A clone of the remote, with cq settings."""
    subprocess.run(["git", "clone", "-q", "-b", "main", str(remote), str(path)], check=True)
    for key, value in settings.items():
        git(path, "config", f"cq.{key}", value)
    return path


def timed(pyz: Path, repo: Path, *args: str) -> float:
    """Seconds one cq command takes."""
    start = time.perf_counter()
    cq(pyz, repo, *args)
    return time.perf_counter() - start


def fill_answers(repo: Path, rng: random.Random) -> int:
    """One answer of about 400 characters for every file of the index, as the worker stores
    them (through sqlite3); the answers' text in bytes."""
    db = sqlite3.connect(repo / ".git" / "cq" / "index.db")
    blobs = [row[0] for row in db.execute("SELECT blob FROM docs")]
    rows = []
    for blob in blobs:
        summary = f"Handles {blob[:8]}: " + " ".join(rng.choice(WORDS) for _ in range(55))
        notes = {"handler": " ".join(rng.choice(WORDS) for _ in range(8))}
        rows.append((blob, "0123456789abcdef", "ok", summary, json.dumps(notes), "", b"",
                     time.time()))
    with db:
        db.executemany("INSERT OR REPLACE INTO summaries VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.close()
    return sum(len(r[3]) + len(r[4]) for r in rows)


def notes_size(repo: Path) -> int:
    """Bytes on disk of the objects of refs/notes/cq (its commits, trees and notes)."""
    objects = git(repo, "rev-list", "--objects", "refs/notes/cq")
    listing = subprocess.run(["git", "-C", str(repo), "cat-file",
                              "--batch-check=%(objectsize:disk)"],
                             input="".join(line.split()[0] + "\n" for line in
                                           objects.splitlines()),
                             capture_output=True, text=True, check=True).stdout
    return sum(int(n) for n in listing.split())


def notes_at_scale(pyz: Path, base: Path, count: int) -> None:
    """Push `count` answers from one clone and fetch them into another."""
    remote = remote_with_files(base, count)
    a = clone(remote, base / "a")
    cq(pyz, a, "init")
    text = fill_answers(a, random.Random(2026))
    push = timed(pyz, a, "share", "push")
    b = clone(remote, base / "b")
    cq(pyz, b, "init")
    fetch = timed(pyz, b, "share", "fetch")
    db = sqlite3.connect(b / ".git" / "cq" / "index.db")
    taken = db.execute("SELECT COUNT(*) FROM summaries WHERE status = 'shared'").fetchone()[0]
    db.close()
    size = notes_size(b)
    for repo in (a, b):
        cq(pyz, repo, "worker", "stop", check=False)
    print(f"notes for {count} blobs (answers' text {text / 1e6:.1f} MB)")
    print(f"  cq share push (export and push)        {push:6.1f} s")
    print(f"  cq share fetch (fetch, merge, import)  {fetch:6.1f} s, {taken} answers taken in")
    print(f"  refs/notes/cq on disk                  {size / 1e6:6.1f} MB "
          f"({size / text:.2f}x the answers' text)")


def calls_of(repo: Path) -> int:
    """Calls the stand-in made in this clone."""
    log = repo / ".git" / "cq" / "calls"
    return len(log.read_text().splitlines()) if log.exists() else 0


def shards(pyz: Path, base: Path, files: int, seconds: float) -> None:
    """One clone against four shards and a fifth clone that fetches."""
    remote = remote_with_files(base, files)
    settings = {"documenter": STAND_IN.format(seconds=seconds), "documenterJobs": "4"}
    one = clone(remote, base / "one", **settings)
    alone = timed(pyz, one, "index", "--wait")
    cq(pyz, one, "worker", "stop", check=False)
    clones = [clone(remote, base / f"shard{k}", **settings) for k in range(1, 5)]
    start = time.perf_counter()
    runs = [subprocess.Popen([sys.executable, "-I", "-S", str(pyz), "-C", str(repo), "index",
                              "--shard", f"{k}/4", "--wait"], stdout=subprocess.DEVNULL)
            for k, repo in enumerate(clones, 1)]
    for run in runs:
        run.wait()
    pushes = [subprocess.Popen([sys.executable, "-I", "-S", str(pyz), "-C", str(repo), "share",
                                "push"], stdout=subprocess.DEVNULL) for repo in clones]
    for push in pushes:
        push.wait()
    sharded = time.perf_counter() - start
    fifth = clone(remote, base / "fifth", **settings)
    fetched = timed(pyz, fifth, "share", "fetch") + timed(pyz, fifth, "index", "--wait")
    for repo in (*clones, fifth):
        cq(pyz, repo, "worker", "stop", check=False)
    made = [calls_of(repo) for repo in clones]
    print(f"{files} files, a stand-in of {seconds:g} s a call, 4 calls at a time per clone")
    print(f"  one clone summarises everything        {alone:6.1f} s, {calls_of(one)} calls")
    print(f"  four shards at once, each then pushes  {sharded:6.1f} s "
          f"({sharded / alone:.2f}x), calls {' + '.join(map(str, made))} = {sum(made)}")
    print(f"  a fifth clone: fetch, then index       {fetched:6.1f} s, {calls_of(fifth)} calls")


def main() -> int:
    """Run both parts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", type=int, default=50_000)
    parser.add_argument("--files", type=int, default=2_000)
    parser.add_argument("--seconds", type=float, default=0.2)
    parser.add_argument("--pyz", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pyz = build(Path(tmp), args.pyz)
        (Path(tmp) / "notes").mkdir()
        (Path(tmp) / "shards").mkdir()
        notes_at_scale(pyz, Path(tmp) / "notes", args.notes)
        shards(pyz, Path(tmp) / "shards", args.files, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
