"""Benchmark: `cq search` latency and index size on a large generated repository, against a
baseline build of cq from another revision, in the same run.

    python3 benchmarks/bench_search_latency.py [--files 50000] [--baseline REV] [--pyz PATH]

Both builds index the same generated tree (Python, JavaScript and Go files with doc comments,
about 1.8 KB each); then whole `cq search` processes for a rare word, a common word and three
words run interleaved, and the medians, the ratio to the baseline and the index size print.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, build, cq, git, new_repo

VOCABULARY = (
    "parse", "load", "store", "fetch", "render", "queue", "cache", "token", "stream", "buffer",
    "encode", "decode", "merge", "split", "route", "match", "build", "flush", "retry", "timeout",
    "handler", "config", "session", "request", "response", "client", "server", "record", "index",
    "search", "filter", "window", "focus",
)


def source_file(rng: random.Random, number: int) -> tuple[str, str]:
    """(relative path, content) of one generated file."""
    kind = number % 3
    names = [f"{rng.choice(VOCABULARY)}_{rng.choice(VOCABULARY)}_{number}_{i}" for i in range(6)]
    prose = [" ".join(rng.choice(VOCABULARY) for _ in range(12)) for _ in range(6)]
    folder = f"pkg{number // 100:04d}"
    if kind == 0:
        body = "".join(f'def {n}(value):\n    """{p}."""\n    return value + {i}\n\n\n'
                       for i, (n, p) in enumerate(zip(names, prose)))
        return f"{folder}/m{number}.py", f'"""Module {number}: common words."""\n\n\n{body}'
    if kind == 1:
        body = "".join(f"/** {p}. */\nexport function {n}(value) {{\n  return value + {i};\n}}\n\n"
                       for i, (n, p) in enumerate(zip(names, prose)))
        return f"{folder}/m{number}.js", f"// Module {number}: common words.\n{body}"
    body = "".join(f"// {n} {p}.\nfunc {n}(value int) int {{\n\treturn value + {i}\n}}\n\n"
                   for i, (n, p) in enumerate(zip(names, prose)))
    header = f"// Package {folder}: common words.\npackage {folder}\n\n"
    return f"{folder}/m{number}.go", header + body


def generate(repo: Path, files: int) -> None:
    """Write and commit the generated tree; one file also holds a rare word."""
    rng = random.Random(2026)
    for number in range(files):
        path, content = source_file(rng, number)
        if number == files // 2:
            content += "\n# xylophonist appears only here\n"
        target = repo / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "generated")


def baseline_build(tmp: Path, revision: str) -> Path:
    """cq.pyz built from another revision of this repository."""
    checkout = tmp / "baseline-src"
    checkout.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(checkout)], input=archive, check=True)
    out = tmp / "baseline.pyz"
    subprocess.run([sys.executable, str(checkout / "build_zipapp.py"), "--output", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    return out


def timed(pyz: Path, repo: Path, query: str) -> float:
    """Seconds of one whole `cq search` process."""
    start = time.perf_counter()
    cq(pyz, repo, "search", "--", *query.split())
    return time.perf_counter() - start


def index_size(repo: Path) -> int:
    """Bytes of the index on disk (with its WAL)."""
    return sum(p.stat().st_size for p in (repo / ".git" / "cq").glob("index.db*"))


def main() -> int:
    """Index the tree with both builds, then time searches interleaved."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--baseline", default="4391eee", help="revision to compare against")
    parser.add_argument("--pyz", type=Path)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        builds = {"baseline": baseline_build(tmp_path, args.baseline),
                  "cq": build(tmp_path, args.pyz)}
        source = new_repo(tmp_path / "source")
        generate(source, args.files)
        repos, indexing = {}, {}
        for name, pyz in builds.items():
            repo = tmp_path / f"repo-{name}"
            subprocess.run(["git", "clone", "-q", str(source), str(repo)], check=True)
            start = time.perf_counter()
            cq(pyz, repo, "init")
            indexing[name] = time.perf_counter() - start
            repos[name] = repo
        queries = {"rare word": "xylophonist", "common word": "parse",
                   "three words": "retry timeout handler"}
        times: dict = {(n, q): [] for n in builds for q in queries}
        for _ in range(args.runs):
            for label, query in queries.items():
                for name, pyz in builds.items():
                    times[(name, label)].append(timed(pyz, repos[name], query))
        source_bytes = sum(p.stat().st_size for p in source.rglob("*")
                           if p.is_file() and ".git" not in p.parts)
        print(f"{args.files} generated files, {source_bytes / 1e6:.0f} MB; "
              f"baseline {args.baseline}; medians of {args.runs} interleaved runs")
        for label in queries:
            base = statistics.median(times[("baseline", label)])
            new = statistics.median(times[("cq", label)])
            print(f"  search, {label:<12} baseline {1000 * base:6.0f} ms   cq {1000 * new:6.0f} ms"
                  f"   {new / base:4.2f}x")
        for name, repo in repos.items():
            size = index_size(repo)
            print(f"  {name:<8} index {size / 1e6:6.0f} MB ({size / source_bytes:.2f}x the source),"
                  f" initial index {indexing[name]:6.0f} s")
            cq(builds[name], repo, "worker", "stop", check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
