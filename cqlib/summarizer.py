"""The external documenter's threads in the worker, and what it has done and would do.

Owns: the summarizer threads (the most recently documented files first, each content sent
once per documenter settings), the pause policy (a usage limit pauses every call until it
resets, repeated failures open a circuit breaker, a daily budget caps the spend), and the one
answer to "how far are the summaries" and "what would be sent" that the CLI and MCP share.
Must not: run the documenter itself (llm.py does) or touch SQL (index/summaries.py does).
"""

from __future__ import annotations

import time

from cqlib.config import Config, FreshConfig, config_or_defaults, skip_reason
from cqlib.control import request_repair
from cqlib.gitio import BlobReader, head_commit, tree_entries, tree_listing
from cqlib.index.database import NotIndexed, needs_repair
from cqlib.index.store import Index
from cqlib.index.summaries import Shard, Summaries, SummaryJob, shard_of
from cqlib.lifecycle import Progress, SummaryWork, WorkerActivity, WorkerStopping
from cqlib.llm import (
    BAD_COST,
    DocumenterBroken,
    DocumenterFailed,
    ExternalDocumenter,
    LimitReached,
    backoff_seconds,
    call_documenter,
    external_documenter,
    next_midnight,
)
from cqlib.sharing import (
    answers_for,
    has_unshared,
    import_notes,
    noted_blobs,
    share,
    share_remote,
)
from cqlib.state import Repo, log


def documenter_pause(summaries: Summaries, config: Config, documenter: ExternalDocumenter,
                     now: float) -> tuple[float, str]:
    """(until, why) the external documenter is paused: a usage limit, the circuit breaker or
    the daily budget; (0, '') when it may be called."""
    spent = summaries.spent_today()
    if config.documenter_budget and spent >= config.documenter_budget:
        return next_midnight(now), (f"spent ${spent:.2f} today; the daily budget, "
                                    f"cq.documenterBudget, is ${config.documenter_budget:g}")
    until, reason, _ = summaries.pause(documenter.key)
    return (until, reason) if until > now else (0.0, "")


def charged(config: Config, documenter: ExternalDocumenter, cost: float | None) -> float | None:
    """What a call is counted as costing: what it reported, or, where that cannot be true
    (BAD_COST: NaN, negative), the whole daily budget (logged), so that no report can lower
    the day's spend or switch the budget off."""
    if cost != BAD_COST:
        return cost
    log(f"{documenter.name} reported a cost that cannot be true; the call is counted as "
        f"${config.documenter_budget:g}, the daily budget", error=True)
    return config.documenter_budget


class Summarizer:
    """The external documenter's threads (cq.documenterJobs of them).  Built-in records come
    first (they are Huey tasks); these threads then send each text file to the documenter,
    the most recently documented first, and store the answers.  The index is the to-do list:
    a call cut short by a stop or a kill -9 is simply still to do.  A usage limit pauses all
    calls until it resets; cq.documenterFailures failures in a row open a circuit breaker."""

    def __init__(self, repo: Repo, config: Config, activity: WorkerActivity):
        import threading

        self.repo, self.activity = repo, activity
        self.config = FreshConfig(repo, lambda problem: log(f"summarizer: {problem}",
                                                            error=True), config)
        self.stop_taking = threading.Event()
        self.lock = threading.Lock()
        self.claimed: set = set()
        self.queue: list = []
        self.queue_key = ""
        self.failures_in_row = 0
        self.half_open = False  # the breaker closed again: one more failure reopens it
        self.trial = False  # a half-open breaker's one call is in flight
        self.notes_lock = threading.Lock()  # one import of shared notes at a time
        self.shared_once = threading.Event()  # background sharing fetched once (or is off)
        SummaryWork.arrived = threading.Event()
        self.threads = [threading.Thread(target=self.run, name=f"summarizer-{n}", daemon=True)
                        for n in range(config.documenter_jobs)]
        self.threads.append(threading.Thread(target=self.share_in_background, name="sharer",
                                             daemon=True))

    def start(self) -> None:
        """Start the threads."""
        for thread in self.threads:
            thread.start()

    def stop(self, deadline: float) -> None:
        """Take no more calls; wait (until the monotonic deadline) for those in flight."""
        self.stop_taking.set()
        SummaryWork.wake()
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def run(self) -> None:
        """One thread: summarise until the worker stops; an error (logged) costs a pause and
        a fresh connection and git reader, never the thread."""
        while not self.stop_taking.is_set():
            reader = BlobReader(self.repo.common_dir)
            try:
                with Index(self.repo) as index:
                    summaries = Summaries(index)
                    while not self.stop_taking.is_set():
                        wait = self.step(summaries, reader)
                        if wait and SummaryWork.arrived.wait(wait):
                            SummaryWork.arrived.clear()
                            self.queue = []  # new records go ahead of the rest
            except Exception as exc:  # noqa: BLE001 - logged; the thread carries on
                if needs_repair(exc):
                    request_repair(self.repo, f"summarizer: a database is damaged or "
                                   f"unreadable ({exc})")
                log(f"summarizer: {type(exc).__name__}: {exc}", error=True)
                self.stop_taking.wait(5.0)
            finally:
                reader.close()

    def step(self, summaries: Summaries, reader: BlobReader) -> float:
        """Summarise one file; how long to wait before the next (0 to go on at once)."""
        config = self.config()
        documenter = external_documenter(config)
        if documenter is None:
            self.activity.paused = None
            return 2.0
        now = time.time()
        until, why = documenter_pause(summaries, config, documenter, now)
        self.activity.paused = (until, why) if until else None
        if until:
            return min(until - now, 5.0)
        with self.lock:
            if self.trial:
                return 0.5  # the breaker's trial call decides first
            trial = self.trial = self.half_open
        job = None
        try:
            job = self.claim(summaries, documenter, config)
            if job is None:
                self.take_waiting_notes(summaries, config)
                return 15.0  # new records and pokes wake it sooner
            self.summarize(summaries, reader, config, documenter, job)
        finally:
            with self.lock:
                self.claimed.discard(job and job.blob)
                self.trial = self.trial and not trial
        return 0.0 if self.failures_in_row == 0 else 0.5  # no spinning on failures

    def claim(self, summaries: Summaries, documenter: ExternalDocumenter,
              config: Config) -> SummaryJob | None:
        """The next file no other thread is on, or None when all are done."""
        with self.lock:
            if self.queue_key != documenter.key:
                self.queue, self.queue_key = [], documenter.key
            if not self.queue:
                self.queue = [job for job in summaries.pending(
                    documenter.key, config.documenter_max_bytes, 16 + len(self.claimed),
                    Shard(*config.documenter_shard)) if job.blob not in self.claimed]
            while self.queue:
                job = self.queue.pop(0)
                if job.blob not in self.claimed:
                    self.claimed.add(job.blob)
                    return job
        return None

    def summarize(self, summaries: Summaries, reader: BlobReader, config: Config,
                  documenter: ExternalDocumenter, job: SummaryJob) -> None:
        """Send one file (unless the same documenter summarised this content before)."""
        blob, path = job.blob, job.path
        known = summaries.known(blob, documenter.key)
        if not known:
            known = self.shared_answer(summaries, documenter, blob, config)
        if known:
            with summaries.transaction():
                summaries.use(blob, documenter.key, documenter.name, *known)
            return
        size, data = reader.read(blob, config.documenter_max_bytes)
        if data is None:  # the pending query saw it fit: so it is gone from git
            summaries.record_failure(blob, documenter.key, path,
                                         f"blob {blob} is missing from the object database")
            return
        self.activity.calling(path)
        try:
            answer = call_documenter(self.repo, config, documenter, path, job.language, data)
            if not answer.summary:
                raise DocumenterFailed("cq.documenter answered with an empty summary",
                                       answer.cost)
        except WorkerStopping:  # the call was made: it counts, though nothing came of it
            self.count(summaries, config, documenter, None)
            log(f"summary of {path} cut short by the stop; it is asked for again later")
            return
        except LimitReached as exc:
            self.count(summaries, config, documenter, exc.cost)
            self.limited(summaries, config, documenter, exc)
            return
        except DocumenterFailed as exc:
            self.count(summaries, config, documenter, exc.cost)
            self.failed(summaries, config, documenter, blob, path, exc)
            return
        finally:
            self.activity.called(path)
        with summaries.transaction():
            summaries.count_call(documenter.key, charged(config, documenter, answer.cost),
                                 answer.tokens)
            summaries.store(blob, documenter.key, documenter.name, path, answer.summary,
                            answer.notes)
        with self.lock, summaries.transaction():
            self.failures_in_row, self.half_open = 0, False
            until, _, strikes = summaries.pause(documenter.key)
            if strikes and until <= time.time():  # a pause still running stays
                summaries.set_pause(documenter.key, 0.0, "", 0)
        log(f"summarised {path} ({size} bytes) with {documenter.name}")
        Progress.made()

    def shared_answer(self, summaries: Summaries, documenter: ExternalDocumenter, blob: str,
                      config: Config) -> tuple[str, dict] | None:
        """A teammate's answer for this content (refs/notes/cq, fetched since the last
        look, or just now by background sharing, whose first fetch comes before any call),
        taken into the index; None if there is none and the documenter must be called."""
        if not config.share:
            return None
        self.shared_once.wait(config.share_timeout + 5.0)
        with self.notes_lock:
            try:
                import_notes(self.repo, summaries.index)
                if summaries.known(blob, documenter.key) is None:
                    answers = [a for a in answers_for(self.repo, blob)
                               if a.key == documenter.key]
                    if answers:
                        with summaries.transaction():
                            summaries.take_shared(answers)
            except Exception as exc:  # noqa: BLE001 - shared notes are a saving, never a stop
                log(f"sharing: the notes could not be read ({type(exc).__name__}: {exc}); the "
                    "documenter is called", error=True)
        return summaries.known(blob, documenter.key)

    def take_waiting_notes(self, summaries: Summaries, config: Config) -> None:
        """With nothing to summarise: take in shared answers whose content has arrived since
        (a shard's clone is sent none of another shard's, so nothing else would)."""
        if not config.share:
            return
        with self.notes_lock:
            try:
                import_notes(self.repo, summaries.index)
            except Exception as exc:  # noqa: BLE001 - logged; a saving, tried again later
                log(f"sharing: the notes could not be read ({type(exc).__name__}: {exc})",
                    error=True)

    def share_in_background(self) -> None:
        """With cq.shareAuto: at the start and every cq.shareInterval after, share with the
        remote (see share_once).  Never a hook's work."""
        due = None  # when the next share is (monotonic): the first comes at once
        while not self.stop_taking.is_set():
            config = self.config()
            if not (config.share_auto and config.share):
                due = None
            elif due is None or time.monotonic() >= due:
                due = time.monotonic() + config.share_interval
                self.share_once(config)
            self.shared_once.set()  # the first fetch is done (or not asked for): calls go on
            self.stop_taking.wait(1.0)

    def share_once(self, config: Config) -> None:
        """Fetch the remote's answers (taken in before the next call), or where the index
        holds answers the last export did not look at (made here, before a restart too),
        push them (which fetches and merges first when the remote moved).  A failure (no
        credential, no network) is one line in `worker status` and the log; the next try
        comes an interval later."""
        action = "fetch"
        try:
            with Index(self.repo, readonly=True) as index:
                action = "push" if has_unshared(self.repo, index) else "fetch"
            done = share(self.repo, action, share_remote(None, config.share_remote),
                         config.share_timeout)
        except Exception as exc:  # noqa: BLE001 - reported in worker status; tried again
            self.activity.sharing = (time.time(), False, f"{action} failed: {exc}")
            log(f"sharing: {action} failed: {exc}", error=True)
            return
        self.activity.sharing = (time.time(), True, done.text())

    def count(self, summaries: Summaries, config: Config, documenter: ExternalDocumenter,
              cost: float | None) -> None:
        """Tally one call that brought no summary."""
        with summaries.transaction():
            summaries.count_call(documenter.key, charged(config, documenter, cost))

    def limited(self, summaries: Summaries, config: Config, documenter: ExternalDocumenter,
                exc: LimitReached) -> None:
        """Pause every call until the limit resets (or for the back-off when it says not)."""
        with self.lock, summaries.transaction():
            until, _, strikes = summaries.pause(documenter.key)
            now = time.time()
            if until > now and (exc.until or 0) <= until:
                return  # paused as long already (another call met the same limit)
            until = exc.until or now + backoff_seconds(config, strikes + 1)
            summaries.set_pause(documenter.key, until, f"usage limit: {exc}", strikes + 1)
        log(f"{documenter.name} hit a usage limit ({exc}); paused until "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(until))}", error=True)

    def failed(self, summaries: Summaries, config: Config, documenter: ExternalDocumenter,
               blob: str, path: str, exc: DocumenterFailed) -> None:
        """Record one failure (not the file's when the documenter cannot run at all); open
        the breaker after cq.documenterFailures in a row, or one after it closed again."""
        if not isinstance(exc, DocumenterBroken):
            summaries.record_failure(blob, documenter.key, path, str(exc))
        log(f"{documenter.name} failed on {path}: {exc}", error=True)
        with self.lock, summaries.transaction():
            self.failures_in_row += 1
            if self.failures_in_row < config.documenter_failures and not self.half_open:
                return
            until, _, strikes = summaries.pause(documenter.key)
            if until > time.time():
                return
            until = time.time() + backoff_seconds(config, strikes + 1)
            reason = (f"circuit breaker: {self.failures_in_row} failure(s) in a row, the last: "
                      f"{exc}")
            summaries.set_pause(documenter.key, until, reason, strikes + 1)
            self.failures_in_row, self.half_open = 0, True
        log(f"{documenter.name}: {reason}; no calls until "
            f"{time.strftime('%H:%M:%S', time.localtime(until))}", error=True)


def summary_progress(index: Index, git_dir: str, config: Config) -> dict | None:
    """The external documenter's progress in a worktree, its calls, cost and pause (None
    when no external documenter is set): for `cq index status` and MCP's status tool."""
    documenter = external_documenter(config)
    if documenter is None:
        return None
    summaries = Summaries(index)
    counts = summaries.status(git_dir, documenter.key, config.documenter_max_bytes,
                              Shard(*config.documenter_shard))
    until, why = documenter_pause(summaries, config, documenter, time.time())
    return {"name": documenter.name, **counts, "paused_until": until or None,
            "pause_reason": why or None}


def read_summary_progress(repo: Repo) -> dict | None:
    """summary_progress for this worktree, from a fresh read of the index and settings."""
    with Index(repo, readonly=True) as index:
        return summary_progress(index, repo.git_dir, config_or_defaults(repo))


def estimate_summaries(repo: Repo, config: Config) -> dict:
    """What the external documenter (or the Claude Code preset, when none is set) would be
    sent for HEAD of this worktree, content by content: files and bytes, less what it
    answered before, what a clone's shared answers spare (taken in or still in
    refs/notes/cq), what other shards send, and what it failed on (until `cq queue retry`),
    by reason."""
    documenter = external_documenter(config) or ExternalDocumenter(
        Config({"cq.documenter": "claude", "cq.documenterModel": config.documenter_model}))
    head = head_commit(repo.git_dir)
    kinds: dict = {}
    try:
        with Index(repo, readonly=True) as index:
            kinds = Summaries(index).kinds(documenter.key)
    except NotIndexed:
        pass
    sizes = {sha: size for path, mode, sha, size in (
        tree_entries(tree_listing(repo.common_dir, head, sizes=True)) if head else [])
        if size is not None and not skip_reason(path, mode, config)}
    counts = {"send": 0, "done": 0, "shared": 0, "failed": 0, "large": 0, "other": 0,
              "other_shards": 0}
    unsent = [blob for blob, size in sizes.items()
              if not kinds.get(blob) and size <= config.documenter_max_bytes]
    noted = noted_blobs(repo, documenter.key, unsent) if config.share else set()
    shard = Shard(*config.documenter_shard)
    sent = 0
    for blob, size in sizes.items():
        kind = kinds.get(blob) or ("large" if size > config.documenter_max_bytes else
                                   "shared" if blob in noted else "send"
                                   if shard_of(blob, shard.of) == shard.number - 1 else
                                   "other_shards")
        counts[kind] += 1
        sent += size if kind == "send" else 0
    return {"documenter": documenter.name, "set": bool(config.documenter.strip()),
            "bytes": sent, "max_bytes": config.documenter_max_bytes,
            "indexed": bool(kinds), **counts}
