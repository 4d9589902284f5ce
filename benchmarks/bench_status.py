"""Benchmark: `cq worker status` wall time against bare interpreter start-up, in one run.

    python3 benchmarks/bench_status.py [--runs N] [--pyz PATH]

Builds cq.pyz (unless --pyz is given), starts a worker in a throw-away repository, then times
`cq worker status` (quiet and normal), bare `python -I -S -c pass` and an empty zipapp, in
turn, so all see the same machine noise, and prints medians as ratios to the bare start-up.
The target is `cq worker status` within 2x of bare start-up.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str], cwd: Path) -> float:
    """Wall time of one run, in milliseconds."""
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False)
    return (time.perf_counter() - start) * 1000


def main() -> int:
    """Print the medians and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--pyz", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        pyz = args.pyz.resolve() if args.pyz else tmp_path / "cq.pyz"
        if not args.pyz:
            subprocess.run([sys.executable, str(ROOT / "build_zipapp.py"), "--output", str(pyz)],
                           check=True, stdout=subprocess.DEVNULL)
        repo = tmp_path / "repo"
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        cq = [sys.executable, "-I", "-S", str(pyz)]
        subprocess.run([*cq, "-C", str(repo), "worker", "start"], check=True,
                       stdout=subprocess.DEVNULL)
        try:
            empty = tmp_path / "empty.pyz"
            with zipfile.ZipFile(empty, "w") as zf:
                zf.writestr("__main__.py", "")
            commands = {
                "python -I -S -c pass": [sys.executable, "-I", "-S", "-c", "pass"],
                "python -I -S empty.pyz": [sys.executable, "-I", "-S", str(empty)],
                "cq worker status -q": [*cq, "worker", "status", "-q"],
                "cq worker status": [*cq, "worker", "status"],
            }
            check = subprocess.run(commands["cq worker status"], cwd=repo, check=False,
                                   capture_output=True, text=True)
            if check.returncode != 0:
                raise SystemExit(f"cq worker status failed: {check.stdout}{check.stderr}")
            times: dict = {name: [] for name in commands}
            for run in range(args.runs + 3):  # the first 3 warm caches and are dropped
                for name, cmd in commands.items():
                    elapsed = timed(cmd, repo)
                    if run >= 3:
                        times[name].append(elapsed)
        finally:
            subprocess.run([*cq, "-C", str(repo), "worker", "stop"], check=False,
                           stdout=subprocess.DEVNULL)
    medians = {name: statistics.median(values) for name, values in times.items()}
    bare = medians["python -I -S -c pass"]
    print(f"python {sys.version.split()[0]}, {args.runs} interleaved runs each, medians:")
    for name, ms in medians.items():
        print(f"  {name:<26} {ms:7.1f} ms  {ms / bare:5.2f}x bare start-up")
    print("target: cq worker status within 2x of bare start-up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
