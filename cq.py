"""cq: keep a searchable documentation index of a git repository fresh in the background.

This file is the door: the command line (argparse, and a fast path without it for the three
commands run most), output formatting, and exit codes.  The work is done by the cqlib package
beside it, one module per concern, each importing only those above it in this list, in the
order data flows through them:

  errors      CqError, the one exception a user sees as a line; exit codes (LSB for status)
  text        how text leaves cq: file names' bytes, terminals, JSON, one-line messages
  state       the state directory under the git dir: safe files, pid records, the worker log
  gitio       every git call, hook variables scrubbed; blobs read through `git cat-file`
  config      the cq.* keys of git config -> Config (never a file in the working tree)
  detector    is the worker alive: the flock on its pid file, /proc identity, pidfd signals
  lifecycle   what the worker's threads share: the stop flag, progress, problems, activity
  control     start and wake the worker; `cq index --repair` spawned detached
  hooks       the copy-in hook scripts: install, chain, uninstall, and `cq hook run`
  words       identifier parts, stems' marks, the words of files and paths
  documenters bytes -> language, summary, definitions, words (one file per language family)
  llm         the external documenter (cq.documenter): calls, limits, answers
  index/      SQLite + FTS5, the only SQL: schema, store, summaries, search queries
  spelling    a misspelt query word -> the index's nearest word (typing slips, its vocabulary)
  search      query -> terms -> candidates -> ranked hits (weights and priors as tables)
  overlay     the working tree laid over the index: edited, new and deleted files
  status      opening the index to read; where it stands for a worktree (CLI and MCP alike)
  reader      what an assistant reads: a file's lines, a definition's body, an outline
  hits        a search hit as answers show it: its lines, twins folded, freshness
  references  where a name is used, line by line, grouped by the definition it is in
  changes     the files and definitions that changed since a commit and in the working tree
  pool        documenting processes, so every core works while the worker writes
  pipeline    what tasks do: sync a worktree's map, the lexical and full passes, reconcile
  queue       Huey (the only module that imports it): the tasks and the consumer
  sharing     the external documenter's answers between clones, as git notes (cq share)
  summarizer  the external documenter's threads, pauses and budget; background sharing
  maintenance stop, clean up after a crash, repair a damaged database
  worker      the worker process: consumer, heartbeat, wake-up FIFO, shutdown order
  tools       the MCP tools: name -> schemas, handler and the text an answer reads as
  mcp         the index served to AI assistants (Model Context Protocol), stdio and HTTP

How the parts fit: git hooks (``hooks/``) fire after every change to HEAD and run ``cq hook
run`` in the background, which marks the worktree moved and pokes the worker; the worker (a
Huey consumer holding an flock for its whole life) syncs the worktree's path -> blob map and
documents each new blob once, into index.db; ``cq search``, ``cq show`` and ``cq mcp`` read
it.  The index, not the queue, is the source of truth, so a task lost to ``kill -9`` is found
again by the next reconciliation.  All state lives in ``$(git rev-parse --git-common-dir)/cq``.

The hot paths (``hook run``, ``worker status``, ``search``) import only what they use:
``worker status`` errors, text, state, gitio and detector; ``hook run`` config, control and
hooks besides (none of them sqlite3 or Huey).  Each command imports the rest when it runs.
``build_zipapp.py`` bundles this file, cqlib and Huey into one ``cq.pyz``.
"""

from __future__ import annotations

import errno
import os
import sys
import time

from cqlib import VERSION
from cqlib.detector import probe_worker, worker_status_report
from cqlib.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, STATUS_UNKNOWN, CqError
from cqlib.gitio import head_commit, hooks_dir, locate_repo, start_head_commit, work_tree
from cqlib.state import (
    DOCUMENTING_PROCESS,
    LOG_FILE,
    PYTHON_FILE,
    PYZ_COPY,
    Repo,
    append_hook_log,
    ensure_state_dir,
    mark_moved,
    open_state_file,
    running_archive,
    symlink_refused,
    tail_lines,
    write_state_file,
)
from cqlib.text import display, json_text, named_path, one_line

TYPE_CHECKING = False  # typing is not imported at run time: hooks start lean
if TYPE_CHECKING:
    from cqlib.index.store import Index


def print_json(value: object) -> None:
    """Print machine-readable output, as ASCII (file names made text by the caller: see
    named_path)."""
    print(json_text(value, indent=2, ascii_only=True))


def human_seconds(seconds: float) -> str:
    """3725 -> '1h02m05s'."""
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def local_time(when: float) -> str:
    """A moment in local time: the time of day when it is today, else date and time."""
    shown = time.localtime(when)
    if time.strftime("%Y-%m-%d", shown) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", shown)
    return time.strftime("%Y-%m-%d %H:%M", shown)


def print_worker_status(report: dict, verbose: bool) -> None:
    """Human-readable status lines."""
    if report["state"] in ("running", "hung", "blocked"):
        print(f"worker: {report['state']} (PID {report['pid']}, up "
              f"{human_seconds(report['uptime_seconds'] or 0)}, heartbeat "
              f"{report['heartbeat_age_seconds']}s ago)")
        print(f"queue: {report['queue_length']} pending; tasks: {report['tasks_done']} done, "
              f"{report['tasks_failed']} failed")
        if verbose:
            for item in report["current"] or []:
                print(display(f"working on: {item['task']} {item['detail']} "
                              f"(for {time.time() - item['since']:.1f}s)"))
            if not report["current"]:
                print("working on: nothing")
    else:
        print(f"worker: {report['state']}: {report['detail']}")
    if report["state"] in ("hung", "blocked"):
        print(f"warning: {report['detail']}")
    if report["documenter_paused"]:
        print(display(f"documenter: paused until {local_time(report['documenter_paused']['until'])}"
                      f" ({report['documenter_paused']['reason']})"))
    if report["sharing"]:
        age = human_seconds(time.time() - report["sharing"]["at"])
        print(display(f"sharing ({age} ago): {report['sharing']['message']}"))
    if report["problem"]:
        age = human_seconds(time.time() - report["problem"]["at"])
        print(display(f"problem ({age} ago): {report['problem']['message']}"))
    if report["last_hook_problem"]:
        print(f"last hook problem: {display(report['last_hook_problem'])}")
    if verbose:
        print(f"state: {report['state_dir']}")


def cmd_worker(args, repo: Repo) -> int:
    """cq worker start|run|stop|restart|status|logs|cleanup."""
    action = args.worker_command
    if action == "status":  # a hot path: nothing but the detector
        state = probe_worker(repo)
        if args.quiet:
            return state.code
        report = worker_status_report(repo, state)
        if args.json:
            print_json(report)
        else:
            print_worker_status(report, args.verbose)
        return state.code
    if action == "run":
        from cqlib.worker import run_worker

        return run_worker(repo, args.ready_fd)
    if action == "logs":
        return show_log(repo, args.lines, args.follow)
    from cqlib.control import start_worker
    from cqlib.maintenance import cleanup_worker, stop_worker

    if action == "cleanup":
        done = cleanup_worker(repo)
        print("\n".join(done) if done else "nothing to clean up")
        return EXIT_OK
    if action in ("stop", "restart"):
        print(stop_worker(repo, args.timeout, args.force))
    if action in ("start", "restart"):
        pid, already = start_worker(repo)
        print(f"the worker is already running (PID {pid})" if already
              else f"started the worker (PID {pid})")
    return EXIT_OK


def show_log(repo: Repo, lines: int, follow: bool) -> int:
    """cq worker logs [-n N] [-f]: the worker log's last lines, and what follows if asked."""
    path = repo.state_path(LOG_FILE)
    if follow:
        ensure_state_dir(repo)
        os.close(open_state_file(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND))
        try:
            follow_log(path, lines)
        except KeyboardInterrupt:
            pass
        return EXIT_OK
    for line in tail_lines(path, lines):
        print(display(line))
    return EXIT_OK


def follow_log(path: str, count: int) -> None:
    """Print the last lines, then follow the log across rotations until interrupted."""
    for line in tail_lines(path, count):
        print(display(line), flush=True)
    fd = open_state_file(path, os.O_RDONLY)
    inode, position = os.fstat(fd).st_ino, os.fstat(fd).st_size
    try:
        while True:
            data = os.pread(fd, 65536, position)
            if data:
                position += len(data)
                sys.stdout.write(display(data.decode(errors="replace"), keep_newlines=True))
                sys.stdout.flush()
                continue
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            if current is not None and current.st_ino != inode:
                # Rotated: drain what the old file still had (done above), then reopen.
                os.close(fd)
                fd = open_state_file(path, os.O_RDONLY)
                inode, position = os.fstat(fd).st_ino, 0
                continue
            if current is not None and current.st_size < position:
                position = 0
            time.sleep(0.1)
    finally:
        os.close(fd)


def cmd_hook(args, repo: Repo) -> int:
    """cq hook install|uninstall|status|run."""
    from cqlib.hooks import hook_states, install_hooks, run_hook, uninstall_hooks

    cwd = args.directory
    if args.hook_command == "run":
        try:
            run_hook(repo, args.name, args.args)
        except Exception as exc:  # noqa: BLE001 - a hook never fails git; status shows this
            append_hook_log(repo, f"{args.name}: {type(exc).__name__}: {exc}")
        return EXIT_OK
    if args.hook_command == "status":
        directory = hooks_dir(repo, cwd)
        print(f"hooks directory: {directory}")
        states = hook_states(directory)
        for name, state in states.items():
            print(f"{name}: {state}")
        set_up = os.path.isfile(repo.state_path(PYZ_COPY))
        if not set_up:
            print("cq is not set up in this repository: the hooks do nothing until you run "
                  "cq init")
        # 0 only when every hook is cq's current one and acts, so scripts can check it.
        return EXIT_OK if set_up and all(v.startswith("installed") for v in states.values()) \
            else EXIT_FAILURE
    done = install_hooks(repo, cwd) if args.hook_command == "install" else \
        uninstall_hooks(repo, cwd)
    print("\n".join(done) if done else "nothing to do: already as asked")
    return EXIT_OK


def print_summary_progress(counts: dict) -> None:
    """The external documenter's lines of `cq index status`."""
    shared = f" ({counts['shared']} by answers a clone shared)" if counts["shared"] else ""
    others = f", {counts['other_shards']} left to other shards" \
        if counts["other_shards"] else ""
    print(display(f"documenter {counts['name']}: {counts['done']} summarised{shared}, "
                  f"{counts['pending']} pending, {counts['failed']} failed, "
                  f"{counts['too_large']} over cq.documenterMaxBytes (built-in record only)"
                  f"{others}"))
    print(f"calls: {counts['calls_today']} today (${counts['cost_usd_today']:.2f}), "
          f"{counts['calls']} in all (${counts['cost_usd']:.2f})")
    if counts["paused_until"]:
        print(display(f"paused until {local_time(counts['paused_until'])}: "
                      f"{counts['pause_reason']}"))
    for item in counts["failed_files"][:20]:
        print(display(f"failed summary: {item['path']}: {item['error']}"))


PASSES = ("searchable", "documented")  # the progress bars of `cq index --wait`, in order
# A wait reads the index's counts at most this share of its time: at 50k files a reading
# takes 0.1 s of CPU, which a wait polling every 0.2 s took from the worker it waits for.
POLL_SHARE = 0.1
# Seconds between two readings.  A small index is read every 0.05 s, so a wait ends soon
# after its last file (on cq's own repository at most 0.07 s after it, against up to 0.2 s
# when the shortest pause was 0.2 s).
POLL_MIN, POLL_MAX = 0.05, 2.0


def wait_for_index(repo: Repo, timeout: float | None = None) -> dict:
    """Block until the index matches HEAD, drawing a progress bar on a terminal for each
    pass: until every file is searchable (by its words, at least), then documented."""
    from cqlib.index.database import NotIndexed
    from cqlib.status import read_index_state

    tty = sys.stdout.isatty()
    started = time.monotonic()
    first, phase = None, "searchable"
    while True:
        reading = time.monotonic()
        try:
            state = read_index_state(repo)
            counts, complete = state.report(), state.complete
        except NotIndexed:  # a moment before the worker has made the schema
            counts, complete = {"files": 0, "pending": 0, "lexical": 0, "searchable": False}, \
                False
        # The bars count the files there is work for: a skipped file never is documented.
        total = counts["files"] - sum(counts.get("skipped", {}).values())
        done = total - counts["pending"]  # documented, or failed
        progress = {"searchable": done + counts["lexical"], "documented": done}
        first = first or progress
        elapsed = max(time.monotonic() - started, 1e-3)
        last = {"searchable": complete or counts["searchable"], "documented": complete}
        bars = PASSES[PASSES.index(phase):] if total or complete else ()  # never "0/0 files"
        for name in bars:  # a finished pass's bar is drawn no more
            rate = (progress[name] - first[name]) / elapsed
            draw_progress(tty, name, progress[name], total, f"{rate:.0f} files/s", last[name])
            if not last[name]:
                break
            phase = "documented"
        if complete:
            return counts
        if timeout is not None and time.monotonic() - started > timeout:
            raise CqError("the index did not catch up in time (see: cq worker status)")
        require_worker(repo, "indexing")
        pause_after_reading(reading)


def pause_after_reading(started: float) -> None:
    """Sleep between two readings of a wait, so that reading takes at most POLL_SHARE of it
    (or a reading at least every POLL_MAX seconds, however long it takes)."""
    time.sleep(min(POLL_MAX, max(POLL_MIN, (time.monotonic() - started) * (1 / POLL_SHARE - 1))))


def draw_progress(tty: bool, label: str, done: int, total: int, rate: str, last: bool) -> None:
    """One progress bar line on a terminal (ended after the last one), nothing elsewhere."""
    if tty:
        bar = "#" * (30 * done // max(total, 1))
        sys.stdout.write(f"\r{label} [{bar:<30}] {done}/{total} files, {rate} " +
                         ("\n" if last else ""))
        sys.stdout.flush()


def require_worker(repo: Repo, doing: str) -> None:
    """Raise CqError if the worker, which a wait depends on, is no longer alive."""
    state = probe_worker(repo)
    if not state.alive:
        raise CqError(f"the worker stopped while {doing} ({state.detail}); see: cq worker logs")


def wait_for_summaries(repo: Repo) -> dict | None:
    """After the built-in pass: block until the external documenter has summarised every
    file it takes, or is paused (a limit, the breaker, the budget), with its own bar."""
    from cqlib.summarizer import read_summary_progress

    tty = sys.stdout.isatty()
    while True:
        reading = time.monotonic()
        counts = read_summary_progress(repo)
        if counts is None:
            return None
        total = counts["done"] + counts["pending"] + counts["failed"]
        last = counts["pending"] == 0 or bool(counts["paused_until"])
        draw_progress(tty, "summaries", total - counts["pending"], total,
                      f"{counts['calls_today']} calls today", last)
        if last:
            return counts
        require_worker(repo, "summarising")
        pause_after_reading(reading)


def cmd_init(args, repo: Repo) -> int:
    """Set up cq in a repository: copy cq.pyz, install hooks, start the worker, index HEAD."""
    from cqlib.config import load_config
    from cqlib.control import mark_all_moved, start_worker, wake_worker
    from cqlib.hooks import install_hooks
    from cqlib.index.store import create_index
    from cqlib.maintenance import stop_worker
    from cqlib.mcp import mcp_client_config
    from cqlib.status import runs_this_cq

    archive = running_archive()
    if not archive:
        raise CqError("cq init must run from the built cq.pyz (build it: python3 build_zipapp.py)")
    load_config(repo)  # a bad setting is reported here, as by every other command
    ensure_state_dir(repo)
    copy = repo.state_path(PYZ_COPY)
    if os.path.abspath(archive) != copy:
        with open(archive, "rb") as f:
            write_state_file(copy, f.read())
    write_state_file(repo.state_path(PYTHON_FILE), os.fsencode(sys.executable) + b"\n")
    state = probe_worker(repo)
    if state.alive and not runs_this_cq(state.record):
        print(stop_worker(repo, None, False))  # before its index is upgraded under it
    create_index(repo)  # the schema exists (or is upgraded) before anyone waits on it
    try:
        for line in install_hooks(repo, args.directory):
            print(f"hook {line}")
    except CqError as exc:  # the index works without hooks; reconciliation still catches up
        print(f"cq: warning: {exc}", file=sys.stderr)
    pid, _ = start_worker(repo, archive=copy)  # the copy, so that hooks and worker agree
    print(f"worker running (PID {pid})")
    mark_all_moved(repo)
    wake_worker(repo, start=False)
    if args.no_wait:
        print("indexing in the background (see: cq index status)")
        return EXIT_OK
    counts = wait_for_index(repo)
    print(f"indexed {counts['documented']} files at {(counts['head'] or 'no commit')[:12]} "
          f"({sum(counts['skipped'].values())} skipped, {counts['failed']} failed)")
    command, _ = mcp_client_config(repo, "claude", work_tree(args.directory) or
                                   repo.common_dir)
    print(f"for Claude Code: {command}")
    return EXIT_OK


def cmd_index(args, repo: Repo) -> int:
    """cq index [--wait] [--rebuild] [--estimate] [--repair] | cq index status [--json]."""
    from cqlib.config import config_or_defaults
    from cqlib.control import mark_all_moved, wake_worker

    if args.index_command == "status":
        return show_index_status(repo, args.json)
    shard = None
    if args.shard is not None:
        from cqlib.config import parse_shard

        shard = parse_shard(args.shard)
    if args.estimate:  # (of the shard asked for, which it does not keep)
        from cqlib.summarizer import estimate_summaries

        config = config_or_defaults(repo)
        config.documenter_shard = shard or config.documenter_shard
        print(format_estimate(estimate_summaries(repo, config)))
        return EXIT_OK
    if shard:  # kept before the worker is woken: it summarises by it at once
        from cqlib.gitio import run_git

        run_git(["config", "--local", "cq.documenterShard", "/".join(map(str, shard))],
                repo.git_dir)
    if args.repair:
        from cqlib.maintenance import repair_databases

        done = repair_databases(repo)
        print("\n".join(done) if done else "index.db and queue.db are sound")
        return EXIT_OK
    from cqlib.index.store import Index

    ensure_state_dir(repo)
    with Index(repo) as index:
        if args.rebuild:
            index.clear()
    mark_all_moved(repo)
    wake_worker(repo, start=True)
    if not args.wait:
        print("queued; the worker is bringing the index to HEAD (see: cq index status)")
        return EXIT_OK
    counts = wait_for_index(repo)
    print(f"index complete: {counts['documented']} files documented, "
          f"{counts['failed']} failed" + (" (see: cq queue list)" if counts["failed"] else ""))
    summaries = wait_for_summaries(repo)
    if summaries and summaries["paused_until"]:
        print(display(f"summaries: {summaries['done']} done, {summaries['pending']} "
                      f"waiting: paused until {local_time(summaries['paused_until'])} "
                      f"({summaries['pause_reason']})"))
    elif summaries:
        print(f"summaries complete: {summaries['done']} done, {summaries['failed']} failed"
              f", {summaries['too_large']} too large")
    return EXIT_OK


def show_index_status(repo: Repo, as_json: bool) -> int:
    """cq index status [--json]: indexed versus HEAD, skipped and failed files, summaries."""
    from cqlib.status import open_index_to_read, read_index_state
    from cqlib.summarizer import read_summary_progress

    try:
        open_index_to_read(repo).close()
        state = read_index_state(repo, problems=True)
    except CqError as exc:  # not indexed yet, or being rebuilt
        if not as_json:
            raise
        print_json({"schema": 1, "indexed": False, "complete": False, "message": str(exc)})
        return EXIT_FAILURE
    counts = dict(state.report(), schema=1, indexed=True, complete=state.complete,
                  documenter=read_summary_progress(repo))
    if as_json:
        for listed in ("skipped_files", "failed_files", "partial_files"):
            counts[listed] = [{**f, **named_path(f["path"])} for f in counts[listed]]
        print_json(counts)
        return EXIT_OK
    print(f"HEAD {(counts['head'] or 'none')[:12]}, indexed at "
          f"{(counts['indexed_commit'] or 'nothing yet')[:12]}"
          f"{'' if state.complete else ' (catching up)'}")
    print(f"{counts['files']} files: {counts['documented']} documented, "
          f"{counts['pending']} pending, {counts['failed']} failed")
    if counts["lexical"]:
        print(f"lexical pass only: {counts['lexical']} of the pending files (searchable by "
              "their words; definitions come with the full pass)")
    for reason, n in sorted(counts["skipped"].items()):
        paths = [f["path"] for f in counts["skipped_files"] if f["reason"] == reason or
                 (reason == "excluded" and f["reason"].startswith("excluded"))]
        print(display(f"skipped ({reason}): {n}: {', '.join(paths[:5])}"
                      + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")))
    for reason, n in sorted(counts["partial"].items()):
        paths = [f["path"] for f in counts["partial_files"] if f["reason"] == reason]
        print(display(f"documented in part ({reason}): {n}: {', '.join(paths[:5])}"
                      + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")))
    for item in counts["failed_files"][:20]:
        print(display(f"failed: {item['path']}: {item['error']}"))
    if counts["failed"] > 20:
        print(f"... and {counts['failed'] - 20} more failed (see: cq queue list)")
    if counts["documenter"]:
        print_summary_progress(counts["documenter"])
    return EXIT_OK


def format_estimate(estimate: dict) -> str:
    """The lines of `cq index --estimate` (see estimate_summaries)."""
    unset = "" if estimate["set"] else " (not set: git config cq.documenter claude)"
    sent = estimate["bytes"]
    lines = [f"documenter: {estimate['documenter']}{unset}",
             (f"would send {estimate['send']} files, {sent} bytes (about {sent // 4} tokens "
              f"of file content, plus a prompt for each)"),
             (f"not sent: {estimate['done']} summarised before with these settings, "
              f"{estimate['shared']} answered by a clone that shared them (cq share fetch), "
              f"{estimate['other_shards']} left to other shards (cq.documenterShard), "
              f"{estimate['failed']} failed (sent again after cq queue retry), "
              f"{estimate['large']} over cq.documenterMaxBytes ({estimate['max_bytes']} "
              f"bytes), {estimate['other']} binary or skipped")]
    if not estimate["indexed"] and estimate["send"]:
        lines.append("(nothing is indexed yet: binary files are counted as text)")
    return "\n".join(lines)


def cmd_queue(args, repo: Repo) -> int:
    """cq queue [list|retry|purge]: what is queued or failed; retry failures; drop work."""
    from cqlib.control import wake_worker
    from cqlib.index.database import NotIndexed
    from cqlib.index.store import Index
    from cqlib.queue import queued_tasks, retry_failures, task_queue
    from cqlib.summarizer import read_summary_progress

    action = args.queue_command or "list"
    if action == "list":  # reads only: creates neither database
        tasks = queued_tasks(repo)
        print(f"{len(tasks)} queued task(s)")
        for name, detail in tasks:
            print(display(f"  {name} {detail}"))
        try:
            with Index(repo, readonly=True) as index:
                failures = index.failures()
        except NotIndexed:
            failures = []
        print(f"{len(failures)} failed file(s)")
        for failure in failures:
            print(display(f"  {failure.path} ({failure.blob[:12]}): {failure.error}"))
        try:
            summaries = read_summary_progress(repo)
        except NotIndexed:
            summaries = None
        if summaries:
            print(f"{summaries['failed']} failed summar{'y' if summaries['failed'] == 1 else 'ies'}"
                  f" by {summaries['name']}")
            for item in summaries["failed_files"]:
                print(display(f"  {item['path']}: {item['error']}"))
        return EXIT_OK
    ensure_state_dir(repo)
    if action == "retry":
        files, summaries = retry_failures(repo)
        print(f"queued {files} failed file(s) again")
        if summaries:
            print(f"{summaries} failed summar{'y' if summaries == 1 else 'ies'} "
                  "will be asked for again")
        wake_worker(repo, start=False)  # which wakes the summarizer too
        return EXIT_OK
    queue = task_queue(repo)
    count = queue.pending_count()
    if not args.yes:
        if not sys.stdin.isatty():
            raise CqError(f"refusing to drop {count} queued task(s) without --yes", EXIT_USAGE)
        answer = input(f"drop {count} queued task(s)? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing dropped")
            return EXIT_OK
    queue.purge()
    print(f"dropped {count} queued task(s); reconciliation queues again what HEAD still needs")
    return EXIT_OK


def repo_relative(repo: Repo, cwd: str, path: str) -> str:
    """A user's path (relative to cwd) as a path relative to the top of the working tree."""
    top = work_tree(cwd)
    if top is None:
        raise CqError("this repository has no working tree; give the path from its top")
    full = os.path.normpath(os.path.join(os.path.abspath(cwd), path))
    # Resolve the directories (cwd may be reached through a symlink) but not the file
    # itself, which may be a tracked symlink.
    full = os.path.join(os.path.realpath(os.path.dirname(full)), os.path.basename(full))
    rel = os.path.relpath(full, os.path.realpath(top))
    if rel.startswith(".."):
        raise CqError(f"{path} is outside the repository", EXIT_USAGE)
    return rel


def note_if_behind(repo: Repo, index: Index, head: str | None = None) -> None:
    """If the index is behind HEAD (read now, unless given: a move that fired no hook, or a
    commit a moment ago), say so on stderr and have the worker catch up now rather than at
    its next check."""
    from cqlib.control import wake_worker

    indexed = index.worktree_commit(repo.git_dir)
    head = head_commit(repo.git_dir) if head is None else head
    if indexed == head:
        return
    mark_moved(repo)
    catching_up = wake_worker(repo, start=False)
    print(f"cq: note: the index is at {(indexed or 'nothing')[:12]}, HEAD is at "
          f"{(head or 'no commit')[:12]}: results may be out of date"
          + ("; the worker is catching up" if catching_up else "; start the worker: "
             "cq worker start"), file=sys.stderr)


SEARCH_LIMIT_MAX = 10_000


def cmd_search(args, repo: Repo) -> int:
    """cq search QUERY: ranked results from this worktree's index."""
    from cqlib.config import config_or_defaults, start_config_read

    # The settings' and HEAD's git calls run while the search's modules (sqlite3 among them)
    # load, which takes longer than both calls.
    pending_config, pending_head = start_config_read(repo), start_head_commit(repo.git_dir)
    from cqlib.search import path_names_files, search
    from cqlib.spelling import correction_note
    from cqlib.status import await_head, open_index_to_read

    language = None
    if args.lang:  # (the language table is imported only where one is asked for)
        from cqlib.documenters import canonical_language

        language = canonical_language(args.lang)
    # (A typo in git config must not stop a search.)
    config = config_or_defaults(repo, pending_config)
    filters = {"path": args.path, "language": language, "tests": args.tests,
               "all_entries": args.all_entries, "demote": config.demote}
    with open_index_to_read(repo) as index:
        head = await_head(repo, index, config.mcp_wait_ms, config.autostart,  # as MCP waits
                          pending_head=pending_head)
        if args.worktree:
            from cqlib.overlay import WorktreeOverlay, search_worktree

            results = search_worktree(index, repo, " ".join(args.query),
                                      WorktreeOverlay(repo, config, args.directory),
                                      args.limit, **filters)
        else:
            results = search(index, repo.git_dir, " ".join(args.query), args.limit, **filters)
        if not results and args.path and not path_names_files(index, repo.git_dir, args.path):
            raise CqError(f"no indexed file is under --path {args.path} (a folder, path prefix "
                          "or glob from the repository's top; see: git ls-files)", EXIT_USAGE)
        note_if_behind(repo, index, head)
    corrected = correction_note(results)
    if corrected:
        print(f"cq: note: {corrected}", file=sys.stderr)
    if args.json:
        print_json([{**r, **named_path(r["path"])} for r in results])
        return EXIT_OK
    for r in results:
        edited = " (edited, not committed)" if r.get("edited") else ""
        by = f" (from the summary by {r['matched_summary_by']})" \
            if r.get("matched_summary_by") else ""
        print(display(f"{r['path']}:{r['line']}: {r['kind']} {r['symbol']}  {r['snippet']}"
                      f"{by}{edited}"))
    if not results:
        print("no results")
    return EXIT_OK


def cmd_show(args, repo: Repo) -> int:
    """cq show PATH: the stored documentation of one file at HEAD, as an outline."""
    from cqlib.config import config_or_defaults
    from cqlib.reader import Located, outline
    from cqlib.status import open_index_to_read

    rel = repo_relative(repo, args.directory, args.path)
    with open_index_to_read(repo) as index:
        doc = index.file_doc(repo.git_dir, rel)
        note_if_behind(repo, index)
    if doc is None:
        full = os.path.join(args.directory, args.path)
        if os.path.isdir(full):
            raise CqError(f"{rel} is a directory; show takes a file", EXIT_USAGE)
        raise CqError(f"{rel} is not in HEAD of this worktree (not committed, or a typo?); "
                      "see: git ls-files")
    if args.json:
        print_json({**doc, **named_path(doc["path"])})
        return EXIT_OK
    print(display(f"{doc['path']} ({doc['language'] or 'unknown'}, {doc['status']})"))
    if doc["summary"]:
        by = "" if doc["summary_by"] == "built-in" else f" (summary by {doc['summary_by']})"
        print(display(doc["summary"] + by, keep_newlines=True))
    config = config_or_defaults(repo)
    if config.documenter.strip() and doc["size"] > config.documenter_max_bytes:
        print(f"not sent to the external documenter: {doc['size']} bytes, over "
              f"cq.documenterMaxBytes ({config.documenter_max_bytes})")
    if doc["error"]:
        print(display(f"parse error: {doc['error']}"))
    found = outline(Located(rel, rel, doc, False), budget=1 << 40)
    if found.imports:
        print(display(f"  imports {found.imports}"))
    for item in found.entries:
        where = f"{item['line']}-{item['end']}" if item["end"] != item["line"] else \
            str(item["line"])
        print(display(f"  {where:>11}  {item['kind']:<9} "
                      f"{item.get('signature') or item['symbol']}"))
        if item.get("doc"):
            print(f"{'':24}{display(item['doc'])}")
    return EXIT_OK


class CliSession:
    """What a tool handler is given (see cqlib/tools.py) when the command line asks: this
    worktree, as the MCP server would see it from cwd, with no cap on an answer's size."""

    budget = 1 << 40
    counts = None

    def __init__(self, repo: Repo, cwd: str, index: Index):
        self.repo, self.cwd, self.index = repo, cwd, index
        self.settings, self.laid_over = None, None

    def config(self):
        """The settings (defaults where git config has a typo: a read must not fail)."""
        from cqlib.config import config_or_defaults

        if self.settings is None:
            self.settings = config_or_defaults(self.repo)
        return self.settings

    def open_index(self) -> Index:
        """The index, opened by the caller."""
        return self.index

    def overlay(self):
        """The working tree laid over the index (once per command)."""
        from cqlib.overlay import WorktreeOverlay

        if self.laid_over is None:
            self.laid_over = WorktreeOverlay(self.repo, self.config(), self.cwd)
        return self.laid_over

    def fresh_state(self, meta: dict, request_id, wait: bool = True):
        """Where the index stands, after the wait for HEAD that MCP makes too."""
        from cqlib.status import fresh_state

        config = self.config()
        return fresh_state(self.repo, self.index, config.mcp_wait_ms if wait else 0,
                           config.autostart)


def run_tool(args, repo: Repo, name: str, arguments: dict) -> int:
    """Answer a command with the MCP tool of that name: its JSON with --json, else the text
    its answer reads as."""
    from cqlib.status import open_index_to_read
    from cqlib.tools import TOOLS

    with open_index_to_read(repo) as index:
        answer = TOOLS[name].handler(CliSession(repo, args.directory, index),
                                     {k: v for k, v in arguments.items() if v is not None},
                                     {}, None)
    if args.json:
        print_json(answer)
    else:
        print(display(TOOLS[name].answer(answer), keep_newlines=True))
    return EXIT_OK


def cmd_read(args, repo: Repo) -> int:
    """cq read PATH [--lines A-B | --symbol NAME]: numbered lines of a file as it is now."""
    start, end = args.lines or (None, None)
    return run_tool(args, repo, "read", {
        "path": repo_relative(repo, args.directory, args.path), "symbol": args.symbol,
        "start": start, "end": end})


def cmd_refs(args, repo: Repo) -> int:
    """cq refs NAME [--path P]: where a name is used, grouped by definition."""
    return run_tool(args, repo, "references", {"name": args.name, "path": args.path})


def cmd_changes(args, repo: Repo) -> int:
    """cq changes [--since REF]: files and definitions changed since a ref, and now."""
    return run_tool(args, repo, "changes", {"since": args.since})


def line_range(argparse):
    """An argparse type: `A-B`, `A-` or `A` (1-based line numbers) -> (start, end)."""
    def convert(text: str) -> tuple:
        first, dash, last = text.partition("-")
        try:
            start, end = int(first), (int(last) if last else None) if dash else int(first)
        except ValueError:
            start = end = 0
        if start < 1 or (end is not None and end < start):
            raise argparse.ArgumentTypeError(f"expected lines A-B, A- or A (from 1), got "
                                             f"{text!r}")
        return start, end
    return convert


class HotArgs:
    """Parsed arguments of a hot-path command line (the fields argparse would have set)."""

    def __init__(self, **fields):
        self.__dict__.update({"version": False, "directory": ".", **fields})


def parse_hot_path(argv: list[str]) -> HotArgs | None:
    """`[-C DIR] worker status [--json|-v|-q]...`, `[-C DIR] hook run NAME [ARGS...]` and
    `[-C DIR] search [--] WORD...` parsed without argparse, whose import and parser set-up
    would double the run time of the first two and add a sixth to a search; None for
    anything else (argparse then handles it, errors included)."""
    directory = "."
    if argv[:1] == ["-C"] and len(argv) > 1:
        directory, argv = argv[1], argv[2:]
    if argv[:1] == ["search"]:
        marked = argv[1:2] == ["--"]  # after `--`, a word may start with a dash
        words = argv[2:] if marked else argv[1:]
        if not words or (not marked and any(w.startswith("-") for w in words)):
            return None
        return HotArgs(directory=directory, command="search", query=words, limit=10,
                       json=False, path=None, lang=None, tests=False, all_entries=False,
                       worktree=False)
    if argv[:2] == ["worker", "status"]:
        flags = {"--json": "json", "-v": "verbose", "--verbose": "verbose", "-q": "quiet",
                 "--quiet": "quiet"}
        if not set(argv[2:]) <= set(flags):
            return None
        chosen = {flags[f] for f in argv[2:]}
        return HotArgs(directory=directory, command="worker", worker_command="status",
                       **{name: name in chosen for name in ("json", "verbose", "quiet")})
    if argv[:2] == ["hook", "run"] and len(argv) > 2 and not argv[2].startswith("-"):
        return HotArgs(directory=directory, command="hook", hook_command="run", name=argv[2],
                       args=argv[3:])
    return None


def command_words(argv: list[str]) -> list[str]:
    """The positional words of a command line (skipping options and -C's value)."""
    words, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "-C":
            skip = True
        elif not arg.startswith("-"):
            words.append(arg)
    return words


def bounded(argparse, kind, low: float, high: float, what: str):
    """An argparse type: a number of `kind` from low to high (NaN and infinities refused)."""
    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return convert


def cli_spec(argparse) -> dict:
    """Every command: name -> (help, arguments, actions), each action -> (help, arguments);
    an argument is (flags, keyword arguments of add_argument)."""
    json_flag = (("--json",), {"action": "store_true", "help": "machine-readable output"})
    remote = (("remote",), {"nargs": "?", "metavar": "REMOTE", "help": "a remote's name or "
                            "URL (default: git config cq.shareRemote, else origin)"})
    seconds = bounded(argparse, float, 0, 86400, "seconds from 0 to 86400")
    stop_args = [(("--timeout",), {"type": seconds, "metavar": "S",
                                   "help": "seconds to wait for a graceful stop"}),
                 (("--force",), {"action": "store_true", "help": "SIGKILL if it will not stop"})]
    return {
        "init": ("set up cq here and index HEAD", [
            (("--no-wait",), {"action": "store_true", "help": "return without waiting"})], {}),
        "worker": ("start, stop and inspect the worker", [], {
            "start": ("start the worker in the background", []),
            "run": ("run the worker in the foreground", [
                (("--ready-fd",), {"type": int, "help": argparse.SUPPRESS})]),
            "stop": ("stop the worker", stop_args),
            "restart": ("restart the worker", stop_args),
            "status": ("is the worker alive (LSB exit codes)", [
                json_flag,
                (("-v", "--verbose"), {"action": "store_true", "help": "show current work"}),
                (("-q", "--quiet"), {"action": "store_true", "help": "exit code only"})]),
            "logs": ("show the worker log", [
                (("-n",), {"dest": "lines", "default": 20, "metavar": "N",
                           "type": bounded(argparse, int, 0, 10**6, "0 to 1000000 lines"),
                           "help": "lines to show (default 20)"}),
                (("-f", "--follow"), {"action": "store_true", "help": "keep following"})]),
            "cleanup": ("make state consistent after a crash", [])}),
        "hook": ("install, remove or inspect the git hooks", [], {
            "install": ("install cq's hooks (foreign hooks are kept and chained)", []),
            "uninstall": ("remove cq's hooks, restoring foreign ones", []),
            "status": ("show each hook's state", []),
            "run": ("what the hook scripts call", [
                (("name",), {}), (("args",), {"nargs": argparse.REMAINDER})])}),
        "index": ("bring the index to HEAD, or show its status", [
            (("--wait",), {"action": "store_true", "help": "wait until complete (and for the "
                           "external documenter's summaries, unless it is paused)"}),
            (("--rebuild",), {"action": "store_true", "help": "forget everything and redo "
                              "(the external documenter's answers are kept)"}),
            (("--estimate",), {"action": "store_true", "help": "print what the external "
                               "documenter would be sent, and send nothing"}),
            (("--shard",), {"metavar": "K/N", "help": "send the external documenter only "
                            "shard K of N of the contents (kept as cq.documenterShard; 1/1: "
                            "all); share the answers with cq share push"}),
            (("--repair",), {"action": "store_true", "help": "check the index and the queue; "
                             "move a damaged one aside and rebuild it"})], {
            "status": ("indexed versus HEAD", [json_flag])}),
        "queue": ("inspect, retry or drop queued work", [
            (("queue_command",), {"nargs": "?", "choices": ("list", "retry", "purge"),
                                  "metavar": "ACTION", "help": "list (default), retry or purge"}),
            (("--yes",), {"action": "store_true", "help": "purge without asking"})], {}),
        "search": ("search the index", [
            (("query",), {"nargs": "+"}),
            (("-n",), {"dest": "limit", "default": 10, "type": bounded(
                argparse, int, 1, SEARCH_LIMIT_MAX, f"1 to {SEARCH_LIMIT_MAX} results"),
                       "help": "results (default 10)"}),
            json_flag,
            (("--path",), {"metavar": "PATH", "help": "only paths under a folder or prefix, "
                           "or matching a glob ('src/*.py')"}),
            (("--lang",), {"metavar": "L", "help": "only files in language L"}),
            (("--tests",), {"action": "store_true", "help": "rank test code first"}),
            (("--all-entries",), {"action": "store_true",
                                  "help": "more than three results from one file"}),
            (("--worktree",), {"action": "store_true", "help": "files edited in the working "
                               "tree too, as they are now (not committed)"})], {}),
        "share": ("share the external documenter's answers with other clones (git notes)",
                  [], {
            "push": ("send this clone's answers to the remote (refs/notes/cq)", [remote]),
            "fetch": ("take the remote's answers: they are used instead of calls", [remote])}),
        "show": ("the stored documentation of one file", [(("path",), {}), json_flag], {}),
        "read": ("numbered lines of a file as it is now: a definition or a range", [
            (("path",), {}),
            (("--lines",), {"metavar": "A-B", "type": line_range(argparse),
                            "help": "only these lines (A-B, A- or A)"}),
            (("--symbol",), {"metavar": "NAME", "help": "the whole definition of NAME "
                             "(plain or qualified: Class.method)"}), json_flag], {}),
        "refs": ("where a name is used, grouped by the definition each line is in", [
            (("name",), {}),
            (("--path",), {"metavar": "PATH", "help": "only under a folder, prefix or glob"}),
            json_flag], {}),
        "changes": ("files and definitions changed since a commit and in the working tree", [
            (("--since",), {"metavar": "REF", "help": "compare with this commit (default: "
                            "where the index stood before its last move)"}), json_flag], {}),
        "mcp": ("serve the index to AI assistants (Model Context Protocol) on stdio", [
            (("--http",), {"metavar": "[HOST:]PORT", "help": "serve over HTTP instead "
                           "(127.0.0.1 unless a host is given)"}),
            (("--token-file",), {"metavar": "FILE", "help": "bearer token for --http "
                                 "(else git config cq.mcpToken)"}),
            (("--print-config",), {"choices": ("claude", "cursor", "vscode"),
                                   "help": "print how to register cq with a client"})], {}),
    }


def build_parser(argv: list[str]):
    """The argparse tree, built only as far as argv reaches: each parser costs about 0.5 ms
    (mostly gettext look-ups) and `worker status` must stay fast.  Where argv names no known
    command or action, every choice is built, so help and errors list them all."""
    import argparse

    words = command_words(argv)

    def reached(level: int, names) -> list[str]:
        word = words[level] if len(words) > level else None
        return [word] if word in names else list(names)

    class Parser(argparse.ArgumentParser):
        """argparse, with its errors in one line."""

        def error(self, message: str):
            self.exit(EXIT_USAGE, f"{self.prog}: {message} (see: {self.prog} --help)\n")

    parser = Parser(
        prog="cq", description="Keep a searchable documentation index of a git repository "
                               "fresh in the background.")
    parser.add_argument("--version", action="store_true", help="print versions and exit")
    parser.add_argument("-C", dest="directory", default=".", metavar="DIR",
                        help="run as if started in DIR (like git -C)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    spec = cli_spec(argparse)
    for name in reached(0, spec):
        help_text, arguments, actions = spec[name]
        command = commands.add_parser(name, help=help_text, description=help_text)
        for flags, options in arguments:
            command.add_argument(*flags, **options)
        if actions:
            subs = command.add_subparsers(dest=f"{name}_command", metavar="ACTION",
                                          required=name != "index")
            for action in reached(1, actions):
                action_help, action_arguments = actions[action]
                sub = subs.add_parser(action, help=action_help, description=action_help)
                for flags, options in action_arguments:
                    sub.add_argument(*flags, **options)
    return parser


def read_token(path: str) -> str | None:
    """The bearer token in a --token-file (None if it is empty); CqError if it is not text."""
    with open(path, "rb") as f:
        data = f.read(4096)
    try:
        return data.decode("utf-8").strip() or None
    except UnicodeDecodeError as exc:
        raise CqError(f"the token file {path} is not UTF-8 text (write the token as plain "
                      "text)", EXIT_USAGE) from exc


def cmd_mcp(args, repo: Repo | None) -> int:
    """cq mcp [--http [HOST:]PORT] [--print-config CLIENT]: the MCP server."""
    from cqlib.config import Config, config_or_defaults
    from cqlib.control import wake_worker
    from cqlib.mcp import mcp_client_config, serve_http, serve_stdio

    if args.print_config:
        if repo is None:
            raise CqError("not a git repository: run it inside the repository to serve "
                          "(or pass -C DIR)", EXIT_USAGE)
        config, where = mcp_client_config(repo, args.print_config, work_tree(args.directory)
                                          or repo.common_dir)
        print(f"cq: {where}", file=sys.stderr)  # stdout is the config alone: `> FILE` works
        print(config)
        return EXIT_OK
    config = config_or_defaults(repo) if repo is not None else Config()
    if repo is not None:
        try:
            wake_worker(repo, start=config.autostart)
        except CqError as exc:  # searching a stale index beats not answering
            print(one_line(f"cq mcp: could not start the worker: {exc}"), file=sys.stderr)
    if args.http:
        token = read_token(args.token_file) if args.token_file else config.mcp_token or None
        return serve_http(repo, args.directory, args.http, token, config.mcp_request_timeout)
    return serve_stdio(repo, args.directory)


def cmd_share(args, repo: Repo) -> int:
    """cq share push|fetch [REMOTE]: the external documenter's answers through git notes."""
    from cqlib.config import load_config
    from cqlib.control import poke_worker
    from cqlib.sharing import share, share_remote

    config = load_config(repo)
    if not config.share:
        raise CqError("sharing is off here (cq.share is false); turn it on with: git config "
                      "cq.share true", EXIT_USAGE)
    remote = share_remote(args.remote, config.share_remote)
    done = share(repo, args.share_command, remote, config.share_timeout)
    print(display(done.text()))
    poke_worker(repo)  # answers taken in are put to use
    return EXIT_OK


COMMANDS = {"init": cmd_init, "worker": cmd_worker, "hook": cmd_hook, "index": cmd_index,
            "queue": cmd_queue, "search": cmd_search, "show": cmd_show, "read": cmd_read,
            "refs": cmd_refs, "changes": cmd_changes, "mcp": cmd_mcp, "share": cmd_share}


def run_command(args, repo: Repo) -> int:
    """Run one command; if it meets a damaged database, repair it (move it aside, rebuild)
    and run the command once more."""
    try:
        return COMMANDS[args.command](args, repo)
    except Exception as exc:
        worker_run = args.command == "worker" and args.worker_command == "run"
        if worker_run or not database_damage(exc):
            raise
        from cqlib.maintenance import repair_databases

        done = repair_databases(repo)
        if not done:
            raise
        for line in done:
            print(f"cq: {line}", file=sys.stderr)
    return COMMANDS[args.command](args, repo)


OS_ERROR_HINTS = {errno.ENOSPC: "free some space and retry", errno.EDQUOT: "over quota",
                  errno.EROFS: "cq keeps its state under the git directory, which must be "
                               "writable", errno.EACCES: "check the permissions"}


def database_damage(exc: BaseException) -> bool:
    """True if exc says one of cq's databases is damaged (where nothing has opened one, none
    can be: a hot path that met another error imports no sqlite3 to tell)."""
    if "sqlite3" not in sys.modules:
        return False
    from cqlib.index.database import DatabaseDamaged, is_damage

    return isinstance(exc, DatabaseDamaged) or is_damage(exc)


def os_error_message(exc: OSError) -> str:
    """One line for a file system error: what failed, where, and what to do."""
    if exc.errno == errno.ELOOP and exc.filename:
        return symlink_refused(exc.filename)
    where = f" {exc.filename}" if exc.filename else ""
    hint = OS_ERROR_HINTS.get(exc.errno)
    return f"cannot use{where}: {exc.strerror or exc}" + (f" ({hint})" if hint else "")


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse arguments, run one command, turn CqError into a one-line message."""
    if sys.version_info < (3, 9):  # noqa: UP036 - from source; the archive checks it first
        print(f"cq: cq needs Python 3.9 or newer (this is {sys.version.split()[0]})",
              file=sys.stderr)
        return EXIT_USAGE
    if sys.platform.startswith("win"):
        print("cq: Windows is not supported (cq needs POSIX flock, FIFOs and signals)",
              file=sys.stderr)
        return EXIT_USAGE
    # File names are bytes to git; write undecodable ones back out as the same bytes.
    sys.stdout.reconfigure(errors="surrogateescape")
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["worker", DOCUMENTING_PROCESS]:
        from cqlib.pool import serve_documenting

        return serve_documenting()
    args = parse_hot_path(argv) or build_parser(argv).parse_args(argv)
    os.umask(0o077)  # SQLite's -wal and -shm files and every other file cq creates: 0600
    if args.version:
        from cqlib.queue import huey_version

        print(f"cq {VERSION} (huey {huey_version()}, python {sys.version.split()[0]})")
        return EXIT_OK
    if not args.command:
        build_parser([]).print_help()
        return EXIT_USAGE
    args.directory = os.path.abspath(args.directory)
    status = args.command == "worker" and args.worker_command == "status"
    try:
        if args.command == "mcp":  # outside a repository it serves a root the client names
            try:
                repo = locate_repo(args.directory)
            except CqError:
                if not os.path.isdir(args.directory):
                    raise
                repo = None
            return cmd_mcp(args, repo)
        repo = locate_repo(args.directory)
        return run_command(args, repo)
    except CqError as exc:
        print(f"cq: {one_line(str(exc))}", file=sys.stderr)
        if status:
            return STATUS_UNKNOWN if exc.code != EXIT_USAGE else exc.code
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except OSError as exc:
        print(f"cq: {one_line(os_error_message(exc))}", file=sys.stderr)
        return STATUS_UNKNOWN if status else EXIT_FAILURE
    except Exception as exc:
        if type(exc).__module__ != "sqlite3":
            raise
        print(one_line(f"cq: the index or queue could not be used: {exc} (retry; if it "
                       "persists: cq index --repair)"), file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
