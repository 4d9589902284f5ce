"""cq search and cq show against a real index built by a real worker."""

from __future__ import annotations

import json

import pytest

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
    from conftest import kill_workers_of, make_repo

    base = tmp_path_factory.mktemp("search")
    repo = make_repo(base / "repo", cq_pyz)
    repo.commit(FILES)
    proc = repo.cq("init")
    assert proc.returncode == 0, proc.stderr
    yield repo
    kill_workers_of(base)


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
