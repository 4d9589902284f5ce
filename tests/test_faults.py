"""Faults that must never lose the index: several worker threads, a parser that crashes, files
that would stall a documenter, damaged databases, a full disk, hooks outside the repository,
and bad input of every kind."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import (
    ROOT,
    documenters_of,
    find_python,
    kill_workers_of,
    live_processes,
    make_repo,
    slow_to_parse,
    wait_until,
)

sys.path.insert(0, str(ROOT))
from cqlib import pipeline
from cqlib import pool as pool_module
from cqlib.documenters import minimal_record
from cqlib.gitio import BlobReader, WorkTreeFiles, locate_repo
from cqlib.index.schema import LEXICAL, SCHEMA_VERSION
from cqlib.index.store import Index, Record
from cqlib.lifecycle import Progress, Shutdown
from cqlib.pool import DIED_TWICE, POOL_DEPTH, DocumentingPool, Job, PoolRun

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux's, named by Python 3.10+


def integrity(path: Path) -> str:
    """PRAGMA integrity_check of a database file, read-only."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def errors_in_log(repo) -> list[str]:
    """ERROR lines of the worker log (all rotations)."""
    lines = []
    for log in sorted(repo.state.glob("worker.log*")):
        text = log.read_text(errors="replace")
        lines += [line for line in text.splitlines() if " ERROR " in line]
    return lines


def head_paths(repo, cwd=None) -> set[str]:
    out = subprocess.run(["git", "ls-tree", "-r", "-z", "--name-only", "HEAD"],
                         cwd=cwd or repo.path, capture_output=True, check=True).stdout
    return {os.fsdecode(p) for p in out.split(b"\0") if p}


def module_source(i: int) -> str:
    return (f'"""Module {i}: helpers for the stress test."""\n\n\n'
            + "".join(f"def function_{i}_{j}(value):\n    \"\"\"Return value plus {j}.\"\"\"\n"
                      f"    return value + {j}\n\n\n" for j in range(20))
            + f"class Holder{i}:\n    def method(self):\n        return {i}\n")


@pytest.mark.parametrize("threads", [1, 2, 4, 8])
def test_indexing_and_rebuilding_with_several_threads_keeps_the_index_sound(repo, threads):
    repo.git("config", "cq.workers", str(threads))
    repo.commit({f"pkg/m{i}.py": module_source(i) for i in range(120)})
    stop, problems = threading.Event(), []

    def read_all_the_time():
        while not stop.is_set():
            for args in (("search", "function_7_3"), ("index", "status", "--json")):
                proc = repo.cq(*args)
                if proc.returncode not in (0, 1) or "Traceback" in proc.stderr:
                    problems.append((args, proc.returncode, proc.stderr))

    readers = [threading.Thread(target=read_all_the_time) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        init = repo.cq("init")
        assert init.returncode == 0, init.stderr
        rebuild = repo.cq("index", "--rebuild", "--wait")
        assert rebuild.returncode == 0, rebuild.stderr
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert problems == []
    status = repo.index_status()
    assert status["complete"] and status["documented"] == len(head_paths(repo))
    assert repo.search("function_7_3")[0]["path"] == "pkg/m7.py"
    assert repo.cq("worker", "stop").returncode == 0
    assert integrity(repo.state / "index.db") == "ok"
    assert integrity(repo.state / "queue.db") == "ok"
    assert errors_in_log(repo) == []


def test_reading_more_blobs_at_once_than_a_pipe_holds_finishes(repo):
    content = b"x = 1\n" * 200  # 3000 answers of 1.2 KB: git waits for them to be read
    sha = repo.git("hash-object", "-w", "--stdin", input=content).strip()
    shas = [sha] * 3000  # 123 KB of requests
    reader = BlobReader(str(repo.path / ".git"))
    fcntl.fcntl(reader.proc.stdin, F_SETPIPE_SZ, 4096)  # the least a pipe may hold: a page
    answers: list = []
    thread = threading.Thread(target=lambda: answers.extend(reader.read_all(shas, 1 << 20)),
                              daemon=True)  # a deadlock must fail the test, not hang it
    thread.start()
    thread.join(60)
    try:
        assert not thread.is_alive(), "git cat-file and cq wait for each other"
        assert answers == [(len(content), content)] * 3000
    finally:
        reader.proc.kill()
        reader.close()


CHAIN = "x = " + "+".join(["1"] * 150_000) + "\n"


@pytest.mark.parametrize("version", ["3.9", "3.10"])
def test_a_file_that_crashes_this_pythons_parser_never_reaches_it(repo, version):
    python = find_python(version)
    if python is None:
        pytest.skip(f"Python {version} is not installed on this machine")
    repo.commit({"chain.py": CHAIN, "fine.py": "def still_documented():\n    pass\n"})
    assert repo.cq("worker", "start", python=python).returncode == 0
    assert repo.cq("index", "--wait", python=python).returncode == 0
    state = repo.status()
    assert state["state"] == "running" and state["tasks_failed"] == 0
    doc = json.loads(repo.cq("show", "--json", "chain.py").stdout)
    assert "parser crashes on this file" in doc["error"]
    assert repo.search("still_documented")


def being_documented(repo, path: str) -> bool:
    """True while the index notes path as in flight in the built-in documenter."""
    uri = f"file:{repo.state / 'index.db'}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            return db.execute("SELECT 1 FROM attempts WHERE path = ? AND started_at IS NOT "
                              "NULL", (path.encode(),)).fetchone() is not None
    except sqlite3.OperationalError:  # not there yet, or busy
        return False


def kill_the_worker_while_in_flight(repo, path: str, times: int = 3) -> None:
    """SIGKILL the worker each time path is being documented, and start it again."""
    for _ in range(times):
        wait_until(lambda: being_documented(repo, path), interval=0.01,
                   what=f"{path} to be in flight")
        os.kill(repo.worker_pid(), signal.SIGKILL)
        wait_until(lambda: repo.status()["state"] == "dead", what="the worker to be dead")
        assert repo.cq("worker", "cleanup").returncode == 0
        assert repo.cq("worker", "start").returncode == 0


def test_a_file_in_flight_at_three_deaths_of_the_worker_is_skipped_with_the_reason(repo):
    repo.git("config", "cq.maxFileSize", "4m")
    assert repo.cq("init").returncode == 0
    repo.commit({"victim.py": slow_to_parse("victim_function")})  # killed in the parser
    kill_the_worker_while_in_flight(repo, "victim.py")
    status = repo.wait_indexed()
    assert status["skipped"] == {"crashed the documenter": 1}
    assert {"path": "victim.py", "reason": "crashed the documenter"} in status["skipped_files"]
    assert "skipped (crashed the documenter): 1: victim.py" in repo.cq("index", "status").stdout
    assert repo.search("victim_function")  # its names stay searchable


def test_a_worker_killed_while_its_documenting_processes_have_a_batch_blames_none_of_it(repo):
    repo.git("config", "cq.maxFileSize", "4m")
    assert repo.cq("init").returncode == 0
    repo.commit({"slow.py": slow_to_parse("slow_function"),
                 **{f"quick{n:02}.py": f"def quick_{n}():\n    pass\n" for n in range(30)}})
    wait_until(lambda: documenting_processes(repo), interval=0.01,
               what="the documenting processes to take the batch")
    os.kill(repo.worker_pid(), signal.SIGKILL)
    wait_until(lambda: repo.status()["state"] == "dead", what="the worker to be dead")
    assert repo.cq("worker", "cleanup").returncode == 0
    assert repo.cq("worker", "start").returncode == 0
    status = repo.wait_indexed()
    assert status["documented"] == len(head_paths(repo)) and status["skipped"] == {}
    assert not [line for line in errors_in_log(repo) if "died while documenting" in line]
    assert repo.search("slow_function")


def documenting_processes(repo) -> list[int]:
    """The worker's documenting processes (its pool) in this repository."""
    needle = str(repo.path).encode()
    return [pid for pid, read in live_processes()
            if b"--documenting-process" in (cmd := read("cmdline")) and needle in cmd]


def test_a_worker_whose_files_all_go_to_documenting_processes_starts_no_git_reader(repo):
    repo.commit({f"f{n:02}.py": f"def function_{n}():\n    pass\n" for n in range(60)})
    assert repo.cq("init").returncode == 0
    worker = str(repo.worker_pid()).encode()
    assert documenting_processes(repo)  # which read every file, each through a git of its own
    assert [pid for pid, read in live_processes() if b"cat-file" in read("cmdline") and
            read("stat").rsplit(b")", 1)[-1].split()[1:2] == [worker]] == []


def test_a_large_batch_is_documented_in_processes_that_are_replaced_when_killed(repo):
    repo.git("config", "cq.maxFileSize", "4m")
    assert repo.cq("init").returncode == 0
    slow = {f"slow{n}.py": slow_to_parse(f"slow_{n}") for n in range(3)}
    repo.commit({**slow, **{f"fast{n:02}.py": f"def fast_{n}():\n    pass\n" for n in range(40)}})
    killed = wait_until(lambda: documenting_processes(repo), interval=0.01,
                        what="the documenting processes")
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    status = repo.wait_indexed()
    assert status["failed"] == 0 and status["skipped"] == {}
    assert status["documented"] == len(head_paths(repo))
    for n in range(3):
        assert repo.search(f"slow_{n}")[0]["path"] == f"slow{n}.py"
    assert any("a documenting process ended on" in line for line in errors_in_log(repo))
    assert repo.worker_pid() is not None and repo.status()["state"] == "running"
    assert set(documenting_processes(repo)).isdisjoint(killed)


def test_a_documenting_process_that_ends_blames_only_the_job_it_was_working_on(repo, tmp_path):
    repo.commit({"fine.py": "def innocent_function():\n    pass\n"})
    blob = repo.git("rev-parse", "HEAD:fine.py").strip()
    job = Job("lexical", "fine.py", blob, 5.0, True, 1 << 20, str(repo.path / ".git"))
    doomed = job._replace(git_dir=str(tmp_path / "no-repository"))  # its process cannot read it
    pool = DocumentingPool(1)  # one process, sent both groups at once
    run = PoolRun(pool, [[doomed], [job]])
    try:
        answers = run.answers()
    finally:
        pool.close()
    assert answers[0] == DIED_TWICE
    size, doc = answers[1][0]
    assert size == len("def innocent_function():\n    pass\n")
    assert "innocent_function" in doc["words"].split()
    assert run.deaths == [2, 0]


def full_pass_job(repo, path: str) -> Job:
    """The full pass's job of a file of HEAD."""
    return Job("full", path, repo.git("rev-parse", f"HEAD:{path}").strip(), 30.0, True, 4 << 20,
               str(repo.path / ".git"))


def run_in_thread(pool: DocumentingPool, groups: list) -> tuple[threading.Thread, dict]:
    """A thread running groups of jobs in a pool; where its run's answers go ("answers"),
    and the time it ended ("ended_at")."""
    outcome: dict = {}

    def run() -> None:
        outcome["answers"] = pool.run(groups)
        outcome["ended_at"] = time.monotonic()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


@contextlib.contextmanager
def pool_held_by_a_busy_thread(repo, monkeypatch, patience: float, groups: int):
    """A pool of two documenting processes, with POOL_PATIENCE `patience`, both working for
    a thread running `groups` groups of a job slow to parse, as a namespace: the pool, that
    thread (busy), its outcome (see run_in_thread), a quick job, and the thread that read
    each answer, in turn (answered_by); the thread joined and the pool closed after."""
    monkeypatch.setattr(pool_module, "POOL_PATIENCE", patience)
    repo.commit({"slow.py": "@a\n" * 120_000 + "def slow_one():\n    pass\n",
                 "quick.py": "def quick_one():\n    pass\n"})
    slow, quick = full_pass_job(repo, "slow.py"), full_pass_job(repo, "quick.py")
    answered_by: list = []
    monkeypatch.setattr(Progress, "on_made",
                        lambda: answered_by.append(threading.current_thread()))
    pool = DocumentingPool(2)
    try:
        busy, outcome = run_in_thread(pool, [[slow]] * groups)
        # its first answer: both processes started and given jobs
        wait_until(lambda: answered_by, interval=0.01, what="the busy run's first answer")
        yield SimpleNamespace(pool=pool, busy=busy, outcome=outcome, quick=quick,
                              answered_by=answered_by)
        busy.join()
    finally:
        pool.close()


def test_a_run_keeps_every_documenting_process_while_another_thread_waits_briefly(
        repo, monkeypatch):
    with pool_held_by_a_busy_thread(repo, monkeypatch, 60.0, 8) as held:
        held.pool.run([[held.quick]])  # a process only once the busy run gave out its jobs
    answered_by = held.answered_by
    before_quick = answered_by[:answered_by.index(threading.current_thread())]
    assert before_quick.count(held.busy) >= 8 - POOL_DEPTH  # those with the process it kept


def test_a_thread_waiting_for_a_documenting_process_gets_one_before_another_runs_out(
        repo, monkeypatch):
    with pool_held_by_a_busy_thread(repo, monkeypatch, 0.05, 24) as held:
        answers = held.pool.run([[held.quick]])  # once the busy thread hands one back
    assert [e["name"] for e in answers[0][0].doc["entries"]] == ["quick_one"]
    answered_by = held.answered_by
    assert answered_by[:answered_by.index(threading.current_thread())].count(held.busy) <= 12
    assert [answer[0].doc["entries"][0]["name"] for answer in held.outcome["answers"]] == \
        ["slow_one"] * 24


def test_a_thread_takes_back_the_documenting_process_it_handed_over(repo, monkeypatch):
    with pool_held_by_a_busy_thread(repo, monkeypatch, 0.2, 24) as held:
        held.pool.run([[held.quick]])
        wait_until(lambda: held.pool.lent == 2 or not held.busy.is_alive(), interval=0.01,
                   what="the busy thread to take both processes again")
        assert held.busy.is_alive()
    assert held.pool.lent == 0 and held.pool.free == []


def test_a_run_hands_back_each_process_it_has_no_more_jobs_for(repo, monkeypatch):
    monkeypatch.setattr(pool_module, "POOL_PATIENCE", 60.0)
    repo.commit({"slow.py": slow_to_parse("slow_one"), "quick.py": "def quick_one():\n    pass\n"})
    slow, quick = full_pass_job(repo, "slow.py"), full_pass_job(repo, "quick.py")
    pool = DocumentingPool(2)
    try:  # the first process answers both quick jobs, the second parses the slow one
        busy, outcome = run_in_thread(pool, [[quick], [quick], [slow]])
        wait_until(lambda: pool.lent == 2, interval=0.01, what="both processes to be lent")
        pool.run([[quick]])
        answered_at = time.monotonic()
        busy.join()
    finally:
        pool.close()
    assert answered_at < outcome["ended_at"]


def test_a_thread_waiting_for_a_process_when_the_worker_stops_starts_none(repo, monkeypatch):
    with pool_held_by_a_busy_thread(repo, monkeypatch, 60.0, 8) as held:
        waiting, waited = run_in_thread(held.pool, [[held.quick]])
        wait_until(lambda: held.pool.waiters, interval=0.01,
                   what="a thread to wait for a process")
        started: list = []
        monkeypatch.setattr(pool_module, "start_documenting_process",
                            lambda start=pool_module.start_documenting_process:
                            started.append(start()) or started[-1])
        monkeypatch.setattr(Shutdown, "requested", True)
        waiting.join()
    assert waited["answers"] is None and held.outcome["answers"] is None
    assert started == []
    assert held.pool.lent == 0 and held.pool.free == []


def read_from_work_tree(repo, path: str, blob: str) -> tuple | None:
    """What cq reads of a blob from its file in the repository's work tree (None: git's)."""
    with WorkTreeFiles.of_repository(str(repo.path / ".git")) as files:
        return files.read(path, blob, 1 << 20)


def test_a_blob_is_read_from_the_work_tree_only_where_its_file_holds_exactly_it(repo, tmp_path):
    repo.commit({"same.py": "x = 1\n", "edited.py": "y = 2\n", "src/deep.py": "z = 3\n",
                 "pipe.py": "w = 4\n"})
    blob = {p: repo.git("rev-parse", f"HEAD:{p}").strip()
            for p in ("same.py", "edited.py", "src/deep.py", "pipe.py")}
    assert read_from_work_tree(repo, "same.py", blob["same.py"]) == (6, b"x = 1\n")
    assert read_from_work_tree(repo, "src/deep.py", blob["src/deep.py"]) == (6, b"z = 3\n")
    (repo.path / "edited.py").write_text("y = 3\n")
    assert read_from_work_tree(repo, "edited.py", blob["edited.py"]) is None
    (repo.path / "pipe.py").unlink()
    os.mkfifo(repo.path / "pipe.py")  # opening it for reading must not wait for a writer
    assert read_from_work_tree(repo, "pipe.py", blob["pipe.py"]) is None
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "deep.py").write_text("z = 3\n")  # the very content, through a link
    shutil.rmtree(repo.path / "src")
    (repo.path / "src").symlink_to(outside)
    assert read_from_work_tree(repo, "src/deep.py", blob["src/deep.py"]) is None
    (repo.path / "inner").mkdir()  # a path that climbs out (a hand-made tree may hold one)
    for climbing in ("inner/../../elsewhere/deep.py", "../elsewhere/deep.py",
                     str(outside / "deep.py")):
        assert read_from_work_tree(repo, climbing, blob["src/deep.py"]) is None
    repo.git("gc", "-q")  # a packed blob is read by git, in order, not from the work tree
    assert read_from_work_tree(repo, "same.py", blob["same.py"]) is None


def test_an_edited_work_tree_leaves_the_index_with_the_committed_content(repo):
    repo.commit({f"m{n:02}.py": f"def committed_{n}():\n    pass\n" for n in range(40)})
    for n in range(0, 40, 3):
        (repo.path / f"m{n:02}.py").write_text(f"def edited_{n}():\n    pass\n")
    assert repo.cq("init").returncode == 0
    for n in (0, 1, 39):
        doc = json.loads(repo.cq("show", "--json", f"m{n:02}.py").stdout)
        assert [e["name"] for e in doc["entries"]] == [f"committed_{n}"]


def test_the_lexical_pass_keeps_the_crash_count_of_a_file(repo):
    repo.commit({"victim.py": "x = 1\n"})
    assert repo.cq("init").returncode == 0
    assert repo.cq("worker", "stop").returncode == 0
    blob = repo.git("rev-parse", "HEAD:victim.py").strip()
    with Index(locate_repo(str(repo.path))) as index:
        index.begin_attempts([(blob, "victim.py")])
        index.close_attempts(crashed=True)  # as a worker does at start after a death
        index.store_all([Record(blob, LEXICAL, 6, minimal_record("victim.py", b"x = 1\n", ""),
                                "victim.py")])
        assert index.crash_counts([(blob, "victim.py")]) == {blob: 1}


def sweep_fixture(repo, monkeypatch, unrecorded: int) -> tuple:
    """A stopped, indexed repository of 40 files and more whose `unrecorded` highest blobs
    have no record, sweeps taking 10 files at a time: (its Repo, its blobs in order, a
    sweep)."""
    repo.commit({f"f{n:02}.py": f"x = {n}\n" for n in range(40)})
    assert repo.cq("init").returncode == 0
    assert repo.cq("worker", "stop").returncode == 0
    repository = locate_repo(str(repo.path))
    with Index(repository) as index:
        blobs = sorted(r[0] for r in index.db.execute("SELECT blob FROM docs"))
        index.db.executemany("DELETE FROM docs WHERE blob = ?",
                             [(blob,) for blob in blobs[-unrecorded:]])
    monkeypatch.setattr(pipeline, "LEXICAL_PART", 10)
    return repository, blobs, pipeline.LexicalSweep()


def record(index: Index, part: list) -> None:
    """Give each (blob, path) a lexical record, as a sweep's store does."""
    index.db.executemany(f"INSERT INTO docs (blob, status) VALUES (?, '{LEXICAL}')",
                         [(blob,) for blob, _ in part])


def test_sweeps_queued_together_share_the_files_out_each_once(repo, monkeypatch):
    repository, blobs, sweep = sweep_fixture(repo, monkeypatch, unrecorded=25)
    taken = []
    with sweep.joined("together"), sweep.joined("together"), Index(repository) as index:
        first, second = sweep.next_part(index), sweep.next_part(index)
        sweep.done(second)  # given up (the worker stopping), not recorded: no second round
        taken += first + second
        record(index, first)
        sweep.done(first)
        while part := sweep.next_part(index):
            taken += part
            record(index, part)
            sweep.done(part)
    assert [len(first), len(second)] == [10, 10]
    assert sorted(blob for blob, _ in taken) == blobs[-25:]  # each once, no other


def test_the_next_sweep_starts_afresh_once_the_last_has_ended(repo, monkeypatch):
    repository, blobs, sweep = sweep_fixture(repo, monkeypatch, unrecorded=20)
    with sweep.joined("first"), Index(repository) as index:
        given_up = sweep.next_part(index)
        sweep.done(given_up)
    assert [blob for blob, _ in given_up] == blobs[-20:-10]
    with sweep.joined("first"), Index(repository) as index:  # its sequel, say
        assert sweep.next_part(index) == given_up


def test_a_sweep_queued_later_goes_round_again_for_files_behind_the_parts_taken(repo,
                                                                                monkeypatch):
    repository, blobs, sweep = sweep_fixture(repo, monkeypatch, unrecorded=20)
    with sweep.joined("first"), Index(repository) as index:
        in_flight = sweep.next_part(index)
        assert [blob for blob, _ in in_flight] == blobs[-20:-10]
        index.db.executemany("DELETE FROM docs WHERE blob = ?", [(b,) for b in blobs[:3]])
        with sweep.joined("later"):  # queued for the three, behind the part taken
            rest = sweep.next_part(index)
            record(index, rest)
            sweep.done(rest)
            # round again: the three, and not the part still in flight (not yet recorded)
            assert [blob for blob, _ in sweep.next_part(index)] == blobs[:3]
            assert sweep.next_part(index) == []
        sweep.done(in_flight)


def test_a_sweep_makes_way_after_its_parts_and_queues_its_sequel(repo, monkeypatch):
    repository, blobs, _ = sweep_fixture(repo, monkeypatch, unrecorded=35)
    monkeypatch.setattr(pipeline, "SWEEP_PARTS", 2)
    monkeypatch.setattr(sys, "path", [*sys.path, str(repo.pyz)])  # Huey, from the archive
    from cqlib.queue import TaskQueue

    queue = TaskQueue(repository)
    try:
        before = Counter(name for name, _ in queue.pending())
        pipeline.sweep_words(repository, queue, "token")
        queued = Counter(name for name, _ in queue.pending()) - before
    finally:
        queue.close()
        reader = getattr(threading.current_thread(), "cq_blob_reader", None)
        if reader:
            reader.close()
    with Index(repository) as index:
        recorded = index.db.execute("SELECT COUNT(*) FROM docs").fetchone()[0]
    assert recorded == len(blobs) - 35 + 20  # two parts of 10, the rest left to the sequel
    assert queued == Counter({"document": 2, "lexical": 1})


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two cores to hold cq to one of them")
def test_a_worker_held_to_one_core_documents_in_one_process(repo):
    repo.git("config", "cq.workers", "1")  # one thread: its pool would take every core
    repo.commit({f"f{n:02}.py": f"def function_{n}():\n    pass\n" for n in range(60)})
    first_core = min(os.sched_getaffinity(0))
    init = subprocess.run([sys.executable, "-I", "-S", str(repo.pyz), "-C", str(repo.path),
                           "init"], check=False, capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: os.sched_setaffinity(0, {first_core}))
    assert init.returncode == 0, init.stderr
    assert repo.index_status()["documented"] == len(head_paths(repo))
    assert len(documenting_processes(repo)) == 1


def test_documenting_processes_that_cannot_start_leave_the_work_to_the_worker(repo):
    assert repo.cq("init").returncode == 0
    (repo.state / "cq.pyz").unlink()  # the archive the worker runs, and would start them from
    repo.commit({f"f{n:02}.py": f"def function_{n}():\n    return {'x' * 9000!r}\n"
                 for n in range(60)})
    assert repo.cq("index").returncode == 0  # the hooks ran the archive just removed
    status = repo.wait_indexed()
    assert status["documented"] == len(head_paths(repo)) and status["failed"] == 0
    assert repo.search("function_59")[0]["path"] == "f59.py"
    assert any("documenting processes keep ending" in line for line in errors_in_log(repo))


def test_a_file_that_kills_the_worker_spares_the_rest_of_its_batch(repo):
    repo.git("config", "cq.maxFileSize", "4m")
    assert repo.cq("init").returncode == 0
    mates = {f"mate{n:02}.py": f"def mate_function_{n}():\n    pass\n" for n in range(20)}
    repo.commit({**mates, "victim.py": slow_to_parse("victim_function")})
    kill_the_worker_while_in_flight(repo, "victim.py")
    status = repo.wait_indexed()
    assert status["skipped"] == {"crashed the documenter": 1}
    assert status["skipped_files"] == [{"path": "victim.py", "reason": "crashed the documenter"}]
    for n in (0, 7, 19):
        assert repo.search(f"mate_function_{n}")[0]["path"] == f"mate{n:02}.py"
        assert json.loads(repo.cq("show", "--json", f"mate{n:02}.py").stdout)["status"] == "ok"


def test_status_never_calls_a_worker_busy_documenting_hung(repo):
    repo.git("config", "cq.workers", "4")
    repo.git("config", "cq.heartbeatInterval", "1")
    repo.commit({f"big/m{i}.py": module_source(i) * 25 for i in range(80)})  # CPU-heavy
    assert repo.cq("worker", "start").returncode == 0
    assert repo.cq("index").returncode == 0
    seen, deadline = set(), time.monotonic() + 300
    while not repo.index_status()["complete"]:
        seen.add(repo.status()["state"])
        assert time.monotonic() < deadline, "the index did not complete"
    assert seen <= {"running"}


def damage(path: Path, keep: int) -> None:
    """Overwrite a file from byte `keep` on with garbage (its -wal and -shm removed)."""
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(keep)
        f.write(b"\xa5" * max(size - keep, 4096))


def test_a_damaged_index_is_moved_aside_and_rebuilt_by_the_command_that_meets_it(initialised):
    repo = initialised
    repo.commit({f"lib/m{i}.py": module_source(i) for i in range(30)})
    repo.wait_indexed()
    assert repo.cq("worker", "stop").returncode == 0
    damage(repo.state / "index.db", keep=2 * 4096)
    proc = repo.cq("search", "function_3_4")
    assert proc.returncode == 0, proc.stderr
    assert "index.db was damaged" in proc.stderr and "Traceback" not in proc.stderr
    assert (repo.state / "index.db.damaged").exists()
    repo.wait_indexed()
    assert repo.search("function_3_4")[0]["path"] == "lib/m3.py"
    assert integrity(repo.state / "index.db") == "ok"


def test_an_empty_index_is_rebuilt_without_asking_for_init_again(initialised):
    repo = initialised
    assert repo.cq("worker", "stop").returncode == 0
    for suffix in ("-wal", "-shm"):
        (repo.state / f"index.db{suffix}").unlink(missing_ok=True)
    (repo.state / "index.db").write_bytes(b"")
    proc = repo.cq("search", "demo")
    assert proc.returncode == 1 and "building it from git" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    repo.wait_indexed()
    assert repo.search("demo")


@pytest.mark.parametrize("command", [("queue", "list"), ("queue", "purge", "--yes"),
                                     ("worker", "cleanup"), ("worker", "start")])
def test_a_damaged_queue_is_moved_aside_by_any_command_that_meets_it(initialised, command):
    repo = initialised
    assert repo.cq("worker", "stop").returncode == 0
    damage(repo.state / "queue.db", keep=0)
    proc = repo.cq(*command)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert (repo.state / "queue.db.damaged").exists()
    assert repo.cq("worker", "start").returncode == 0
    repo.commit({"after.py": "def after_the_damage():\n    pass\n"})
    wait_until(lambda: repo.search("after_the_damage"), what="the next commit to be indexed")
    assert integrity(repo.state / "queue.db") == "ok"


def test_the_repair_command_says_when_both_databases_are_sound(initialised):
    proc = initialised.cq("index", "--repair")
    assert proc.returncode == 0 and "sound" in proc.stdout


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MiB tmpfs (root only), unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)],
                      capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield disk
    kill_workers_of(disk)
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> None:
    """Write until the file system is full (unbuffered: closing has nothing left to flush)."""
    with open(disk / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
        except OSError:
            pass


def test_a_full_disk_neither_makes_the_worker_look_hung_nor_gives_a_traceback(small_disk,
                                                                               cq_pyz):
    repo = make_repo(small_disk / "repo", cq_pyz)
    repo.git("config", "cq.heartbeatInterval", "0.2")
    assert repo.cq("init").returncode == 0
    fill(small_disk)
    before = repo.status()["heartbeat_age_seconds"]
    time.sleep(2)  # ten heartbeat intervals on a full disk
    report = repo.status()
    assert report["state"] == "running" and report["returncode"] == 0
    assert report["heartbeat_age_seconds"] < 1.5 or report["heartbeat_age_seconds"] < before
    proc = repo.cq("index", "--rebuild")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    (small_disk / "filler").unlink()
    assert repo.cq("index", "--rebuild", "--wait").returncode == 0


def test_init_with_hooks_outside_the_repository_finishes_and_its_commands_keep_the_hook_there(
        repo, tmp_path):
    shared = tmp_path / "global-hooks"
    shared.mkdir()
    log = tmp_path / "foreign.log"
    (shared / "post-commit").write_text(f'#!/bin/sh\necho "foreign ran" >> "{log}"\n')
    (shared / "post-commit").chmod(0o755)
    repo.git("config", "core.hooksPath", str(shared))
    proc = repo.cq("init")
    assert proc.returncode == 0, proc.stderr
    assert "warning" in proc.stderr and "outside this repository" in proc.stderr
    assert repo.status()["state"] == "running" and repo.index_status()["complete"]
    commands = proc.stderr.split("To install by hand: ", 1)[1].strip()
    assert f"mv {shared}/post-commit {shared}/post-commit.cq-chained" in commands
    subprocess.run(["sh", "-c", commands], check=True)
    status = repo.cq("hook", "status")
    assert status.returncode == 0 and "post-commit: installed, chains a foreign hook" in \
        status.stdout
    again = repo.cq("init")
    assert again.returncode == 0 and "warning" not in again.stderr
    repo.commit({"global.py": "def through_global_hooks():\n    pass\n"})
    wait_until(lambda: repo.search("through_global_hooks"), what="the commit to be indexed")
    assert "foreign ran" in log.read_text()


@pytest.mark.parametrize("args", [
    ("search", "x", "-n", "99999999999999999999"), ("search", "x", "-n", "0"),
    ("worker", "stop", "--timeout", "-5"), ("worker", "stop", "--timeout", "nan"),
    ("worker", "logs", "-n", "abc")])
def test_bad_numbers_are_one_line_usage_errors(repo, args):
    proc = repo.cq(*args)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_a_symlink_where_the_wake_fifo_goes_is_a_one_line_error_and_commits_still_work(
        initialised, tmp_path):
    repo = initialised
    (repo.state / "wake").unlink()
    (repo.state / "wake").symlink_to(tmp_path / "elsewhere")
    proc = repo.cq("index")
    assert proc.returncode == 1 and "is a symlink" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    repo.commit({"still.py": "x = 1\n"})  # git is never broken
    assert not (tmp_path / "elsewhere").exists()


def test_an_old_python_is_told_which_python_cq_needs(cq_pyz):
    python = find_python("3.8")
    if python is None:
        pytest.skip("Python 3.8 is not installed on this machine")
    proc = subprocess.run([python, str(cq_pyz), "worker", "status"], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("cq: cq needs Python 3.9 or newer (this is 3.8.")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_repository_whose_path_is_not_utf8_works(tmp_path, cq_pyz):
    root = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9")
    repo = make_repo(Path(root), cq_pyz)
    repo.commit({"mod.py": "def in_a_latin1_directory():\n    pass\n"})
    try:
        proc = repo.cq("init")
        assert proc.returncode == 0, proc.stderr
        assert repo.search("in_a_latin1_directory")[0]["path"] == "mod.py"
    finally:
        kill_workers_of(tmp_path)


@pytest.mark.parametrize("command", [("queue", "list"), ("worker", "cleanup"),
                                     ("hook", "uninstall"), ("index", "status")])
def test_read_only_commands_create_no_index(repo, command):
    repo.cq(*command)
    assert not (repo.state / "index.db").exists()
    assert not (repo.state / "queue.db").exists()


def test_before_init_search_and_index_status_say_to_run_it(repo):
    search = repo.cq("search", "anything")
    assert search.returncode == 1 and "run: cq init" in search.stderr
    text = repo.cq("index", "status")
    assert text.returncode == 1 and "run: cq init" in text.stderr
    proc = repo.cq("index", "status", "--json")
    report = json.loads(proc.stdout)
    assert proc.returncode == 1 and report["indexed"] is False
    assert "run: cq init" in report["message"]


def test_tracebacks_name_the_archive_that_runs_and_old_cache_entries_are_pruned(cq_pyz,
                                                                                 tmp_path):
    import marshal

    cache = tmp_path / "cache"
    env = dict(os.environ, XDG_CACHE_HOME=str(cache))
    stale = cache / "cq" / "cq-0123456789abcdef01234567-deadbeef-00000000.bin"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    os.utime(stale, (time.time() - 40 * 86400,) * 2)
    archives = []
    for name in ("one", "two"):
        copy = tmp_path / name / "cq.pyz"
        copy.parent.mkdir()
        copy.write_bytes(cq_pyz.read_bytes())
        archives.append(copy)
        subprocess.run([sys.executable, "-I", "-S", str(copy), "--version"], env=env,
                       check=True, capture_output=True)
    entries = sorted(e for e in (cache / "cq").glob("cq-*.bin") if "-any" not in e.name)
    assert stale not in entries and any((cache / "cq").glob("cq-*-any*.bin"))  # any path
    filenames = {marshal.loads(e.read_bytes()).co_filename for e in entries}
    assert len(filenames) == len(entries)  # one entry a module (cq and Huey's) and archive
    for archive in archives:
        assert {str(archive / "cq.py"), str(archive / "huey" / "api.py")} <= filenames


def test_a_worker_killed_during_stop_leaves_no_documenter_behind(repo):
    repo.git("config", "cq.documenter", "sleep 60")
    repo.git("config", "cq.shutdownTimeout", "60")
    assert repo.cq("worker", "start").returncode == 0
    repo.commit({"slow.py": "x = 1\n"})
    assert repo.cq("index").returncode == 0
    wait_until(lambda: documenters_of(repo), what="the documenter to run")
    pid = repo.worker_pid()
    stopper = subprocess.Popen([sys.executable, "-I", "-S", str(repo.pyz), "-C", str(repo.path),
                                "worker", "stop"], stdout=subprocess.PIPE, text=True)
    wait_until(lambda: "Shutting down gracefully" in (repo.state / "worker.log").read_text(),
               what="the worker to be stopping")
    os.kill(pid, signal.SIGKILL)
    assert stopper.wait(timeout=60) == 0
    assert documenters_of(repo) == []
    assert repo.status()["state"] == "stopped"


def test_a_start_that_loses_a_race_to_a_stop_says_so(repo):
    for _ in range(6):
        starter = subprocess.Popen([sys.executable, "-I", "-S", str(repo.pyz), "-C",
                                    str(repo.path), "worker", "start"], stderr=subprocess.PIPE,
                                   stdout=subprocess.DEVNULL, text=True)
        while starter.poll() is None and not repo.worker_pid():
            time.sleep(0.001)
        repo.cq("worker", "stop", "--force", "--timeout", "5")
        _, err = starter.communicate(timeout=60)
        assert "did not report ready" not in err
        if starter.returncode:
            assert "stopped while it started" in err
        repo.cq("worker", "stop", "--force", "--timeout", "5")


def test_non_ascii_identifiers_and_words_are_searchable(initialised):
    initialised.commit({"unicode.py": 'def 関数():\n    """Berechnet die Größe."""\n\n\n'
                                      "def größe_berechnen():\n    pass\n"})
    initialised.wait_indexed()
    assert initialised.search("関数")[0]["symbol"] == "関数"
    assert initialised.search("größe")[0]["path"] == "unicode.py"


def test_line_numbers_stay_right_after_form_feeds(initialised):
    initialised.commit({"ff.js": "// a\fb\x1cc\nvar x = 1;\nfunction afterBreaks() {}\n"})
    initialised.wait_indexed()
    hit = initialised.search("afterBreaks")[0]
    assert (hit["path"], hit["line"]) == ("ff.js", 3)


def test_two_identical_files_each_show_their_own_path(initialised):
    initialised.commit({"a/notes.txt": "shared_identifier here\n",
                        "b/other.txt": "shared_identifier here\n"})
    initialised.wait_indexed()
    for path in ("a/notes.txt", "b/other.txt"):
        shown = initialised.cq("show", path).stdout
        assert path in shown
        assert ({"a/notes.txt", "b/other.txt", "notes.txt", "other.txt"} - {path, Path(path).name}
                ).isdisjoint(shown.split())


OLD_SCHEMA = """
CREATE TABLE worktrees (git_dir TEXT PRIMARY KEY, commit_id TEXT, updated_at REAL);
CREATE TABLE files (git_dir TEXT, path BLOB, blob TEXT, mode TEXT, excluded TEXT,
                    PRIMARY KEY (git_dir, path));
CREATE TABLE docs (blob TEXT PRIMARY KEY, status TEXT, language TEXT, summary TEXT, error TEXT,
                   size INTEGER, documented_at REAL, orphaned_at REAL);
CREATE TABLE entries (id INTEGER PRIMARY KEY, blob TEXT, kind TEXT, name TEXT, line INTEGER,
                      signature TEXT, doc TEXT);
CREATE VIRTUAL TABLE entries_fts USING fts5 (name, words, body, tokenize = 'unicode61');
CREATE TABLE failures (blob TEXT PRIMARY KEY, path BLOB, error TEXT, failed_at REAL);
"""


def test_an_index_made_by_an_older_cq_is_rebuilt_by_init(repo):
    repo.state.mkdir(mode=0o700)
    db = sqlite3.connect(repo.state / "index.db")
    db.executescript(OLD_SCHEMA)  # as cq 0.1.0 left it: user_version 0, text worktree keys
    db.execute("INSERT INTO worktrees VALUES (?, ?, 0)", (str(repo.path / ".git"), "0" * 40))
    db.commit()
    db.close()
    search = repo.cq("search", "demo")
    assert search.returncode == 1 and "another version of cq" in search.stderr
    assert repo.cq("init").returncode == 0
    assert repo.search("demo")[0]["path"] == "README.md"
    db = sqlite3.connect(f"file:{repo.state / 'index.db'}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        db.close()
