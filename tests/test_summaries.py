"""The external (LLM) documenter: the Claude Code preset, summaries that are searchable and
shown, usage limits that pause instead of failing, the circuit breaker, the daily budget, the
size cap, the dry run, and no call ever made twice for the same content.

No test calls a model: `fake_documenter.py` is a real program that answers like the CLI."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import ROOT, documenters_of, wait_until

FAKE = ROOT / "tests" / "fake_documenter.py"


def module(i: int) -> str:
    return f'def documented_function():\n    """Function {i}."""\n    return {i}\n'


def use_fake(repo, mode: str, **settings: str) -> Path:
    """Set cq.documenter to the fake in `mode`; returns the file it logs its calls to."""
    calls = repo.path.parent / "calls.log"
    repo.git("config", "cq.documenter", f"{sys.executable} {FAKE} {mode} {calls}")
    for key, value in settings.items():
        repo.git("config", f"cq.{key}", value)
    return calls


def calls_in(log: Path) -> list[str]:
    """The files the fake was called on, one per call."""
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


def summaries(repo) -> dict:
    """The documenter part of `cq index status --json`."""
    return repo.index_status()["documenter"]


def wait_summarised(repo, timeout: float = 90) -> dict:
    """Wait until nothing is left for the external documenter."""
    return wait_until(lambda: (s := summaries(repo))["pending"] == 0 and s, timeout=timeout,
                      what="the summaries")


def show(repo, path: str) -> dict:
    return json.loads(repo.cq("show", "--json", path).stdout)


def test_the_claude_preset_sends_prompt_and_file_and_keeps_summary_notes_and_cost(repo, tmp_path):
    calls = tmp_path / "calls.log"
    claude = tmp_path / "bin" / "claude"
    claude.parent.mkdir()
    claude.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKE} cost=0.25 {calls} "$@"\n')
    claude.chmod(0o755)
    repo.git("config", "cq.documenter", str(claude))
    repo.git("config", "cq.documenterModel", "haiku")
    repo.commit({"widget.py": module(1)})
    assert repo.cq("init").returncode == 0
    status = wait_summarised(repo)
    assert status["name"] == "claude (haiku)"
    line = calls.read_text().splitlines()[0]
    assert "-p --output-format json --max-turns 1 --model haiku prompted=True" in line
    assert str(repo.path) not in line.split("cwd=")[1]  # it runs outside the repository
    doc = show(repo, "widget.py")
    assert doc["summary"].startswith("llm summary of widget.py")
    assert doc["summary_by"] == "claude (haiku)"
    assert doc["entries"][0]["note"] == "llm note for widget"
    assert "(summary by claude (haiku))" in repo.cq("show", "widget.py").stdout
    assert status["calls"] == 2 and status["cost_usd"] == pytest.approx(0.5)  # README too


def test_a_summary_is_searchable_and_the_hit_says_where_it_came_from(repo):
    use_fake(repo, "claude")
    repo.commit({"widget.py": module(1)})
    assert repo.cq("init").returncode == 0
    wait_summarised(repo)
    hits = repo.search("zephyrwidget", "widget")
    assert hits[0]["path"] == "widget.py"
    assert hits[0]["matched_summary_by"] == summaries(repo)["name"]
    assert "(from the summary by" in repo.cq("search", "zephyrwidget").stdout
    assert repo.search("llm note")[0]["symbol"] == "documented_function"


def test_a_plain_text_answer_is_the_summary(repo):
    use_fake(repo, "plain")
    assert repo.cq("init").returncode == 0
    wait_summarised(repo)
    assert show(repo, "README.md")["summary"] == "plain summary of README.md"


def test_built_in_records_are_searchable_before_the_summaries_arrive(repo):
    use_fake(repo, "slow=3", documenterJobs="1")
    repo.commit({f"m{i}.py": module(i) for i in range(6)})
    assert repo.cq("init").returncode == 0  # returns once the built-in pass is complete
    assert summaries(repo)["pending"] > 0
    assert {h["path"] for h in repo.search("documented_function", extra=("-n", "20"))} \
        == {f"m{i}.py" for i in range(6)}


def test_index_wait_draws_the_summaries_to_the_end(repo):
    use_fake(repo, "plain")
    repo.commit({f"m{i}.py": module(i) for i in range(5)})
    assert repo.cq("init", "--no-wait").returncode == 0
    proc = repo.cq("index", "--wait")
    assert proc.returncode == 0 and "summaries complete: 6 done" in proc.stdout
    assert summaries(repo)["pending"] == 0


def test_a_usage_limit_pauses_every_call_until_the_stated_reset_then_resumes(repo, tmp_path):
    until = tmp_path / "until"
    until.write_text(str(int(time.time()) + 6))
    calls = use_fake(repo, f"limit-until={until}", documenterJobs="1")
    repo.commit({f"m{i}.py": module(i) for i in range(4)})
    assert repo.cq("init").returncode == 0
    status = wait_until(lambda: (s := summaries(repo))["paused_until"] and s, what="a pause")
    assert status["pause_reason"].startswith("usage limit")
    assert status["paused_until"] == int(until.read_text())
    assert status["failed"] == 0 and len(calls_in(calls)) == 1  # nothing else was tried
    shown = wait_until(lambda: "documenter: paused until" in
                       (p := repo.cq("worker", "status")).stdout and p.stdout)
    assert "usage limit" in shown
    assert "paused until" in repo.cq("index", "status").stdout
    final = wait_summarised(repo)
    assert final["done"] == 5 and final["failed"] == 0
    assert len(calls_in(calls)) == 6  # the one that met the limit is asked again


def test_a_limit_at_a_clock_time_pauses_until_that_time_in_its_zone(repo):
    zoneinfo = pytest.importorskip("zoneinfo")
    try:
        berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip("no time zone database here")
    # Three hours ahead on Berlin's clock: a reset stated for a time that passed within the
    # last two hours (JUST_PASSED) means the limit has just reset, not the same time tomorrow.
    hour = (datetime.datetime.now(berlin) + datetime.timedelta(hours=3)).hour
    calls = use_fake(repo, f"limit-clock={(hour - 1) % 12 + 1}{'pm' if hour >= 12 else 'am'}")
    assert repo.cq("init").returncode == 0
    status = wait_until(lambda: (s := summaries(repo))["paused_until"] and s, what="a pause")
    reset = datetime.datetime.fromtimestamp(status["paused_until"], berlin)
    assert (reset.hour, reset.minute) == (hour, 0)
    assert 0 < status["paused_until"] - time.time() <= 86400
    time.sleep(2)
    assert len(calls_in(calls)) <= 2  # the documenterJobs calls in flight at the limit


def test_failures_in_a_row_open_the_circuit_breaker(repo):
    calls = use_fake(repo, "fail", documenterJobs="1", documenterFailures="3")
    repo.commit({f"m{i}.py": module(i) for i in range(6)})
    assert repo.cq("init").returncode == 0
    status = wait_until(lambda: (s := summaries(repo))["paused_until"] and s, what="the breaker")
    assert status["pause_reason"].startswith("circuit breaker: 3 failure(s) in a row")
    assert "the model is unavailable" in status["pause_reason"]
    time.sleep(2)
    assert len(calls_in(calls)) == 3 and summaries(repo)["failed"] == 3
    assert repo.search("documented_function")  # the built-in records serve meanwhile


def test_the_breaker_closes_after_its_pause_and_retried_files_are_sent_again(repo, tmp_path):
    broken = tmp_path / "broken"
    broken.touch()
    calls = use_fake(repo, f"fail-while={broken}", documenterJobs="1",
                     documenterFailures="2", documenterBackoff="1")
    repo.commit({f"m{i}.py": module(i) for i in range(3)})
    assert repo.cq("init").returncode == 0
    wait_until(lambda: summaries(repo)["paused_until"], what="the breaker")
    wait_until(lambda: len(calls_in(calls)) >= 3, what="a call after the pause")
    listing = repo.cq("queue", "list").stdout
    assert "failed summar" in listing and "the model is unavailable" in listing
    broken.unlink()
    wait_until(lambda: summaries(repo)["done"] >= 1, what="the breaker to close")
    assert "will be asked for again" in repo.cq("queue", "retry").stdout
    status = wait_summarised(repo)
    assert status["failed"] == 0 and status["done"] == 4


def test_a_hanging_documenter_is_killed_at_its_timeout(repo):
    use_fake(repo, "hang", documenterTimeout="1")
    assert repo.cq("init").returncode == 0
    status = wait_until(lambda: (s := summaries(repo))["failed"] and s, what="the timeout")
    assert "timed out after 1s" in status["failed_files"][0]["error"]
    wait_until(lambda: documenters_of(repo) == [], what="the hung documenter to be gone")


def test_a_documenter_that_floods_stdout_is_cut_off(repo):
    use_fake(repo, "flood")
    assert repo.cq("init").returncode == 0
    status = wait_until(lambda: (s := summaries(repo))["failed"] and s, what="the cut-off")
    assert "printed more than 1 MiB" in status["failed_files"][0]["error"]
    wait_until(lambda: documenters_of(repo) == [], what="the flooding documenter to be gone")
    assert repo.status()["state"] == "running"


def test_a_documenter_that_closes_its_output_and_lingers_is_killed_at_its_timeout(repo):
    use_fake(repo, "plain", documenterTimeout="1")
    repo.git("config", "cq.documenter", "exec >&- 2>&-; sleep 60")
    assert repo.cq("init").returncode == 0
    status = wait_until(lambda: (s := summaries(repo))["failed"] and s, what="the timeout")
    assert "timed out after 1s" in status["failed_files"][0]["error"]
    wait_until(lambda: documenters_of(repo) == [], what="the documenter to be gone")


def test_what_a_documenter_leaves_running_in_the_background_is_killed(repo):
    repo.git("config", "cq.documenter", "(sleep 60 &); echo summarised")
    assert repo.cq("init").returncode == 0
    wait_summarised(repo)
    wait_until(lambda: documenters_of(repo) == [], what="the background sleep to be gone")


def test_a_call_that_succeeds_during_a_limit_does_not_lift_it(repo):
    use_fake(repo, "slow-or-limit", documenterJobs="2")
    assert repo.cq("init").returncode == 0
    repo.commit({"slow.py": module(1)})
    wait_until(lambda: documenters_of(repo), what="slow.py in flight")
    repo.commit({"other.py": module(2)})  # meets the limit while slow.py is in flight
    wait_until(lambda: show(repo, "slow.py")["summary_by"] != "built-in", what="slow.py")
    status = summaries(repo)
    assert status["paused_until"] and status["paused_until"] > time.time() + 3000


def test_a_new_index_schema_keeps_the_answers_paid_for(repo):
    calls = use_fake(repo, "plain")
    assert repo.cq("init").returncode == 0
    wait_summarised(repo)
    with contextlib.closing(sqlite3.connect(repo.state / "index.db")) as db:
        db.execute("PRAGMA user_version = 1")  # as if an older cq had made it
        db.commit()
    proc = repo.cq("index", "--wait")
    assert proc.returncode == 0 and "summaries complete: 1 done" in proc.stdout
    assert calls_in(calls) == ["README.md"]
    assert summaries(repo)["calls"] == 1


def test_the_daily_budget_stops_calls_until_tomorrow(repo):
    calls = use_fake(repo, "cost=0.4", documenterJobs="1", documenterBudget="1")
    repo.commit({f"m{i}.py": module(i) for i in range(5)})
    assert repo.cq("init").returncode == 0
    status = wait_until(lambda: (s := summaries(repo))["paused_until"] and s, what="the budget")
    assert "budget" in status["pause_reason"]
    tomorrow = datetime.datetime.combine(datetime.date.today() + datetime.timedelta(days=1),
                                         datetime.time())
    assert status["paused_until"] == tomorrow.timestamp()
    time.sleep(2)
    assert len(calls_in(calls)) == 3 and summaries(repo)["cost_usd_today"] == pytest.approx(1.2)


def test_files_over_the_size_cap_keep_their_built_in_record_only(repo):
    calls = use_fake(repo, "plain", documenterMaxBytes="200")
    repo.commit({"big.py": module(1) * 20, "small.py": module(2)})
    assert repo.cq("init").returncode == 0
    status = wait_summarised(repo)
    assert status["too_large"] == 1 and "big.py" not in calls_in(calls)
    assert show(repo, "big.py")["summary_by"] == "built-in"
    assert "1 over cq.documenterMaxBytes" in repo.cq("index", "status").stdout


def test_estimate_counts_what_would_be_sent_and_sends_nothing(repo):
    repo.commit({"a.py": "x = 1\n", "b.py": "y = 22\n", "logo.png": b"\x89PNG\x00\x00"})
    assert repo.cq("init").returncode == 0
    before = repo.cq("index", "--estimate").stdout
    assert "not set: git config cq.documenter claude" in before
    assert "would send 3 files" in before  # README.md, a.py, b.py; the image is binary
    calls = use_fake(repo, "plain")
    wait_summarised(repo)
    after = repo.cq("index", "--estimate").stdout
    assert "would send 0 files" in after and "3 summarised before" in after
    assert len(calls_in(calls)) == 3


def test_no_content_is_sent_twice_across_restart_branches_and_rebuild(repo):
    calls = use_fake(repo, "plain")
    repo.commit({f"m{i}.py": module(i) for i in range(5)})
    assert repo.cq("init").returncode == 0
    wait_summarised(repo)
    assert repo.cq("worker", "restart").returncode == 0
    repo.git("checkout", "-q", "-b", "other")
    repo.commit({"m0.py": module(100)})
    wait_until(lambda: repo.index_status()["complete"] and summaries(repo)["pending"] == 0)
    repo.git("checkout", "-q", "main")
    wait_until(lambda: repo.index_status()["complete"] and summaries(repo)["pending"] == 0)
    proc = repo.cq("index", "--rebuild", "--wait")
    assert proc.returncode == 0 and "summaries complete: 6 done" in proc.stdout
    made = calls_in(calls)
    assert sorted(made) == sorted(["README.md", "m0.py", "m0.py", *(f"m{i}.py" for i in
                                                                    range(1, 5))])
    assert show(repo, "m3.py")["summary"] == "plain summary of m3.py"  # reused, not redone


def test_a_kill_9_during_calls_loses_nothing_and_repeats_only_the_calls_in_flight(repo):
    calls = use_fake(repo, "slow=1", documenterJobs="2")
    repo.commit({f"m{i}.py": module(i) for i in range(8)})
    assert repo.cq("init").returncode == 0
    wait_until(lambda: summaries(repo)["done"] >= 2, what="some summaries")
    killed = repo.worker_pid()
    # a call in flight, by the room it runs in (a process found first may end, room and all,
    # before the kill: the poll of every process's environment is slow under load)
    wait_until(lambda: list(Path(tempfile.gettempdir()).glob(f"cq-documenter-{killed}-*")),
               interval=0.01, what="a call in flight")
    os.kill(killed, signal.SIGKILL)
    wait_until(lambda: repo.status()["state"] == "dead", what="the worker to be dead")
    rooms = list(Path(tempfile.gettempdir()).glob(f"cq-documenter-{killed}-*"))
    assert rooms  # the directories its calls ran in: nobody removed them
    assert repo.cq("worker", "cleanup").returncode == 0
    assert repo.cq("worker", "start").returncode == 0
    assert not any(room.exists() for room in rooms)  # the next worker did
    status = wait_summarised(repo)
    assert status["done"] == 9 and status["failed"] == 0
    made = calls_in(calls)
    assert set(made) == {"README.md", *(f"m{i}.py" for i in range(8))}
    assert len(made) <= 9 + 2  # at most the documenterJobs calls in flight are repeated


def load_llm():
    """cq's external documenter module (cqlib.llm) from this checkout, for its pure functions."""
    sys.path.insert(0, str(ROOT))
    from cqlib import llm

    return llm


NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC


@pytest.mark.parametrize("text, expected", [
    (f"Claude AI usage limit reached|{int(NOW) + 600}", NOW + 600),
    ("HTTP 429 Too Many Requests; retry-after: 30", NOW + 30),
    ("API Error: 529 {\"type\":\"overloaded_error\"}", 0.0),
    ("Error: rate limit exceeded", 0.0),
    ("SyntaxError: invalid syntax at line 429x", None),
    ("the model is unavailable", None),
    ('Traceback (most recent call last):\n  File "x.py", line 429, in f\nKeyError: x', None),
    ("could not parse foo/429.txt", None),
    ("retry after 3 attempts failed", None),
    ("Weekly limit reached", 0.0),
    ("Credit balance is too low", 0.0),
    ("You've hit your limit · resets 1pm (Mars/Olympus)", 0.0),  # no such zone: back off
    ("usage limit exceeded\nsee the docs\nmore text\nand more", None),  # not the last lines
])
def test_limits_are_told_apart_from_failures(text, expected):
    assert load_llm().limit_in(text, NOW) == expected


def test_a_limit_that_resets_at_a_clock_time_means_the_next_such_time_in_its_zone():
    zoneinfo = pytest.importorskip("zoneinfo")
    try:
        berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip("no time zone database here")
    until = load_llm().limit_in("You've hit your limit · resets 1pm (Europe/Berlin)", NOW)
    assert datetime.datetime.fromtimestamp(until, berlin) == \
        datetime.datetime(2027, 1, 15, 13, 0, tzinfo=berlin)
    later = load_llm().limit_in("You've hit your limit · resets 3am (Europe/Berlin)", NOW)
    assert datetime.datetime.fromtimestamp(later, berlin) == \
        datetime.datetime(2027, 1, 16, 3, 0, tzinfo=berlin)  # 3am there has passed today
    weekly = load_llm().limit_in("Opus weekly limit reached ∙ resets Jan 20, 1pm "
                                "(Europe/Berlin)", NOW)
    assert datetime.datetime.fromtimestamp(weekly, berlin) == \
        datetime.datetime(2027, 1, 20, 13, 0, tzinfo=berlin)
    assert load_llm().limit_in("You've hit your limit · resets 8am (Europe/Berlin)", NOW) == 0.0
    # 8am there was an hour ago: the limit has just reset, so back off, do not wait a day


def test_claude_answers_give_summary_notes_and_cost_or_a_limit():
    llm = load_llm()
    inner = '```json\n{"summary": "Parses config.", "symbols": {"load": "Reads it."}}\n```'
    answer = llm.parse_answer(json.dumps({"type": "result", "is_error": False, "result": inner,
                                         "total_cost_usd": 0.0123}), NOW)
    assert (answer.summary, answer.notes, answer.cost) == ("Parses config.",
                                                           {"load": "Reads it."}, 0.0123)
    with pytest.raises(llm.LimitReached):
        llm.parse_answer(json.dumps({"is_error": True, "result": "Claude AI usage limit "
                                    f"reached|{int(NOW) + 60}"}), NOW)
    with pytest.raises(llm.CqError, match="reported an error: boom"):
        llm.parse_answer(json.dumps({"is_error": True, "result": "boom"}), NOW)
    with pytest.raises(llm.CqError, match="error_max_turns"):
        llm.parse_answer(json.dumps({"is_error": False, "subtype": "error_max_turns",
                                    "result": ""}), NOW)
    with pytest.raises(llm.CqError, match="empty result"):
        llm.parse_answer(json.dumps({"is_error": False, "subtype": "success", "result": ""}),
                        NOW)
    assert llm.parse_answer("A plain summary.\n", NOW).summary == "A plain summary."
