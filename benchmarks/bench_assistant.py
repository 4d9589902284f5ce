"""Benchmark: can an assistant answer questions about real code with cq's MCP tools, in fewer
calls and fewer characters read than with grep?

    python3 benchmarks/bench_assistant.py [--grep-only] [--check] [--corpus NAME] [--pyz PATH]
                                          [--cache DIR] [-v]

Five public code bases in five languages (Python, JavaScript, Go, Rust, C; see
assistant_tasks.py) are fetched by pinned version with the ordinary package clients (pip, npm,
Debian's apt), each committed into a repository of its own.  The 30 tasks in
assistant_tasks.py were written from the code alone, before cq was run on it: questions an
assistant is asked while working on such code (a value in a body, the callers of a function,
where something is done, a constant), each with the facts (exact strings of the code, or a file
path) that an answer must have read.  First the facts are checked against the code (each at the
`path:line` written beside it); `--check` stops there.

Then two scripted policies answer every task, each in at most four tool calls, and stop as soon
as everything they read holds all the facts (an assistant knows the answer when it sees it):

- grep (`grep_policy`): ripgrep (`rg`; `git grep` where it is not installed) for the identifier
  the question names (`rg -n -w`, case-sensitive), or else for the content words of the query:
  `rg -c -i -w` to rank the files by matching lines (source code before tests and docs), then
  `rg -n` in the best three.  Every output is cut at 30,000 characters, as an assistant's shell
  shows it.  The hit lines are ranked (source code first; the definition of the name first, or
  last when its callers are asked for; then lines covering more of the query's words; then
  files with more hits) and the best are read with `sed -n` in windows of 31 lines, 5 before
  and 25 after (for "references" tasks 25 before and 5 after, to see the enclosing definition),
  never a line twice.  It knows the kind of the task, never its answer.
- cq (`mcp_policy`): over MCP, with the official Python SDK client: `references` first for
  a "references" task; else `search` (limit 5), then `read` on its hits, best first (the
  definition of the name the question names; then source code before tests and docs, as
  grep's policy ranks them; definitions before files), one call
  each: a definition whole, a file's hit as the definition its best line is in (or in the
  same window around the lines it showed).

For each task and policy the table gives: answered or not, the number of calls, and the
characters of tool output read (the commands themselves count towards finding a fact, a path
for instance, but not towards the characters).  `--grep-only` runs without cq.  ripgrep is
Debian's `ripgrep`; the Debian packages need `apt-get update` once.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from assistant_tasks import CORPORA, KINDS, REFERENCES, TASKS, Task
from common import build, cq, fetch_corpus, git, imported_repo

MAX_CALLS = 4  # tool calls per task, for each policy, the first search included
SHOWN = 30_000  # characters of one command's output that an assistant's shell shows
BEFORE, AFTER = 5, 25  # the lines read around a hit (swapped for "references" tasks)


# --- corpora ----------------------------------------------------------------------------------

def corpus_repo(name: str, cache: Path) -> Path:
    """A repository holding the code base, committed once."""
    corpus = CORPORA[name]
    repo = cache / "repos" / name
    if (repo / ".git").exists():
        return repo
    return imported_repo(repo, fetch_corpus(cache, name, corpus.client, corpus.spec,
                                            corpus.folder))


# --- facts ------------------------------------------------------------------------------------

def squeeze(text: str) -> str:
    """Runs of white space as one space: how facts are matched."""
    return " ".join(text.split())


def check_facts(repos: dict[str, Path]) -> list[str]:
    """Problems with the tasks: a fact that is not at the place written beside it (on that line
    or the two after it, in the committed file), or a task that does not fit its record."""
    problems = []
    for number, task in enumerate(TASKS, 1):
        label = f"task {number} ({task.corpus}: {task.question[:40]})"
        if task.kind not in KINDS or len(task.facts) != len(task.where) or not task.facts:
            problems.append(f"{label}: bad record")
            continue
        if task.kind == REFERENCES and not task.name:
            problems.append(f"{label}: a references task names its identifier")
        if task.corpus not in repos:
            continue
        tracked = set(git(repos[task.corpus], "ls-files").splitlines())
        for fact, where in zip(task.facts, task.where):
            path, _, line = where.partition(":")
            if path not in tracked:
                problems.append(f"{label}: {path} is not in the repository")
            elif not line:
                if fact != path:
                    problems.append(f"{label}: {fact!r} is located by a path alone")
            else:
                lines = (repos[task.corpus] / path).read_text(errors="replace").splitlines()
                first = int(line)
                if squeeze(fact) not in squeeze("\n".join(lines[first - 1:first + 2])):
                    problems.append(f"{label}: {fact!r} is not at {where}")
    return problems


@dataclass
class Reading:
    """What a policy did for one task."""

    calls: int = 0
    chars: int = 0  # characters of tool output read
    seen: list[str] = field(default_factory=list)  # every command and its output, in order
    answered: bool = False

    def add(self, task: Task, command: str, output: str) -> bool:
        """Count one call and what it showed; True once every fact has been read."""
        self.calls += 1
        self.chars += len(output)
        self.seen.append(f"$ {command}\n{output}")
        text = squeeze("\n".join(self.seen))
        self.answered = all(squeeze(fact) in text for fact in task.facts)
        return self.answered


# --- the grep policy ----------------------------------------------------------------------------

STOP_WORDS = {"a", "an", "the", "to", "of", "in", "into", "for", "with", "and", "or", "by", "on",
              "from", "after", "at", "as", "is", "it", "its", "while", "one", "all", "when",
              "what", "which", "where", "how", "does", "do", "be", "are", "that", "this"}


def content_words(query: str) -> list[str]:
    """The query's words, less the commonest English ones."""
    return [w for w in re.findall(r"\w+", query) if w.lower() not in STOP_WORDS]


def definition_of(name: str) -> re.Pattern:
    """A line that defines name, in any of the five languages, as a reader would tell it."""
    n = re.escape(name)
    return re.compile("|".join((
        # def, class, function, func (with a Go receiver), fn, struct, type ... NAME
        (rf"\b(?:def|class|function|func|fn|struct|enum|trait|type|interface|impl)\s+"
         rf"(?:\([^)]*\)\s*)?\*?{n}\b"),
        rf"^\s*(?:export\s+)?(?:pub(?:\([^)]*\))?\s+)?(?:const|let|var|static)\s+(?:mut\s+)?{n}\b",
        rf"^\s*#\s*define\s+{n}\b",
        rf"^\s*{n}\s*(?::[^=]*)?=(?!=)",  # an assignment: NAME = ..., NAME: type = ...
        rf"^\s*(?:static\s+|async\s+|get\s+|set\s+)*{n}\s*\([^;]*\)\s*\{{?\s*$",  # a JS method
        rf"^[A-Za-z_][\w \t*]*\b{n}\s*\(",  # C: a function at the start of its line
    )))


CODE = {".py", ".js", ".mjs", ".cjs", ".ts", ".tsx", ".go", ".rs", ".c", ".h", ".cc", ".cpp"}
ASIDE = {"test", "tests", "testdata", "__tests__", "spec", "benches", "bench", "examples",
         "_examples", "docs", "doc"}


# A hit that calls nothing (for "references" tasks): a comment, an import, an export.
NOT_A_CALL = re.compile(r"^\s*(?:#(?!\s*(?:define|if))|//|/\*|\*(?=\s|/|$)|\"\"\"|'''|import\b"
                        r"|from\s+\S+\s+import\b|use\s|(?:module\.)?exports?\b)|\brequire\(")


def tier(path: str) -> int:
    """0 for source code, 1 for tests, examples and code under docs, 2 for every other file:
    the order in which an assistant looks at a hit list, whatever the question."""
    folders = path.lower().split("/")
    file = folders.pop()
    if Path(file).suffix not in CODE:
        return 2
    aside = any(f in ASIDE for f in folders) or file.startswith("test_") or any(
        mark in file for mark in ("_test.", ".test.", ".spec.", "conftest."))
    return 1 if aside else 0


def grep_command(*options: str) -> list[str]:
    """ripgrep, sorted by path for a deterministic answer, or git grep where rg is missing."""
    if shutil.which("rg"):
        return ["rg", "--no-heading", "--color", "never", "--sort", "path", "--max-columns",
                "300", "--max-columns-preview", "-w", "-F", *options]
    return ["git", "grep", "-I", "-w", "-F", *options]


def run(repo: Path, command: list[str]) -> str:
    """What an assistant's shell shows of the command's output."""
    return subprocess.run(command, cwd=repo, capture_output=True, text=True, check=False,
                          errors="replace").stdout[:SHOWN]


def grep_policy(repo: Path, task: Task, max_calls: int = MAX_CALLS) -> Reading:
    """Find with rg, then read the best hits with sed, in at most max_calls calls.

    A named identifier: `rg -n -w NAME`.  Plain words: `rg -c -i -w` for the files with the most
    matching lines (source code before tests and docs), then `rg -n` in the best three.  The hit
    lines are ranked (source code first; the name's definition first, or last when its callers
    are asked for; then the lines covering more of the query's words; then the files with more
    hits) and the best ones not yet read are read with sed, one window a call."""
    reading = Reading()
    words = content_words(task.query)
    if task.name:
        command = grep_command("-n", "-e", task.name)
    else:
        patterns = [a for w in words for a in ("-e", w)]
        command = grep_command("-c", "-i", *patterns)
        output = run(repo, command)
        if reading.add(task, " ".join(command), output):
            return reading
        counts = {}
        for line in output.splitlines():
            path, _, count = line.rpartition(":")
            if path and count.isdigit():
                counts[path] = int(count)
        best = sorted(counts, key=lambda p: (tier(p), -counts[p], p))[:3]
        if not best:
            return reading
        command = grep_command("-n", "-i", *patterns, "--", *best)
    output = run(repo, command)
    if reading.add(task, " ".join(command), output):
        return reading
    hits = []
    for line in output.splitlines():
        match = re.match(r"(.+?):(\d+):(.*)", line)
        if match:
            hits.append((match[1], int(match[2]), match[3]))
    per_file = Counter(path for path, _, _ in hits)
    others = [re.compile(rf"(?<!\w){re.escape(w)}(?!\w)", re.IGNORECASE)
              for w in words if w != task.name]
    defines = definition_of(task.name) if task.name else None
    before, after = (AFTER, BEFORE) if task.kind == REFERENCES else (BEFORE, AFTER)

    def rank(hit: tuple[str, int, str]) -> tuple:
        path, number, text = hit
        is_definition = bool(defines and defines.search(text))
        if task.kind == REFERENCES:  # the calls first: not the definition, a comment, an import
            later = is_definition or bool(NOT_A_CALL.search(text))
        else:  # the definition first
            later = not is_definition
        covered = sum(1 for word in others if word.search(text))
        return (tier(path), later, -covered, -per_file[path], path, number)

    windows: list[tuple[str, int, int]] = []
    for path, number, _ in sorted(hits, key=rank):
        if reading.calls >= max_calls:
            break
        if any(path == p and start <= number <= end for p, start, end in windows):
            continue  # already read
        start, end = max(1, number - before), number + after
        for p, first, last in windows:  # no line twice: only the part not read yet
            if p == path and first <= start <= last:
                start = last + 1
            if p == path and first <= end <= last:
                end = first - 1
        if start > end:
            continue
        windows.append((path, start, end))
        sed = ["sed", "-n", f"{start},{end}p", path]
        if reading.add(task, " ".join(sed), run(repo, sed)):
            break
    return reading


# --- the MCP policy -------------------------------------------------------------------------

def mcp_policy(pyz: Path, repo: Path, task: Task, max_calls: int = MAX_CALLS) -> Reading:
    """Answer the task as an assistant would with cq's MCP tools, in at most max_calls calls,
    through the official MCP Python SDK client against `cq.pyz -C REPO mcp`.

    A "references" task asks `references` for the name it names first.  Every other task
    asks `search` for its query (limit 5), then reads the hits, best first, one `read` a call:
    the hit defining the name the question names, if there is one, then source code before
    tests and docs (the grep policy's order), definitions before files.  A definition is
    read whole (`read` with symbol), a file around the lines the hit showed.  It knows the
    kind of the task and the name it names, never its answer."""
    import anyio
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    reading = Reading()
    params = StdioServerParameters(command=sys.executable,
                                   args=["-I", "-S", str(pyz), "-C", str(repo), "mcp"])

    async def run() -> None:
        async with stdio_client(params) as (read_stream, write_stream), \
                ClientSession(read_stream, write_stream) as session:
            await session.initialize()

            async def ask(tool: str, arguments: dict):
                result = await session.call_tool(tool, arguments)
                text = "\n".join(c.text for c in result.content if hasattr(c, "text"))
                done = reading.add(task, f"{tool} {arguments}", text)
                return done, (result.structured_content or {})

            if task.kind == REFERENCES and task.name:
                done, _ = await ask("references", {"name": task.name})
                if done:
                    return
            done, found = await ask("search", {"query": task.name if task.kind == REFERENCES
                                               else task.query, "limit": 5})
            for arguments in reads(task, found.get("results") or []):
                if done or reading.calls >= max_calls:
                    return
                done, _ = await ask("read", arguments)

    anyio.run(run)
    return reading


def reads(task: Task, hits: list[dict]) -> list[dict]:
    """The `read` calls to make of a search's hits, best first: the definition of the name the
    task names, then source code before tests and docs, definitions before files (the
    definition their best line is in, or around the lines shown)."""
    def last_part(symbol: str) -> str:
        return re.split(r"::|\.", symbol)[-1]

    def order(hit: dict) -> tuple:
        named = bool(task.name) and last_part(hit["symbol"]) == task.name
        return (not named, tier(hit["path"]), hit["kind"] == "file")

    calls = []
    for hit in sorted(hits, key=order):
        if hit["kind"] != "file" and hit.get("end", hit["line"]) > hit["line"]:
            calls.append({"path": hit["path"], "symbol": hit["symbol"]})
        elif hit.get("in"):  # a file's best line is in this definition
            calls.append({"path": hit["path"], "symbol": hit["in"]["symbol"]})
        else:
            shown = [int(n) for n in re.findall(r"^(\d+):", hit.get("lines", ""),
                                                re.MULTILINE)]
            first = min(shown) if shown else hit["line"]
            calls.append({"path": hit["path"], "start": max(1, first - BEFORE),
                          "end": first + AFTER})
    return calls


# --- the run and the table ------------------------------------------------------------------

def main() -> int:
    """Fetch and commit the corpora, check the facts, run the policies, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyz", type=Path)
    parser.add_argument("--cache", type=Path,
                        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                        / "cq-bench-assistant")
    parser.add_argument("--grep-only", action="store_true", help="run the grep policy alone")
    parser.add_argument("--check", action="store_true", help="only check the tasks' facts")
    parser.add_argument("--corpus", action="append", choices=sorted(CORPORA),
                        help="only this code base (may be repeated)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print what the policies read for every task they did not answer")
    args = parser.parse_args()
    names = args.corpus or list(CORPORA)
    args.cache.mkdir(parents=True, exist_ok=True)
    repos = {name: corpus_repo(name, args.cache) for name in names}
    problems = check_facts(repos)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    tasks = [(number, task) for number, task in enumerate(TASKS, 1) if task.corpus in repos]
    print(f"{len(tasks)} tasks: every fact is where it is said to be")
    if args.check:
        return 0
    if not shutil.which("rg"):
        print("ripgrep is not installed: the grep policy uses git grep", file=sys.stderr)
    tools = ["grep"] if args.grep_only else ["grep", "cq"]
    results: dict[tuple[str, int], Reading] = {}
    with tempfile.TemporaryDirectory() as tmp:
        pyz = None if args.grep_only else build(Path(tmp), args.pyz)
        for name, repo in repos.items():
            if pyz:
                cq(pyz, repo, "init")
            try:
                for number, task in tasks:
                    if task.corpus != name:
                        continue
                    results["grep", number] = grep_policy(repo, task)
                    if pyz:
                        results["cq", number] = mcp_policy(pyz, repo, task)
            finally:
                if pyz:
                    cq(pyz, repo, "worker", "stop", check=False)
    print_tasks(tasks, tools, results)
    print_totals(tasks, tools, results)
    if args.verbose:
        for tool in tools:
            for number, task in tasks:
                reading = results[tool, number]
                if not reading.answered:
                    print(f"\n=== {tool}, task {number} not answered: {task.question}\n"
                          f"    facts: {list(task.facts)}", file=sys.stderr)
                    for step in reading.seen:
                        print(step[:3000], file=sys.stderr)
    return 0


def cell(reading: Reading) -> str:
    """answered, calls, characters."""
    return f"{'yes' if reading.answered else 'no':<3} {reading.calls} {reading.chars:>7}"


def print_tasks(tasks: list[tuple[int, Task]], tools: list[str],
                results: dict[tuple[str, int], Reading]) -> None:
    """One row per task."""
    print("\nPer task: answered, calls, characters read")
    print(f"| {'#':>2} | {'corpus':<11} | {'kind':<10} | {'question':<50} | "
          + " | ".join(f"{t:<15}" for t in tools) + " |")
    print("|" + "---|" * (4 + len(tools)))
    for number, task in tasks:
        question = task.question if len(task.question) <= 50 else task.question[:47] + "..."
        print(f"| {number:>2} | {task.corpus:<11} | {task.kind:<10} | {question:<50} | "
              + " | ".join(f"{cell(results[t, number]):<15}" for t in tools) + " |")


def print_totals(tasks: list[tuple[int, Task]], tools: list[str],
                 results: dict[tuple[str, int], Reading]) -> None:
    """Answered / tasks, calls and characters, by kind, by language and in all."""
    groups: dict[str, list[int]] = {}
    for number, task in tasks:
        for key in (task.kind, CORPORA[task.corpus].language, "all"):
            groups.setdefault(key, []).append(number)
    order = [*KINDS, *dict.fromkeys(c.language for c in CORPORA.values()), "all"]
    print("\nTotals: answered / tasks, calls, characters read")
    print(f"| {'tasks':<10} | {'n':>2} | " + " | ".join(f"{t:<26}" for t in tools) + " |")
    print("|" + "---|" * (2 + len(tools)))
    for key in order:
        if key not in groups:
            continue
        numbers = groups[key]
        cells = []
        for tool in tools:
            readings = [results[tool, n] for n in numbers]
            answered = sum(r.answered for r in readings)
            cells.append(f"{answered:>2}/{len(numbers):<2} {sum(r.calls for r in readings):>4} "
                         f"calls {sum(r.chars for r in readings):>8}")
        print(f"| {key:<10} | {len(numbers):>2} | " + " | ".join(f"{c:<26}" for c in cells)
              + " |")


if __name__ == "__main__":
    sys.exit(main())
