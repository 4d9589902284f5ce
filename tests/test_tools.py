"""The tools an assistant answers with (read, references, outline, symbol with bodies,
changes, and search hits that carry their lines), driven through the official MCP SDK client
against the real server, and the same answers from the command line."""

from __future__ import annotations

import json
import os
import time

import pytest
from conftest import indexed_repository, mcp_command, wait_until

mcp = pytest.importorskip("mcp", reason="the MCP SDK needs Python 3.10 or newer")
anyio = pytest.importorskip("anyio")
from mcp import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters  # noqa: E402

CLIENT = '''"""An HTTP client."""
import os
from pkg.util import merge

DEFAULT_TIMEOUT = 30


class Client:
    """Sends requests."""

    @staticmethod
    def send(request, base="http://x"):
        """Send one request."""
        url = merge(base, request)
        return url

    def _merge_url(self, url):
        return merge(self.base, url)
'''
UTIL = '''def merge(base, path):
    """Join a base URL and a path."""
    return base.rstrip("/") + "/" + path.lstrip("/")
'''
LONG = "".join(f"def long_function_{i}(value):\n    return value + {i}\n\n\n" for i in range(600))
TWINS = ("class {prefix}Pool:\n    {a}def has_expired(self, now: float) -> bool:\n"
         "        \"\"\"True once the pool's connections have all timed out.\"\"\"\n"
         "        return now > 0\n")
# A definition that a commit changes, before and after.
HANDLE_BEFORE = 'def handle(request):\n    """Handle one request."""\n    return request\n'
HANDLE_AFTER = ('def handle(request, retries=3):\n    """Handle one request, retrying."""\n'
                '    return request\n')
FILES = {
    "pkg/__init__.py": "",
    "pkg/client.py": CLIENT,
    "pkg/util.py": UTIL,
    "pkg/long.py": LONG,
    "pkg/_async/pool.py": TWINS.format(prefix="Async", a="async "),
    "pkg/_sync/pool.py": TWINS.format(prefix="", a=""),
    "pkg/schema.py": "class SchemaMeta(type):\n    pass\n\n\nclass Schema:\n"
                     "    class Meta:\n        fields = ()\n",
    "pkg/retry.py": 'def schedule(job):\n    """Run a job later."""\n    delay = 5\n'
                    "    backoff_jitter_seconds = delay * 2\n    return backoff_jitter_seconds\n",
    "pkg/add.c": "/* Adds one. */\nstatic int\nadd_one (int x)\n{\n  return x + 1;\n}\n",
    "pkg/calls.py": "from pkg.many import merge_all\n\n\ndef twice():\n"
                    "    return merge_all(2)\n",
    "pkg/many.py": "def merge_all(n):\n    return n\n\n\n" +
                   "".join(f"X{i} = merge_all({i})\n" for i in range(2500)),
    "pkg/more.py": "from pkg.many import merge_all\n",
    "pkg/votes.py": "# quorum ballot tally helpers\ndef settle(votes):\n    quorum = len(votes)\n"
                    "    ballot = votes[0]\n    return tally(quorum, ballot)\n",
    ".gitignore": "secret.env\n",
    "data.bin": "\0\1\2 binary\n",
}


@pytest.fixture(scope="module")
def served(tmp_path_factory, cq_pyz):
    """An initialised repository of FILES, with a link out of the work tree and one in it,
    and an ignored file in its working tree."""
    with indexed_repository(tmp_path_factory, cq_pyz, "tools", FILES) as repo:
        os.symlink("/etc/passwd", repo.path / "outside")
        os.symlink("pkg/util.py", repo.path / "inside")
        os.symlink(".git/config", repo.path / "gitconfig")
        os.symlink("secret.env", repo.path / "envlink")
        repo.commit()
        (repo.path / "secret.env").write_text("TOKEN=hunter2\n")
        repo.wait_indexed()
        yield repo


def ask(repo, calls: list[tuple[str, dict]]) -> list:
    """The results of tool calls made in order in one session of the real server."""
    command = mcp_command(repo)

    async def run():
        params = StdioServerParameters(command=command[0], args=command[1:])
        async with Client(params, read_timeout_seconds=60) as client:
            return [await client.call_tool(name, arguments) for name, arguments in calls]

    return anyio.run(run)


def answer(result) -> dict:
    """The structured answer of a call that did not fail."""
    assert result.is_error is False, result.content[0].text
    return result.structured_content


def test_read_gives_a_definitions_whole_body_with_its_decorator_as_numbered_lines(served):
    reading, = ask(served, [("read", {"path": "pkg/client.py", "symbol": "Client.send"})])
    found = answer(reading)
    assert (found["start"], found["end"]) == (11, 15)  # from the decorator to the return
    assert found["definition"]["symbol"] == "Client.send"
    assert found["text"].split("\n")[0] == "11\t    @staticmethod"
    assert "15\t        return url" in reading.content[0].text


def test_read_gives_a_line_range_and_pages_a_long_file_to_its_end(served):
    def pages(cursor=None):
        args = {"path": "pkg/long.py", **({"cursor": cursor} if cursor else {})}
        return answer(ask(served, [("read", args)])[0])

    ranged = answer(ask(served, [("read", {"path": "pkg/long.py", "start": 5, "end": 6})])[0])
    assert ranged["text"] == "5\tdef long_function_1(value):\n6\t    return value + 1"
    seen, page = [], pages()
    while True:
        seen += [int(line.split("\t")[0]) for line in page["text"].split("\n")]
        if "next_cursor" not in page:
            break
        page = pages(page["next_cursor"])
    assert seen == list(range(1, page["total_lines"] + 1))  # every line, once, in order


@pytest.mark.parametrize("path, says", [
    ("../elsewhere.py", "outside the repository"), ("/etc/passwd", "outside the repository"),
    ("secret.env", "ignored by git"), ("data.bin", "binary file"),
    ("outside", "leading out of the work tree"), ("pkg", "is a folder"),
    ("gitconfig", "git keeps to itself or ignores"), ("envlink", "git keeps to itself or ignores"),
    ("pkg/nope.py", "not a file of this repository")])
def test_read_refuses_with_a_sentence_the_model_can_act_on(served, path, says):
    result, = ask(served, [("read", {"path": path})])
    assert result.is_error is True and says in result.content[0].text
    assert "hunter2" not in result.content[0].text and "root:" not in result.content[0].text


def test_read_refuses_a_range_that_ends_before_it_starts(served):
    result, = ask(served, [("read", {"path": "pkg/util.py", "start": 3, "end": 2})])
    assert result.is_error is True and "comes before start" in result.content[0].text


def test_read_gives_a_c_function_with_its_return_type_and_comment(served):
    found = answer(ask(served, [("read", {"path": "pkg/add.c", "symbol": "add_one"})])[0])
    assert (found["start"], found["end"]) == (1, 6)


def test_an_answer_cut_at_its_cap_still_ends_with_its_cursor(served):
    first = answer(ask(served, [("references", {"name": "merge_all"})])[0])
    result, = ask(served, [("references", {"name": "merge_all",
                                           "cursor": first["next_cursor"]})])
    found = answer(result)  # pkg/many.py alone, 2,501 lines: more than an answer's text holds
    assert [g["path"] for g in found["groups"]][-1] == "pkg/many.py"
    assert len(result.content[0].text) > 30_000
    assert result.content[0].text.endswith(f"more: ask again with cursor {found['next_cursor']}")


def test_read_follows_a_link_that_stays_in_the_work_tree(served):
    found = answer(ask(served, [("read", {"path": "inside"})])[0])
    assert "def merge(base, path):" in found["text"]


@pytest.mark.parametrize("symbol, lines", [("Schema.Meta", (6, 7)), ("SchemaMeta", (1, 2))])
def test_read_gives_the_definition_named_as_written_before_one_spelled_alike(served, symbol,
                                                                              lines):
    found = answer(ask(served, [("read", {"path": "pkg/schema.py", "symbol": symbol})])[0])
    assert (found["definition"]["symbol"], found["start"], found["end"]) == (symbol, *lines)


def test_read_names_what_a_file_defines_when_asked_for_a_name_it_lacks(served):
    result, = ask(served, [("read", {"path": "pkg/util.py", "symbol": "split"})])
    assert result.is_error is True and "defines no split; it defines merge" in \
        result.content[0].text


def test_references_are_grouped_by_the_definition_each_line_is_in(served):
    found = answer(ask(served, [("references", {"name": "merge"})])[0])
    groups = {(g["path"], g.get("in", "")): g["lines"] for g in found["groups"]}
    assert groups["pkg/client.py", ""] == ["3 [import]: from pkg.util import merge"]
    assert groups["pkg/client.py", "Client.send"] == ["14: url = merge(base, request)"]
    assert groups["pkg/client.py", "Client._merge_url"] == \
        ["18: return merge(self.base, url)"]
    assert groups["pkg/util.py", "merge"] == ["1 [definition]: def merge(base, path):"]
    assert "lexical" in found["note"]


def test_outline_folds_imports_lists_constants_and_gives_ranges(served):
    found = answer(ask(served, [("outline", {"path": "pkg/client.py"})])[0])
    assert found["imports"] == "lines 2-3: os, pkg.util.merge"
    symbols = {e["symbol"]: (e["line"], e["end"], e["kind"]) for e in found["entries"]}
    assert symbols["DEFAULT_TIMEOUT"] == (5, 5, "constant")
    assert symbols["Client"] == (8, 18, "class")
    assert "next_cursor" not in found and found["total"] == len(found["entries"])


def test_an_outline_too_long_for_one_answer_is_paged_with_a_cursor(served):
    first = answer(ask(served, [("outline", {"path": "pkg/long.py"})])[0])
    assert first["total"] == 600 and first["next_cursor"] and "more definitions" in first["note"]
    second = answer(ask(served, [("outline", {"path": "pkg/long.py",
                                              "cursor": first["next_cursor"]})])[0])
    assert second["entries"][0]["line"] == first["entries"][-1]["line"] + 4


def test_symbol_with_body_gives_each_definitions_source(served):
    found = answer(ask(served, [("symbol", {"name": "merge", "body": True})])[0])
    body = found["results"][0]["body"]
    assert body.split("\n")[0] == "1\tdef merge(base, path):" and "3\t    return" in body


def test_search_hits_carry_their_lines_and_leave_empty_fields_out(served):
    result, = ask(served, [("search", {"query": "merge"})])
    hit = next(h for h in answer(result)["results"] if h["symbol"] == "merge")
    assert (hit["line"], hit["end"], hit["kind"]) == (1, 3, "function")
    assert hit["lines"].split("\n")[0] == "1: def merge(base, path):"
    assert "score" not in hit
    assert all(v not in ("", None, []) for h in answer(result)["results"] for v in h.values())
    assert "pkg/util.py:1-3 function merge" in result.content[0].text


def test_a_file_hit_names_the_function_whose_lines_hold_the_most_query_words(served):
    hit = answer(ask(served, [("search", {"query": "quorum ballot tally"})])[0])["results"][0]
    assert (hit["path"], hit["kind"]) == ("pkg/votes.py", "file")
    assert hit["in"] == {"symbol": "settle", "line": 2, "end": 5}  # not the comment above it
    assert "1: # quorum ballot tally helpers" in hit["lines"]


def test_a_file_hit_names_the_function_its_words_are_in(served):
    hit = answer(ask(served, [("search", {"query": "backoff jitter seconds"})])[0])["results"][0]
    assert (hit["path"], hit["kind"]) == ("pkg/retry.py", "file")
    assert hit["in"] == {"symbol": "schedule", "line": 1, "end": 5}
    assert "4: backoff_jitter_seconds = delay * 2" in hit["lines"]


def test_twins_made_from_one_source_are_one_hit_naming_the_other(served):
    found = answer(ask(served, [("search", {"query": "has_expired"})])[0])
    twins = [h for h in found["results"] if h["symbol"].endswith("has_expired")]
    assert len(twins) == 1 and twins[0]["also"] in (["pkg/_sync/pool.py:2"],
                                                   ["pkg/_async/pool.py:2"])


def test_a_path_naming_one_file_lifts_the_cap_of_three_hits_per_file(served):
    found = answer(ask(served, [("search", {"query": "long function value",
                                            "path": "pkg/long.py", "limit": 20})])[0])
    assert len(found["results"]) == 20 and found["next_cursor"]


def test_changes_name_the_definitions_edited_in_the_working_tree(served):
    path = served.path / "pkg/util.py"
    path.write_text(UTIL.replace('"/"', '"//"') + "\n\ndef split(url):\n    return url\n")
    try:
        found = answer(ask(served, [("changes", {})])[0])
    finally:
        served.git("checkout", "--", "pkg/util.py")
    (util,) = [f for f in found["files"] if f["path"] == "pkg/util.py"]
    assert (util["change"], util["where"]) == ("modified", "worktree")
    assert util["definitions"] == ["changed function merge (1)", "added function split (6)"]


def test_changes_since_a_ref_name_the_commits_files_and_definitions(served):
    served.commit({"pkg/extra.py": "def brand_new():\n    pass\n"})
    try:
        found = answer(ask(served, [("changes", {"since": "HEAD~1"})])[0])
        assert found["files"] == [{"path": "pkg/extra.py", "change": "added",
                                   "where": "commits",
                                   "definitions": ["added function brand_new (1)"]}]
        wait_until(lambda: served.index_status()["complete"], what="the index to catch up")
        default = answer(ask(served, [("changes", {})])[0])  # since the index's last move
        assert [f["path"] for f in default["files"]] == ["pkg/extra.py"]
    finally:
        served.git("rm", "-q", "pkg/extra.py")
        served.git("commit", "-q", "-m", "drop extra")
        served.wait_indexed()


def test_changes_refuse_a_ref_that_names_no_commit(served):
    result, = ask(served, [("changes", {"since": "no-such-branch"})])
    assert result.is_error is True and "names no commit" in result.content[0].text


# The command line gives the same answers.

def test_cq_read_prints_a_definition_as_numbered_lines(served):
    proc = served.cq("read", "pkg/util.py", "--symbol", "merge")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[1] == "1\tdef merge(base, path):"
    ranged = json.loads(served.cq("read", "pkg/long.py", "--lines", "5-6", "--json").stdout)
    assert (ranged["start"], ranged["end"]) == (5, 6)


def test_cq_read_refuses_a_bad_range_in_one_line(served):
    proc = served.cq("read", "pkg/util.py", "--lines", "9-2")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_cq_refs_and_changes_answer_as_the_tools_do(served):
    refs = json.loads(served.cq("refs", "merge", "--json").stdout)
    assert any(g.get("in") == "Client.send" for g in refs["groups"])
    assert "pkg/client.py in Client._merge_url" in served.cq("refs", "merge").stdout
    proc = served.cq("changes", "--since", "HEAD")
    assert proc.returncode == 0 and proc.stdout.startswith("since ")


def test_while_the_index_is_behind_every_tool_says_so_and_the_last_version_answers(
        tmp_path_factory, cq_pyz):
    with indexed_repository(tmp_path_factory, cq_pyz, "behind",
                            {"app/core.py": HANDLE_BEFORE}) as repo:
        assert repo.cq("worker", "stop").returncode == 0
        repo.git("config", "cq.autostart", "false")
        repo.git("config", "cq.mcpWaitMs", "0")
        repo.commit({"app/core.py": HANDLE_AFTER,
                     **{f"app/made_{i}.py": f"def made_{i}():\n    pass\n" for i in range(300)}})
        calls = [("status", {}), ("search", {"query": "handle request"}),
                 ("symbol", {"name": "handle"}), ("files", {}),
                 ("outline", {"path": "app/core.py"}), ("references", {"name": "handle"})]
        behind = [answer(result) for result in ask(repo, calls)]
        assert [a["catching_up"] for a in behind] == [True] * len(calls)
        for hits in (behind[1]["results"], behind[2]["results"]):
            assert (hits[0]["symbol"], hits[0]["freshness"]) == ("handle", "stale")
        assert repo.cq("worker", "start").returncode == 0
        repo.wait_indexed()
        caught_up = [answer(result) for result in ask(repo, calls)]
        assert [a["catching_up"] for a in caught_up] == [False] * len(calls)
        hit = caught_up[2]["results"][0]
        assert (hit["freshness"], hit["signature"]) == ("fresh", "def handle(request, retries=3)")


def test_during_a_large_commit_a_changed_definition_answers_old_or_new_never_nothing(
        tmp_path_factory, cq_pyz):
    with indexed_repository(tmp_path_factory, cq_pyz, "moving",
                            {"app/core.py": HANDLE_BEFORE}) as repo:
        repo.git("config", "cq.mcpWaitMs", "0")
        repo.commit({"app/core.py": HANDLE_AFTER,
                     **{f"app/made_{i}.py": f"def made_{i}():\n    return {i}\n"
                        for i in range(1500)}})
        command = mcp_command(repo)

        async def watch() -> list:
            seen, deadline = [], time.monotonic() + 300
            params = StdioServerParameters(command=command[0], args=command[1:])
            async with Client(params, read_timeout_seconds=60) as client:
                while not seen or seen[-1]["catching_up"]:
                    assert time.monotonic() < deadline, "the index never caught up"
                    seen.append(answer(await client.call_tool("symbol", {"name": "handle"})))
            return seen

        for found in anyio.run(watch):
            hit, = found["results"]  # never nothing, and never both versions
            assert (hit["signature"], hit["freshness"]) in {
                ("def handle(request)", "stale"), ("def handle(request, retries=3)", "fresh")}
            assert found["catching_up"] or hit["freshness"] == "fresh"
        assert hit["freshness"] == "fresh"


def test_changes_label_every_edited_file_and_text_never_breaks_a_name_into_lines(
        tmp_path_factory, cq_pyz):
    files = {f"m{i}.py": f"def made_{i}():\n    return {i}\n" for i in range(260)}
    with indexed_repository(tmp_path_factory, cq_pyz, "many-edits",
                            {**files, "new\nline.py": "def odd():\n    pass\n"}) as repo:
        for i in range(250):
            repo.write(f"m{i}.py", f"def made_{i}():\n    return {i + 1}\n")
        (repo.path / "m255.py").unlink()
        repo.write("m300.py", "def made_300():\n    pass\n")
        changed = {f["path"]: f["change"]
                   for f in json.loads(repo.cq("changes", "--json").stdout)["files"]}
        assert (changed["m0.py"], changed["m249.py"]) == ("modified", "modified")
        assert (changed["m255.py"], changed["m300.py"]) == ("deleted", "added")
        heading = repo.cq("read", "new\nline.py").stdout.split("\n")[0]
        assert heading.startswith("new\\nline.py lines 1-2")


def test_an_edited_file_cq_has_not_documented_is_read_by_lines_never_by_heads_lines(
        tmp_path_factory, cq_pyz):
    with indexed_repository(tmp_path_factory, cq_pyz, "undocumented-edit",
                            {"a.py": "def f():\n    return 1\n"}) as repo:
        repo.git("config", "cq.overlayMaxFiles", "0")  # no edited file documented on the fly
        repo.write("a.py", "import os\n\n\ndef f():\n    return 2\n")
        by_name, by_lines = ask(repo, [("read", {"path": "a.py", "symbol": "f"}),
                                       ("read", {"path": "a.py", "start": 4, "end": 5})])
        assert by_name.is_error is True and "read it by lines" in by_name.content[0].text
        assert answer(by_lines)["text"] == "4\tdef f():\n5\t    return 2"
