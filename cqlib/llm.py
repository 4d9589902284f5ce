"""The external documenter (`cq.documenter`): the Claude Code preset or any command.

Owns: running it on one file (in an empty directory of its own, in its own session, with a
timeout and an output cap; whatever it starts goes with it), the preset's prompt and argv,
the key of its settings (a new model or prompt summarises again, a new path to the same CLI
does not), parsing its answer, and telling a usage, spend or rate limit (which pauses every
call until it resets) from a failure (which is one file's).
Must not: rank or store (the summarizer and index/summaries.py do).
"""

from __future__ import annotations

import itertools
import os
import stat
import time

from cqlib.config import Config
from cqlib.detector import process_exists
from cqlib.errors import CqError
from cqlib.gitio import scrubbed_env
from cqlib.lifecycle import (
    RUNNING_DOCUMENTERS,
    Shutdown,
    WorkerStopping,
    kill_marked,
    kill_process_group,
)
from cqlib.state import Repo

SUMMARY_PROMPT_VERSION = 1  # part of every summary's key: a new prompt summarises again
SUMMARY_PROMPT = """\
You are writing the entry for one file in a code search index.  The file {path} ({language}) \
follows the line of dashes.  Answer with one JSON object and nothing else:
{{"summary": "what the file is for, in one to three sentences",
 "symbols": {{"a main definition, named as in the file": "what it does, in one sentence"}}}}
Name at most 20 definitions.
----
"""
DOCUMENTER_OUTPUT_CAP = 1 << 20  # bytes of stdout and stderr together; more is a failure
EXIT_GRACE = 0.25  # seconds the output of a documenter that has ended is read for
CALLS = itertools.count(1)  # numbers the calls of this process, for the mark of each
BAD_COST = float("inf")  # the cost of a call whose answer gave one that cannot be true
SUMMARY_CHARS = 4000
NOTE_CHARS = 400
MOST_NOTES = 100
BACKOFF_CAP = 3600.0  # seconds: the longest pause when a limit gives no reset time
STATED_RESET_CAP = 8 * 86400.0  # a stated reset further away than this is not believed

# Usage, spend and rate limits as Claude Code and HTTP APIs word them (see DESIGN-NOTES),
# looked for in the last lines a failing documenter printed only.
LIMIT_EPOCH = r"usage limit reached\|(\d{9,11})"
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
LIMIT_CLOCK = (r"limit[^\n]*?\bresets?\s+(?:on\s+)?(?:(" + "|".join(MONTHS) +
               r")[a-z]*\.?\s+(\d{1,2}),?\s+)?(?:at\s+)?(\d{1,2})(?::(\d{2}))?\s*(am|pm)?"
               r"(?:\s*\(([^)\n]+)\))?")
LIMIT_RETRY_AFTER = r"retry[- ]after\W{1,3}(\d{1,6})\b"
LIMIT_WORDS = (r"\b(?:hit|reached) (?:your |the )?(?:\w+ )?limit\b|\blimit reached\b|"
               r"usage limit|spend(?:ing)? limit|rate[ _-]?limit|too many requests|"
               r"credit balance is too low|\boverloaded\b|"
               r"\b(?:status|http|error|code)\W{0,3}(?:429|529)\b|^\s*(?:429|529)\b")
LIMIT_LINES = 3  # of the documenter's output, from the end
JUST_PASSED = 7200.0  # seconds: a stated reset this recent means now, not the same time tomorrow


class LimitReached(Exception):
    """The documenter hit a usage, spend or rate limit: no call can succeed until `until`
    (None when the message names no time)."""

    def __init__(self, message: str, until: float | None, cost: float | None = None):
        super().__init__(message)
        self.until, self.cost = until, cost


class DocumenterFailed(CqError):
    """The external documenter failed on one file (what the call cost, if it said)."""

    def __init__(self, message: str, cost: float | None = None):
        super().__init__(message)
        self.cost = cost


class DocumenterBroken(DocumenterFailed):
    """The external documenter cannot run at all (not any one file's fault)."""


class Answer:
    """What an external documenter said about one file, and what the call cost (in US
    dollars and tokens, where it reports them)."""

    def __init__(self, summary: str, notes: dict, cost: float | None, tokens: int = 0):
        self.summary, self.notes, self.cost, self.tokens = summary, notes, cost, tokens


class ExternalDocumenter:
    """The documenter `cq.documenter` names: `claude` (or a path ending in `/claude`) is the
    Claude Code preset; anything else is a shell command that reads the file on stdin."""

    def __init__(self, config: Config):
        import hashlib
        import json

        command = config.documenter.strip()
        program = os.path.expanduser(command)
        # `claude`, or the path to it (spaces and all): a path to any other file, or words
        # after the program, make a shell command.
        self.preset = command == "claude" or (os.path.basename(program) == "claude" and
                                              os.path.isfile(program))
        self.program, self.command, self.model = program, command, config.documenter_model
        self.name = f"claude ({self.model or 'its default model'})" if self.preset else \
            command if len(command) <= 48 else command[:47] + "\u2026"
        # What decides an answer: a different prompt or model must summarise again, a new
        # path to the same CLI must not.
        what = ["claude", self.model, SUMMARY_PROMPT_VERSION] if self.preset else \
            ["command", command, self.model]
        self.key = hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]

    def argv(self) -> list[str]:
        """The program and its arguments."""
        if self.preset:  # one turn: an answer, no tool calls on the content's say-so
            model = ["--model", self.model] if self.model else []
            return [self.program, "-p", "--output-format", "json", "--max-turns", "1", *model]
        return ["/bin/sh", "-c", self.command]

    def stdin(self, path: str, language: str, data: bytes) -> bytes:
        """What the program reads: the preset's prompt and the file, or the file alone."""
        if not self.preset:
            return data
        return SUMMARY_PROMPT.format(path=path, language=language or "text").encode() + data


def external_documenter(config: Config) -> ExternalDocumenter | None:
    """The configured external documenter, if any."""
    return ExternalDocumenter(config) if config.documenter.strip() else None


def call_documenter(repo: Repo, config: Config, documenter: ExternalDocumenter, path: str,
                    language: str, data: bytes) -> Answer:
    """Run the external documenter on one file and parse its answer.  Raises LimitReached
    for a limit, WorkerStopping when the worker stops under it, DocumenterFailed otherwise."""
    import shutil
    import tempfile

    # CQ_STATE_DIR and CQ_WORKER_PID mark it as ours for `cq worker cleanup` after a kill -9.
    env = dict(scrubbed_env(), CQ_PATH=path, CQ_LANGUAGE=language, CQ_MODEL=documenter.model,
               CQ_STATE_DIR=repo.state_dir, CQ_WORKER_PID=str(os.getpid()))
    # An empty directory of its own, outside the repository: an agent CLI reads instructions
    # (CLAUDE.md, settings) from where it runs and above, and those must not come from the
    # working tree of a stranger's clone.
    room = tempfile.mkdtemp(prefix=f"{ROOM_PREFIX}{os.getpid()}-")
    try:
        code, out, err = run_bounded(documenter.argv(), documenter.stdin(path, language, data),
                                     env, room, config.documenter_timeout)
    finally:
        shutil.rmtree(room, ignore_errors=True)
    if code != 0:
        for stream in (out, err):  # a limit is the CLI's last word on one of them
            tail = stream[-4000:].decode(errors="replace")
            limit = limit_in(tail, time.time())
            if limit is not None:
                raise LimitReached(last_line(tail), limit or None)
        detail = last_line(err[-4000:].decode(errors="replace"))
        raise DocumenterFailed(f"cq.documenter exited with status {code}"
                               + (f": {detail}" if detail else ""))
    return parse_answer(out.decode(errors="replace"), time.time(), documenter.preset)


ROOM_PREFIX = "cq-documenter-"  # + the worker's PID: the empty directory a call runs in


def remove_stale_rooms() -> None:
    """Remove the directories calls of workers now dead ran in (a kill -9 leaves them)."""
    import shutil
    import tempfile

    base = tempfile.gettempdir()
    for name in os.listdir(base):
        pid = name[len(ROOM_PREFIX):].split("-", 1)[0] if name.startswith(ROOM_PREFIX) else ""
        if not pid.isdigit() or process_exists(int(pid)):
            continue
        path = os.path.join(base, name)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid():
            shutil.rmtree(path, ignore_errors=True)


def last_line(text: str) -> str:
    """The last non-empty line of a program's output, shortened."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def run_bounded(argv: list[str], data: bytes, env: dict, cwd: str,
                timeout: float) -> tuple[int, bytes, bytes]:
    """Run a documenter in its own session: feed it data, collect at most
    DOCUMENTER_OUTPUT_CAP bytes of output within timeout, and kill it past either.  Whatever
    it started in the background goes with it when it ends."""
    import subprocess
    import threading

    mark = f"{os.getpid()}-{next(CALLS)}"  # in the environment of all it starts
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=dict(env, CQ_CALL=mark), cwd=cwd,
                                start_new_session=True)
    except OSError as exc:
        raise DocumenterBroken(f"cannot run cq.documenter ({argv[0]}): {exc.strerror}") \
            from exc
    RUNNING_DOCUMENTERS.add(proc.pid)
    if Shutdown.requested:  # set after the caller looked: the stop may have missed us
        kill_process_group(proc.pid)
    threading.Thread(target=feed, args=(proc.stdin, data), daemon=True).start()
    chunks: dict = {proc.stdout: [], proc.stderr: []}
    deadline = time.monotonic() + timeout
    try:
        problem = collect_output(chunks, proc.pid, deadline, timeout)
        while not problem and not exited(proc.pid):  # it closed its output but runs on
            if time.monotonic() > deadline:
                problem = f"timed out after {timeout:g}s"
            time.sleep(0.02)
        kill_process_group(proc.pid)  # the leader, dead or alive, still holds the group id
        code = proc.wait()
    finally:
        RUNNING_DOCUMENTERS.discard(proc.pid)
        kill_marked("CQ_CALL", mark)  # what it started in a session of its own (setsid)
        proc.stdout.close()
        proc.stderr.close()
    if Shutdown.requested:
        raise WorkerStopping
    if problem:
        raise DocumenterFailed(f"cq.documenter {problem}")
    return code, b"".join(chunks[proc.stdout]), b"".join(chunks[proc.stderr])


def collect_output(chunks: dict, pid: int, deadline: float, timeout: float) -> str:
    """Read the streams in chunks (stream -> list) until both end, or the documenter (pid)
    has ended and EXIT_GRACE passed (what it left running may hold its output open: the
    answer is in); what went wrong if the output passed DOCUMENTER_OUTPUT_CAP or the deadline
    came first, else ''."""
    import selectors

    ended_at = None
    with selectors.DefaultSelector() as selector:
        for stream in chunks:
            selector.register(stream, selectors.EVENT_READ)
        while selector.get_map():
            now = time.monotonic()
            if ended_at is None and exited(pid):
                ended_at = now
            if ended_at is not None and now - ended_at > EXIT_GRACE:
                break
            left = deadline - now
            if left <= 0:
                return f"timed out after {timeout:g}s"
            for key, _ in selector.select(min(left, 0.1)):
                chunk = os.read(key.fileobj.fileno(), 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                chunks[key.fileobj].append(chunk)
            if sum(len(c) for part in chunks.values() for c in part) > DOCUMENTER_OUTPUT_CAP:
                return f"printed more than {DOCUMENTER_OUTPUT_CAP >> 20} MiB"
    return ""


def exited(pid: int) -> bool:
    """True once a child has ended (it stays a zombie, unreaped, so its id stays ours)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def feed(stream, data: bytes) -> None:
    """Write data to a child's stdin and close it; a child that stops reading is its business."""
    try:
        stream.write(data)
    except OSError:
        pass
    finally:
        try:
            stream.close()
        except OSError:
            pass


def parse_answer(text: str, now: float, preset: bool = False) -> Answer:
    """An answer from the documenter's stdout: Claude Code's JSON (`result`, `is_error`,
    `total_cost_usd`), cq's JSON (`summary`, optional `symbols`), or plain text; the preset's
    must be Claude Code's JSON (anything else is a failed call, never a summary)."""
    import json

    obj = json_object(text)
    if preset and (obj is None or ("result" not in obj and obj.get("type") != "result")):
        raise DocumenterFailed(f"the claude CLI did not answer with its JSON: "
                               f"{last_line(text[-4000:]) or 'nothing'}")
    if obj is None:
        if not text.strip():
            raise DocumenterFailed("cq.documenter printed nothing")
        return summary_of(text, None)
    if "result" in obj or obj.get("type") == "result":
        result = obj.get("result") if isinstance(obj.get("result"), str) else ""
        subtype = str(obj.get("subtype") or "")
        cost = reported_cost(obj, "total_cost_usd")
        if obj.get("is_error") or subtype.startswith("error"):
            limit = limit_in(result, now)
            if limit is not None:
                raise LimitReached(last_line(result), limit or None, cost)
            raise DocumenterFailed(f"cq.documenter reported an error: "
                                   f"{last_line(result) or subtype or 'no detail'}", cost)
        if not result.strip():
            raise DocumenterFailed(f"cq.documenter answered with an empty result "
                                   f"({subtype or 'no subtype'})", cost)
        answer = summary_of(result, cost)
        usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
        answer.tokens = sum(v for k, v in usage.items() if k.endswith("tokens") and
                            isinstance(v, int) and not isinstance(v, bool))
        return answer
    if isinstance(obj.get("summary"), str):
        return summary_of(json.dumps(obj), reported_cost(obj, "cost_usd"))
    raise DocumenterFailed("cq.documenter answered JSON with neither `summary` nor `result`")


def reported_cost(obj: dict, key: str) -> float | None:
    """The US dollars an answer says the call cost: None where it says nothing, BAD_COST
    where it says something that is not a finite, non-negative number (NaN, -50, "free")."""
    import math

    if key not in obj:
        return None
    value = obj[key]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and \
            math.isfinite(value) and value >= 0:
        return float(value)
    return BAD_COST


def json_object(text: str) -> dict | None:
    """The JSON object text holds (allowing a fenced code block around it), if it is one."""
    import json

    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[-1].rsplit("```", 1)[0].strip()
    if not body.startswith("{"):
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def summary_of(text: str, cost: float | None) -> Answer:
    """A summary and per-symbol notes from a model's text: cq's JSON shape, else prose."""
    obj = json_object(text)
    if obj is None or not isinstance(obj.get("summary"), str):
        return Answer(text.strip()[:SUMMARY_CHARS], {}, cost)
    symbols = obj.get("symbols") or obj.get("notes") or {}
    if isinstance(symbols, list):  # [{"name": ..., "note": ...}, ...]
        symbols = {s.get("name"): s.get("note") or s.get("summary") for s in symbols
                   if isinstance(s, dict)}
    notes = {str(k)[:200]: str(v).strip()[:NOTE_CHARS] for k, v in symbols.items()
             if isinstance(symbols, dict) and k and isinstance(v, str) and v.strip()}
    return Answer(obj["summary"].strip()[:SUMMARY_CHARS],
                  dict(list(notes.items())[:MOST_NOTES]), cost)


def limit_in(text: str, now: float) -> float | None:
    """If the last lines of text report a usage, spend or rate limit: when it resets (epoch
    seconds), or 0.0 when that is not said (or not believable).  None if not a limit."""
    import re

    lines = [line for line in text.splitlines() if line.strip()][-LIMIT_LINES:]
    tail = "\n".join(lines)
    match = re.search(LIMIT_EPOCH, tail, re.IGNORECASE)
    if match and now < int(match.group(1)) <= now + STATED_RESET_CAP:
        return float(match.group(1))
    match = re.search(LIMIT_CLOCK, tail, re.IGNORECASE)
    if match:
        month, day, hour, minute, half, zone = match.groups()
        until = next_clock_time(now, int(hour), int(minute or 0), (half or "").lower(), zone,
                                MONTHS.index(month.lower()[:3]) + 1 if month else None,
                                int(day) if day else None)
        if until is not None:
            return until
    limited = re.search(LIMIT_WORDS, tail, re.IGNORECASE | re.MULTILINE)
    match = re.search(LIMIT_RETRY_AFTER, tail, re.IGNORECASE)
    if limited and match:
        return now + min(float(match.group(1)), STATED_RESET_CAP)
    return 0.0 if limited else None


def next_clock_time(now: float, hour: int, minute: int, half: str, zone: str | None,
                    month: int | None = None, day: int | None = None) -> float | None:
    """The next moment after now that a clock in zone (local time if none is named) shows
    hour:minute (with am/pm, on month/day if given).  None where that is no time, the zone
    is unknown here, or the moment has only just passed (the limit has just reset)."""
    import datetime

    if half:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if half == "pm" else 0)
    if hour > 23 or minute > 59:
        return None
    tz = None
    if zone:
        try:
            import zoneinfo

            tz = zoneinfo.ZoneInfo(zone.strip())
        except (ImportError, ValueError, KeyError, OSError):
            return None  # a guess in the wrong zone could be a day off: back off instead
    current = datetime.datetime.fromtimestamp(now, tz)
    try:
        at = current.replace(month=month or current.month, day=day or current.day, hour=hour,
                             minute=minute, second=0, microsecond=0)
    except ValueError:  # February 30th
        return None
    if at <= current:
        if current.timestamp() - at.timestamp() < JUST_PASSED:
            return None
        at = at.replace(year=at.year + 1) if month else at + datetime.timedelta(days=1)
    until = at.timestamp()
    return until if until - now <= STATED_RESET_CAP else None


def backoff_seconds(config: Config, strikes: int) -> float:
    """The pause after `strikes` limits (with no stated reset) or breaker trips in a row."""
    base = config.documenter_backoff
    return min(base * 2 ** min(strikes - 1, 30), max(BACKOFF_CAP, base))


def next_midnight(now: float) -> float:
    """The start of the next local day, when a daily budget starts afresh."""
    import datetime

    day = datetime.datetime.fromtimestamp(now).date() + datetime.timedelta(days=1)
    return datetime.datetime.combine(day, datetime.time()).timestamp()
