"""The code bases and the tasks of bench_assistant.py, as data.

Every task was written by reading the pinned code below, before cq was run on it: the question
an assistant is asked while working on that code base, the words it would type into a search
box, and the facts (exact strings of the code, or a file path) that an answer has to have read.
`where` gives, for each fact in order, the `path:line` of the repository where it was found (a
fact that is a file path is found by its path alone); `bench_assistant.py --check` verifies them.
Paths are relative to the root of the corpus's repository (the unpacked folder below).

Kinds: "value" (read a value or a behaviour in the body of a definition), "references" (which
definitions call or use a name), "locate" (where is something done, asked in plain words: the
file and the definition), "constant" (a module-level constant or variable: its name and value).
"""

from __future__ import annotations

from typing import NamedTuple


class Corpus(NamedTuple):
    """A code base fetched by pinned version with an ordinary package client."""

    client: str  # "npm" (npm pack), "apt" (apt-get download), "pip" (sdist via pip download)
    spec: str  # what to fetch, exactly as the client takes it
    folder: str  # the folder of the unpacked files that becomes the repository's root
    language: str  # its main language, for the tables


class Task(NamedTuple):
    """One question about one corpus, with what an answer must have read."""

    corpus: str
    kind: str  # value | references | locate | constant
    question: str
    query: str  # the words typed into a search box: the identifier when the question names one
    name: str | None  # the identifier the question names, if it names one
    facts: tuple[str, ...]  # all must appear in what was read (runs of white space as one space)
    where: tuple[str, ...]  # "path:line" of each fact in the corpus ("path" for a path fact)


CORPORA = {
    "marshmallow": Corpus("pip", "marshmallow==3.23.1", "marshmallow-3.23.1", "python"),
    "commander": Corpus("npm", "commander@12.1.0", "package", "javascript"),
    "chi": Corpus("apt", "golang-github-go-chi-chi-dev=5.0.7-1",
                  "usr/share/gocode/src/github.com/go-chi/chi", "go"),
    "semver": Corpus("apt", "librust-semver-dev=1.0.14-1",
                     "usr/share/cargo/registry/semver-1.0.14", "rust"),
    # The Python binding's sdist bundles the reference C sources of LZ4 1.9.4 (lz4libs/) next to
    # its own C extension modules (lz4/*/_*.c); its tasks are all about C code.
    "lz4": Corpus("pip", "lz4==4.3.3", "lz4-4.3.3", "c"),
}

VALUE, REFERENCES, LOCATE, CONSTANT = "value", "references", "locate", "constant"
KINDS = (VALUE, REFERENCES, LOCATE, CONSTANT)

MA = "src/marshmallow"
TASKS = [
    # --- marshmallow 3.23.1 (Python) ---
    Task("marshmallow", VALUE,
         "What does a Schema do by default with input keys that match no declared field?",
         "unknown fields default", None,
         ('getattr(meta, "unknown", RAISE)',),
         (f"{MA}/schema.py:227",)),
    Task("marshmallow", CONSTANT,
         "Under which key does marshmallow store schema-level validation errors?",
         "schema level validation errors key", None,
         ('SCHEMA = "_schema"',),
         (f"{MA}/exceptions.py:8",)),
    Task("marshmallow", VALUE,
         "Which URL schemes does the URL validator accept when none are given?",
         "URL validator default schemes", "URL",
         ('{"http", "https", "ftp", "ftps"}',),
         (f"{MA}/validate.py:177",)),
    Task("marshmallow", REFERENCES,
         "Which method of Schema calls _run_validator?",
         "_run_validator", "_run_validator",
         ("_invoke_schema_validators",),
         (f"{MA}/schema.py:1147",)),  # calls at schema.py:1168 and 1179
    Task("marshmallow", REFERENCES,
         "Which methods call Schema._call_and_store?",
         "_call_and_store", "_call_and_store",
         ("_deserialize", "_invoke_field_validators"),
         (f"{MA}/schema.py:577", f"{MA}/schema.py:1101")),  # calls at 664, 1123 and 1138
    Task("marshmallow", LOCATE,
         "Where are ISO 8601 date-time strings parsed into datetime objects?",
         "parse ISO 8601 datetime string", None,
         (f"{MA}/utils.py", "from_iso_datetime"),
         (f"{MA}/utils.py", f"{MA}/utils.py:146")),

    # --- commander 12.1.0 (JavaScript) ---
    Task("commander", CONSTANT,
         "Up to how many edits may a mistyped command or option be from a known one for "
         "commander to suggest it?",
         "suggest similar edit distance", None,
         ("maxDistance = 3",),
         ("lib/suggestSimilar.js:1",)),
    Task("commander", REFERENCES,
         "Which methods call suggestSimilar?",
         "suggestSimilar", "suggestSimilar",
         ("unknownOption", "unknownCommand"),
         ("lib/command.js:1988", "lib/command.js:2036")),  # calls at 2006 and 2049
    Task("commander", VALUE,
         "Below which column width does Help.wrap leave the text unwrapped?",
         "Help wrap column width", "wrap",
         ("minColumnWidth = 40",),
         ("lib/help.js:485",)),
    Task("commander", VALUE,
         "Which file extensions does commander try when it looks for the file of a "
         "stand-alone executable subcommand?",
         "executable subcommand file extensions", None,
         ("['.js', '.ts', '.tsx', '.mjs', '.cjs']",),
         ("lib/command.js:1106",)),
    Task("commander", VALUE,
         "When an option may be set from an environment variable, which earlier sources of its "
         "value may the environment variable overwrite?",
         "option value from environment variable", None,
         ("['default', 'config', 'env']",),
         ("lib/command.js:1847",)),
    Task("commander", LOCATE,
         "Where are the short and the long flag of an option split out of its flags string?",
         "split short long option flags", None,
         ("lib/option.js", "splitOptionFlags"),
         ("lib/option.js", "lib/option.js:312")),
    Task("commander", LOCATE,
         "Where does commander choose the debugger port of a subcommand launched under "
         "node --inspect?",
         "inspect debug port subcommand", None,
         ("lib/command.js", "incrementNodeInspectorPort"),
         ("lib/command.js", "lib/command.js:2466")),

    # --- chi 5.0.7 (Go) ---
    Task("chi", CONSTANT,
         "How long may a request wait in the backlog of the Throttle middleware by default?",
         "throttle backlog timeout default", None,
         ("defaultBacklogTimeout = time.Second * 60",),
         ("middleware/throttle.go:16",)),
    Task("chi", VALUE,
         "In which order does the RealIP middleware look at the request headers?",
         "RealIP headers order", "RealIP",
         ("Get(trueClientIP)", "Get(xRealIP)", "Get(xForwardedFor)"),
         ("middleware/realip.go:44", "middleware/realip.go:46", "middleware/realip.go:48")),
    Task("chi", VALUE,
         "Which panic does the Recoverer middleware let through, and what status does it "
         "write after the others?",
         "Recoverer panic status", "Recoverer",
         ("http.ErrAbortHandler", "http.StatusInternalServerError"),
         ("middleware/recoverer.go:25", "middleware/recoverer.go:34")),
    Task("chi", REFERENCES,
         "Which functions call patNextSegment?",
         "patNextSegment", "patNextSegment",
         ("InsertRoute", "addChild", "patParamKeys"),
         ("tree.go:125", "tree.go:221", "tree.go:733")),  # calls at 145, 229 and 737
    Task("chi", REFERENCES,
         "Which methods of Mux call nextRoutePath?",
         "nextRoutePath", "nextRoutePath",
         ("Mount", "Match"),
         ("mux.go:282", "mux.go:352")),  # calls at mux.go:306 and 361
    Task("chi", LOCATE,
         "Where does the routing tree compute the length of the common prefix of two strings?",
         "common prefix length", None,
         ("tree.go", "longestPrefix"),
         ("tree.go", "tree.go:753")),

    # --- semver 1.0.14 (Rust) ---
    Task("semver", CONSTANT,
         "How many comparators may one version requirement hold at most?",
         "maximum number of comparators", None,
         ("MAX_COMPARATORS: usize = 32",),
         ("src/parse.rs:394",)),
    Task("semver", VALUE,
         "Which operator does a comparator get when the requirement names none, as in 1.2.3?",
         "default comparator operator", None,
         ("const DEFAULT: Self = Op::Caret",),
         ("src/parse.rs:154",)),
    Task("semver", VALUE,
         "Which characters does the parser accept as a wildcard?",
         "wildcard", "wildcard",
         ("strip_prefix('*')", "strip_prefix('x')", "strip_prefix('X')"),
         ("src/parse.rs:188", "src/parse.rs:190", "src/parse.rs:192")),
    Task("semver", REFERENCES,
         "Which functions call pre_is_compatible?",
         "pre_is_compatible", "pre_is_compatible",
         ("matches_req", "matches_comparator"),
         ("src/eval.rs:3", "src/eval.rs:26")),  # calls at eval.rs:18 and 27
    Task("semver", LOCATE,
         "Where is a caret requirement such as ^1.2 matched against a version?",
         "caret requirement matches version", None,
         ("src/eval.rs", "matches_caret"),
         ("src/eval.rs", "src/eval.rs:136")),

    # --- lz4 4.3.3 (C: LZ4 1.9.4 and the binding's extension modules) ---
    Task("lz4", CONSTANT,
         "What is the largest input size that LZ4 block compression accepts?",
         "maximum input size", None,
         ("LZ4_MAX_INPUT_SIZE 0x7E000000",),
         ("lz4libs/lz4.h:211",)),
    Task("lz4", CONSTANT,
         "What is the default compression level of LZ4 HC?",
         "HC default compression level", None,
         ("LZ4HC_CLEVEL_DEFAULT 9",),
         ("lz4libs/lz4hc.h:48",)),
    Task("lz4", VALUE,
         "How does LZ4 compute the worst-case compressed size of an input?",
         "worst case compressed size bound", None,
         ("((isize)/255) + 16",),
         ("lz4libs/lz4.h:212",)),
    Task("lz4", REFERENCES,
         "Which functions call LZ4F_headerChecksum?",
         "LZ4F_headerChecksum", "LZ4F_headerChecksum",
         ("LZ4F_compressBegin_usingCDict", "LZ4F_decodeHeader"),
         ("lz4libs/lz4frame.c:677", "lz4libs/lz4frame.c:1291")),  # calls at 779 and 1361
    Task("lz4", LOCATE,
         "Where does the frame decoder read and check a frame header?",
         "decode frame header", None,
         ("lz4libs/lz4frame.c", "LZ4F_decodeHeader"),
         ("lz4libs/lz4frame.c", "lz4libs/lz4frame.c:1291")),
    Task("lz4", VALUE,
         "What mode, acceleration and compression level does the binding's block compress "
         "function use when they are not given?",
         "block compress default mode acceleration compression", "compress",
         ('mode = "default"', "int acceleration = 1", "int compression = 9"),
         ("lz4/block/_block.c:130", "lz4/block/_block.c:132", "lz4/block/_block.c:133")),
]
