"""Benchmark: cq against the tools a user would pick instead, in one run, as one table.

    python3 benchmarks/bench_all.py [--sizes 1000,10000,50000] [--runs 20] [--index-runs 3]
                                    [--pyz PATH]

For generated trees of each size (`bench_search_latency.generate`) and for this Python's own
`Lib/`, it measures, with the anchors in the same run and interleaved with cq:

- the initial index: `cq init` on a repository cq has not seen, until searchable and until
  complete, against `ctags -R` and against the parse floor: every `.py` file through
  `ast.parse` and every other file through one regex word scan, in as many processes as the
  worker's documenting processes may be (the medians of --index-runs runs of cq, each after
  a run of ctags and of the floor, and of those anchor runs and one more);
- the process tree's peak during that index: the worker and every process under it (its
  documenting processes, its git readers), their resident memory summed, sampled;
- `cq search` as a whole process (median and p95), rare word, common word, three words and
  an exact identifier, on the largest tree, against `rg` and `git grep` for the same words;
  and the same queries as warm `search` calls of one `cq mcp` session (median and p95);
- commit -> searchable for one-file commits at every size, the first right after the
  initial index (median and slowest), against a `ctags -R` rebuild;
- the worker's resident memory at the largest size, idle and at its peak;
- the index on disk against the source (its text files) and against ctags' tags file, at
  the largest size and for `Lib/`.

Anchors come from Debian's packages (`apt-get install universal-ctags ripgrep`); a missing
one is reported as such in the table.  Prints the date, the core count and a Markdown table.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from bench_mcp import Session
from bench_search_latency import generate
from common import build, cq, git, new_repo, searchable_after

QUERIES = {"rare word": ["xylophonist"], "common word": ["parse"],
           "three words": ["retry", "timeout", "handler"]}


WORD = re.compile(rb"[^\W\d]\w*")
FLOOR_PROCESSES = 8  # cq's POOL_MAX: documenting processes at most, one per core
# Seconds after the last commit before the worker's idle memory is read: its documenting
# processes leave after 10 s without work, and it gives back its free memory 2 s later.
IDLE_AFTER = 15


def floor_share(paths: list[bytes]) -> int:
    """One process's share of the parse floor: parse each Python file, scan each other file's
    words once; the words found (so the scan is not optimised away)."""
    found = 0
    for path in paths:
        try:
            data = Path(os.fsdecode(path)).read_bytes()
        except OSError:
            continue
        if path.endswith(b".py"):
            try:
                ast.parse(data)
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                pass
        else:
            found += len(WORD.findall(data))
    return found


def parse_floor(repo: Path) -> float:
    """Wall seconds of the parse floor over the committed files (see the module docstring)."""
    from concurrent.futures import ProcessPoolExecutor

    start = time.perf_counter()
    paths = [p for p in subprocess.run(["git", "-C", str(repo), "ls-files", "-z"],
                                       capture_output=True, check=True).stdout.split(b"\0")
             if p]
    processes = min(len(os.sched_getaffinity(0)), FLOOR_PROCESSES)
    shares = [[os.path.join(os.fsencode(repo), p) for p in paths[n::processes * 8]]
              for n in range(processes * 8)]
    with ProcessPoolExecutor(processes) as pool:
        sum(pool.map(floor_share, shares))
    return time.perf_counter() - start


def seconds(argv: list[str], cwd: Path) -> float:
    """Wall seconds of one command (its output thrown away)."""
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False)
    return time.perf_counter() - start


def ctags_seconds(ctags: str, repo: Path, tags: str = "tags") -> float:
    """Wall seconds of one `ctags -R` over a repository's work tree, writing `tags`."""
    return seconds([ctags, "-R", "-f", tags, "--exclude=.git", "."], repo)


def p95(values: list[float]) -> float:
    """The 95th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def ms(value: float | None) -> str:
    """Seconds as milliseconds for the table."""
    return "n/a" if value is None else f"{1000 * value:,.0f} ms"


def source_bytes(repo: Path) -> int:
    """Bytes of the committed text files: what cq documents (it skips binary files unread,
    by git's own test, which `git grep -I` applies too)."""
    text = {path.split(":", 1)[1] for path in
            git(repo, "grep", "-I", "-l", "-z", "-e", "", "HEAD", "--").split("\0") if path}
    out = git(repo, "ls-tree", "-r", "-l", "-z", "HEAD")
    return sum(int(meta.split()[3]) for meta, path in
               (entry.split("\t", 1) for entry in out.split("\0") if entry) if path in text)


def index_bytes(repo: Path) -> int:
    """Bytes of cq's index on disk (with its WAL)."""
    return sum(p.stat().st_size for p in (repo / ".git" / "cq").glob("index.db*"))


def worker_memory(repo: Path) -> tuple[int, int]:
    """The worker's resident and peak resident memory, in bytes."""
    status = Path(f"/proc/{worker_pid(repo)}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024)


# Seconds between two readings of the documenting processes' peaks: a reading of every
# process's command line (3 ms) at each poll took 6% of a core from the worker measured,
# and a high-water mark read now and then misses nothing while its process lives.
PEAKS_READ_EVERY = 1.0


def pool_peaks(repo: Path, peaks: dict) -> None:
    """Note the peak resident memory (bytes) of each of the worker's documenting processes."""
    needle = str(repo).encode()
    for name in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            if b"--documenting-process" not in cmdline or needle not in cmdline:
                continue
            status = Path(f"/proc/{name}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peaks[name] = max(peaks.get(name, 0), int(line.split()[1]) * 1024)


def tree_memory(root_pid: int) -> int:
    """Resident bytes of a process and every process under it, summed; a child that has not
    yet run its program (forked, still its parent's command line) is left out: until its
    exec it shares its parent's pages, which would be counted twice (a worker's 40 MB, for
    the microseconds each git process takes to start)."""
    children: dict = {}
    rss = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(name))
        rss[int(name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    def command(pid: int) -> bytes:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return b""

    total, todo = 0, [(root_pid, None)]
    while todo:
        pid, parent_command = todo.pop()
        own = command(pid)
        if own != parent_command:
            total += rss.get(pid, 0)
        todo += [(child, own) for child in children.get(pid, [])]
    return total


def worker_pid(repo: Path) -> int | None:
    """The running worker's PID, from its pid file."""
    try:
        record = (repo / ".git" / "cq" / "worker.pid").read_text()
    except OSError:
        return None
    return next((int(line.split("=")[1]) for line in record.splitlines()
                 if line.startswith("pid=")), None)


def is_searchable(repo: Path, blobs: int) -> bool:
    """True once each of the blobs of HEAD has a record of either pass (or failed): read from
    the fresh index itself, cheaply, since a `cq index status` process or a join over the
    whole map at every poll would take CPU from the worker being measured."""
    try:
        db = sqlite3.connect(f"file:{repo / '.git' / 'cq' / 'index.db'}?mode=ro", uri=True)
        try:
            done = db.execute("SELECT (SELECT COUNT(*) FROM docs) + "
                              "(SELECT COUNT(*) FROM failures)").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:  # not made yet, or busy
        return False
    return done >= blobs


def commit_to_searchable(pyz: Path, repo: Path, commits: int, ctags: str | None) -> dict:
    """Medians of one-file commits until searchable (the first made right after the initial
    index; the slowest too), and of a ctags rebuild after each."""
    cq_times, ctags_times = [], []
    for number in range(commits):
        marker = f"fresh_function_{number}"
        (repo / "hot.py").write_text(f"def {marker}():\n    pass\n")
        git(repo, "add", "hot.py")
        git(repo, "commit", "-q", "-m", marker)
        cq_times.append(searchable_after(repo, marker, 60))
        if ctags:
            ctags_times.append(ctags_seconds(ctags, repo, "/dev/null"))
        time.sleep(0.2)
    return {"cq": statistics.median(cq_times), "slowest": max(cq_times),
            "ctags": statistics.median(ctags_times) if ctags_times else None}


def python_lib(tmp: Path) -> Path:
    """This Python's Lib/ committed into a repository: its source, without what an install
    adds beside it (site-packages, compiled modules, the static library in config-*)."""
    repo = new_repo(tmp / "pylib")
    stdlib = sysconfig.get_paths()["stdlib"]

    def installed(folder: str, names: list[str]) -> list[str]:
        added = ("site-packages", "lib-dynload") if os.path.samefile(folder, stdlib) else ()
        return [name for name in names if name == "__pycache__" or name in added or
                (added and name.startswith("config-"))]

    shutil.copytree(stdlib, repo, dirs_exist_ok=True, symlinks=True, ignore=installed)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "import")
    git(repo, "gc", "-q")
    return repo


def initial_index(pyz: Path, repo: Path, blobs: int, pool: dict) -> tuple[float, float]:
    """Seconds of one `cq init` on a repository cq has not seen: until searchable (every
    blob has a record of either pass) and until complete (init returns); the process tree's
    peak goes into pool["tree"]."""
    cq(pyz, repo, "worker", "stop")  # exits 0 where none runs; fails if one cannot stop
    if (repo / ".git" / "cq").exists():
        shutil.rmtree(repo / ".git" / "cq")
    start = time.perf_counter()
    init = subprocess.Popen([sys.executable, "-I", "-S", str(pyz), "-C", str(repo), "init"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    searchable, peaks_read, tree = None, start, 0
    while init.poll() is None:
        time.sleep(0.05)
        if searchable is None and is_searchable(repo, blobs):
            searchable = time.perf_counter() - start
        if time.perf_counter() - peaks_read > PEAKS_READ_EVERY:
            pool_peaks(repo, pool)
            peaks_read = time.perf_counter()
        pid = worker_pid(repo)
        tree = max(tree, tree_memory(pid) if pid else 0)
    pool["tree"] = tree
    complete = time.perf_counter() - start
    pool_peaks(repo, pool)  # the processes outlive the index by a few seconds (POOL_IDLE)
    if init.returncode != 0:
        raise SystemExit(f"cq init failed in {repo}")
    return searchable or complete, complete


def measure_tree(pyz: Path, repo: Path, ctags: str | None, commits: int, runs: int) -> dict:
    """Initial index against ctags (`runs` of each, interleaved; the medians), commit ->
    searchable, sizes and memory of one tree."""
    files = len(git(repo, "ls-files", "-z").split("\0")) - 1
    blobs = len({line.split()[2] for line in git(repo, "ls-tree", "-r", "HEAD").splitlines()
                 if line.startswith("100")})  # files: not symlinks (cq skips them unread)
    ctags_runs, floor_runs, searchable, complete, pools = [], [], [], [], []
    for _ in range(runs):
        if ctags:
            ctags_runs.append(ctags_seconds(ctags, repo))
        floor_runs.append(parse_floor(repo))
        pools.append({})
        first, whole = initial_index(pyz, repo, blobs, pools[-1])
        searchable.append(first)
        complete.append(whole)
    if ctags:
        ctags_runs.append(ctags_seconds(ctags, repo))
    floor_runs.append(parse_floor(repo))
    trees = [pool.pop("tree") for pool in pools]
    peak = worker_memory(repo)[1]
    result = {"files": files, "cq_index": statistics.median(complete),
              "cq_searchable": statistics.median(searchable),
              "ctags_index": statistics.median(ctags_runs) if ctags_runs else None,
              "floor": statistics.median(floor_runs), "tree_peak": max(trees),
              "searchable_runs": searchable, "ctags_runs": ctags_runs,
              "source": source_bytes(repo), "index": index_bytes(repo),
              "tags": (repo / "tags").stat().st_size if (repo / "tags").exists() else None,
              "first_peak": peak, "pool": max(map(len, pools)),
              "pool_peak": max((rss for pool in pools for rss in pool.values()), default=0)}
    (repo / "tags").unlink(missing_ok=True)
    if commits:
        result["commit"] = commit_to_searchable(pyz, repo, commits, ctags)
    time.sleep(IDLE_AFTER)
    result["idle"], result["peak"] = worker_memory(repo)
    return result


def exact_identifier(repo: Path) -> str:
    """The name of a function defined in the generated tree (one in the middle of it)."""
    paths = sorted(git(repo, "ls-files", "*.js").split())
    return re.search(r"function (\w+)", (repo / paths[len(paths) // 2]).read_text()).group(1)


def measure_search(pyz: Path, repo: Path, runs: int) -> dict:
    """Per query: cq, rg and git grep, interleaved, each a whole process; then the same
    queries as warm calls of one `cq mcp` session (under "cq mcp")."""
    rg = shutil.which("rg")
    timings: dict = {}
    queries = {**QUERIES, "exact identifier": [exact_identifier(repo)]}
    for name, words in queries.items():
        tools = {"cq": [sys.executable, "-I", "-S", str(pyz), "-C", str(repo), "search",
                        "--", *words],
                 "rg": [rg, "-i", "-l", "-e", "|".join(words), "."] if rg else None,
                 "git grep": ["git", "grep", "-i", "-l", "-w",
                              *(arg for w in words for arg in ("-e", w))]}
        found: dict = {tool: [] for tool in tools}
        for _ in range(runs):
            for tool, argv in tools.items():
                if argv:
                    found[tool].append(seconds(argv, repo))
        timings[name] = {tool: (statistics.median(v), p95(v)) if v else None
                         for tool, v in found.items()}
    session = Session(pyz, repo)
    try:
        session.search("warm")  # the session's first call opens the index and reads HEAD
        for name, words in queries.items():
            calls = [session.search(" ".join(words)) for _ in range(runs)]
            timings[name]["cq mcp"] = (statistics.median(calls), p95(calls))
    finally:
        session.close()
    return timings


def on_disk(tree: dict) -> str:
    """The index's size against the source's, for the table."""
    return (f"{tree['index'] / 2**20:.0f} MB for {tree['source'] / 2**20:.0f} MB of source "
            f"({tree['index'] / tree['source']:.1f}x)")


def tags_size(tree: dict) -> str:
    """The size of ctags' tags file, for the table."""
    return "n/a" if tree["tags"] is None else f"{tree['tags'] / 2**20:.0f} MB"


def table(sizes: list[int], trees: dict, lib: dict, search: dict, cores: int) -> str:
    """The Markdown table of everything measured."""
    def ratio(a, b):
        return f"{a / b:.1f}x" if a and b else "n/a"

    sizes_text = " / ".join(f"{s // 1000}k" if s >= 1000 else str(s) for s in sizes)
    initial = " / ".join(f"{trees[s]['cq_index']:.1f} s" for s in sizes)
    anchor = " / ".join("n/a" if trees[s]["ctags_index"] is None else
                        f"{trees[s]['ctags_index']:.1f} s" for s in sizes)
    ratios = " / ".join(ratio(trees[s]["cq_index"], trees[s]["ctags_index"]) for s in sizes)
    rates = " / ".join(f"{trees[s]['files'] / trees[s]['cq_index']:.0f}" for s in sizes)
    first = " / ".join(f"{trees[s]['cq_searchable']:.1f} s" for s in sizes)
    first_ratios = " / ".join(ratio(trees[s]["cq_searchable"], trees[s]["ctags_index"])
                              for s in sizes)
    lib_ctags = "n/a" if lib["ctags_index"] is None else f"{lib['ctags_index']:.1f} s"
    largest = trees[sizes[-1]]
    floors = " / ".join(f"{trees[s]['floor']:.1f} s" for s in [*sizes]) + \
        f" / `Lib/` {lib['floor']:.1f} s"
    completes = " / ".join(f"{trees[s]['cq_index']:.1f} s" for s in sizes) + \
        f" / `Lib/` {lib['cq_index']:.1f} s"
    floor_ratios = " / ".join(ratio(t["cq_index"], t["floor"])
                              for t in [*(trees[s] for s in sizes), lib])
    worst = " / ".join(f"{max(a / b for a, b in pairs):.1f}x" if pairs else "n/a" for pairs in
                       (list(zip(trees[s]["searchable_runs"], trees[s]["ctags_runs"]))
                        for s in sizes))
    rows = [
        "| | cq | anchor | cq / anchor |", "|---|---|---|---|",
        (f"| searchable (lexical pass), {sizes_text} generated files | {first} | "
         f"`ctags -R` {anchor} | {first_ratios} |"),
        (f"| searchable, the slowest run against its `ctags -R`, {sizes_text} | | | {worst} |"),
        (f"| initial index complete, {sizes_text} generated files | {initial} ({rates} "
         f"files/s) | `ctags -R` {anchor} | {ratios} |"),
        (f"| initial index complete against the parse floor, {sizes_text} / `Lib/` | "
         f"{completes} | floor {floors} | {floor_ratios} |"),
        (f"| searchable / complete, Python {sys.version.split()[0]} `Lib/` ({lib['files']:,} "
         f"files) | {lib['cq_searchable']:.1f} s / {lib['cq_index']:.1f} s | `ctags -R` "
         f"{lib_ctags} | {ratio(lib['cq_searchable'], lib['ctags_index'])} / "
         f"{ratio(lib['cq_index'], lib['ctags_index'])} |")]
    for name, tools in search.items():
        cq_median, cq_p95 = tools["cq"]
        rg = tools.get("rg")
        grep = tools.get("git grep")
        rows.append(f"| `cq search` whole process at {sizes[-1] // 1000}k, {name} "
                    f"(median / p95) | {ms(cq_median)} / {ms(cq_p95)} | rg "
                    f"{ms(rg[0]) if rg else 'not installed'}; git grep "
                    f"{ms(grep[0]) if grep else 'n/a'} | "
                    f"{ratio(cq_median, rg[0] if rg else None)} of rg |")
    for name, tools in search.items():
        rows.append(f"| `search` over `cq mcp` (warm) at {sizes[-1] // 1000}k, {name} "
                    f"(median / p95) | {ms(tools['cq mcp'][0])} / {ms(tools['cq mcp'][1])} "
                    f"| | |")
    commit = " / ".join(f"{ms(trees[s]['commit']['cq'])} (slowest "
                        f"{ms(trees[s]['commit']['slowest'])})" for s in sizes)
    rebuild = " / ".join(ms(trees[s]["commit"]["ctags"]) for s in sizes)
    rows += [
        (f"| commit -> searchable, {sizes_text} (median; the first right after the initial "
         f"index) | {commit} | a `ctags -R` per commit {rebuild} | |"),
        (f"| process tree (worker and all under it) during the initial index, "
         f"{sizes_text} / `Lib/` | peak " + " / ".join(
             f"{trees[s]['tree_peak'] / 2**20:.0f} MB" for s in sizes) +
         f" / {lib['tree_peak'] / 2**20:.0f} MB | | |"),
        (f"| worker memory at {sizes[-1] // 1000}k | idle {largest['idle'] / 2**20:.0f} MB, "
         f"peak {largest['peak'] / 2**20:.0f} MB; its {largest['pool']} documenting processes "
         f"(during the initial index) peak {largest['pool_peak'] / 2**20:.0f} MB each | | |"),
        (f"| index on disk, {sizes[-1] // 1000}k / `Lib/` | {on_disk(largest)} / "
         f"{on_disk(lib)} | tags file {tags_size(largest)} / {tags_size(lib)} | |")]
    header = (f"{time.strftime('%Y-%m-%d')}, {cores} cores, Python {sys.version.split()[0]}, "
              f"medians of interleaved runs")
    return header + "\n\n" + "\n".join(rows)


def main() -> int:
    """Build, measure every tree and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--commits", type=int, default=9)
    parser.add_argument("--index-runs", type=int, default=3,
                        help="initial indexes of each tree, interleaved with ctags")
    parser.add_argument("--pyz", type=Path)
    args = parser.parse_args()
    if args.index_runs < 1:
        parser.error("--index-runs takes 1 or more")
    sizes = sorted(int(s) for s in args.sizes.split(","))
    ctags = shutil.which("ctags")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        pyz = build(tmp_path, args.pyz)
        trees = {}
        for size in sizes:
            repo = new_repo(tmp_path / f"tree{size}")
            generate(repo, size)
            git(repo, "gc", "-q")  # packed, as a clone is; and no gc left to run in the background
            trees[size] = measure_tree(pyz, repo, ctags, args.commits, args.index_runs)
            if size != sizes[-1]:
                cq(pyz, repo, "worker", "stop", check=False)
            print(f"measured {size} files", file=sys.stderr)
        search = measure_search(pyz, tmp_path / f"tree{sizes[-1]}", args.runs)
        cq(pyz, tmp_path / f"tree{sizes[-1]}", "worker", "stop", check=False)
        lib_repo = python_lib(tmp_path)
        lib = measure_tree(pyz, lib_repo, ctags, 0, args.index_runs)
        cq(pyz, lib_repo, "worker", "stop", check=False)
    print(table(sizes, trees, lib, search, os.cpu_count() or 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
