"""Benchmark: does `cq search` find the right file, on real code nobody here wrote?

    python3 benchmarks/bench_search_quality.py [--pyz PATH] [--cache DIR] [-v]

Thirteen public code bases in eight languages are fetched by pinned version with the ordinary
package clients (npm, Debian's apt, PyPI's pip), each committed into a repository of its own
and indexed by cq.  Every query below was written from the code, with the files that answer
it: about half describe behaviour in words, a quarter are partial identifiers, a quarter exact
identifiers.  For each query, a hit is an accepted file among the first 1 or 5 distinct files
of the answer.  Beside cq, in the same run: `git grep -i -w` on the query's words, its files
ranked by how many distinct words each holds, then by matching lines (what people do without
an index), and a ctags name lookup of the query's words.
The Debian packages need `apt-get update` once; ctags is Debian's universal-ctags.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from common import build, cq, fetch_corpus, imported_repo

# name: (client, what to fetch, the folder of the unpacked files that is the code base)
CORPORA = {
    "express": ("npm", "express@4.21.2", "package"),
    "axios": ("npm", "axios@1.7.9", "package"),
    "query-core": ("npm", "@tanstack/query-core@5.62.0", "package"),
    "trpc-server": ("npm", "@trpc/server@10.45.2", "package"),
    "go-std": ("apt", "golang-1.19-src=1.19.8-2", "usr/share/go-1.19/src"),
    "regex": ("apt", "librust-regex-dev=1.7.1-1 librust-regex-syntax-dev=0.6.27-1",
              "usr/share/cargo/registry"),
    "serde-json": ("apt", "librust-serde-json-dev=1.0.87-1",
                   "usr/share/cargo/registry/serde_json-1.0.87"),
    "requests": ("pip", "requests==2.32.3", "requests-2.32.3"),
    "click": ("pip", "click==8.1.7", "click-8.1.7"),
    # Added with issue 24 (C, C++ and Java), their queries written from the code before cq
    # was run on it: brotli's C sources (in its Python sdist), JPype's Java and C++ halves,
    # and Debian's googletest sources.
    "brotli": ("pip", "Brotli==1.1.0", "Brotli-1.1.0"),
    "jpype-java": ("pip", "JPype1==1.5.0", "JPype1-1.5.0/native/java"),
    "jpype-cpp": ("pip", "JPype1==1.5.0", "JPype1-1.5.0/native/common"),
    "googletest": ("apt", "googletest=1.12.1-0.2", "usr/src/googletest"),
}
GO_PACKAGES = ("net", "encoding", "context", "strings", "bytes", "io", "bufio", "sort", "time",
               "sync", "errors", "fmt", "os", "path", "mime", "crypto/tls")
LANGUAGE = {"express": "javascript", "axios": "javascript", "query-core": "typescript",
            "trpc-server": "typescript", "go-std": "go", "regex": "rust", "serde-json": "rust",
            "requests": "python", "click": "python", "brotli": "c", "jpype-java": "java",
            "jpype-cpp": "c++", "googletest": "c++"}

B, P, E = "behaviour", "partial", "exact"
R = "regex-1.7.1/src"
S = "regex-syntax-0.6.27/src"
QUERIES = [
    ("express", B, "content negotiation accept header", ["lib/request.js", "lib/response.js"]),
    ("express", B, "match request path against a route layer", ["lib/router/layer.js"]),
    ("express", B, "set a cookie on the response", ["lib/response.js"]),
    ("express", B, "render a view template with locals",
     ["lib/view.js", "lib/application.js", "lib/response.js"]),
    ("express", P, "router handle", ["lib/router/index.js"]),
    ("express", E, "sendFile", ["lib/response.js"]),
    ("express", E, "compileETag", ["lib/utils.js"]),
    ("axios", B, "merge default config with request config", ["lib/core/mergeConfig.js"]),
    ("axios", B, "check if a url is absolute", ["lib/helpers/isAbsoluteURL.js"]),
    ("axios", B, "serialize params into the url query string",
     ["lib/helpers/buildURL.js", "lib/helpers/AxiosURLSearchParams.js"]),
    ("axios", B, "cancel a request with a token", ["lib/cancel/CancelToken.js"]),
    ("axios", P, "interceptor manager", ["lib/core/InterceptorManager.js"]),
    ("axios", P, "transform response data",
     ["lib/core/transformData.js", "lib/defaults/index.js"]),
    ("axios", E, "AxiosHeaders", ["lib/core/AxiosHeaders.js"]),
    ("axios", E, "toFormData", ["lib/helpers/toFormData.js"]),
    ("query-core", B, "refetch queries when the window regains focus",
     ["src/focusManager.ts", "src/queryObserver.ts"]),
    ("query-core", B, "retry a failed query with exponential backoff", ["src/retryer.ts"]),
    ("query-core", B, "garbage collect inactive queries after gc time",
     ["src/removable.ts", "src/query.ts"]),
    ("query-core", B, "dehydrate and hydrate cache state for server rendering",
     ["src/hydration.ts"]),
    ("query-core", B, "batch notifications to listeners", ["src/notifyManager.ts"]),
    ("query-core", P, "infinite query next page",
     ["src/infiniteQueryBehavior.ts", "src/infiniteQueryObserver.ts"]),
    ("query-core", E, "refetchOnWindowFocus", ["src/types.ts", "src/queryObserver.ts"]),
    ("query-core", E, "QueryClient", ["src/queryClient.ts"]),
    ("trpc-server", B, "map an error code to an http status",
     ["src/http/getHTTPStatusCode.ts"]),
    ("trpc-server", B, "merge several routers into one", ["src/core/internals/mergeRouters.ts"]),
    ("trpc-server", B, "serve subscriptions over websockets", ["src/adapters/ws.ts"]),
    ("trpc-server", B, "parse procedure input with a validator",
     ["src/core/internals/getParseFn.ts", "src/core/parser.ts"]),
    ("trpc-server", P, "fetch request handler",
     ["src/adapters/fetch/fetchRequestHandler.ts"]),
    ("trpc-server", P, "procedure builder", ["src/core/internals/procedureBuilder.ts"]),
    ("trpc-server", E, "TRPCError", ["src/error/TRPCError.ts"]),
    ("trpc-server", E, "initTRPC", ["src/core/initTRPC.ts"]),
    ("go-std", B, "cancel context after timeout", ["context/context.go"]),
    ("go-std", B, "parse the cookie header", ["net/http/cookie.go"]),
    ("go-std", B, "serve static files from a directory", ["net/http/fs.go"]),
    ("go-std", B, "gracefully shut down the server", ["net/http/server.go"]),
    ("go-std", B, "encode struct fields as a json object", ["encoding/json/encode.go"]),
    ("go-std", B, "detect the content type of data", ["net/http/sniff.go"]),
    ("go-std", P, "strings builder", ["strings/builder.go"]),
    ("go-std", P, "reverse proxy", ["net/http/httputil/reverseproxy.go"]),
    ("go-std", E, "ListenAndServe", ["net/http/server.go"]),
    ("go-std", E, "Builder.WriteString", ["strings/builder.go"]),
    ("go-std", E, "json.Unmarshal", ["encoding/json/decode.go"]),
    ("regex", B, "parse regex pattern into abstract syntax tree", [f"{S}/ast/parse.rs"]),
    ("regex", B, "match many regexes at once", [f"{R}/re_set.rs"]),
    ("regex", B, "replace all matches with a replacement",
     [f"{R}/re_unicode.rs", f"{R}/re_bytes.rs"]),
    ("regex", B, "escape meta characters in a string", [f"{R}/re_unicode.rs", f"{S}/lib.rs"]),
    ("regex", P, "regex set", [f"{R}/re_set.rs"]),
    ("regex", P, "regex builder size limit", [f"{R}/re_builder.rs"]),
    ("regex", E, "Regex::replace", [f"{R}/re_unicode.rs"]),
    ("regex", E, "RegexBuilder", [f"{R}/re_builder.rs"]),
    ("serde-json", B, "serialize a value to a pretty printed json string", ["src/ser.rs"]),
    ("serde-json", B, "deserialize json from an io reader", ["src/de.rs", "src/read.rs"]),
    ("serde-json", B, "index into a json value by key or position", ["src/value/index.rs"]),
    ("serde-json", P, "json value", ["src/value/mod.rs"]),
    ("serde-json", E, "from_str", ["src/de.rs"]),
    ("serde-json", E, "to_value", ["src/value/mod.rs"]),
    ("requests", B, "retry failed connections in the transport adapter",
     ["src/requests/adapters.py"]),
    ("requests", B, "persist cookies across requests in a session",
     ["src/requests/sessions.py", "src/requests/cookies.py"]),
    ("requests", B, "guess the encoding of the response body",
     ["src/requests/models.py", "src/requests/utils.py"]),
    ("requests", P, "http basic auth", ["src/requests/auth.py"]),
    ("requests", E, "raise_for_status", ["src/requests/models.py"]),
    ("requests", E, "Session", ["src/requests/sessions.py"]),
    ("click", B, "prompt the user for input", ["src/click/termui.py"]),
    ("click", B, "show a progress bar while iterating",
     ["src/click/termui.py", "src/click/_termui_impl.py"]),
    ("click", B, "parse command line options and arguments",
     ["src/click/parser.py", "src/click/core.py"]),
    ("click", P, "echo via pager", ["src/click/termui.py", "src/click/_termui_impl.py"]),
    ("click", E, "BadParameter", ["src/click/exceptions.py"]),
    ("click", E, "pass_context", ["src/click/decorators.py"]),
    ("brotli", B, "build a huffman tree from symbol counts", ["c/enc/entropy_encode.c"]),
    ("brotli", B, "decide whether the input looks like utf8 text", ["c/enc/utf8_util.c"]),
    ("brotli", B, "apply a dictionary word transform such as upper casing",
     ["c/common/transform.c"]),
    ("brotli", B, "upper bound of the compressed size for an input size", ["c/enc/encode.c"]),
    ("brotli", B, "estimate how many bits each literal costs", ["c/enc/literal_cost.c"]),
    ("brotli", P, "ring buffer write", ["c/enc/ringbuffer.h"]),
    ("brotli", E, "BrotliDecoderDecompress", ["c/dec/decode.c"]),
    ("brotli", E, "BrotliInitBitReader", ["c/dec/bit_reader.c"]),
    ("jpype-java", B, "decide which method overload is more specific",
     ["org/jpype/manager/MethodResolution.java"]),
    ("jpype-java", B, "add jar files to the classpath at runtime",
     ["org/jpype/classloader/DynamicClassLoader.java"]),
    ("jpype-java", B, "extract javadoc documentation for a class",
     ["org/jpype/javadoc/JavadocExtractor.java"]),
    ("jpype-java", B, "keep python objects alive while java holds a reference",
     ["org/jpype/ref/JPypeReferenceQueue.java"]),
    ("jpype-java", B, "list the contents of a java package from jars and modules",
     ["org/jpype/pkg/JPypePackageManager.java"]),
    ("jpype-java", P, "python keywords wrap", ["org/jpype/JPypeKeywords.java"]),
    ("jpype-java", E, "JPypeProxy", ["org/jpype/proxy/JPypeProxy.java"]),
    ("jpype-java", E, "isMoreSpecificThan", ["org/jpype/manager/MethodResolution.java"]),
    ("jpype-cpp", B, "choose the best method overload for the python arguments",
     ["jp_methoddispatch.cpp", "include/jp_methoddispatch.h"]),
    ("jpype-cpp", B, "encode a character as modified utf-8 for java", ["jp_encoding.cpp"]),
    ("jpype-cpp", B, "convert a java exception into a python exception", ["jp_exception.cpp"]),
    ("jpype-cpp", B, "run the java garbage collector when python memory use grows",
     ["jp_gc.cpp", "include/jp_gc.h"]),
    ("jpype-cpp", P, "java frame local references",
     ["include/jp_javaframe.h", "jp_javaframe.cpp"]),
    ("jpype-cpp", E, "JPMethodDispatch::findOverload", ["jp_methoddispatch.cpp"]),
    ("jpype-cpp", E, "JPypeTracer", ["jp_tracer.cpp", "include/jp_tracer.h"]),
    ("googletest", B, "check that a statement throws an exception",
     ["googletest/include/gtest/gtest.h"]),
    ("googletest", B, "run a test in a child process and expect it to die",
     ["googletest/include/gtest/gtest-death-test.h", "googletest/src/gtest-death-test.cc"]),
    ("googletest", B, "parse command line flags for the test runner", ["googletest/src/gtest.cc"]),
    ("googletest", B, "print a value for a failure message",
     ["googletest/include/gtest/gtest-printers.h", "googletest/src/gtest-printers.cc"]),
    ("googletest", B, "match a string against a regular expression",
     ["googletest/include/gtest/gtest-matchers.h", "googlemock/include/gmock/gmock-matchers.h"]),
    ("googletest", P, "mock method", ["googlemock/include/gmock/gmock-function-mocker.h"]),
    ("googletest", E, "EXPECT_CALL", ["googlemock/include/gmock/gmock-spec-builders.h"]),
    ("googletest", E, "TEST_P", ["googletest/include/gtest/gtest-param-test.h"]),
]


def corpus_repo(name: str, cache: Path) -> Path:
    """A repository holding the code base (Go's: only GO_PACKAGES), committed once."""
    client, spec, folder = CORPORA[name]
    repo = cache / "repos" / name
    if (repo / ".git").exists():
        return repo
    return imported_repo(repo, fetch_corpus(cache, name, client, spec, folder),
                         tuple(GO_PACKAGES) if name == "go-std" else ())


def words_of(query: str) -> list[str]:
    """The words a user would grep for: the query's words, minus the commonest English ones."""
    stop = {"a", "an", "the", "to", "of", "in", "into", "for", "with", "and", "or", "by", "on",
            "from", "after", "at", "as", "is", "it", "its", "while", "one", "all", "when"}
    return [w for w in re.findall(r"\w+", query) if w.lower() not in stop]


def grep_counts(repo: Path, words: list[str]) -> Counter:
    """Path -> the lines in which `git grep -I -i -w` finds any of the words."""
    args = [a for w in words for a in ("-e", w)]
    out = subprocess.run(["git", "grep", "-I", "-i", "-w", "-c", *args], cwd=repo,
                         capture_output=True, text=True, check=False).stdout
    counts = Counter()
    for line in out.splitlines():
        path, _, count = line.rpartition(":")
        counts[path] = int(count)
    return counts


def grep_ranking(repo: Path, query: str) -> list[str]:
    """Files as a user ranks `git grep -i -w`'s: by how many of the query's distinct words
    each holds, then by its matching lines (the fair baseline issue 24 asks for)."""
    words = words_of(query)
    lines = grep_counts(repo, words)
    distinct = Counter(path for word in words for path in grep_counts(repo, [word]))
    return sorted(lines, key=lambda p: (-distinct[p], -lines[p], p))


def ctags_index(repo: Path) -> dict[str, list[str]]:
    """Tag name (lowercase) -> files defining it, from universal-ctags."""
    out = subprocess.run(["ctags", "-R", "-f", "-", "--output-format=json", "."], cwd=repo,
                         capture_output=True, text=True, check=False).stdout
    tags: dict[str, list[str]] = {}
    for line in out.splitlines():
        try:
            tag = json.loads(line)
        except ValueError:
            continue
        if tag.get("_type") == "tag":
            tags.setdefault(tag["name"].lower(), []).append(tag["path"])
    return tags


def ctags_ranking(tags: dict, query: str) -> list[str]:
    """Files defining a tag named like one of the query's words (or the whole identifier)."""
    names = [w.lower() for w in words_of(query)]
    names.append(re.sub(r"\W", "", query).lower())
    counts = Counter(path for name in names for path in dict.fromkeys(tags.get(name, [])))
    return [p for p, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def cq_ranking(pyz: Path, repo: Path, query: str) -> list[str]:
    """Distinct files in the order cq's results name them."""
    results = json.loads(cq(pyz, repo, "search", "--json", "-n", "30", "--", query))
    return list(dict.fromkeys(r["path"] for r in results))


def hit(ranking: list[str], accepted: list[str], k: int) -> bool:
    """True if an accepted file is among the first k distinct files."""
    return any(path in accepted for path in ranking[:k])


def main() -> int:
    """Fetch, index, ask every query of cq, git grep and ctags, and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyz", type=Path)
    parser.add_argument("--cache", type=Path,
                        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                        / "cq-bench")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every miss")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pyz = build(Path(tmp), args.pyz)
        tally: dict = {}
        have_ctags = shutil.which("ctags") is not None
        for name in CORPORA:
            repo = corpus_repo(name, args.cache)
            cq(pyz, repo, "init")
            tags = ctags_index(repo) if have_ctags else {}
            for corpus, kind, query, accepted in QUERIES:
                if corpus != name:
                    continue
                rankings = {"cq": cq_ranking(pyz, repo, query),
                            "git grep": grep_ranking(repo, query),
                            "ctags": ctags_ranking(tags, query) if have_ctags else []}
                for tool, ranking in rankings.items():
                    for key in (LANGUAGE[name], kind, "all"):
                        row = tally.setdefault((tool, key), [0, 0, 0])
                        row[0] += hit(ranking, accepted, 1)
                        row[1] += hit(ranking, accepted, 5)
                        row[2] += 1
                    if args.verbose and tool == "cq" and not hit(ranking, accepted, 5):
                        print(f"  miss [{name}] {query!r}: {ranking[:5]}", file=sys.stderr)
            cq(pyz, repo, "worker", "stop")
    print_table(tally, have_ctags)
    return 0


def print_table(tally: dict, have_ctags: bool) -> None:
    """Top-1 / top-5 hit rates by language and by kind of query, for each tool."""
    tools = ["cq", "git grep", "ctags"]
    keys = [*dict.fromkeys(LANGUAGE.values()), B, P, E, "all"]
    print(f"{len(QUERIES)} queries on {len(CORPORA)} code bases; top-1 / top-5 hit rate")
    print(f"| {'queries':<12} | {'n':>3} | " + " | ".join(f"{t:<13}" for t in tools) + " |")
    print("|" + "---|" * (len(tools) + 2))
    for key in keys:
        cells = []
        for tool in tools:
            top1, top5, n = tally.get((tool, key), [0, 0, 0])
            cells.append("not installed" if tool == "ctags" and not have_ctags else
                         f"{100 * top1 / n:3.0f}% / {100 * top5 / n:3.0f}%")
        n = tally.get(("cq", key), [0, 0, 0])[2]
        print(f"| {key:<12} | {n:>3} | " + " | ".join(f"{c:<13}" for c in cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
