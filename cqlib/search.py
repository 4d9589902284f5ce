"""Search: a query becomes words, candidates come from the index, results are ranked.

Owns: turning a query into terms (never FTS5 syntax, so a query is never an error or an
injection; a token with digits whole; a misspelt word with the correction spelling.py finds),
gathering candidates (definitions that cover every term, then those that miss only common
ones, then file-level records, then each term on its own but a negligible one, then paths;
for a compound name that names a definition in source, that definition and the hits of its
rarest words), and ranking: how many
distinct query words a result covers (each weighed by how rare it is in the index), then
BM25 weighted by kind, by path class (tests, test data, examples, vendored or generated
copies, changelogs, docs below source) and by exact word forms (a word held only in another
form, an abbreviation or a typo's correction, below the word as typed), an exact name first
(its definition above its impl blocks and declarations), a C function's definition above
the header that declares it, and at most a few results from one file.  The weights, priors
and path classes are tables at the top.
Must not: hold SQL (index/queries.py does) or format output (cq.py and mcp.py do).
"""

from __future__ import annotations

import os

from cqlib.config import fnmatch_exclude
from cqlib.errors import EXIT_USAGE, CqError
from cqlib.index.queries import (
    POOL,
    EntryHit,
    FileHit,
    Filters,
    best_rows,
    documented_files,
    entry_ranks,
    has_outdated,
    matches_more_than,
    named_entries,
    path_files,
    rows_matching,
    use_path_filter,
    word_terms,
)
from cqlib.index.store import Index
from cqlib.spelling import corrections
from cqlib.text import path_text
from cqlib.words import (
    DEFINITION_KINDS,
    DIGIT_RUN_PATTERN,
    NAME_MARK,
    STOP_WORDS,
    digit_runs,
    identifier_parts,
    marks_alike,
    other_forms,
    split_identifier,
    squash,
    words_of_path,
)

DEFINITION_WEIGHT = 2.0
KIND_WEIGHT = {"import": 0.5, "file": 0.5, "property": 1.2, "heading": 1.2, "object": 1.2}
EXACT_NAME_BONUS = 100.0  # a definition whose (qualified) name is the query; others get 1/5
# The share of that bonus a block gets that implements or declares a name rather than defines
# it (Rust's `impl BytesMut`, `mod bytes_mut;`, a C++ namespace), and a name the query spells
# only alike (`bytes_mut` for `BytesMut`) rather than as typed.
EXACT_KIND_SHARE = {"impl": 0.5, "module": 0.3}
SPELLED_ALIKE_SHARE = 0.8
# The share of its score a result keeps for each term it covers only by another form of the
# word (an abbreviation, `max` for `maximum`, or a typo's correction): below the word as typed.
OTHER_FORM_SHARE = 0.7
CANDIDATES = 300
# A query that is one compound name as code writes it, perhaps qualified (`_siftdown_max`,
# `sigprofNonGoPC`, `io.Reader`, `Vec::push`): where it names definitions in source, those
# answer it, with the hits of its rarest words (see ranked_results).
IDENTIFIER_SHAPE = r"[^\W\d]\w*(?:(?:\.|::|->)[^\W\d]\w*)*"
DECLARED_KINDS = ("function", "method")  # what a header declares, a source file defines
HEADER_EXTENSIONS = (".h", ".hh", ".hpp", ".hxx")
PER_FILE = 3
# Where code that is not the source itself lives, and how far down it ranks: by a folder's
# name (any case), or by the file's name, matched as a glob whose only wildcard is `*`.
PATH_CLASSES = {
    # What tests read rather than run: corpora and fixtures match any query in words.
    "test data": ({"testdata", "test_data", "test-data", "fixtures", "__snapshots__"},
                  ("*.snap",)),
    # Each ecosystem's conventions: Go, Python, Rust and C++'s `_test`, googletest's
    # `_unittest`, JS's `.test.`/`.spec.`, Java and Kotlin's `Test`, glibc's `tst-` and `bug-`
    # (with the test data beside them, `tst-regex.input`).
    "test": ({"test", "tests", "__tests__", "testing", "spec", "specs", "e2e", "__mocks__"},
             ("*_test.*", "*_tests.*", "*-test.*", "*-tests.*", "*_unittest.*", "test_*.*",
              "test-*", "tst-*", "tst_*", "bug-*.c", "*.test.*", "*.spec.*", "*_spec.*",
              "*Test.java", "*Tests.java", "*Test.kt", "*Tests.kt", "conftest.py")),
    "example": ({"example", "examples", "bench", "benches", "benchmark", "benchmarks", "demo",
                 "samples"}, ()),
    "copy": ({"vendor", "node_modules", "third_party", "dist", "build", "out", "target",
              "generated", "bower_components"},
             ("*.min.js", "*.min.css", "*-min.js", "*.bundle.js", "*.map", "*.pb.go",
              "*_pb2.py", "*.generated.*")),
}
PATH_CLASSES["history"] = (set(), ("CHANGELOG*", "CHANGES*", "HISTORY*", "History.*", "NEWS*",
                                    "changelog*", "RELEASE*NOTES*"))
# Prose about the code and declarations of its types: below the implementation that covers
# as much (`proxy.md` and `index.d.ts` below `proxy-agent.js`), never a word less.
PATH_CLASSES["docs"] = ({"docs", "doc", "documentation"},
                        ("*.md", "*.rst", "*.adoc", "*.txt", "*.d.ts", "*.d.mts", "*.d.cts"))
PATH_PRIOR = {"source": 1.0, "test": 0.5, "example": 0.6, "copy": 0.25, "demoted": 0.25,
              "history": 0.25, "docs": 0.5, "test data": 0.25}
OWN_CLASSES = ("source", "docs")  # the classes whose hits make a wider search needless
# How many words of coverage a path class gives up: a test, or a bundled copy that holds
# every word of its library, must not outrank the source that covers one word less.
COVERAGE_PENALTY = {"source": 0.0, "test": 0.5, "example": 0.5, "copy": 1.0, "demoted": 1.0,
                    "history": 1.0, "docs": 0.0, "test data": 1.0}
# Rare words count more: a term weighs its rarity (log of files per file holding it) against
# the query's rarest term's, and a word held by at most RARE_SHARE of the files, or by fewer
# than RARE_FILES (however small the index: two files in three say little), counts whole.
# Words missed are counted by their weights summed, rounded: a result missing only a word
# that most files hold (weight below MISSED_FROM) ranks with those that cover every word, by
# its BM25 (a definition that answers above a long file that holds each word somewhere).
# A word nearly every file holds (weight below NEGLIGIBLE: `2` among names that end in
# `_2`) counts for nothing, so the search neither widens by it nor asks which results hold
# it, each of which reads the whole of its list (a second at 50,000 files).
RARE_SHARE = 0.1
RARE_FILES = 10
MISSED_FROM = 0.5
NEGLIGIBLE = 0.05


class Term:
    """One thing a result can cover: a word (or one of its other forms, see other_forms),
    or a quoted phrase."""

    def __init__(self, words: list[str], prefix: bool = False, forms: tuple | None = None):
        self.words = words
        self.prefix = prefix
        self.parts: list[str] = []  # a token's words that cover it together (token_term)
        quoted = " ".join(words)
        self.entries = f'"{quoted}"' + ("*" if prefix else "")  # a phrase in entries_fts
        # What a definition named by this term must hold in the squashed column: the marked
        # forms of its words that the stemmer treats alike (see marks_alike); "" if none.
        self.named = " AND ".join(f'"{NAME_MARK}{w}"' + ("*" if prefix and w == words[-1] else "")
                                  for w in words if marks_alike(w))
        self.files = " ".join(f'"{w}"' for w in words) + ("*" if prefix else "")  # no phrases
        self.forms = forms if forms is not None else \
            other_forms(words[0]) if len(words) == 1 else ()
        if self.forms:  # `maximum` covered by `max` too
            alternatives = "".join(f' OR "{form}"' for form in self.forms)
            self.entries = self.files = f"({self.entries}{alternatives})"
            every = (*words, *self.forms)
            self.named = "(" + " OR ".join(f'"{NAME_MARK}{w}"' for w in every) + ")" \
                if all(marks_alike(w) for w in every) and not prefix else ""

    def expression(self, table: str) -> str:
        """The FTS expression that finds this term in entries_fts or files_fts."""
        return self.entries if table == "entries_fts" else self.files


def underscore_chunks(token: str) -> list[str]:
    """A query token cut at its underscores, a prefix query's `*` kept on the last chunk."""
    chunks = [chunk for chunk in token.rstrip("*").split("_") if chunk]
    if chunks and token.endswith("*"):
        chunks[-1] += "*"
    return chunks


def token_term(token: str) -> Term:
    """The term of a token of letters and digits: the token whole, or (where the index split
    it at its case changes: `utf8Decode`) all of its runs and other words (`utf8`, `decode`);
    never a part alone."""
    typed = token.rstrip("*")
    term = Term([typed.lower()], token.endswith("*"), forms=())
    term.named = ""
    if not typed.islower():
        runs = digit_runs(typed)
        rest = identifier_parts(DIGIT_RUN_PATTERN[0].sub(" ", typed))
        term.parts = [*runs, *(w for w in rest if not w.isdigit())]
        if len(term.parts) > 1:
            together = " AND ".join(f'"{w}"' for w in term.parts)
            term.entries = f"({term.entries} OR ({together}))"
            term.files = f"({term.files} OR ({together}))"
    return term


class SearchQuery:
    """A query reduced to its words: the terms to cover, and the squashed identifier it may
    name (`Builder.WriteString`, `parse config`)."""

    def __init__(self, text: str):
        import re

        phrases = [identifier_parts(p) for p in re.findall(r'"([^"]*)"', text)]
        tokens = re.findall(r"\w+\*?", re.sub(r'"[^"]*"', " ", text))
        words: dict = {}
        # A token of letters and digits (`utf8Decode`, `x509`, `E0308`, `abc123def456`) is one
        # term, found whole: its parts (`8`) would find every `thing8`.
        # (A token is a word of the index only up to its underscores: `regex_set_0`.)
        chunks = [chunk for token in tokens for chunk in underscore_chunks(token)]
        whole_tokens = [c for c in chunks if any(ch.isdigit() for ch in c)
                        and not c.rstrip("*").isdigit()]
        for token in chunks:
            if token in whole_tokens:
                continue
            parts = split_identifier(token.rstrip("*"))
            for i, part in enumerate(parts):
                words[part] = words.get(part, False) or (token.endswith("*") and
                                                          i == len(parts) - 1)
        for phrase in phrases:
            if len(phrase) == 1:
                words.setdefault(phrase[0], False)
        meaningful = {w: p for w, p in words.items() if w not in STOP_WORDS} or words
        token_terms = [token_term(t) for t in dict.fromkeys(whole_tokens)]
        self.terms = [Term(p) for p in phrases if len(p) > 1] + \
            [Term([w], prefix) for w, prefix in meaningful.items()] + token_terms
        if not self.terms:
            raise CqError(f"nothing to search for in {text!r}: use words or identifiers",
                          EXIT_USAGE)
        self.words = {*meaningful, *(w for t in token_terms for w in t.words + t.parts)}
        self.whole = squash("".join(t.rstrip("*") for t in tokens))
        self.last = squash(tokens[-1].rstrip("*")) if tokens else ""
        self.typed_last = tokens[-1].rstrip("*") if tokens else ""  # the name as typed
        self.corrections: dict = {}  # a misspelt word -> the index's word searched instead
        self.weights = [1.0] * len(self.terms)  # how much covering each counts (term_weights)
        self.held: dict = {}  # word -> (its term, the files holding it), see word_terms
        self.qualifiers = [p for t in tokens[:-1] for p in split_identifier(t.rstrip("*"))]
        # One name as code spells it (`_siftdown_max`, `sigprofNonGoPC`, `io.Reader`), not
        # words: where it names a definition, that is the answer (see ranked_results).
        self.identifier = len(identifier_parts(text)) > 1 and \
            bool(re.fullmatch(IDENTIFIER_SHAPE, text.strip()))


PATH_CLASS_CACHE: dict = {}  # (path, demote) -> class, for the life of a process


def path_names_files(index: Index, git_dir: str, spec: str) -> bool:
    """True if some indexed file of a worktree is under `--path` spec (see path_matcher)."""
    matches = path_matcher(spec)
    return any(matches(f.path) for f in index.files(git_dir))


def path_class(path: str, demote: tuple) -> str:
    """source, test, test data, example, copy (vendored, bundled, minified, generated),
    history (changelogs), docs (prose and type declarations) or demoted (by the cq.demote
    patterns)."""
    found = PATH_CLASS_CACHE.get((path, demote))
    if found is None:
        found = PATH_CLASS_CACHE[(path, demote)] = classify_path(path, demote)
        if len(PATH_CLASS_CACHE) > 200_000:
            PATH_CLASS_CACHE.clear()
    return found


def classify_path(path: str, demote: tuple) -> str:
    """path_class, computed."""
    if demote and fnmatch_exclude(path, demote):
        return "demoted"
    *folders, name = path.split("/")
    for kind in ("copy", "test data", "test", "example", "history", "docs"):
        if any(folder.lower() in PATH_CLASSES[kind][0] for folder in folders) or \
                (any(star_match(glob, name) for glob in PATH_CLASSES[kind][1]) and
                 not (kind == "test" and name.endswith(HEADER_EXTENSIONS))):
            return kind  # (a header is a test's only in a test folder: `gtest-death-test.h`)
    return "source"


def star_match(glob: str, name: str) -> bool:
    """True if a name matches a glob whose only wildcard is `*` (as fnmatchcase would; with
    no regular expression to compile, which cost a short search a fifth of its time)."""
    if "*" not in glob:
        return name == glob
    first, *middle, last = glob.split("*")
    if len(name) < len(first) + len(last) or not name.startswith(first) or \
            not name.endswith(last):
        return False
    at, end = len(first), len(name) - len(last)
    for piece in middle:
        at = name.find(piece, at, end)
        if at < 0:
            return False
        at += len(piece)
    return True


def path_matcher(spec: str | None):
    """A test of a path against --path: a glob if it has glob characters, else a folder or
    path prefix (`storage`, `storage/`, `src/stor`); None for no filter.  A name that is not
    UTF-8 matches as itself or as the text cq gives for it (path_text: `caf\\xe9/`)."""
    from fnmatch import fnmatchcase

    if spec is None:
        return None
    spec = spec.removeprefix("./")
    if any(ch in spec for ch in "*?["):
        def matches(path: str) -> bool:
            return fnmatchcase(path, spec)
    else:
        def matches(path: str) -> bool:
            return path.startswith(spec)
    if "\\" not in spec:  # only path_text's escapes make the text differ from the name
        return matches
    return lambda path: matches(path) or matches(path_text(path))


def covers_path_word(term: Term, words: set[str]) -> bool:
    """True if every word of a term is in a path, exactly or as a stem of at least 4 letters
    (`strings` and `string`, `parsing` and `parse`)."""
    def near(word: str) -> bool:
        return word in words or any(
            min(len(word), len(w)) >= 4 and (w.startswith(word[:-1] if len(word) > 4 else word)
                                             or word.startswith(w)) for w in words)
    return all(near(word) for word in term.words)


class Candidate:
    """An entry or a file-level record that may be a result, with what it covers."""

    def __init__(self, kind: str, rowid: int, path: str, language: str, line: int = 1,
                 name: str = "", container: str = "", signature: str = "", doc: str = ""):
        self.kind, self.rowid, self.path, self.language = kind, rowid, path, language
        self.line, self.end, self.name, self.container = line, line, name, container
        self.outdated = False  # of the version of its file before the one being documented
        self.signature, self.doc = signature, doc
        self.bm25 = self.score = 0.0
        self.summary_by = ""  # the external documenter whose summary doc is, if any
        self.covered: set[int] = set()
        self.coverage = 0.0  # how many terms it covers, less its path's penalty
        self.other_forms = 0  # how many of them only by another form (see OTHER_FORM_SHARE)

    @classmethod
    def of_entry(cls, hit: EntryHit, ranked: bool = True) -> Candidate:
        """A definition found by a query (with its BM25, if the query ranked it)."""
        c = cls(hit.kind, hit.id, hit.path, hit.language, hit.line, hit.name, hit.container,
                hit.signature, hit.doc)
        c.end, c.bm25 = max(hit.end, hit.line), (-hit.rank if ranked else 0.0)
        c.outdated = hit.outdated
        return c

    @classmethod
    def of_file(cls, hit: FileHit, ranked: bool = True) -> Candidate:
        """A file-level record found by a query (with its BM25, if the query ranked it)."""
        c = cls("file", hit.id, hit.path, hit.language, doc=hit.summary)
        c.bm25, c.summary_by = (-hit.rank if ranked else 0.0), hit.summary_by
        return c

    def symbol(self) -> str:
        """The name as people write it: `Builder.WriteString`, `Regex::replace`, a file name."""
        if self.kind == "file":
            return os.path.basename(self.path)
        if not self.container:
            return self.name
        from cqlib.documenters import separator  # the language table: only where needed

        last = self.container.replace("::", ".").rsplit(".", 1)[-1]
        return f"{last}{separator(self.language)}{self.name}"

    def exact(self, query: SearchQuery) -> bool:
        """True if the query names this definition, plainly or qualified."""
        return self.kind != "file" and names_exactly(query, self.name, self.container)


def names_exactly(query: SearchQuery, name: str, container: str) -> bool:
    """True if the query is the name, or the name qualified by (the end of) its container."""
    last = container.replace("::", ".").rsplit(".", 1)[-1]
    return query.whole in (squash(name), squash(last + name), squash(container + name))


def search(index: Index, git_dir: str, text: str, limit: int = 10, path: str | None = None,
           language: str | None = None, tests: bool = False, all_entries: bool = False,
           demote: tuple = (), spare: int = 0, named: bool = False) -> list[dict]:
    """Ranked results for a query in one worktree (see ranked_results), read at one moment:
    whether old versions of files answer and the rows that answer must agree, or a file
    mapped to its new blob between the two reads answers with neither version."""
    arguments = (index, git_dir, text, limit, path, language, tests, all_entries, demote,
                 spare, named)
    if index.db.in_transaction:
        return ranked_results(*arguments)
    with index.snapshot():
        return ranked_results(*arguments)


def ranked_results(index: Index, git_dir: str, text: str, limit: int, path: str | None,
                   language: str | None, tests: bool, all_entries: bool, demote: tuple,
                   spare: int, named: bool) -> list[dict]:
    """Ranked results for a query in one worktree: what the CLI prints and MCP returns.

    Definitions that cover every term come from an AND query, which is selective and fast;
    only where they fill fewer than `limit` source files does the search take in file-level
    records, then any term (OR) with what each candidate covers, then paths.  A compound
    name that names a definition in source takes that definition instead of the AND query,
    then its rarest terms' own hits alone.  `spare` more
    results are returned, without widening for them (for a caller that drops some).  With
    `named`, only the definitions the query names, plainly or qualified (what `symbol`
    asks), looked up by name alone."""
    query = SearchQuery(text)
    db = index.db
    if not named:
        held = word_terms(db, [w for t in query.terms for w in (*t.words, *t.forms)])
        for n, used in corrections(db, query.terms, held).items():
            query.corrections[query.terms[n].words[0]] = used
            query.terms[n] = Term(query.terms[n].words, forms=(used,))
            held.update(word_terms(db, [used]))
        query.weights, query.held = term_weights(db, query.terms, held), held
    use_path_filter(db, path_matcher(path))
    where = Filters(git_dir, path, language, has_outdated(db, git_dir))
    every = range(len(query.terms))
    exact = [c for c in exact_candidates(db, query, where) if c.exact(query)] \
        if query.whole else []
    # A compound name that names definitions (in source, not a test or a built copy) is
    # answered by them and by its rarest words' own hits (`_siftdown` for `_siftdown_max`):
    # what holds every word, or a common one (`max`, `0`), adds nothing its reader wants,
    # and ranking those is the costliest query there is (BM25 reads the whole of each
    # word's list to weigh it).
    answered = query.identifier and bool(source_paths(exact, demote))
    candidates = [] if named or answered else entry_candidates(db, query.terms, where)
    candidates += exact
    if not (named or answered) and len(source_paths(candidates, demote)) < limit:
        candidates += file_candidates(db, " AND ".join(t.files for t in query.terms), where)
    for c in candidates:
        c.covered.update(every)
    if not named:
        candidates += precise_candidates(db, query, where, {key_of(c) for c in candidates})
    if not named and len(source_paths(candidates, demote)) < limit:
        seen = {key_of(c) for c in candidates}
        candidates += [c for c in any_term_candidates(db, query, where, answered)
                       if key_of(c) not in seen]
        if not answered:
            candidates += path_candidates(db, query, where,
                                          {c.path for c in candidates if c.kind == "file"})
    for c in candidates:
        if len(c.covered) < len(query.terms):
            c.covered.update(n for n, term in enumerate(query.terms) if n not in c.covered
                             and covers_path_word(term, words_of_path(c.path)))
    count_other_forms(db, query, candidates)
    for c in candidates:
        c.coverage = len(query.terms) - words_missed(c, query) - \
            coverage_penalty(c.path, bool(path or tests), demote)
        c.score = rank_score(c, query, path, tests, demote)
    unique = {(c.kind, c.rowid, c.path): c for c in reversed(candidates)}.values()
    entries_cover: dict = {}
    for c in unique:
        if c.kind != "file":
            entries_cover.setdefault(c.path, []).append(c.covered)
    # A file's own record adds nothing where one of its definitions covers every word it does.
    kept = [c for c in unique if c.kind != "file" or
            not any(c.covered <= covered for covered in entries_cover.get(c.path, ()))]
    ranked = sorted(kept, key=lambda c: (-c.coverage, -c.score, c.path, c.line))
    if not named:
        ranked = definitions_first(db, ranked, where, limit + spare)
    # No cap per file where one file is asked for, nor on the definitions a query names.
    every = all_entries or names_one_file(index, git_dir, path)
    return [result(c, query) for c in grouped(ranked, limit + spare,
                                               lambda c: every or c.exact(query))]


def term_weights(db, terms: list[Term], held: dict[str, tuple[str, int]]) -> list[float]:
    """How much covering each term counts (see RARE_SHARE): 1 for the query's rarest, and
    for any word held by few files, a phrase or a prefix; less for a commoner word.  `held`
    has the rows holding each word (word_terms)."""
    import math

    if len(terms) < 2:
        return [1.0] * len(terms)
    files = max(documented_files(db), 1)
    whole = math.log(1 / RARE_SHARE)

    def rarity(term: Term) -> float | None:
        if len(term.words) > 1 or term.parts or term.prefix:
            return None
        rows = max(held.get(w, ("", 0))[1] for w in (*term.words, *term.forms))
        return math.log(files / rows) if rows >= RARE_FILES else None

    rarities = [rarity(term) for term in terms]
    rarest = max(whole if r is None else min(r, whole) for r in rarities)
    return [1.0 if r is None or r >= rarest else r / rarest for r in rarities]


def count_other_forms(db, query: SearchQuery, candidates: list[Candidate]) -> None:
    """Count, for each candidate, the terms it covers only by another form of the word
    (neither its text nor its path holds the word as typed)."""
    for n, term in enumerate(query.terms):
        if not term.forms:
            continue
        typed = Term(term.words, term.prefix, forms=())
        other = Term(list(term.forms[:1]), forms=term.forms[1:])  # any other form
        # A candidate that covers the term holds the word as typed or another form: ask
        # about the rarer of the two (a common word's list is long to read), and about the
        # other only for the candidates the first did not settle.
        rows = [sum(query.held.get(w, ("", 0))[1] for w in t.words + list(t.forms))
                for t in (typed, other)]
        for table in ("entries_fts", "files_fts"):
            group = [c for c in candidates if n in c.covered and (c.kind == "file") ==
                     (table == "files_fts") and not covers_path_word(typed, words_of_path(c.path))]
            if not group:
                continue
            ids = [c.rowid for c in group]
            if rows[0] <= rows[1]:
                holding = rows_matching(db, table, typed.expression(table), ids)
            else:
                formed = rows_matching(db, table, other.expression(table), ids)
                holding = set(ids) - formed | rows_matching(
                    db, table, typed.expression(table), [i for i in ids if i in formed])
            for c in group:
                c.other_forms += c.rowid not in holding


def words_missed(c: Candidate, query: SearchQuery) -> int:
    """The words a candidate misses, rarity-weighted and rounded (see MISSED_FROM)."""
    missed = sum(w for n, w in enumerate(query.weights) if n not in c.covered)
    return int(missed + 1 - MISSED_FROM)


def precise_candidates(db, query: SearchQuery, where: Filters, seen: set) -> list[Candidate]:
    """Definitions that cover every term but the commonest (those whose weight is below
    MISSED_FROM), with the common ones they cover too: the precise definition a long file
    would crowd out of the first stage by holding each word somewhere."""
    common = [n for n, w in enumerate(query.weights) if w < MISSED_FROM]
    if not common or len(common) == len(query.terms):
        return []
    rest = [n for n in range(len(query.terms)) if n not in common]
    found = [c for c in entry_candidates(db, [query.terms[n] for n in rest], where)
             if key_of(c) not in seen]
    for c in found:
        c.covered.update(rest)
    measure_coverage(db, [(n, query.terms[n]) for n in common
                          if query.weights[n] >= NEGLIGIBLE], found)
    return found


def definitions_first(db, ranked: list[Candidate], where: Filters,
                      limit: int) -> list[Candidate]:
    """The ranking, with the definition of each C or C++ function that a header declares
    (its doc there, its body in a source file) moved or brought just above the
    declaration, with the declaration's doc where it has none: the implementation is what is
    asked for, and its words are often only in the header (among the first `limit`)."""
    placed: dict = {}  # key -> the definition to put above the declaration that found it
    above: dict = {}  # the declaration's key -> the definitions placed above it
    for c in ranked[:limit]:
        if not declares_only(c) or key_of(c) in placed:
            continue
        for d in named_candidates(db, squash(c.name), where):
            if d.name == c.name and d.kind in DECLARED_KINDS and d.end > d.line and \
                    not d.path.endswith(HEADER_EXTENSIONS) and key_of(d) not in placed:
                d.covered, d.coverage, d.score = set(c.covered), c.coverage, c.score
                d.doc = d.doc or c.doc
                placed[key_of(d)] = d
                above.setdefault(key_of(c), []).append(d)
    if not placed:
        return ranked
    out = []
    for c in ranked:
        out += above.get(key_of(c), [])
        if key_of(c) not in placed:
            out.append(c)
    return out


def key_of(c: Candidate) -> tuple:
    """What tells one candidate from another."""
    return (c.kind == "file", c.rowid, c.path)


def declares_only(c: Candidate) -> bool:
    """True for a C or C++ function of a header (which declares it, unless it is inline:
    then no source file defines it too)."""
    return c.kind in DECLARED_KINDS and c.language in ("c", "cpp") and \
        c.path.endswith(HEADER_EXTENSIONS)


def names_one_file(index: Index, git_dir: str, path: str | None) -> bool:
    """True if a `--path` is one indexed file's path (not a folder, prefix or glob)."""
    return bool(path) and not any(ch in path for ch in "*?[") and \
        index.file_doc(git_dir, path.removeprefix("./")) is not None


def coverage_penalty(path: str, lifted: bool, demote: tuple) -> float:
    """The words of coverage a path gives up for its class (none once --path or --tests
    says what the user wants)."""
    return 0.0 if lifted else COVERAGE_PENALTY[path_class(path, demote)]


def source_paths(candidates: list[Candidate], demote: tuple) -> set[str]:
    """The files of the project's own among candidates: its source and its docs (not tests,
    examples or copies), enough of which make a wider search needless."""
    return {c.path for c in candidates if path_class(c.path, demote) in OWN_CLASSES}


def entry_candidates(db, terms: list[Term], where: Filters) -> list[Candidate]:
    """Definitions matching every term, best first, within the filters."""
    expression = " AND ".join(t.entries for t in terms)
    named = " AND ".join(t.named for t in terms if t.named)
    return [Candidate.of_entry(hit)
            for hit in best_rows(db, "entries_fts", expression, where, CANDIDATES, named)]


def exact_candidates(db, query: SearchQuery, where: Filters) -> list[Candidate]:
    """Definitions whose squashed name is the whole query or its last word (qualified by the
    others), looked up by that name's term."""
    found = named_candidates(db, query.whole, where)
    if query.last and query.last != query.whole:
        found += named_candidates(db, query.last, where)
    return found


def named_candidates(db, squashed: str, where: Filters) -> list[Candidate]:
    """Definitions whose squashed name is this, looked up by its term (which, with its
    diacritics folded, may also be another name's: those are left out)."""
    if not squashed:
        return []
    return [Candidate.of_entry(hit, ranked=False) for hit in named_entries(db, squashed, where)
            if squash(hit.name) == squashed]


def term_candidates(db, term: Term, where: Filters) -> list[Candidate]:
    """A term's best definitions and file-level records; definitions named by the term are
    looked up (and ranked) as well, since a pool of a common word may not hold them."""
    found = entry_candidates(db, [term], where)
    known = {c.rowid for c in found}
    named = [c for c in named_candidates(db, squash("".join(term.words)), where)
             if c.rowid not in known][:50]  # each is ranked by a lookup of its own
    if named:
        ranks = entry_ranks(db, term.entries, [c.rowid for c in named])
        for c in named:
            c.bm25 = -ranks.get(c.rowid, 0.0)
    return found + named + file_candidates(db, term.files, where)


def any_term_candidates(db, query: SearchQuery, where: Filters,
                        rarest_only: bool = False) -> list[Candidate]:
    """Definitions and file-level records that match some of the terms, each term's best
    found on its own (so a common word cannot crowd out a rare one), with the terms each
    covers and their BM25 summed, as one OR query would; `rarest_only`, by the terms of full
    weight alone (see term_weights)."""
    if len(query.terms) < 2:
        return []
    found: dict = {}
    least = 1.0 if rarest_only else NEGLIGIBLE
    terms = [(n, term) for n, term in rarest_terms(db, query) if query.weights[n] >= least]
    for number, term in terms:
        for c in term_candidates(db, term, where):
            key = (c.kind == "file", c.rowid, c.path)
            if key in found:
                found[key].bm25 += c.bm25
            found.setdefault(key, c).covered.add(number)
    measure_coverage(db, terms, list(found.values()))
    return list(found.values())


def file_candidates(db, expression: str, where: Filters) -> list[Candidate]:
    """File-level records matching an FTS expression, best first, within the filters."""
    return [Candidate.of_file(hit)
            for hit in best_rows(db, "files_fts", expression, where, CANDIDATES)]


def path_candidates(db, query: SearchQuery, where: Filters, known: set) -> list[Candidate]:
    """Files whose path holds a query word that is not negligible (see NEGLIGIBLE), not found
    by their words already."""
    terms = [t for n, t in enumerate(query.terms) if query.weights[n] >= NEGLIGIBLE]

    def has_word(path: str) -> bool:
        return any(covers_path_word(t, words_of_path(path)) for t in terms)

    if not terms:
        return []
    # Every path word covers_path_word accepts begins with the query word's first 4 letters.
    narrow = " OR ".join(sorted({f'"{w[:4]}"*' for t in terms for w in t.words}))
    return [Candidate.of_file(hit, ranked=False)
            for hit in path_files(db, narrow, where, has_word, CANDIDATES)
            if hit.path not in known]


MOST_TERMS = 8  # a longer query widens by its rarest terms only (each costs a few lookups)


def rarest_terms(db, query: SearchQuery) -> list[tuple[int, Term]]:
    """(number, term) of the query's rarest MOST_TERMS terms (all, for a shorter query)."""
    numbered = list(enumerate(query.terms))
    if len(numbered) <= MOST_TERMS:
        return numbered
    return sorted(numbered, key=lambda item: sum(
        matches_more_than(db, "entries_fts", item[1].entries, n) for n in (10, 100, POOL)))[
            :MOST_TERMS]


def measure_coverage(db, terms: list[tuple[int, Term]], candidates: list[Candidate]) -> None:
    """Add the terms a candidate covers in its text but was not found by."""
    groups = {"entries_fts": [c for c in candidates if c.kind != "file"],
              "files_fts": [c for c in candidates if c.kind == "file"]}
    for table, group in groups.items():
        for number, term in terms:
            unknown = [c for c in group if number not in c.covered]
            if not unknown:
                continue
            matching = rows_matching(db, table, term.expression(table),
                                     [c.rowid for c in unknown])
            for c in unknown:
                if c.rowid in matching:
                    c.covered.add(number)


def rank_score(c: Candidate, query: SearchQuery, path: str | None, tests: bool,
               demote: tuple) -> float:
    """BM25 weighted by kind, path and exact word forms, plus a bonus for the exact name."""
    definition = c.kind in DEFINITION_KINDS
    weight = DEFINITION_WEIGHT if definition else KIND_WEIGHT.get(c.kind, 1.0)
    kind = path_class(c.path, demote)
    prior = 1.0 if path else PATH_PRIOR[kind]
    if tests and kind == "test":
        prior = 2.0
    exact_forms = len(query.words & set(split_identifier(c.name))) if c.name else 0
    score = (c.bm25 + 0.1) * weight * prior * (1 + 0.25 * exact_forms) * \
        OTHER_FORM_SHARE ** c.other_forms
    if c.exact(query):
        share = EXACT_KIND_SHARE.get(c.kind, 1.0) * \
            (1.0 if c.name == query.typed_last else SPELLED_ALIKE_SHARE)
        score += prior * share * (EXACT_NAME_BONUS if definition else EXACT_NAME_BONUS / 5)
    return score


def grouped(ranked: list[Candidate], limit: int, uncapped) -> list[Candidate]:
    """The first `limit` candidates, at most PER_FILE from any one file first (but those
    `uncapped` accepts), then those the cap held back, in rank order (so that a page past
    the first reaches them)."""
    chosen, held, per_file = [], [], {}
    for c in ranked:
        if not uncapped(c) and per_file.get(c.path, 0) >= PER_FILE:
            held.append(c)
            continue
        per_file[c.path] = per_file.get(c.path, 0) + 1
        chosen.append(c)
        if len(chosen) == limit:
            break
    return (chosen + held)[:limit]


def result(c: Candidate, query: SearchQuery) -> dict:
    """One search result as the CLI prints it and MCP returns it."""
    first_doc = (c.doc.strip().splitlines() or [""])[0]
    return {"path": c.path, "line": c.line, "end": c.end, "kind": c.kind, "symbol": c.symbol(),
            "name": c.name or os.path.basename(c.path), "container": c.container,
            "language": c.language, "signature": c.signature[:200], "doc": first_doc[:200],
            "snippet": (c.signature or first_doc)[:200],
            "covered": len(c.covered), "of": len(query.terms),
            "matched": [" ".join(query.terms[n].words) for n in sorted(c.covered)],
            "score": round(c.score, 4), "matched_summary_by": matched_summary_by(c, query),
            **({"corrected": query.corrections} if query.corrections else {}),
            **({"outdated": True} if c.outdated else {})}


def matched_summary_by(c: Candidate, query: SearchQuery) -> str:
    """The external documenter whose summary of a file holds a query word ('' if none)."""
    if not c.summary_by:
        return ""
    words = set(identifier_parts(c.doc))
    stems = {w[:5] for w in query.words}
    return c.summary_by if any(w[:5] in stems for w in words) else ""
