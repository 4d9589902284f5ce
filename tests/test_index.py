"""From commit to searchable index: change detection that loses nothing, with a real worker."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from conftest import on_terminal, slow_to_parse, wait_until


def paths_indexed(repo) -> set[str]:
    """Every path the index maps for the main worktree."""
    db = sqlite3.connect(repo.state / "index.db")
    try:
        return {os.fsdecode(r[0]) for r in db.execute("SELECT path FROM files WHERE git_dir = ?",
                                         (os.fsencode(repo.path / ".git"),))}
    finally:
        db.close()


def documented_blobs(repo) -> int:
    db = sqlite3.connect(repo.state / "index.db")
    try:
        return db.execute("SELECT COUNT(*) FROM docs").fetchone()[0]
    finally:
        db.close()


def head_paths(repo) -> set[str]:
    out = repo.git("ls-tree", "-r", "-z", "--name-only", "HEAD")
    return {p for p in out.split("\0") if p}


def show(repo, path: str) -> dict:
    proc = repo.cq("show", "--json", "--", path)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_init_indexes_head_and_reports_it(repo):
    repo.commit({"pkg/mod.py": '"""Module doc."""\n\ndef f():\n    pass\n'})
    proc = repo.cq("init")
    assert proc.returncode == 0, proc.stderr
    assert "indexed 2 files" in proc.stdout
    status = repo.index_status()
    assert status["complete"] and status["documented"] == 2 and status["pending"] == 0
    assert show(repo, "pkg/mod.py")["summary"] == "Module doc."


def test_init_is_safe_to_run_again(initialised):
    pid = initialised.worker_pid()
    proc = initialised.cq("init")
    assert proc.returncode == 0, proc.stderr
    assert initialised.worker_pid() == pid
    assert initialised.index_status()["complete"]


def test_a_commit_is_searchable_shortly_after(initialised):
    initialised.commit({"fresh.py": "def freshly_committed():\n    pass\n"})
    hits = wait_until(lambda: initialised.search("freshly_committed"))
    assert hits[0]["path"] == "fresh.py" and hits[0]["line"] == 1


def test_deleted_and_renamed_files_follow_head(initialised):
    initialised.commit({"old.py": "def keep_me():\n    pass\n", "gone.py": "x = 1\n"})
    initialised.wait_indexed()
    before = documented_blobs(initialised)
    initialised.git("mv", "old.py", "new.py")
    initialised.git("rm", "-q", "gone.py")
    initialised.commit(message="rename and delete")
    wait_until(lambda: paths_indexed(initialised) == head_paths(initialised))
    assert [h["path"] for h in initialised.search("keep_me")] == ["new.py"]
    assert documented_blobs(initialised) == before  # the renamed content was not redone


def test_merge_checkout_rebase_and_amend_all_reach_the_index(initialised):
    repo = initialised
    repo.git("checkout", "-q", "-b", "feature")
    repo.commit({"feature.py": "def on_feature():\n    pass\n"})
    repo.git("checkout", "-q", "main")
    repo.commit({"main.py": "def on_main():\n    pass\n"})
    wait_until(lambda: paths_indexed(repo) == head_paths(repo), what="checkout back to main")
    assert not repo.search("on_feature")
    repo.git("merge", "-q", "--no-edit", "feature")
    wait_until(lambda: repo.search("on_feature"), what="the merge")
    repo.git("checkout", "-q", "-b", "topic", "HEAD~1")
    repo.commit({"topic.py": "def on_topic():\n    pass\n"})
    repo.git("rebase", "-q", "main")
    wait_until(lambda: repo.search("on_topic") and repo.search("on_feature"), what="rebase")
    repo.write("topic.py", "def amended_topic():\n    pass\n")
    repo.git("commit", "-q", "-a", "--amend", "--no-edit")
    wait_until(lambda: repo.search("amended_topic"), what="the amend")
    assert paths_indexed(repo) == head_paths(repo)


def test_moves_that_fire_no_hook_are_caught_by_reconciliation(initialised):
    repo = initialised
    repo.git("config", "cq.reconcileInterval", "0.3")
    repo.cq("worker", "restart")
    repo.commit({"later.py": "def added_later():\n    pass\n"})
    wait_until(lambda: repo.search("added_later"))
    repo.git("reset", "-q", "--hard", "HEAD~1")  # fires no hook
    wait_until(lambda: not repo.search("added_later"), what="reset --hard to be noticed")
    repo.write("README.md", "# Stashed\n\nwork in progress\n")
    repo.git("stash", "-q")  # fires no hook either, and leaves HEAD where it was
    assert repo.index_status()["complete"]


def test_odd_file_names_are_indexed_and_shown(initialised):
    names = ["with space.py", "-leading-dash.py", "new\nline.py", "caf\u00e9.py"]
    for i, name in enumerate(names):
        initialised.write(name, f"def odd_name_{i}():\n    pass\n")
    raw = os.fsencode(initialised.path) + b"/latin1-\xe9.py"
    with open(raw, "wb") as f:
        f.write(b"def odd_name_bytes():\n    pass\n")
    initialised.commit(message="odd names")
    initialised.wait_indexed()
    for i, name in enumerate(names):
        hits = initialised.search(f"odd_name_{i}")
        assert (hits[0]["path"], hits[0]["symbol"]) == (name, f"odd_name_{i}")
        assert [h["path"] for h in hits].count(name) == 1
    hit = initialised.search("odd_name_bytes")[0]  # not UTF-8: text, and the exact bytes
    assert (hit["path"], bytes.fromhex(hit["path_bytes"])) == ("latin1-\\xe9.py", b"latin1-\xe9.py")
    assert show(initialised, "-leading-dash.py")["entries"][0]["name"] == "odd_name_1"


def test_symlinks_and_submodules_are_skipped_with_a_reason(initialised, tmp_path):
    repo = initialised
    (repo.path / "link.py").symlink_to("README.md")
    sub = tmp_path / "sub"
    sub.mkdir()
    for args in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "s"]):
        repo.git("-C", str(sub), *args)
    repo.git("-c", "protocol.file.allow=always", "submodule", "add", "-q", str(sub), "vendored")
    repo.commit(message="link and submodule")
    status = repo.wait_indexed()
    assert status["skipped"] == {"symlink": 1, "submodule": 1}


def test_binary_large_and_excluded_files_are_skipped_with_reasons(initialised):
    repo = initialised
    repo.git("config", "cq.maxFileSize", "1000")
    repo.git("config", "--add", "cq.exclude", "*.min.js")
    repo.git("config", "--add", "cq.exclude", "vendor/")
    repo.commit({"image.png": b"\x89PNG\r\n\x1a\n\x00\x00binary", "big.py": "x = 1\n" * 500,
                 "app.min.js": "var a=1;", "vendor/lib.py": "def vendored():\n    pass\n"})
    status = repo.wait_indexed()
    assert status["skipped"] == {"binary": 1, "too large": 1, "excluded": 2}
    assert not repo.search("vendored")


def test_a_file_that_fails_to_parse_still_gets_a_record(initialised):
    initialised.commit({"broken.py": "def broken_function(:\n    '''never parses'''\n"})
    initialised.wait_indexed()
    doc = show(initialised, "broken.py")
    assert doc["status"] == "error" and "SyntaxError" in doc["error"]
    assert initialised.search("broken_function")  # its identifiers are still searchable


def test_commits_made_while_the_worker_lags_document_only_what_head_still_has(initialised):
    repo = initialised
    start = documented_blobs(repo)
    pid = repo.worker_pid()
    os.kill(pid, signal.SIGSTOP)  # a worker that cannot keep up: 100 commits land meanwhile
    try:
        for i in range(100):
            repo.write("hot.py", f"def version_{i}():\n    pass\n")
            repo.git("commit", "-q", "-am", f"v{i}") if i else repo.commit(message="v0")
    finally:
        os.kill(pid, signal.SIGCONT)
    repo.wait_indexed()
    assert repo.search("version_99")[0]["path"] == "hot.py"
    assert documented_blobs(repo) - start == 1  # the 99 versions HEAD left behind: none


def test_kill_9_mid_batch_then_start_converges_to_head(initialised):
    repo = initialised
    repo.commit({f"many/m{i}.py": f"def many_{i}():\n    pass\n" * 40 for i in range(1500)})
    wait_until(lambda: repo.index_status()["documented"] >= 5, what="some progress")
    os.kill(repo.worker_pid(), signal.SIGKILL)
    assert repo.index_status()["pending"] > 0
    assert repo.cq("worker", "start").returncode == 0
    status = repo.wait_indexed(timeout=120)  # before the 60 s periodic reconciliation
    assert status["documented"] == len(head_paths(repo))
    assert repo.search("many_1499")[0]["path"] == "many/m1499.py"


def test_purged_queue_loses_nothing(initialised):
    repo = initialised
    repo.git("config", "cq.reconcileInterval", "0.5")
    repo.cq("worker", "restart")
    repo.commit({f"p{i}.py": f"x_{i} = {i}\n" * 40 for i in range(1500)})
    wait_until(lambda: repo.status()["queue_length"], what="queued work")
    proc = repo.cq("queue", "purge", "--yes")
    assert proc.returncode == 0 and "dropped" in proc.stdout
    status = repo.wait_indexed(timeout=120)
    assert status["pending"] == 0 and status["documented"] == len(head_paths(repo))


def test_purge_without_yes_and_without_a_terminal_refuses(initialised):
    proc = initialised.cq("queue", "purge")
    assert proc.returncode == 2 and "--yes" in proc.stderr


def test_each_worktree_searches_its_own_head(initialised, tmp_path):
    repo = initialised
    other = tmp_path / "other"
    repo.git("worktree", "add", "-q", "-b", "side", str(other))
    repo.write(str(other / "side.py"), "def only_on_side():\n    pass\n")
    repo.git("-C", str(other), "add", "-A")
    repo.git("-C", str(other), "commit", "-q", "-m", "side")
    found = wait_until(lambda: repo.cq("search", "only_on_side", "--json", cwd=other).stdout
                       .count("side.py"), what="the linked worktree to be indexed")
    assert found == 1
    assert repo.search("only_on_side") == []  # the main worktree does not have it


def test_documentation_no_worktree_references_is_pruned_with_its_words(initialised):
    repo = initialised
    repo.git("config", "cq.pruneAfter", "0")
    repo.git("config", "cq.reconcileInterval", "0.3")
    repo.cq("worker", "restart")
    repo.commit({"temp.py": "def temporary(ephemeral):\n    \"\"\"Fleeting.\"\"\"\n"})
    wait_until(lambda: repo.search("temporary"))
    count = documented_blobs(repo)
    assert full_text_matches(repo, "temporary ephemeral fleeting") == (1, 1)
    repo.git("rm", "-q", "temp.py")
    repo.commit(message="drop temp")
    wait_until(lambda: documented_blobs(repo) == count - 1, what="the orphan to be pruned")
    # The definitions' table keeps no text: a row is deleted by its words, given again.
    assert full_text_matches(repo, "temporary OR ephemeral OR fleeting") == (0, 0)


def test_a_file_is_found_by_the_words_of_its_current_path_only(initialised):
    repo = initialised
    repo.commit({"notes/zanzibar_ledger.txt": "plain text\n"})
    wait_until(lambda: paths_found(repo, "zanzibar") == ["notes/zanzibar_ledger.txt"],
               what="the file to be found by a word of its path")
    repo.git("mv", "notes/zanzibar_ledger.txt", "notes/quokka_ledger.txt")
    repo.commit(message="rename")
    wait_until(lambda: paths_found(repo, "quokka") == ["notes/quokka_ledger.txt"],
               what="the file to be found by a word of its new path")
    assert paths_found(repo, "zanzibar") == []
    repo.commit({"notes/quokka_ledger.txt": "plain text, edited by marmalade\n"})
    wait_until(lambda: paths_found(repo, "marmalade"), what="the edit to be indexed")
    assert paths_found(repo, "quokka") == ["notes/quokka_ledger.txt"]  # its path kept


def paths_found(repo, word: str) -> list[str]:
    """The paths of the results of a one-word search."""
    return [result["path"] for result in repo.search(word)]


def full_text_matches(repo, expression: str) -> tuple[int, int]:
    """Rows of the definitions' and the files' full-text tables that match an expression."""
    db = sqlite3.connect(repo.state / "index.db")
    try:
        return tuple(db.execute(f"SELECT COUNT(*) FROM {table} WHERE {table} MATCH ?",
                                (expression,)).fetchone()[0]
                     for table in ("entries_fts", "files_fts"))
    finally:
        db.close()


def test_queue_storage_keeps_no_results(initialised):
    initialised.commit({f"r{i}.py": "x = 1\n" for i in range(10)})
    initialised.wait_indexed()
    db = sqlite3.connect(initialised.state / "queue.db")
    try:
        assert db.execute("SELECT COUNT(*) FROM kv").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM task").fetchone()[0] == 0
    finally:
        db.close()


def test_the_queue_commits_without_waiting_for_the_disk_as_the_index_does(initialised):
    # A queue connection made as the worker makes its own, by the archive it runs.
    script = ("import sys; sys.path.insert(0, sys.argv[1]); "
              "from cqlib.gitio import locate_repo; from cqlib.queue import task_queue; "
              "conn = task_queue(locate_repo(sys.argv[2])).huey.storage.conn; "
              "print(*conn.execute('PRAGMA journal_mode').fetchone(), "
              "*conn.execute('PRAGMA synchronous').fetchone())")
    out = subprocess.run([sys.executable, "-c", script, str(initialised.state / "cq.pyz"),
                          str(initialised.path)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["wal", "1"]  # 1 is NORMAL: an fsync at checkpoints only


def test_index_rebuild_starts_over_and_completes(initialised):
    proc = initialised.cq("index", "--rebuild", "--wait")
    assert proc.returncode == 0, proc.stderr
    assert initialised.index_status()["complete"]


def test_show_of_a_file_not_in_head_says_so(initialised):
    proc = initialised.cq("show", "no/such/file.py")
    assert proc.returncode == 1 and "not in HEAD of this worktree" in proc.stderr


def test_show_of_a_directory_says_it_takes_a_file(initialised):
    (initialised.path / "src").mkdir()
    proc = initialised.cq("show", "src")
    assert proc.returncode == 2 and "is a directory" in proc.stderr


def test_show_works_from_a_directory_reached_through_a_symlink(initialised, tmp_path):
    initialised.commit({"pkg/mod.py": "def in_pkg():\n    pass\n"})
    initialised.wait_indexed()
    link = tmp_path / "pkg-link"
    link.symlink_to(initialised.path / "pkg")
    proc = initialised.cq("show", "mod.py", cwd=link)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("pkg/mod.py (python, ok)")


def test_search_right_after_a_commit_without_hooks_answers_from_head(initialised):
    repo = initialised
    repo.git("config", "cq.mcpWaitMs", "60000")  # the wait ends once the worker is there
    repo.write("later.py", "def added_later():\n    pass\n")
    repo.git("add", "later.py")
    repo.git("-c", "core.hooksPath=/nonexistent", "commit", "-q", "-m", "no hook fires")
    proc = repo.cq("search", "--json", "added_later")
    assert json.loads(proc.stdout)[0]["path"] == "later.py" and proc.stderr == ""
    repo.git("reset", "-q", "--hard", "HEAD~1")  # no hook fires; reconciliation is 60 s away
    proc = repo.cq("search", "added_later")
    assert proc.stdout == "no results\n" and proc.stderr == ""


def test_search_says_so_when_the_index_is_behind_and_nobody_catches_up(initialised):
    repo = initialised
    assert repo.cq("worker", "stop").returncode == 0
    repo.git("config", "cq.autostart", "false")
    repo.commit({"later.py": "def added_later():\n    pass\n"})
    proc = repo.cq("search", "added_later")
    assert "results may be out of date; start the worker: cq worker start" in proc.stderr


def test_a_failing_external_documenter_keeps_the_built_in_record_searchable(initialised):
    repo = initialised
    repo.git("config", "cq.documenter", "echo model unavailable >&2; exit 3")
    repo.commit({"ext.py": "def with_ext():\n    pass\n"})
    failed = wait_until(lambda: repo.index_status()["documenter"]["failed"] == 2 and
                        repo.index_status()["documenter"]["failed_files"])
    assert {"path": "ext.py", "error": "cq.documenter exited with status 3: "
                                       "model unavailable"} in failed
    assert repo.search("with_ext")[0]["path"] == "ext.py"
    assert repo.index_status()["failed"] == 0  # the built-in record is whole
    assert "failed summary: ext.py: cq.documenter exited with status 3" in \
        repo.cq("index", "status").stdout


def test_index_status_names_the_skipped_files(initialised):
    initialised.commit({"logo.png": b"\x89PNG\x00\x00"})
    status = initialised.wait_indexed()
    assert {"path": "logo.png", "reason": "binary"} in status["skipped_files"]
    assert "skipped (binary): 1: logo.png" in initialised.cq("index", "status").stdout


def test_index_status_counts_and_names_the_files_documented_in_part_by_reason(initialised):
    repo = initialised
    repo.git("config", "cq.parseBudget", "0.1")
    repo.commit({"broken.py": "def broken_function(:\n    pass\n",
                 "huge.js": "/** Adds. */\nfunction add_numbers(a, b) {}\n" * 20000,
                 "fine.py": "def fine():\n    pass\n"})
    status = repo.wait_indexed()
    assert status["partial"] == {"parse error": 1, "over budget": 1}
    assert status["documented"] == status["files"]  # in part is documented, searchable
    by_path = {f["path"]: f for f in status["partial_files"]}
    assert by_path["broken.py"]["reason"] == "parse error"
    assert by_path["broken.py"]["error"].startswith("SyntaxError")
    assert by_path["huge.js"]["error"].startswith("took more than 0.1s")
    text = repo.cq("index", "status").stdout
    assert "documented in part (parse error): 1: broken.py" in text
    assert "documented in part (over budget): 1: huge.js" in text


def test_an_invalid_setting_does_not_stall_the_worker_and_status_shows_it(initialised):
    repo = initialised
    repo.git("config", "cq.workers", "lots")
    repo.commit({"still.py": "def still_indexed():\n    pass\n"})
    wait_until(lambda: repo.search("still_indexed"), what="indexing with the last settings")
    status = wait_until(lambda: "problem" in (proc := repo.cq("worker", "status")).stdout and
                        proc, what="the next heartbeat to carry the problem")
    assert status.returncode == 0 and "cq.workers" in status.stdout
    stop = repo.cq("worker", "stop")  # a typo in git config must not trap the worker
    assert stop.returncode == 0 and "warning" in stop.stderr


@pytest.mark.parametrize("command", [["search", "x"], ["show", "README.md"]])
def test_reading_before_init_says_what_to_do(repo, command):
    proc = repo.cq(*command)
    assert proc.returncode == 1 and "cq init" in proc.stderr


def test_init_in_a_repository_without_commits_completes(tmp_path, cq_pyz):
    from conftest import Repository, git, kill_workers_of

    path = tmp_path / "empty"
    git(tmp_path, "init", "-q", str(path))
    repo = Repository(path, cq_pyz)
    try:
        proc = repo.cq("init", timeout=30)
        assert proc.returncode == 0, proc.stderr
        assert "indexed 0 files at no commit" in proc.stdout
    finally:
        kill_workers_of(tmp_path)


def test_a_repository_reached_through_a_symlink_is_one_worktree(initialised, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(initialised.path)
    initialised.git("config", "cq.reconcileInterval", "0.3")
    assert initialised.cq("worker", "restart", cwd=link).returncode == 0
    initialised.commit({"through.py": "def via_link():\n    pass\n"})
    wait_until(lambda: initialised.search("via_link"))
    time.sleep(1.5)  # several reconciliations: none may drop the worktree
    assert [h["path"] for h in initialised.search("via_link")] == ["through.py"]
    found = json.loads(initialised.cq("search", "via_link", "--json", cwd=link).stdout)
    assert [h["path"] for h in found] == ["through.py"]


def test_filters_apply_before_the_candidate_limit(initialised):
    files = {f"src/m{i}.py": f"# widget number {i}\nwidget = {i}\n" for i in range(250)}
    files["docs/guide.md"] = "# Guide\n\nThe widget is described here.\n"
    initialised.commit(files)
    initialised.wait_indexed(timeout=60)
    assert {h["path"] for h in initialised.search("widget", extra=["--path", "docs/*"])} == \
        {"docs/guide.md"}
    assert initialised.search("widget", extra=["--lang", "markdown"])


def test_a_large_commit_is_searchable_by_its_words_before_it_is_documented(initialised):
    repo = initialised
    repo.git("config", "cq.maxFileSize", "4m")
    files = {f"bulk/f{i:03}.py": f"def bulk_{i}():\n    return 'w{i}'\n" for i in range(300)}
    files["bulk/f299.py"] = "def bulk_299():\n    return 'zebrafinch'\n"
    # one slow file in each batch of the full pass, ahead of f299.py in the last
    files.update({f"bulk/f{i:03}a.py": slow_to_parse(f"slow_{i}") for i in (0, 130, 260)})
    repo.commit(files)
    wait_until(lambda: repo.index_status()["searchable"], interval=0.02,
               what="the lexical pass over the commit")
    os.kill(repo.worker_pid(), signal.SIGKILL)
    status = repo.index_status()
    assert not status["complete"] and status["lexical"] > 0
    hits = repo.search("zebrafinch")
    assert (hits[0]["path"], hits[0]["kind"]) == ("bulk/f299.py", "file")
    assert show(repo, "bulk/f299.py")["status"] == "lexical"
    assert "lexical pass only: " in repo.cq("index", "status").stdout
    assert repo.cq("worker", "cleanup").returncode == 0
    assert repo.cq("worker", "start").returncode == 0
    status = repo.wait_indexed(timeout=120)
    assert status["lexical"] == 0 and status["documented"] == len(head_paths(repo))
    assert (repo.search("bulk_299")[0]["kind"], show(repo, "bulk/f299.py")["status"]) == \
        ("function", "ok")
    assert repo.search("zebrafinch")[0]["path"] == "bulk/f299.py"  # its words were kept


def test_index_wait_draws_a_bar_for_each_pass_on_a_terminal(initialised):
    import sys

    repo = initialised
    repo.commit({f"many/m{i}.py": f"def many_{i}():\n    pass\n" for i in range(400)})
    code, output = on_terminal([sys.executable, "-I", "-S", str(repo.pyz), "-C",
                                str(repo.path), "index", "--rebuild", "--wait"])
    assert code == 0
    text = output.decode()
    files = len(head_paths(repo))
    assert "searchable [" in text and "documented [" in text
    assert text.index("searchable [") < text.index("documented [")
    assert f"{files}/{files} files" in text.rpartition("searchable [")[2]
    assert f"index complete: {files} files documented" in text


def test_the_definitions_column_weights_are_given_with_each_query_not_kept_in_the_index(
        initialised):
    # Kept in the index, a change to them would take effect only in an index built anew.
    db = sqlite3.connect(f"file:{initialised.state / 'index.db'}?mode=ro", uri=True)
    try:
        assert db.execute("SELECT v FROM entries_fts_config WHERE k = 'rank'").fetchall() == []
    finally:
        db.close()
    initialised.commit({"weights.py": "def retry_later():\n    '''Waits.'''\n\n\n"
                        "def wait():\n    '''Retry later, retry later, retry later.'''\n"})
    initialised.wait_indexed()
    assert initialised.search("retry", "later")[0]["symbol"] == "retry_later"
