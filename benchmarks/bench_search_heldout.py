"""Benchmark: `cq search` judged on code it was never tuned on, with questions written first.

    python3 benchmarks/bench_search_heldout.py [--pyz PATH] [--cache DIR] [-v]

Seventeen public code bases in eight languages (glibc's stdlib, string, malloc and posix;
spdlog and nlohmann-json; OpenJDK 17's java.util and java.lang; cobra, logrus and chi; semver,
url, bytes and chrono; httpx and attrs; commander, koa, zod and immer), fetched by pinned
version with the ordinary package clients (Debian's apt, PyPI's pip, npm).  The 72 questions
in heldout_questions.json were written on 2026-12-05 from reading the code, before cq was
run on any of it; each names the files that answer it (zod's compiled copies of a source
file count as it).  This set is for judging, never for tuning: a change made to pass one of
its questions makes the set worthless.  (bench_search_quality.py is the set to tune on.)

Prints top-1 / top-5 hit rates by language and kind of question, for cq and for `git grep
-i -w` ranked as a user ranks it (distinct query words, then matching lines).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from bench_search_quality import cq_ranking, grep_ranking, hit
from common import build, cq, fetch_corpus, imported_repo

APT_GO = "usr/share/gocode/src/github.com"
APT_RUST = "usr/share/cargo/registry"
# name: (language, client, what to fetch, the folder that is the code base, its parts kept)
CORPORA = {
    "glibc": ("C", "apt", "glibc-source=2.36-9+deb12u14", "usr/src/glibc",
              ("stdlib", "string", "malloc", "posix")),
    "spdlog": ("C++", "apt", "libspdlog-dev=1:1.10.0+ds-0.4", "usr", ("include",)),
    "nlohmann_json": ("C++", "apt", "nlohmann-json3-dev=3.11.2-2", "usr", ("include",)),
    "openjdk": ("Java", "apt", "openjdk-17-source=17.0.21.1+2-1~deb12u1",
                "usr/lib/jvm/openjdk-17/lib", ("java.base/java/util", "java.base/java/lang")),
    "cobra": ("Go", "apt", "golang-github-spf13-cobra-dev=1.6.1-1", f"{APT_GO}/spf13/cobra", ()),
    "logrus": ("Go", "apt", "golang-github-sirupsen-logrus-dev=1.9.0-1",
               f"{APT_GO}/sirupsen/logrus", ()),
    "chi": ("Go", "apt", "golang-github-go-chi-chi-dev=5.0.7-1", f"{APT_GO}/go-chi/chi", ()),
    "semver": ("Rust", "apt", "librust-semver-dev=1.0.14-1", f"{APT_RUST}/semver-1.0.14", ()),
    "url": ("Rust", "apt", "librust-url-dev=2.3.1-1", f"{APT_RUST}/url-2.3.1", ()),
    "bytes": ("Rust", "apt", "librust-bytes-dev=1.2.1-1", f"{APT_RUST}/bytes-1.2.1", ()),
    "chrono": ("Rust", "apt", "librust-chrono-dev=0.4.23-2", f"{APT_RUST}/chrono-0.4.23", ()),
    "httpx": ("Python", "pip", "httpx==0.29.0", "httpx-0.29.0", ()),
    "attrs": ("Python", "pip", "attrs==26.1.0", "attrs-26.1.0", ()),
    "commander": ("JavaScript", "npm", "commander@14.0.3", "package", ()),
    "koa": ("JavaScript", "npm", "koa@3.3.0", "package", ()),
    "zod": ("TypeScript", "npm", "zod@3.25.76", "package", ()),
    "immer": ("TypeScript", "npm", "immer@11.2.14", "package", ()),
}
# Archives inside a package, unpacked in place: glibc's source tarball, OpenJDK's src.zip.
INNER = {"glibc": ("glibc-2.36.tar.xz", "glibc-2.36/"), "openjdk": ("src.zip", "")}
QUESTIONS = Path(__file__).with_name("heldout_questions.json")


def unpacked_inner(folder: Path, archive: str, prefix: str) -> Path:
    """The files of an archive inside a package, unpacked once beside it (without the
    prefix its members start with)."""
    target = folder / "inner"
    if target.exists():
        return target
    staging = Path(tempfile.mkdtemp(dir=folder))
    if archive.endswith(".zip"):
        with zipfile.ZipFile(folder / archive) as z:
            z.extractall(staging)
    else:
        with tarfile.open(folder / archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(staging, filter="data")
            else:
                tar.extractall(staging)
    if prefix:
        (staging / prefix).rename(target)
        shutil.rmtree(staging)
    else:
        staging.rename(target)
    return target


def corpus_repo(name: str, cache: Path) -> Path:
    """A repository holding the code base (its kept parts), committed once."""
    _, client, spec, folder, parts = CORPORA[name]
    repo = cache / "repos" / name
    if (repo / ".git").exists():
        return repo
    source = fetch_corpus(cache, name, client, spec, folder)
    if name in INNER:
        source = unpacked_inner(source, *INNER[name])
    return imported_repo(repo, source, parts)


def main() -> int:
    """Fetch, index, ask every question of cq and git grep, and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyz", type=Path)
    parser.add_argument("--cache", type=Path,
                        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                        / "cq-bench-heldout")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every miss")
    args = parser.parse_args()
    questions = json.loads(QUESTIONS.read_text())
    tally: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        pyz = build(Path(tmp), args.pyz)
        for name, (language, *_) in CORPORA.items():
            repo = corpus_repo(name, args.cache)
            cq(pyz, repo, "init")
            for q in (q for q in questions if q["repo"] == name):
                rankings = {"cq": cq_ranking(pyz, repo, q["query"]),
                            "git grep": grep_ranking(repo, q["query"])}
                for tool, ranking in rankings.items():
                    for key in (language, q["kind"], "all"):
                        row = tally.setdefault((tool, key), [0, 0, 0])
                        row[0] += hit(ranking, q["accepted"], 1)
                        row[1] += hit(ranking, q["accepted"], 5)
                        row[2] += 1
                    if args.verbose and tool == "cq" and not hit(ranking, q["accepted"], 5):
                        print(f"  miss [{name}] {q['query']!r}: {ranking[:5]}", file=sys.stderr)
            cq(pyz, repo, "worker", "stop")
    languages = list(dict.fromkeys(language for language, *_ in CORPORA.values()))
    print(f"{len(questions)} held-out questions on {len(CORPORA)} code bases; "
          "top-1 / top-5 hit rate")
    print("| questions    |   n | cq            | git grep      |")
    print("|---|---|---|---|")
    for key in [*languages, "B", "P", "E", "all"]:
        cells = [f"{100 * t1 / n:3.0f}% / {100 * t5 / n:3.0f}%"
                 for t1, t5, n in (tally[(tool, key)] for tool in ("cq", "git grep"))]
        print(f"| {key:<12} | {tally[('cq', key)][2]:>3} | {cells[0]:<13} | {cells[1]:<13} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
