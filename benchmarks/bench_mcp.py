"""Benchmark: `cq mcp` start-up (to the initialize answer), warm tool calls, and the cost of
the working-tree overlay, on a generated repository.

    python3 benchmarks/bench_mcp.py [--files 10000] [--edited 19] [--pyz PATH]

Prints medians: from spawning the server to its initialize answer; a warm call of each tool
on the same session (on a definition and a file the first search found); a warm `search` with
`--edited` files modified in the working tree; and the same
with one of them edited again right before each query (so each query runs `git status` and
documents the edited files again), as differences from the clean one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_search_latency import generate
from common import build, cq, new_repo

INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench",
                                                                        "version": "1"}}}


class Session:
    """A `cq mcp` process spoken to line by line."""

    def __init__(self, pyz: Path, repo: Path):
        start = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", str(pyz), "-C", str(repo),
                                      "mcp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self.ask(INIT)
        self.startup = time.perf_counter() - start
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        self.next_id = 1

    def send(self, message: dict) -> None:
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def ask(self, message: dict) -> dict:
        self.send(message)
        while True:
            reply = json.loads(self.proc.stdout.readline())
            if reply.get("id") == message.get("id"):
                return reply

    def call(self, tool: str, arguments: dict) -> tuple[float, dict]:
        """Seconds of one tool call, and its structured answer."""
        self.next_id += 1
        start = time.perf_counter()
        reply = self.ask({"jsonrpc": "2.0", "id": self.next_id, "method": "tools/call",
                          "params": {"name": tool, "arguments": arguments}})
        elapsed = time.perf_counter() - start
        result = reply["result"]
        if result.get("isError"):
            raise SystemExit(f"{tool} {arguments}: {result['content'][0]['text']}")
        return elapsed, result["structuredContent"]

    def search(self, query: str) -> float:
        """Seconds of one search call."""
        return self.call("search", {"query": query})[0]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def tool_medians(session: Session, runs: int) -> dict[str, float]:
    """The median seconds of a warm call of each tool, on the first definition `search` finds
    for "parse config" and its file."""
    hit = next(h for h in session.call("search", {"query": "parse config"})[1]["results"]
               if h["kind"] != "file")
    name = hit["symbol"].rsplit(".", 1)[-1]
    calls = {"search (retry timeout)": {"query": "retry timeout"},
             "symbol": {"name": hit["symbol"]},
             "symbol with body": {"name": hit["symbol"], "body": True},
             "read (a definition)": {"path": hit["path"], "symbol": hit["symbol"]},
             "read (40 lines)": {"path": hit["path"], "start": 1, "end": 40},
             "outline": {"path": hit["path"]}, "references": {"name": name},
             "files": {}, "changes": {"since": "HEAD"}, "status": {}}
    return {tool: statistics.median(session.call(tool.split(" (")[0].split(" with")[0],
                                                 arguments)[0] for _ in range(runs))
            for tool, arguments in calls.items()}


def main() -> int:
    """Generate, index, then time start-ups and searches."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--edited", type=int, default=19)
    parser.add_argument("--pyz", type=Path)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        pyz = build(tmp_path, args.pyz)
        repo = new_repo(tmp_path / "repo")
        generate(repo, args.files)
        cq(pyz, repo, "init")
        startups = []
        for _ in range(args.runs):
            session = Session(pyz, repo)
            startups.append(session.startup)
            session.close()
        session = Session(pyz, repo)
        session.search("parse config")  # warm
        clean = [session.search(q) for q in ("retry timeout", "xylophonist", "parse")
                 for _ in range(args.runs)]
        tools = tool_medians(session, args.runs)
        edited_files = sorted(p for p in repo.rglob("*.py") if ".git" not in p.parts)
        for path in edited_files[:args.edited]:
            path.write_text(path.read_text() + "\ndef edited_now():\n    pass\n")
        edited = [session.search(q) for q in ("retry timeout", "xylophonist", "parse")
                  for _ in range(args.runs)]
        retouched = []  # each query right after an edit: git status and the overlay again
        for number in range(3 * args.runs):
            target = edited_files[number % max(args.edited, 1)]
            target.write_text(target.read_text() + f"\ndef edited_{number}():\n    pass\n")
            retouched.append(session.search(("retry timeout", "xylophonist", "parse")[number % 3]))
        session.close()
        cq(pyz, repo, "worker", "stop", check=False)
    print(f"{args.files} generated files; medians of {args.runs} runs")
    print(f"  start-up to the initialize answer   {1000 * statistics.median(startups):6.0f} ms")
    print(f"  warm search                         {1000 * statistics.median(clean):6.0f} ms")
    for name, median in tools.items():
        print(f"  warm {name:<31}{1000 * median:6.0f} ms")
    print(f"  warm search, {args.edited} files edited        "
          f"{1000 * statistics.median(edited):6.0f} ms "
          f"(+{1000 * (statistics.median(edited) - statistics.median(clean)):.0f} ms)")
    print(f"  the same, one file edited before each  {1000 * statistics.median(retouched):6.0f} ms "
          f"(+{1000 * (statistics.median(retouched) - statistics.median(clean)):.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
