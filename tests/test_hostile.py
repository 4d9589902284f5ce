"""Hostile names, hostile peers, runaway children: what a red team broke, each case once.

File names that are not UTF-8 and ids no client should send never end the MCP server; a slow
or crowded HTTP client cannot hold it; a link swapped in is never read; a WAL removed under
the worker is repaired; whatever an external documenter leaves running is killed; a cost that
cannot be true cannot switch the budget off; every error is one line."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from conftest import (
    ROOT,
    documenters_of,
    free_port,
    mcp_command,
    on_terminal,
    post_mcp,
    start_mcp_http,
    wait_until,
)

FAKE = ROOT / "tests" / "fake_documenter.py"
NAME = b"esc\x1b[2J\xff\xfename.py"  # an escape sequence, and bytes that are not UTF-8
NAME_TEXT = "esc\x1b[2J\\xff\\xfename.py"  # as cq writes it: the bytes as escapes
INIT = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t",
                                                                        "version": "1"}}})


def call(request_id, tool: str, **arguments) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                       "params": {"name": tool, "arguments": arguments}})


def raw_session(repo, lines: list[str]) -> dict:
    """Write lines to a `cq mcp` process, close its stdin; every stdout line, parsed, by id.
    The server must end cleanly, having written nothing but JSON-RPC."""
    proc = subprocess.run(mcp_command(repo), input=("\n".join(lines) + "\n").encode(),
                          capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert b"Traceback" not in proc.stderr
    replies = [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines()]
    return {json.dumps(r.get("id")): r for r in replies if isinstance(r, dict)}


def answer(replies: dict, request_id) -> dict:
    return replies[json.dumps(request_id)]["result"]["structuredContent"]


@pytest.fixture
def hostile(repo):
    """A repository whose HEAD holds a file named NAME, after `cq init`."""
    (repo.path / os.fsdecode(NAME)).write_bytes(b"def hostile_named_function():\n    pass\n")
    repo.commit()
    assert repo.cq("init").returncode == 0
    return repo


# 1. A file name that is not UTF-8, and an id that is not text.

def test_a_name_that_is_not_utf8_is_answered_as_text_with_its_bytes_over_stdio(hostile):
    replies = raw_session(hostile, [
        INIT, call(1, "files"), call(2, "search", query="hostile_named_function"),
        call(3, "outline", path=NAME_TEXT), '{"jsonrpc":"2.0","id":"\\udcff","method":"ping"}',
        '{"jsonrpc":"2.0","id":4,"method":"ping"}',
        call(5, "search", query="hostile_named_function", path=NAME_TEXT),
        call(6, "files", path_glob=NAME_TEXT)])
    listed = {f["path"]: f for f in answer(replies, 1)["files"]}
    assert listed[NAME_TEXT]["path_bytes"] == NAME.hex()
    hit = answer(replies, 2)["results"][0]
    assert (hit["path"], hit["path_bytes"]) == (NAME_TEXT, NAME.hex())
    assert answer(replies, 3)["entries"][0]["symbol"] == "hostile_named_function"
    assert replies[json.dumps("\udcff")]["result"] == {}  # its own id, exactly
    assert replies[json.dumps(4)]["result"] == {}
    # the text a client was given names the file again, as a path filter too
    assert answer(replies, 5)["results"][0]["path_bytes"] == NAME.hex()
    assert [f["path"] for f in answer(replies, 6)["files"]] == [NAME_TEXT]


def test_a_name_that_is_not_utf8_is_answered_over_http(hostile):
    proc, port = start_mcp_http(hostile)
    try:
        code, body = post_mcp(port, call(1, "search", query="hostile_named_function").encode())
        assert code == 200
        assert json.loads(body)["result"]["structuredContent"]["results"][0]["path"] == NAME_TEXT
        code, body = post_mcp(port, b'{"jsonrpc":"2.0","id":"\\udcff","method":"ping"}')
        assert code == 200 and json.loads(body)["id"] == "\udcff"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_command_line_writes_such_a_name_in_its_json_as_mcp_does(hostile):
    hits = hostile.search("hostile_named_function")
    assert (hits[0]["path"], hits[0]["path_bytes"]) == (NAME_TEXT, NAME.hex())


# 2. An untracked file with such a name.

def test_an_untracked_file_named_so_breaks_no_search(repo):
    assert repo.cq("init").returncode == 0
    (repo.path / os.fsdecode(NAME)).write_bytes(b"def untracked_hostile_function():\n    pass\n")
    replies = raw_session(repo, [
        INIT, call(1, "search", query="untracked_hostile_function"),
        call(2, "symbol", name="untracked_hostile_function"), call(3, "outline", path=NAME_TEXT),
        call(4, "search", query="demo")])
    assert answer(replies, 1)["results"][0]["freshness"] == "edited"
    assert answer(replies, 2)["results"][0]["path"] == NAME_TEXT
    assert answer(replies, 3)["freshness"] == "edited"
    assert answer(replies, 4)["results"][0]["path"] == "README.md"
    proc = repo.cq("search", "--worktree", "untracked_hostile_function")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert "untracked_hostile_function" in proc.stdout


# 3. An id no client should send.

def test_an_id_that_is_not_a_string_an_integer_or_null_is_refused_and_serving_goes_on(repo):
    nested = "[" * 990 + "]" * 990
    replies = raw_session(repo, [
        INIT, f'{{"jsonrpc":"2.0","id":{nested},"method":"ping"}}',
        '{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}',
        '{"jsonrpc":"2.0","id":true,"method":"ping"}',
        '{"jsonrpc":"2.0","id":5,"method":"ping"}'])
    refused = replies[json.dumps(None)]
    assert refused["error"]["code"] == -32600
    assert replies[json.dumps(5)]["result"] == {}


# 4. A WAL removed while the worker writes.

def test_a_wal_removed_during_a_large_commit_is_repaired_and_every_file_found(initialised):
    repo = initialised
    repo.commit({f"m{i:03}.py": f"def wal_function_{i}():\n    '''Does {i}.'''\n" * 20
                 for i in range(600)})
    for name in ("index.db-wal", "queue.db-wal"):
        (repo.state / name).unlink(missing_ok=True)

    def complete() -> dict | None:  # the index cannot be read until the worker repairs it
        proc = repo.cq("index", "status", "--json")
        status = json.loads(proc.stdout) if proc.returncode == 0 else {}
        return status.get("complete") and status

    status = wait_until(complete, timeout=180, what="the repaired index to catch up")
    assert status["documented"] == 601 and status["failed"] == 0
    assert repo.search("wal_function_599")[0]["path"] == "m599.py"
    log = (repo.state / "worker.log").read_text()
    assert "starting cq index --repair" in log
    proc = repo.cq("index", "--repair")
    assert proc.returncode == 0, proc.stderr


# 5. A slow sender, and too many at once.

def test_a_request_sent_a_byte_at_a_time_is_cut_off_at_its_deadline(repo):
    repo.git("config", "cq.mcpRequestTimeout", "2")
    proc, port = start_mcp_http(repo)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
            started, closed = time.monotonic(), False
            for byte in b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Length: 40\r\n":
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    closed = True
                    break
                time.sleep(0.5)
                if time.monotonic() - started > 30:
                    break
            if not closed:
                conn.settimeout(30)
                closed = conn.recv(64) in (b"", None)
            assert closed and time.monotonic() - started < 30
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_connections_past_the_cap_get_503_and_the_server_serves_again_after(repo):
    proc, port = start_mcp_http(repo)
    idle = []
    try:
        for _ in range(32):  # every slot held by a connection that sends nothing
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=60))
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", port), timeout=60) as extra:
            assert extra.recv(64).startswith(b"HTTP/1.1 503")
    finally:
        for conn in idle:
            conn.close()
    try:
        ping = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
        assert wait_until(lambda: post_mcp(port, ping)[0] == 200, what="a slot to be free")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def batch_replies(repo, batches: list[list]) -> list:
    """The replies of a `cq mcp` session to these batches (after the handshake), in order."""
    lines = [INIT, *(json.dumps(batch) for batch in batches)]
    proc = subprocess.run(mcp_command(repo), input=("\n".join(lines) + "\n").encode(),
                          capture_output=True, timeout=300, check=False)
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stderr
    return [json.loads(line) for line in proc.stdout.decode().splitlines()][1:]


def test_a_batch_is_bounded_in_messages_and_in_the_size_of_its_answers(repo):
    words = "about the module " * 8
    repo.commit({f"mod_{i}.py": f'"""Module {i}: {words}"""\n\n'
                 f"def function_number_{i}():\n    pass\n" for i in range(300)})
    assert repo.cq("init").returncode == 0
    ping = {"jsonrpc": "2.0", "method": "ping"}
    files = [{"jsonrpc": "2.0", "id": i, "method": "tools/call",
              "params": {"name": "files", "arguments": {}}} for i in range(100)]
    too_many, too_large, after = batch_replies(
        repo, [[{**ping, "id": i} for i in range(101)], files, [{**ping, "id": "after"}]])
    assert too_many["error"]["code"] == -32600 and "at most 100" in too_many["error"]["message"]
    answered = [r for r in too_large if "result" in r]
    refused = [r for r in too_large if "error" in r]
    assert len(answered) + len(refused) == 100 and answered and refused
    assert sum(len(json.dumps(r)) for r in answered) < (1 << 20) + 100_000  # one past the cap
    assert all("smaller batch" in r["error"]["message"] for r in refused)
    assert sorted(r["id"] for r in too_large) == list(range(100))
    assert after == [{"jsonrpc": "2.0", "id": "after", "result": {}}]


# 6. A link swapped in for a file while the overlay reads it.

def test_the_overlay_never_reads_through_a_link_swapped_in(repo, tmp_path):
    sys.path.insert(0, str(ROOT))
    from cqlib.config import Config
    from cqlib.gitio import locate_repo
    from cqlib.overlay import WorktreeOverlay
    from cqlib.search import search

    secret = tmp_path / "secret.txt"
    secret.write_text("zebracornsecret\n")
    race = repo.path / "race.txt"
    stop = threading.Event()

    def flip():
        while not stop.is_set():
            (repo.path / "race.link").symlink_to(secret)
            os.replace(repo.path / "race.link", race)
            (repo.path / "race.file").write_text("harmless words\n")
            os.replace(repo.path / "race.file", race)

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    located = locate_repo(str(repo.path))
    try:
        for _ in range(300):
            overlay = WorktreeOverlay(located, Config(), str(repo.path))
            assert search(overlay.index, located.git_dir, "zebracornsecret") == []
    finally:
        stop.set()
        flipper.join(timeout=30)


# 7. What an external documenter leaves running.

def use_command(repo, command: str, **settings: str) -> None:
    repo.git("config", "cq.documenter", command)
    for key, value in settings.items():
        repo.git("config", f"cq.{key}", value)


def sleeping(repo, seconds: int) -> set[int]:
    """Live processes running `sleep SECONDS` that a documenter of this repository started."""
    found = set()
    for pid in documenters_of(repo):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv[:2] == [b"sleep", str(seconds).encode()]:
            found.add(pid)
    return found


@pytest.fixture
def calls_killed(repo):
    """The repository; whatever its documenters left is killed after the test."""
    yield repo
    for pid in documenters_of(repo):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def test_an_answer_printed_before_a_child_that_holds_the_output_is_kept(calls_killed):
    repo = calls_killed
    use_command(repo, "sleep 987 & echo 'kept answer of the documenter'",
                documenterTimeout="120")
    assert repo.cq("init").returncode == 0
    status = wait_until(lambda: (s := repo.index_status()["documenter"])["done"] == 1 and s,
                        timeout=60, what="the summary")
    assert status["failed"] == 0
    assert json.loads(repo.cq("show", "--json", "README.md").stdout)["summary"] == \
        "kept answer of the documenter"
    wait_until(lambda: not sleeping(repo, 987), what="the child to be killed")


def test_a_child_that_leaves_the_process_group_is_killed_with_the_call(calls_killed):
    repo = calls_killed
    use_command(repo, "setsid sh -c 'touch left; exec sleep 986' >/dev/null 2>&1 & "
                      "while [ ! -e left ]; do sleep 0.05; done; echo 'summary'")
    assert repo.cq("init").returncode == 0
    wait_until(lambda: repo.index_status()["documenter"]["done"] == 1, what="the summary")
    wait_until(lambda: not sleeping(repo, 986), what="the setsid child to be killed")


def test_a_worker_that_starts_kills_the_calls_a_dead_worker_left(calls_killed):
    repo = calls_killed
    use_command(repo, "sleep 985")
    assert repo.cq("init").returncode == 0
    left = wait_until(lambda: sleeping(repo, 985), what="the call to run")
    os.kill(repo.worker_pid(), signal.SIGKILL)
    assert sleeping(repo, 985) == left  # the call outlives its worker
    assert repo.cq("worker", "start").returncode == 0
    wait_until(lambda: not left & sleeping(repo, 985), what="the dead worker's call to be killed")


# 8. A cost that cannot be true.

@pytest.mark.parametrize("cost", ["nan", "-50"])
def test_a_cost_that_cannot_be_true_is_counted_as_the_whole_budget(repo, cost):
    calls = repo.path.parent / "calls.log"
    use_command(repo, f"{sys.executable} {FAKE} cost={cost} {calls}", documenterBudget="1",
                documenterJobs="1")
    repo.commit({f"c{i}.py": f"def counted_{i}():\n    pass\n" for i in range(5)})
    assert repo.cq("init").returncode == 0
    status = wait_until(lambda: (s := repo.index_status()["documenter"])["paused_until"] and s,
                        what="the budget to pause the documenter")
    assert status["calls_today"] == 1 and status["cost_usd_today"] == 1.0
    assert "spent $1.00 today" in status["pause_reason"]


# 9. and 10. Every error in one line.

def test_a_token_file_that_is_not_text_is_one_line(repo, tmp_path):
    token = tmp_path / "token"
    token.write_bytes(b"\xff\xfe")
    proc = repo.cq("mcp", "--http", f"127.0.0.1:{free_port()}", "--token-file", str(token),
                   timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "not UTF-8" in proc.stderr


def test_a_path_filter_that_is_not_utf8_or_names_no_file_is_one_line(initialised):
    for spec in (os.fsdecode(b"\xff"), "nosuchdir"):
        proc = initialised.cq("search", "--path", spec, "demo")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert "no indexed file is under --path" in proc.stderr


def test_a_damaged_index_is_reported_in_one_line_a_message(initialised):
    repo = initialised
    assert repo.cq("worker", "stop").returncode == 0
    db = sqlite3.connect(repo.state / "index.db")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    with open(repo.state / "index.db", "r+b") as f:  # a cell pointer of page 2 out of range
        f.seek(page_size + 8)
        f.write(b"\xff" * 4)
    db = sqlite3.connect(repo.state / "index.db")
    assert "\n" in db.execute("PRAGMA quick_check(1)").fetchone()[0]  # SQLite's, two lines
    db.close()
    repo.git("config", "cq.autostart", "false")
    proc = repo.cq("index", "--repair")
    assert proc.returncode == 0, proc.stderr
    assert all(line.startswith(("index.db", "queue.db", "start the worker", "the worker"))
               for line in proc.stdout.strip().splitlines()), proc.stdout


# 11. What the claude preset answers must be its JSON.

def test_an_answer_of_the_claude_preset_that_is_not_its_json_is_a_failure(repo, tmp_path):
    claude = tmp_path / "bin" / "claude"
    claude.parent.mkdir()
    claude.write_text('#!/bin/sh\ncat >/dev/null\necho \'{"type":"result","result": "unterm\'\n')
    claude.chmod(0o755)
    use_command(repo, str(claude), documenterFailures="100")
    assert repo.cq("init").returncode == 0
    status = wait_until(lambda: (s := repo.index_status()["documenter"])["failed"] == 1 and s,
                        what="the failure")
    assert status["done"] == 0
    assert "did not answer with its JSON" in status["failed_files"][0]["error"]


# 12. A foreign Host on loopback.

def test_a_foreign_host_without_an_origin_is_refused_on_loopback(repo):
    proc, port = start_mcp_http(repo)
    try:
        ping = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
        assert post_mcp(port, ping, {"Host": "evil.example"})[0] == 403
        assert post_mcp(port, ping, {"Host": f"localhost:{port}"})[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# 13. A repository removed under its worker.

def test_a_worker_whose_repository_is_removed_stops_on_its_own(initialised):
    pid = initialised.worker_pid()
    shutil.rmtree(initialised.path)

    def gone() -> bool:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
        except OSError:
            return True

    wait_until(gone, timeout=90, what="the worker to stop")


# 15. Progress bars count the work they measure.

def test_init_bars_count_only_the_files_there_is_work_for(repo):
    repo.git("config", "cq.exclude", "vendor/")
    repo.commit({**{f"vendor/v{i}.py": f"def v_{i}():\n    pass\n" for i in range(50)},
                 **{f"text/t{i}.py": f"def t_{i}():\n    pass\n" for i in range(300)}})
    code, output = on_terminal([sys.executable, "-I", "-S", str(repo.pyz), "-C",
                                str(repo.path), "init"])
    assert code == 0
    totals = {int(total) for total in re.findall(rb"\d+/(\d+) files", output)}
    assert totals == {301}, output[-2000:]  # README.md and the 300: never the 50 excluded
