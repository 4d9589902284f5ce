"""cq share: the external documenter's answers travel between real clones as git notes.

A bare repository on this machine is the remote; each clone runs the real cq.pyz and its own
worker; `fake_documenter.py` stands in for the model and logs each call in the clone that
made it (`@state`), so every clone runs the same command and so has the same settings key.
"""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, Repository, git, kill_workers_of, wait_until

sys.path.insert(0, str(ROOT))
from cqlib.index.summaries import SharedAnswer
from cqlib.sharing import note_answers, note_line, parsed_line

FAKE = ROOT / "tests" / "fake_documenter.py"


def module(i: int) -> str:
    return f'def function_{i}():\n    """Function {i}."""\n    return {i}\n'


def documenter(mode: str = "claude") -> str:
    return f"{sys.executable} {FAKE} {mode} @state"


def new_remote(base: Path, files: dict) -> Path:
    """A bare repository holding one commit of these files (as a team's server would)."""
    remote = base / "remote.git"
    git(base, "init", "-q", "--bare", "-b", "main", str(remote))
    seed = base / "seed"
    git(base, "init", "-q", "-b", "main", str(seed))
    for rel, content in files.items():
        (seed / rel).parent.mkdir(parents=True, exist_ok=True)
        (seed / rel).write_text(content)
    git(seed, "add", "-A")
    git(seed, "-c", "user.name=Seed", "-c", "user.email=seed@example.com", "commit", "-q",
        "-m", "files")
    git(seed, "push", "-q", str(remote), "main")
    return remote


def clone(remote: Path, path: Path, documenter_command: str | None = None,
          **settings: str) -> Repository:
    """A clone of the remote with test timings and (unless "") the stand-in documenter."""
    git(remote.parent, "clone", "-q", "-b", "main", str(remote), str(path))
    for key, value in (("user.email", "test@example.com"), ("user.name", "Test"),
                       ("cq.heartbeatInterval", "0.2"), ("cq.shutdownTimeout", "10"),
                       *((f"cq.{k}", v) for k, v in settings.items())):
        git(path, "config", key, value)
    command = documenter() if documenter_command is None else documenter_command
    if command:
        git(path, "config", "cq.documenter", command)
    return Repository(path, remote.parent / "cq.pyz")


def calls(repo: Repository) -> list[str]:
    """The files the stand-in documenter was called on in this clone, one per call."""
    log = repo.state / "fake-calls.log"
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


def summaries(repo: Repository) -> dict:
    """The documenter part of `cq index status --json`."""
    return repo.index_status()["documenter"]


def summarised(repo: Repository, timeout: float = 180) -> dict:
    """Wait until the index is complete and nothing is left for the documenter."""
    repo.wait_indexed(timeout)
    return wait_until(lambda: (s := summaries(repo))["pending"] == 0 and s, timeout=timeout,
                      what="the summaries")


def share(repo: Repository, action: str, *args: str) -> str:
    proc = repo.cq("share", action, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def shown_summary(repo: Repository, path: str) -> str:
    return json.loads(repo.cq("show", "--json", path).stdout)["summary"]


@pytest.fixture
def base(tmp_path, cq_pyz):
    (tmp_path / "cq.pyz").symlink_to(cq_pyz)
    yield tmp_path
    kill_workers_of(tmp_path)


def test_a_clone_that_fetches_makes_no_calls_for_answers_pushed_by_another(base):
    files = {f"pkg/m{i}.py": module(i) for i in range(200)}
    remote = new_remote(base, files)
    a = clone(remote, base / "a")
    assert a.cq("init").returncode == 0
    assert summarised(a)["done"] == 200 and len(calls(a)) == 200
    assert "pushed 200 answer(s)" in share(a, "push")

    b = clone(remote, base / "b")
    assert "worker takes the answers in" in share(b, "fetch")  # before any index exists
    assert b.cq("init").returncode == 0
    status = summarised(b)
    assert (status["done"], status["shared"], calls(b)) == (200, 200, [])
    assert shown_summary(b, "pkg/m7.py") == shown_summary(a, "pkg/m7.py")
    estimate = b.cq("index", "--estimate").stdout
    assert "would send 0 files" in estimate and "200 answered by a clone" in estimate

    b.commit({"pkg/m7.py": module(7) + "# changed in b\n"})
    wait_until(lambda: calls(b) == ["pkg/m7.py"] and summaries(b)["pending"] == 0,
               timeout=120, what="b to summarise its change")
    b.git("push", "-q", "origin", "main")
    share(b, "push")
    share(a, "fetch")
    a.git("pull", "-q", "--ff-only", "origin", "main")
    a.wait_indexed()
    wait_until(lambda: summaries(a)["pending"] == 0 and
               "# changed" not in shown_summary(a, "pkg/m7.py") and
               shown_summary(a, "pkg/m7.py") == shown_summary(b, "pkg/m7.py"),
               timeout=120, what="a to use b's answer")
    assert len(calls(a)) == 200


def test_concurrent_pushes_lose_no_answer(base):
    remote = new_remote(base, {"README.md": "# Demo\n"})
    a = clone(remote, base / "a")
    b = clone(remote, base / "b")
    a.commit({f"a/m{i}.py": module(i) for i in range(30)})
    b.commit({f"b/m{i}.py": module(100 + i) for i in range(30)})
    for repo in (a, b):
        assert repo.cq("init").returncode == 0
    for repo in (a, b):
        summarised(repo)
    pushes = [subprocess.Popen([sys.executable, "-I", "-S", str(r.pyz), "-C", str(r.path),
                                "share", "push"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for r in (a, b)]
    for proc in pushes:
        err = proc.communicate(timeout=120)[1]
        assert proc.returncode == 0, err
    notes = git(remote, "notes", "--ref=cq", "list").split("\n")
    # README.md is in both clones: one note, whose answers are the same line
    assert len([n for n in notes if n]) == 61

    c = clone(remote, base / "c")
    share(c, "fetch")
    for repo in (a, b):  # c's branch holds neither clone's own files: it gets both by git
        repo.git("push", "-q", "origin", f"HEAD:refs/heads/{repo.path.name}")
    c.git("fetch", "-q", "origin")
    c.git("merge", "-q", "--no-edit", "origin/a", "origin/b")
    assert c.cq("init").returncode == 0
    status = summarised(c)
    assert (status["done"], status["shared"], calls(c)) == (61, 61, [])


def test_answers_of_two_models_for_one_content_are_both_kept(base):
    remote = new_remote(base, {"m.py": module(1)})
    a = clone(remote, base / "a", documenterModel="small")
    b = clone(remote, base / "b", documenterModel="large")
    for repo in (a, b):
        assert repo.cq("init").returncode == 0
        summarised(repo)
        share(repo, "push")
    share(a, "fetch")
    blob = a.git("rev-parse", "HEAD:m.py").strip()
    lines = a.git("notes", "--ref=cq", "show", blob).splitlines()
    assert len(lines) == 2 and len({json.loads(line)["key"] for line in lines}) == 2
    c = clone(remote, base / "c", documenterModel="small")
    share(c, "fetch")
    assert c.cq("init").returncode == 0
    assert summarised(c)["shared"] == 1 and calls(c) == []  # its own model's answer
    d = clone(remote, base / "d", documenterModel="medium")
    assert d.cq("init").returncode == 0
    assert summarised(d)["shared"] == 0 and calls(d) == ["m.py"]


def test_four_shards_summarise_a_quarter_each_and_a_fifth_clone_needs_no_call(base):
    files = {f"src/m{i}.py": module(i) for i in range(2000)}
    remote = new_remote(base, files)
    shards = [clone(remote, base / f"shard{k}", documenter("slow=0.2"), documenterJobs="4")
              for k in range(1, 5)]
    runs = [subprocess.Popen([sys.executable, "-I", "-S", str(r.pyz), "-C", str(r.path),
                              "index", "--shard", f"{k}/4", "--wait"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for k, r in enumerate(shards, 1)]
    for proc in runs:
        err = proc.communicate(timeout=900)[1]
        assert proc.returncode == 0, err
    made = [calls(r) for r in shards]
    every = [path for paths in made for path in paths]
    assert sorted(every) == sorted(files)  # each file once, in one shard or another
    assert all(350 <= len(paths) <= 650 for paths in made), [len(p) for p in made]
    assert summaries(shards[0])["other_shards"] == 2000 - len(made[0])
    for repo in shards:
        share(repo, "push")
    fifth = clone(remote, base / "fifth", documenter("slow=0.2"))
    share(fifth, "fetch")
    assert fifth.cq("init").returncode == 0
    status = summarised(fifth, timeout=300)
    assert (status["done"], status["shared"], calls(fifth)) == (2000, 2000, [])


def hostile_notes(repo: Repository) -> dict:
    """Notes no cq wrote, on this repository's files and on an object it lacks."""
    key = json.loads(repo.git("notes", "--ref=cq", "show",
                              repo.git("rev-parse", "HEAD:a.py").strip()))["key"]
    good = {"key": key, "notes": {}, "summary": "a fine summary", "v": 1}
    return {
        "a.py": "x" * (50 << 20),  # 50 MB
        "b.py": "{not json\n",
        "c.py": json.dumps({**good, "summary": "red \x1b[31mALERT\x1b[0m \x07 text"}) + "\n",
        "d.py": json.dumps({**good, "key": "sh -c 'touch /tmp/owned'"}) + "\n" +
                json.dumps({**good, "command": "touch /tmp/owned"}) + "\n" +
                "[" * 30000 + "\n",  # nested deeper than any parser recurses
        "e.py": json.dumps({**good, "summary": "half a character: \ud800"}) + "\n",
        "0" * 40: json.dumps(good) + "\n",
    }


def test_hostile_notes_are_skipped_logged_and_never_shown_raw(base):
    names = ("a.py", "b.py", "c.py", "d.py", "e.py")
    remote = new_remote(base, {name: module(i) for i, name in enumerate(names)})
    a = clone(remote, base / "a")
    assert a.cq("init").returncode == 0
    summarised(a)
    share(a, "push")
    # A stranger with push rights replaces every note.
    stranger = clone(remote, base / "stranger", documenter_command="")
    stranger.git("fetch", "-q", "origin", "refs/notes/cq:refs/notes/cq")
    for target, text in hostile_notes(stranger).items():
        obj = target if len(target) == 40 else stranger.git("rev-parse", f"HEAD:{target}").strip()
        note = stranger.path / "note.txt"
        note.write_text(text)
        stranger.git("notes", "--ref=cq", "add", "-f", "-F", str(note), obj)
    stranger.git("push", "-q", "-f", "origin", "refs/notes/cq:refs/notes/cq")

    b = clone(remote, base / "b")
    share(b, "fetch")
    assert b.cq("init").returncode == 0
    status = summarised(b)
    assert status["shared"] == 1  # c.py's: a summary, its escapes shown escaped
    assert sorted(calls(b)) == ["a.py", "b.py", "d.py", "e.py"]
    shown = b.cq("show", "c.py").stdout
    assert "ALERT" in shown and "\x1b" not in shown and "\x07" not in shown
    log = b.cq("worker", "logs", "-n", "200").stdout
    assert "over the cap" in log and "not JSON" in log and "not a documenter settings key" \
        in log and "not a cq answer" in log and "describes no blob" in log and \
        "half a UTF-16 character" in log
    assert not Path("/tmp/owned").exists()


class NeedsPassword(http.server.BaseHTTPRequestHandler):
    """A git server that asks every request for credentials."""

    def do_GET(self):
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="git"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def password_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NeedsPassword)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/team.git"
    server.shutdown()


@pytest.fixture
def silent_server():
    """A port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/team.git"
    listener.close()


def refusing_port() -> str:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return f"http://127.0.0.1:{port}/team.git"


@pytest.mark.parametrize("server, said", [
    ("password_server", "terminal prompts disabled"), ("silent_server", "no answer within 3"),
    (None, "failed to connect")])
def test_an_unreachable_remote_or_a_missing_credential_fails_in_one_line(
        base, request, server, said):
    url = request.getfixturevalue(server) if server else refusing_port()
    remote = new_remote(base, {"m.py": module(1)})
    a = clone(remote, base / "a", shareTimeout="3")
    assert a.cq("init").returncode == 0
    summarised(a)
    for action in ("fetch", "push"):
        start = time.monotonic()
        proc = a.cq("share", action, url, timeout=60)
        assert time.monotonic() - start < 30
        assert proc.returncode != 0 and proc.stdout == ""
        assert len(proc.stderr.strip().splitlines()) == 1 and said in proc.stderr.lower(), \
            proc.stderr


def test_background_sharing_reports_a_failure_in_worker_status(base, password_server):
    remote = new_remote(base, {"m.py": module(1)})
    a = clone(remote, base / "a", shareAuto="true", shareRemote=password_server,
              shareTimeout="3")
    assert a.cq("init").returncode == 0
    report = wait_until(lambda: (r := a.status())["sharing"] and r, timeout=60,
                        what="a share in the background")
    assert not report["sharing"]["ok"] and "prompts disabled" in report["sharing"]["message"]
    assert "sharing (" in a.cq("worker", "status").stdout


def test_background_sharing_pushes_and_fetches_answers(base):
    remote = new_remote(base, {f"m{i}.py": module(i) for i in range(5)})
    a = clone(remote, base / "a", shareAuto="true", shareInterval="10")
    assert a.cq("init").returncode == 0
    summarised(a)
    wait_until(lambda: len(git(remote, "notes", "--ref=cq", "list").splitlines()) == 5,
               timeout=60, what="the answers on the remote")
    b = clone(remote, base / "b", shareAuto="true")
    assert b.cq("init").returncode == 0
    assert summarised(b)["shared"] == 5 and calls(b) == []


def test_a_push_after_the_notes_were_removed_sends_every_answer_again(base):
    remote = new_remote(base, {f"m{i}.py": module(i) for i in range(3)})
    a = clone(remote, base / "a")
    assert a.cq("init").returncode == 0
    summarised(a)
    assert "pushed 3 answer(s)" in share(a, "push")
    assert "pushed 0 answer(s)" in share(a, "push")
    a.git("update-ref", "-d", "refs/notes/cq")
    git(remote, "update-ref", "-d", "refs/notes/cq")
    assert "pushed 3 answer(s)" in share(a, "push")
    assert len(git(remote, "notes", "--ref=cq", "list").splitlines()) == 3


def test_a_note_line_reads_back_as_written_whatever_its_text():
    answer = SharedAnswer("a" * 40, "0123456789abcdef", "one\u2028two \x85 three",
                          {"f": "x\u2029y"})
    assert note_answers(answer.blob, (note_line(answer) + "\n").encode()) == ([answer], 0)


def test_a_note_escaping_half_a_utf16_character_is_refused():
    line = json.dumps({"key": "0" * 16, "notes": {}, "summary": "\ud800", "v": 1})
    assert isinstance(parsed_line("a" * 40, line), str)


def test_with_sharing_off_no_note_is_read_and_cq_share_refuses(base):
    remote = new_remote(base, {"m.py": module(1)})
    a = clone(remote, base / "a")
    assert a.cq("init").returncode == 0
    summarised(a)
    share(a, "push")
    b = clone(remote, base / "b", share="false")
    b.git("fetch", "-q", "origin", "refs/notes/cq:refs/notes/cq")  # a refspec of the user's
    proc = b.cq("share", "fetch")
    assert proc.returncode == 2 and "cq.share" in proc.stderr and proc.stdout == ""
    assert b.cq("init").returncode == 0
    assert summarised(b)["shared"] == 0 and calls(b) == ["m.py"]


def test_the_timeout_holds_when_a_helper_leaves_the_process_group(base):
    remote = new_remote(base, {"m.py": module(1)})
    a = clone(remote, base / "a", shareTimeout="3")
    # The remote's side: a helper in a session of its own holds stderr, then a hang.
    a.git("remote", "add", "slow", str(remote))
    a.git("config", "remote.slow.uploadpack", "setsid sleep 30 & sleep 20; git-upload-pack")
    start = time.monotonic()
    proc = a.cq("share", "fetch", "slow", timeout=60)
    assert time.monotonic() - start < 15
    assert proc.returncode == 1 and "no answer within 3 s" in proc.stderr
