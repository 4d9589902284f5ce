"""Benchmark: initial index of a real code base, next to `ctags -R` on the same tree.

    python3 benchmarks/bench_initial_index.py [--source DIR] [--pyz PATH]

By default the code base is this Python's own standard library (Lib/, without
site-packages and __pycache__), committed into a throw-away repository.  Prints files and
seconds for `cq init` (which waits until the index is complete) and for universal-ctags.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from common import build, cq, git, new_repo


def main() -> int:
    """Index the tree with cq and with ctags and print both rates."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path(sysconfig.get_paths()["stdlib"]))
    parser.add_argument("--pyz", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        pyz = build(tmp_path, args.pyz)
        repo = new_repo(tmp_path / "lib")
        shutil.copytree(args.source, repo, dirs_exist_ok=True, symlinks=True,
                        ignore=shutil.ignore_patterns("site-packages", "__pycache__"))
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "import")
        files = len(git(repo, "ls-files", "-z").split("\0")) - 1
        start = time.perf_counter()
        cq(pyz, repo, "init")
        cq_seconds = time.perf_counter() - start
        status = cq(pyz, repo, "index", "status")
        cq(pyz, repo, "worker", "stop")
        print(f"python {sys.version.split()[0]}; {args.source}: {files} files")
        print(f"  cq init (until complete)  {cq_seconds:7.1f} s  {files / cq_seconds:7.0f} files/s")
        for line in status.splitlines()[1:]:
            print(f"    {line}")
        ctags = shutil.which("ctags")
        if ctags:
            start = time.perf_counter()
            subprocess.run([ctags, "-R", "-f", str(tmp_path / "tags"), "."], cwd=repo,
                           check=True, capture_output=True)
            seconds = time.perf_counter() - start
            print(f"  ctags -R                  {seconds:7.1f} s  {files / seconds:7.0f} files/s")
        else:
            print("  ctags: not installed (apt-get install universal-ctags to compare)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
