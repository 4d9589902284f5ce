"""Benchmark: the external documenter phase.  Files are summarised by a stand-in that takes
1 s a call (no model is called), cq.documenterJobs calls at a time, while `cq search`
answers from the built-in records.

    python3 benchmarks/bench_summaries.py [--files 200] [--jobs 4] [--seconds 1] [--pyz PATH]

Prints: when the built-in records were searchable, when every summary was in, the calls made
(one per file: none repeated), and a restart plus `cq index --rebuild` that must call nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import build, cq, git, new_repo


def summaries(pyz: Path, repo: Path) -> dict:
    """The documenter part of `cq index status --json`."""
    return json.loads(cq(pyz, repo, "index", "status", "--json"))["documenter"]


def main() -> int:
    """Set up, index, and time the two phases."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--pyz", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        pyz = build(tmp_path, args.pyz)
        repo = new_repo(tmp_path / "repo")
        for i in range(args.files):
            (repo / f"m{i}.py").write_text(f"def handler_{i}(event):\n    return event\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "files")
        calls = tmp_path / "calls"
        git(repo, "config", "cq.documenter",
            f'sleep {args.seconds}; echo "$CQ_PATH" >> {calls}; echo "summary of $CQ_PATH"')
        git(repo, "config", "cq.documenterJobs", str(args.jobs))
        start = time.perf_counter()
        cq(pyz, repo, "init")
        searchable = time.perf_counter() - start
        hits = json.loads(cq(pyz, repo, "search", "--json", "handler_7"))
        pending_then = summaries(pyz, repo)["pending"]
        while summaries(pyz, repo)["pending"]:
            time.sleep(0.2)
        complete = time.perf_counter() - start
        made = len(calls.read_text().splitlines())
        cq(pyz, repo, "worker", "restart")
        cq(pyz, repo, "index", "--rebuild", "--wait")
        again = len(calls.read_text().splitlines()) - made
        cq(pyz, repo, "worker", "stop", check=False)
    print(f"{args.files} files, {args.jobs} calls at a time, {args.seconds:g} s a call")
    print(f"  built-in records searchable after   {searchable:6.1f} s "
          f"(search found {hits[0]['symbol'] if hits else 'nothing'} with "
          f"{pending_then} summaries still to come)")
    print(f"  every summary in after              {complete:6.1f} s "
          f"(ideal {args.files * args.seconds / args.jobs:.0f} s)")
    print(f"  calls made                          {made:6d}")
    print(f"  calls after a restart and --rebuild {again:6d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
