"""cq search and cq show against a real index built by a real worker."""

from __future__ import annotations

import json
import sqlite3
import sys

import pytest
from conftest import ROOT, indexed_repository, wait_until

sys.path.insert(0, str(ROOT))
import cq  # the command-line parser, from the source
from cqlib.hits import best_lines
from cqlib.index.queries import word_terms
from cqlib.index.schema import COMMON_TERM_FILES, COUNTS_STALE_SHARE
from cqlib.search import classify_path
from cqlib.words import ABBREVIATIONS, NAME_MARK, edit_distance, marks_alike, other_forms

FILES = {
    "config/loader.py": '''"""Loading of configuration files."""


def parse_config(path):
    """Read the configuration file at path and return its settings."""
    return {}
''',
    "app/main.py": '''from config.loader import parse_config


def run():
    """Start the application."""
    settings = parse_config("app.toml")
    return settings
''',
    "web/client.ts": "/** Fetches JSON over HTTP. */\nexport function fetchJson(url) {}\n",
    "docs/guide.md": "# Guide\n\n## Retry policy\n\nFailed requests are retried with backoff.\n",
}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, cq_pyz):
    with indexed_repository(tmp_path_factory, cq_pyz, "search", FILES) as repo:
        yield repo


@pytest.mark.parametrize("query", [["parse_config"], ["ParseConfig"], ["parse", "config"],
                                   ["parse config"], ["PARSE_CONFIG"]])
def test_every_spelling_of_an_identifier_finds_its_definition_first(indexed, query):
    top = indexed.search(*query)[0]
    assert (top["path"], top["line"], top["kind"], top["symbol"]) == \
        ("config/loader.py", 4, "function", "parse_config")


def test_definitions_rank_above_mentions(indexed):
    results = indexed.search("parse_config")
    kinds = [(r["path"], r["kind"]) for r in results]
    assert kinds[0] == ("config/loader.py", "function")
    assert ("app/main.py", "import") in kinds
    assert kinds.index(("app/main.py", "import")) > 0


def test_natural_language_words_from_docstrings_and_comments_are_found(indexed):
    assert indexed.search("settings", "configuration")[0]["symbol"] == "parse_config"
    assert indexed.search("fetches", "json")[0]["path"] == "web/client.ts"
    assert indexed.search("retried", "backoff")[0]["symbol"] == "Retry policy"


def test_prefix_queries(indexed):
    assert any(r["symbol"] == "fetchJson" for r in indexed.search("fetchJ*"))


def test_path_and_language_filters(indexed):
    assert {r["path"] for r in indexed.search("parse_config", extra=["--path", "app/*"])} == \
        {"app/main.py"}
    assert all(r["language"] == "markdown" for r in indexed.search("retry",
                                                                   extra=["--lang", "markdown"]))


def test_limit(indexed):
    assert len(indexed.search("parse", extra=["-n", "1"])) == 1


def test_text_output_is_one_line_per_result(indexed):
    proc = indexed.cq("search", "parse_config", "-n", "2")
    lines = proc.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("config/loader.py:4: function parse_config")


@pytest.mark.parametrize("query", ['"unbalanced', "a AND (", "NEAR(x y", "col:value", "*",
                                   "^start", "x OR", "-minus"])
def test_fts_syntax_in_a_query_is_never_an_error_or_injection(indexed, query):
    proc = indexed.cq("search", "--", query)
    assert "Traceback" not in proc.stderr
    assert proc.returncode in (0, 2)
    if proc.returncode == 2:
        assert proc.stderr.startswith("cq: nothing to search for")


def test_a_query_without_words_is_a_usage_error(indexed):
    proc = indexed.cq("search", "--", "()")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1


def test_no_results_is_not_an_error(indexed):
    proc = indexed.cq("search", "xylophone")
    assert proc.returncode == 0 and proc.stdout.strip() == "no results"


def test_show_prints_the_stored_documentation_of_one_file(indexed):
    doc = json.loads(indexed.cq("show", "config/loader.py", "--json").stdout)
    assert doc["summary"] == "Loading of configuration files."
    assert doc["entries"][0]["signature"] == "def parse_config(path)"
    text = indexed.cq("show", "loader.py", cwd=indexed.path / "config").stdout
    assert text.startswith("config/loader.py (python, ok)")


def test_index_status_reports_complete(indexed):
    status = indexed.index_status()
    assert status["complete"] and status["documented"] == len(FILES) + 1
    text = indexed.cq("index", "status").stdout
    assert f"{len(FILES) + 1} files: {len(FILES) + 1} documented, 0 pending" in text


def test_language_aliases_and_unknown_languages(indexed):
    assert indexed.search("parse_config", extra=["--lang", "py"])[0]["language"] == "python"
    proc = indexed.cq("search", "x", "--lang", "cobol")
    assert proc.returncode == 2 and "unknown language 'cobol'" in proc.stderr


POLYGLOT = {
    "strings/builder.go": '''package strings

// A Builder is used to efficiently build a string using Write methods.
type Builder struct {
	buf []byte
}

// WriteString appends the contents of s to b's buffer.
func (b *Builder) WriteString(s string) (int, error) {
	return len(s), nil
}
''',
    "strings/builder_test.go": "package strings\n\n" + "".join(
        f"func TestBuilder{i}(t *testing.T) {{\n\tvar b Builder\n\tb.WriteString(\"x\")\n}}\n"
        for i in range(8)),
    "src/re_set.rs": '''/// Match several, possibly overlapping, regular expressions in one scan.
pub struct RegexSet(Exec);

impl RegexSet {
    /// Create a new regex set with the given regular expressions.
    pub fn new(exprs: Vec<String>) -> RegexSet {
        RegexSet(Exec::new(exprs))
    }
}

impl Regex {
    /// Replaces the leftmost-first match with the replacement provided.
    pub fn replace(&self, text: &str, rep: &str) -> String {
        text.to_string()
    }
}
''',
    "tests/set.rs": "".join(f"macro_rules! regex_set_{i} {{ () => {{}} }}\n"
                            f"fn regex_set_test_{i}() {{ let set = RegexSet::new(); }}\n"
                            for i in range(6)),
    "router/index.js": '''var proto = module.exports = function(options) {
  return router;
};

/**
 * Dispatch a req, res into the router.
 */
proto.handle = function handle(req, res, out) {
  next();
};

Router.prototype.use = function use(fn) {
  return this;
};

exports.compileQueryParser = function compileQueryParser(val) {
  return val;
};

class Layer {
  /** The number of parameters the path declares. */
  keyCount = 0;

  match(path) {
    return true;
  }
}

const helpers = {
  escapeHtml: (text) => text,
};
''',
    "dist/bundle.js": "// a bundled copy\nproto.handle = function handle(req, res, out) {};\n"
                      "function compileQueryParser(val) {}\n",
    "src/types.ts": '''export interface QueryObserverOptions<TData> {
  /**
   * If set to true, the query will refetch on window focus if the data is stale.
   */
  refetchOnWindowFocus?: boolean | 'always'
  select?: (data: TData) => TData
}
''',
    "src/App.java": '''package org.example;

/** Greets people. */
public class App {
    /** Says hello to someone. */
    public String greet(String name) {
        return "hello " + name;
    }
}
''',
    "src/widget.cpp": '''namespace ui {
class Widget {
public:
    /** Draws the widget on a canvas. */
    void draw(int canvas);
};
}

void ui::Widget::draw(int canvas)
{
}
''',
    "app/strategy.py": '''class QueryStrategy:
    """Decides how queries run."""

    def plan(self):
        """Plan the query."""
        jitter = compute_exponential_jitter()
        return jitter
''',
    "app/options.py": '''class RetryOptions:
    """Settings of a retry, with their defaults."""

    jitter_seconds: float = 0.5

    def __init__(self, meta):
        self.ceiling = getattr(meta, "ceiling", 30)
        if meta:
            self.scratch = 1


def retry(options):
    """Try again."""
    return options
''',
    "src/lib.rs": "//! Buffers.\nmod bytes_mut;\npub use crate::bytes_mut::BytesMut;\n",
    "src/bytes_mut.rs": "/// A unique reference to a slice of memory.\npub struct BytesMut {\n"
                        "    ptr: usize,\n}\n\n" + "".join(
                            f"impl {trait}BytesMut {{\n    fn f{i}(&self) {{}}\n}}\n\n"
                            for i, trait in enumerate(("", "Clone for ", "Drop for ",
                                                       "Default for "))),
    "src/codec.js": "/** Decodes bytes as UTF-8. */\nfunction utf8Decode(bytes) {}\n"
                    "function thing8() {}\nfunction other6() {}\n"
                    "/** Checks the build tag abc123def456 and the error E0308. */\n"
                    "function checkTag() {}\n",
    "docs/proxy.md": "# Proxy\n\nSend a request through an HTTP proxy with a ProxyAgent.\n",
    "api/proxy.d.ts": "/** Sends a request through a proxy: an HTTP request, sent through an "
                      "HTTP proxy. */\nexport class ProxyAgent {}\n",
    "lib/proxy-agent.js": "/** Sends a request through an HTTP proxy. */\nclass ProxyAgent {}\n",
    "include/cost.h": "/* Estimates how many bits the literals of a block take. */\n"
                      "CODEC_API void estimate_literal_costs(int n);\n",
    "src/cost.c": "#include \"cost.h\"\n\nvoid estimate_literal_costs(int n)\n{\n}\n",
    "tests/test_strategy.py": "".join(f"def test_strategy_{i}():\n    '''strategy'''\n\n\n"
                                      for i in range(6)),
    "storage/engine.py": "def open_engine():\n    '''Open the storage engine.'''\n",
    "storage_notes.md": "# Storage notes\n\nThe engine opens files.\n",
    "src/limits.c": '/* Limits of a message. */\n#define MAX_PAYLOAD_BYTES 4096\n\n'
                    "/* Wait before the next try. */\nstatic unsigned int\n"
                    "backoff_minimum_wait (unsigned int tries)\n{\n  return tries;\n}\n",
    "src/many.py": "".join(f"def widget_part_{i}():\n    '''A widget part.'''\n\n\n"
                           for i in range(8)),
}


@pytest.fixture(scope="module")
def polyglot(tmp_path_factory, cq_pyz):
    with indexed_repository(tmp_path_factory, cq_pyz, "polyglot", POLYGLOT) as repo:
        yield repo


def top(repo, *query, extra=()) -> dict:
    results = repo.search(*query, extra=extra)
    assert results, query
    return results[0]


@pytest.mark.parametrize("query, symbol", [
    ("Builder.WriteString", "Builder.WriteString"), ("strings builder", "strings.Builder"),
    ("regex replace", "Regex::replace"), ("Regex::replace", "Regex::replace"),
    ("proto.handle", "proto.handle"), ("Widget::draw", "Widget::draw"),
    ("App.greet", "App.greet"), ("QueryStrategy.plan", "QueryStrategy.plan")])
def test_qualified_names_find_their_definition_first(polyglot, query, symbol):
    assert top(polyglot, query)["symbol"] == symbol


def test_words_need_not_all_match_and_more_covered_words_rank_first(polyglot):
    hit = top(polyglot, "create", "a", "regex", "set", "from", "expressions")
    assert (hit["path"], hit["symbol"]) == ("src/re_set.rs", "RegexSet::new")


def test_a_word_finds_its_abbreviation_and_an_abbreviation_its_word(polyglot):
    assert top(polyglot, "maximum payload bytes")["symbol"] == "MAX_PAYLOAD_BYTES"
    assert top(polyglot, "backoff min wait")["symbol"] == "backoff_minimum_wait"


def test_no_word_is_widened_to_a_keyword_that_every_signature_holds():
    keywords = {"def", "fn", "func", "var", "let", "int", "str", "bool", "char", "del", "impl",
                "async", "class", "struct", "return", "const", "static", "type"}
    forms = {f for word in ABBREVIATIONS for f in (word, *other_forms(word))}
    assert not keywords & forms


def test_a_hit_shows_its_lines_whatever_case_folding_does_to_them():
    lines = ["cla\u017fs Widget:", "class WIDGET_\u0130:", "\u00df = widget"]
    assert best_lines(lines, {"class", "widget"})[0] == 2


def test_stemmed_forms_match(polyglot):
    assert top(polyglot, "replacing", "matches")["symbol"] == "Regex::replace"
    assert top(polyglot, "dispatching", "routers")["symbol"] == "proto.handle"


def test_a_query_of_stop_words_only_is_searched_as_written(polyglot):
    proc = polyglot.cq("search", "to", "from")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr


def test_quoted_phrases_match_as_phrases(polyglot):
    assert top(polyglot, '"write string"')["symbol"] == "Builder.WriteString"
    reversed_words = polyglot.search('"string write"', extra=["--lang", "go"])
    assert not reversed_words or reversed_words[0]["symbol"] != "Builder.WriteString"


@pytest.mark.parametrize("query, symbol, kind", [
    ("Router use", "Router.use", "method"),
    ("compileQueryParser", "exports.compileQueryParser", "method"),
    ("keyCount", "Layer.keyCount", "property"),
    ("escapeHtml", "helpers.escapeHtml", "method"),
    ("refetchOnWindowFocus", "QueryObserverOptions.refetchOnWindowFocus", "property")])
def test_javascript_and_typescript_forms_are_definitions(polyglot, query, symbol, kind):
    hit = top(polyglot, query)
    assert (hit["symbol"], hit["kind"]) == (symbol, kind)


def test_doc_comments_of_typescript_members_are_searchable(polyglot):
    assert top(polyglot, "refetch", "window", "focus", "stale")["symbol"] == \
        "QueryObserverOptions.refetchOnWindowFocus"


def test_test_code_and_bundled_copies_rank_below_the_code_under_test(polyglot):
    assert top(polyglot, "regex", "set")["path"] == "src/re_set.rs"
    assert top(polyglot, "strategy")["path"] == "app/strategy.py"
    assert top(polyglot, "compileQueryParser")["path"] == "router/index.js"
    assert top(polyglot, "Builder")["path"] == "strings/builder.go"


@pytest.mark.parametrize("path", [
    "posix/tst-regex.c", "posix/tst-regex.input", "stdlib/bug-getcwd.c",
    "absl/strings/str_cat_test.cc", "absl/base/call_once_unittest.cc", "src/parse-test.js",
    "lib/test-helpers.js", "src/test_util.c", "src/ParserTest.kt"])
def test_test_code_is_known_by_every_common_convention(path):
    assert classify_path(path, ()) == "test"


@pytest.mark.parametrize("path", ["tests/testdata/alice29.txt", "pkg/__snapshots__/a.snap",
                                  "spec/fixtures/users.json", "go/testdata/x.go"])
def test_what_tests_read_is_test_data_below_test_code(path):
    assert classify_path(path, ()) == "test data"


@pytest.mark.parametrize("path", ["src/latest.py", "src/contest.py", "src/attest.c",
                                  "stdlib/msort.c", "src/testing_utils.go",
                                  "googletest/include/gtest/gtest-death-test.h"])
def test_names_that_merely_hold_test_are_source(path):
    assert classify_path(path, ()) == "source"


def test_tests_flag_brings_test_code_forward(polyglot):
    assert top(polyglot, "strategy", extra=["--tests"])["path"] == "tests/test_strategy.py"


def test_path_takes_a_folder_or_prefix_as_typed(polyglot):
    for spec in ("storage", "storage/", "storage/*", "stor"):
        paths = {r["path"] for r in polyglot.search("engine", "storage", extra=["--path", spec])}
        assert "storage/engine.py" in paths, spec
    assert {r["path"] for r in polyglot.search("engine", extra=["--path", "storage/"])} == \
        {"storage/engine.py"}


def test_a_word_only_in_a_function_body_finds_its_file(polyglot):
    hit = top(polyglot, "exponential", "jitter")
    assert (hit["path"], hit["kind"]) == ("app/strategy.py", "file")


@pytest.mark.parametrize("query", ["BytesMut", "bytes mut", "bytes_mut"])
def test_a_definition_outranks_the_blocks_and_declarations_of_its_name(polyglot, query):
    kinds = [(r["kind"], r["path"]) for r in polyglot.search(query)[:6]]
    assert kinds[0] == ("struct", "src/bytes_mut.rs")
    assert kinds[1:5] == [("impl", "src/bytes_mut.rs")] * 4  # no cap on an exact name
    assert kinds[5] == ("module", "src/lib.rs")


@pytest.mark.parametrize("typed, meant", [("stratgey", "strategy"), ("stategy", "strategy"),
                                          ("strtaegy", "strategy"), ("exponentail", "exponential")])
def test_a_misspelt_word_is_searched_as_the_index_spells_it(polyglot, typed, meant):
    hit = top(polyglot, typed, "plan")
    assert hit["path"] == "app/strategy.py" and hit["corrected"] == {typed: meant}


@pytest.mark.parametrize("typed, meant, slips", [
    ("reciev", "receiv", 1), ("conect", "connect", 1), ("authentif", "authent", 2),
    ("vslid", "valid", 1), ("regain", "remain", 2), ("abc", "xyz", 3)])
def test_a_typing_slip_is_one_edit_and_a_far_key_two(typed, meant, slips):
    assert edit_distance(typed, meant, 2) == slips


def test_a_word_the_index_holds_is_taken_as_typed(polyglot):
    assert all("corrected" not in r for r in polyglot.search("storage", "engine"))


def test_the_command_line_says_which_correction_it_used(polyglot):
    proc = polyglot.cq("search", "stratgey")
    assert proc.returncode == 0
    assert "few or no files hold 'stratgey': searched for 'strategy' too" in proc.stderr


@pytest.mark.parametrize("query, symbol", [
    ("abc123def456", "checkTag"), ("E0308", "checkTag"), ("utf8Decode", "utf8Decode"),
    ("utf8", "utf8Decode"), ("utf8 decode", "utf8Decode")])
def test_a_token_with_digits_is_found_whole_and_never_by_a_digit_alone(polyglot, query, symbol):
    results = polyglot.search(query)
    assert results[0]["symbol"] == symbol
    assert not {"thing8", "other6"} & {r["symbol"] for r in results}


def test_the_implementation_ranks_above_its_docs_and_type_declarations(polyglot):
    paths = [r["path"] for r in polyglot.search("send request through http proxy")]
    assert paths[0] == "lib/proxy-agent.js"
    assert {"docs/proxy.md", "api/proxy.d.ts"} <= set(paths[1:])


def test_a_c_definition_ranks_above_the_header_that_declares_and_documents_it(polyglot):
    results = polyglot.search("how many bits do literals take")
    assert [(r["path"], r["kind"]) for r in results[:2]] == \
        [("src/cost.c", "function"), ("include/cost.h", "function")]
    assert results[0]["doc"] == "Estimates how many bits the literals of a block take."


def test_a_class_is_found_by_the_names_of_its_attributes(polyglot):
    assert top(polyglot, "retry ceiling defaults")["symbol"] == "RetryOptions"
    assert top(polyglot, "jitter seconds settings")["symbol"] == "RetryOptions"
    assert all(r["symbol"] != "RetryOptions" for r in polyglot.search("scratch"))


def test_one_file_holds_at_most_three_top_slots_unless_asked(polyglot):
    paths = [r["path"] for r in polyglot.search("widget", "part")]
    fourth = [i for i, p in enumerate(paths) if p == "src/many.py"][3]
    assert len(set(paths[:fourth])) > 1  # every other file's hits come first
    assert set(paths[fourth:]) == {"src/many.py"}  # then what the cap held back, not lost
    everything = polyglot.search("widget", "part", extra=["--all-entries", "-n", "20"])
    assert [r["path"] for r in everything if r["kind"] != "file"].count("src/many.py") == 8


def test_any_word_git_grep_finds_returns_a_result(polyglot):
    import re

    words = set(re.findall(r"[A-Za-z_]\w+", " ".join(POLYGLOT.values())))
    for word in sorted(words):
        if polyglot.git("grep", "-l", "-i", "-w", word, check=False).strip():
            assert polyglot.search(word), word


def test_demoted_paths_rank_below_the_rest(polyglot):
    assert top(polyglot, "open", "engine")["path"] == "storage/engine.py"
    polyglot.git("config", "cq.demote", "storage/")
    try:
        assert top(polyglot, "open", "engine")["path"] != "storage/engine.py"
    finally:
        polyglot.git("config", "--unset", "cq.demote")


# More definitions share a word than search ranks in full (cq.POOL): it ranks a pool.
CROWD = {f"crowd/c{i}.py": "".join(f"def load_part_{i}_{j}():\n    return {j}\n"
                                   for j in range(60)) for i in range(40)}
CROWD.update({
    "exact/loader.py": "def load():\n    \"\"\"The one function named exactly load.\"\"\"\n",
    "rare/zebra.py": "def zebra_stripes():\n    \"\"\"Counts stripes.\"\"\"\n",
    # Documented first (lowest row ids), named by a word 2,400 docstrings mention.
    "aa/gizmos.py": "".join(f"def gizmo_{i}():\n    pass\n" for i in range(20)),
    # The same, named by a word that begins with a vowel (which the index marks in no name).
    "aa/patches.py": "".join(f"def apply_patch_{i}():\n    pass\n" for i in range(20)),
    "aa/urls.py": "def get_url():\n    pass\n",  # named geturl only when squashed
})
CROWD.update({f"mentions/m{i}.py": "".join(
    f"def helper_{i}_{j}():\n    \"\"\"Calls the gizmo to apply a patch by getUrl.\"\"\"\n"
    for j in range(60)) for i in range(40)})


@pytest.fixture(scope="module")
def crowded(tmp_path_factory, cq_pyz):
    with indexed_repository(tmp_path_factory, cq_pyz, "crowded", CROWD) as repo:
        yield repo


def test_an_exact_name_is_found_first_however_common_its_word(crowded):
    assert crowded.search("load")[0]["symbol"] == "load"


def test_a_rare_word_is_not_crowded_out_by_a_common_one(crowded):
    paths = [r["path"] for r in crowded.search("load", "zebra")]
    assert "rare/zebra.py" in paths and "exact/loader.py" in paths


def test_definitions_named_by_a_word_rank_above_its_many_mentions(crowded):
    assert crowded.search("gizmo")[0]["symbol"].startswith("gizmo_")


def test_definitions_named_by_common_words_rank_above_their_mentions(crowded):
    assert crowded.search("apply", "patch")[0]["symbol"].startswith("apply_patch_")


@pytest.mark.parametrize("query", ["geturls", "getu*"])
def test_a_common_name_is_found_by_its_stem_or_prefix_among_its_mentions(crowded, query):
    assert crowded.search(query)[0]["symbol"] == "get_url"


def test_common_words_no_definition_is_named_by_still_find_their_mentions(crowded):
    results = crowded.search("calls", "gizmo", "patch")
    assert results and all(r["symbol"].startswith("helper_") for r in results)


def test_a_common_word_still_ranks_definitions_named_by_it(crowded):
    results = crowded.search("load", "part", "7")
    assert results and all("load_part" in r["symbol"] for r in results)


# More files hold a word than COMMON_TERM_FILES: the worker keeps its count (term_counts).
COMMON = {f"many/m{i}.py": f"def many_{i}():\n    \"\"\"A plentiful word.\"\"\"\n"
          for i in range(COMMON_TERM_FILES + 20)}
COMMON["few/f.py"] = "def scarce():\n    \"\"\"A plentiful and scarce word.\"\"\"\n"


def kept_counts(repo) -> dict:
    """The term counts the worker keeps in the index (term -> files)."""
    db = sqlite3.connect(f"file:{repo.state / 'index.db'}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT term, files FROM term_counts"))
    finally:
        db.close()


@pytest.fixture
def plentiful(tmp_path_factory, cq_pyz):
    with indexed_repository(tmp_path_factory, cq_pyz, "plentiful", COMMON) as repo:
        yield repo


def test_the_idle_worker_keeps_the_counts_of_common_words_and_counts_again_after_changes(
        plentiful):
    files = COMMON_TERM_FILES + 21
    wait_until(lambda: kept_counts(plentiful).get("plenti") == files, timeout=60,
               what="the worker to count the common words")
    assert "scarc" not in kept_counts(plentiful)  # held by one file: counted when asked
    more = int(files * COUNTS_STALE_SHARE) + 1
    plentiful.commit({f"more/m{i}.py": f"def more_{i}():\n    \"\"\"Plentiful.\"\"\"\n"
                      for i in range(more)})
    wait_until(lambda: kept_counts(plentiful).get("plenti") == files + more, timeout=90,
               what="the worker to count the common words again")


def test_a_search_takes_a_common_words_count_from_the_kept_counts(plentiful):
    wait_until(lambda: "plenti" in kept_counts(plentiful), timeout=60,
               what="the worker to count the common words")
    plentiful.cq("worker", "stop")  # it would count again, seeing the index changed
    db = sqlite3.connect(plentiful.state / "index.db", isolation_level=None)
    try:
        assert word_terms(db, ["plentiful", "scarce"]) == {
            "plentiful": ("plenti", COMMON_TERM_FILES + 21), "scarce": ("scarc", 1)}
        db.execute("UPDATE term_counts SET files = 7 WHERE term = 'plenti'")
        assert word_terms(db, ["plentiful", "scarce"]) == {
            "plentiful": ("plenti", 7), "scarce": ("scarc", 1)}
    finally:
        db.close()


@pytest.mark.parametrize("argv", [["search", "parse", "config"],
                                  ["-C", "elsewhere", "search", "--", "-x", "y"]])
def test_a_plain_search_command_line_is_parsed_as_argparse_parses_it(argv):
    hot = cq.parse_hot_path(argv)  # the fast path a search takes, without argparse
    assert hot is not None and vars(hot) == vars(cq.build_parser(argv).parse_args(argv))


@pytest.mark.parametrize("argv", [["search", "-n", "3", "x"], ["search", "x", "--json"],
                                  ["search"], ["search", "--"]])
def test_a_search_command_line_with_options_is_left_to_argparse(argv):
    assert cq.parse_hot_path(argv) is None


def test_marked_name_words_are_stemmed_as_the_words_themselves():
    """A definition's name words are also indexed behind NAME_MARK (a term only named rows
    have); that only holds for words the stemmer reduces alike with and without the mark."""
    import itertools
    import re
    import sqlite3

    letters = "abcdefghijklmnopqrstuvwxyz"
    source = "".join(p.read_text() for p in [ROOT / "cq.py", *ROOT.glob("cqlib/**/*.py")])
    vocabulary = {w.lower() for w in re.findall(r"[^\W_]+", source)}
    vocabulary.update("".join(p) + end for p in itertools.product(letters, repeat=3)
                      for end in ("", "e", "s", "ing"))
    vocabulary.update(["größe", "été", "yield", "x" * 61, "parsing", "handlers", "ate"])
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5 (plain, marked, "
               "tokenize = 'porter unicode61 remove_diacritics 2')")
    words = sorted(w for w in vocabulary if marks_alike(w))
    db.executemany("INSERT INTO t (rowid, plain, marked) VALUES (?, ?, ?)",
                   [(i, w, NAME_MARK + w) for i, w in enumerate(words)])
    db.execute("CREATE VIRTUAL TABLE terms USING fts5vocab (t, 'instance')")
    stems: dict = {}
    for term, row, column in db.execute("SELECT term, doc, col FROM terms"):
        stems.setdefault(row, {})[column] = term
    assert len(words) > 20000 and len(stems) == len(words)
    unlike = [words[row] for row, s in stems.items() if NAME_MARK + s["plain"] != s["marked"]]
    assert unlike == []


# Most files hold "count"; one long file holds every word of the question somewhere.
RARITY = {f"stats/s{i}.py": f"def tally_{i}():\n    \"\"\"Count the items of batch {i}.\"\"\"\n"
          for i in range(24)}
RARITY.update({
    "net/redirects.py": "def follow_redirects(response, limit):\n"
                        "    \"\"\"Follow redirects up to the maximum of limit hops.\"\"\"\n",
    "misc/grab_bag.py": "def follow_the_leader():\n    \"\"\"Follow.\"\"\"\n\n\n"
                        "def list_redirects():\n    \"\"\"The redirects.\"\"\"\n\n\n"
                        "def largest():\n    \"\"\"The maximum, up to now.\"\"\"\n\n\n"
                        "def total():\n    \"\"\"The count.\"\"\"\n",
    # The word as typed, and its abbreviation held by fewer files (so BM25 alone prefers it).
    "pool/ceiling.py": "def pool_ceiling():\n    \"\"\"The maximum of connections.\"\"\"\n",
    "pool/limit.py": "def pool_limit():\n    \"\"\"The max of connections.\"\"\"\n",
})


@pytest.fixture(scope="module")
def rarity(tmp_path_factory, cq_pyz):
    with indexed_repository(tmp_path_factory, cq_pyz, "rarity", RARITY) as repo:
        yield repo


def test_a_definition_missing_only_a_common_word_beats_a_file_holding_every_word(rarity):
    top = rarity.search("follow redirects up to a maximum count")[0]
    assert (top["path"], top["symbol"]) == ("net/redirects.py", "follow_redirects")


def test_each_hit_says_which_words_of_the_query_it_covered(rarity):
    hits = {r["symbol"]: r for r in rarity.search("follow redirects up to a maximum count")}
    assert hits["follow_redirects"]["matched"] == ["follow", "redirects", "up", "maximum"]
    assert hits["follow_redirects"]["of"] == 5


def test_a_word_as_typed_ranks_above_its_abbreviation(rarity):
    assert rarity.search("maximum connections")[0]["symbol"] == "pool_ceiling"



NAMES = {
    "heap.py": "def _siftdown_max(heap, pos):\n    pass\n\n\ndef _siftdown(heap, pos):\n"
               "    pass\n",
    **{f"stats/m{n:02}.py": f"def max_of_{n}(values):\n    return max(values)\n\n\n"
                            f"def handler_{n}_2():\n    pass\n" for n in range(30)},
}


@pytest.fixture(scope="module")
def names(tmp_path_factory, cq_pyz):
    with indexed_repository(tmp_path_factory, cq_pyz, "names", NAMES) as repo:
        yield repo


def test_a_compound_name_is_answered_by_its_definition_and_its_rarest_words(names):
    symbols = [r["symbol"] for r in names.search("_siftdown_max")]
    assert symbols[:2] == ["_siftdown_max", "_siftdown"]
    assert not any(s.startswith("max_of") for s in symbols)  # `max` alone is in every file


def test_a_name_no_definition_has_widens_to_its_words(names):
    symbols = [r["symbol"] for r in names.search("siftdown_maximum")]
    assert "_siftdown_max" in symbols[:2]


def test_a_word_every_file_holds_leaves_the_ranking_to_the_others(names):
    top = names.search("handler", "17", "2")[0]
    assert (top["path"], top["symbol"]) == ("stats/m17.py", "handler_17_2")
