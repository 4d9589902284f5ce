"""The external documenter's tables: its answers, calls, costs and pauses.

Owns: every read and write of `summaries`, `calls` and `pauses` (the tables a rebuild keeps,
since their answers were paid for), and putting an answer to use: its summary shown and
searched with the file, its notes with the definitions they name.
Must not: decide when to call the documenter or what a pause means (summarizer.py does).
"""

from __future__ import annotations

import os
import time
from collections import namedtuple

from cqlib.index.schema import ENTRY_FTS_DELETE, ENTRY_FTS_INSERT, LEXICAL, SUMMARY_GRACE


class SummaryJob(namedtuple("SummaryJob", ("blob", "path", "language"))):
    """A file the external documenter has yet to summarise: its content, a path it has and
    its language."""

    __slots__ = ()


class SharedAnswer(namedtuple("SharedAnswer", ("blob", "key", "summary", "notes"))):
    """One documenter settings' answer for one content, as it travels in a git note (see
    sharing.py): no path, no cost, nothing of the clone that made it."""

    __slots__ = ()


class Shard(namedtuple("Shard", ("number", "of"))):
    """Shard `number` (from 1) of `of`: the contents whose blob id, read as a number, leaves
    number - 1 when divided by `of` (cq index --shard K/N); 1 of 1 is every content."""

    __slots__ = ()


ALL_SHARDS = Shard(1, 1)


def shard_of(blob: str, of: int) -> int:
    """Which shard (from 0) of `of` a blob falls in: its id's first 8 hex digits, mod of."""
    return int(blob[:8], 16) % of


def today() -> str:
    """The local date, which a daily budget runs by."""
    return time.strftime("%Y-%m-%d")


def notes_of(text: str | None) -> dict:
    """An answer's notes as stored (JSON), read back (json is imported here: a search,
    which opens the index, reads no notes)."""
    import json

    return json.loads(text or "{}")


def notes_text(notes: dict) -> str:
    """An answer's notes as they are stored (JSON)."""
    import json

    return json.dumps(notes)


class Summaries:
    """The external documenters' answers, calls and pauses in one index (its connection and
    transactions)."""

    def __init__(self, index):
        self.index, self.db = index, index.db
        self.db.create_function("cq_shard", 2, shard_of, deterministic=True)

    def transaction(self):
        """A write transaction of the index (see Index.transaction)."""
        return self.index.transaction()

    def pending(self, key: str, max_bytes: int, most: int,
                shard: Shard = ALL_SHARDS) -> list[SummaryJob]:
        """The text files the external documenter `key` has yet to summarise (its failures
        aside), the most recently documented first: those of its shard (see Shard), and any
        it has an answer for already (made here or shared), which only needs putting to use."""
        rows = self.db.execute(
            "SELECT d.blob, MIN(f.path), d.language FROM docs d JOIN files f ON f.blob = d.blob "
            "AND f.excluded = '' WHERE d.status IN ('ok', 'error') AND d.size <= ? AND "
            "d.llm_key IS NOT ? AND NOT EXISTS (SELECT 1 FROM summaries s WHERE s.blob = d.blob "
            "AND s.documenter = ? AND s.status = 'failed') AND (cq_shard(d.blob, ?) = ? OR "
            "EXISTS (SELECT 1 FROM summaries s WHERE s.blob = d.blob AND s.documenter = ? AND "
            "s.status IN ('ok', 'shared'))) GROUP BY d.id ORDER BY d.id DESC LIMIT ?",
            (max_bytes, key, key, shard.of, shard.number - 1, key, most)).fetchall()
        return [SummaryJob(blob, os.fsdecode(path), language) for blob, path, language in rows]

    def known(self, blob: str, key: str) -> tuple[str, dict] | None:
        """The summary and notes documenter `key` already gave for this content (here, or
        in a clone that shared it)."""
        row = self.db.execute("SELECT summary, notes FROM summaries WHERE blob = ? AND "
                              "documenter = ? AND status IN ('ok', 'shared')",
                              (blob, key)).fetchone()
        return (row[0], notes_of(row[1])) if row else None

    def answers(self, since: float = 0.0) -> list[SharedAnswer]:
        """The answers the index holds, made here or taken from a clone (to share): those
        kept after `since` (epoch seconds)."""
        return [SharedAnswer(blob, key, summary, notes_of(notes))
                for blob, key, summary, notes in self.db.execute(
                    "SELECT blob, documenter, summary, notes FROM summaries WHERE status IN "
                    "('ok', 'shared') AND made_at > ? ORDER BY blob", (since,))]

    def newest_answer(self) -> float:
        """When the newest answer was kept (0 if there is none)."""
        return self.db.execute("SELECT COALESCE(MAX(made_at), 0) FROM summaries WHERE status "
                               "IN ('ok', 'shared')").fetchone()[0]

    def take_shared(self, answers: list[SharedAnswer]) -> int:
        """Keep answers from shared notes where the index has none for the same content and
        settings (a failure here gives way to one); how many were new (in a transaction).
        The worker puts them to use instead of calling its documenter."""
        before = self.db.total_changes
        self.db.executemany(
            "INSERT INTO summaries VALUES (?, ?, 'shared', ?, ?, '', "
            "COALESCE((SELECT MIN(path) FROM files WHERE blob = ?), x''), ?) "
            "ON CONFLICT (blob, documenter) DO UPDATE SET status = 'shared', "
            "summary = excluded.summary, notes = excluded.notes, error = '', "
            "made_at = excluded.made_at WHERE status = 'failed'",
            [(a.blob, a.key, a.summary, notes_text(a.notes), a.blob, time.time())
             for a in answers])
        return self.db.total_changes - before

    def store(self, blob: str, key: str, name: str, path: str, summary: str,
              notes: dict) -> None:
        """Keep an external documenter's answer and put it to use (inside a transaction)."""
        self.db.execute("INSERT OR REPLACE INTO summaries VALUES (?, ?, 'ok', ?, ?, '', ?, ?)",
                        (blob, key, summary, notes_text(notes), os.fsencode(path), time.time()))
        self.use(blob, key, name, summary, notes)

    def prune(self, now: float, grace_seconds: float) -> None:
        """Forget the answers for content no worktree holds, made longer ago than the grace
        (or SUMMARY_GRACE, if longer: a branch switched back to months later asks nobody
        again), inside a transaction."""
        self.db.execute("DELETE FROM summaries WHERE made_at <= ? AND blob NOT IN "
                        "(SELECT blob FROM files)", (now - max(grace_seconds, SUMMARY_GRACE),))

    def use(self, blob: str, key: str, name: str, summary: str, notes: dict) -> None:
        """Show and search this summary (and notes) for the blob (inside a transaction)."""
        row = self.db.execute("SELECT id, llm_summary FROM docs WHERE blob = ?",
                              (blob,)).fetchone()
        if row is None:
            return  # pruned meanwhile
        doc_id, previous = row
        words = self.db.execute("SELECT words FROM files_fts WHERE rowid = ?",
                                (doc_id,)).fetchone()
        words = words[0] if words else ""
        if previous and words.startswith(previous + "\n"):
            words = words[len(previous) + 1:]
        self.db.execute("DELETE FROM files_fts WHERE rowid = ?", (doc_id,))
        self.db.execute("INSERT INTO files_fts (rowid, words) VALUES (?, ?)",
                        (doc_id, f"{summary}\n{words}"))
        self.db.execute("UPDATE docs SET llm_summary = ?, llm_key = ?, llm_by = ? WHERE id = ?",
                        (summary, key, name, doc_id))
        for stored in self.index.entries_of(doc_id):
            note = notes.get(stored.name) or notes.get(f"{stored.container}.{stored.name}") or ""
            if note == stored.note:
                continue
            self.db.execute("UPDATE entries SET note = ? WHERE id = ?", (note, stored.id))
            self.db.execute(ENTRY_FTS_DELETE, (stored.id, *stored.fts_text()))
            self.db.execute(ENTRY_FTS_INSERT, (stored.id, *stored.fts_text(note)))

    def record_failure(self, blob: str, key: str, path: str, error: str) -> None:
        """Remember that the external documenter failed on this content (until a retry)."""
        self.db.execute("INSERT OR REPLACE INTO summaries VALUES (?, ?, 'failed', '', '', ?, ?, ?)",
                        (blob, key, error[:2000], os.fsencode(path), time.time()))

    def count_call(self, key: str, cost: float | None, tokens: int = 0) -> None:
        """Add one call (and its cost and tokens, where the documenter reported them) to
        today's tally."""
        self.db.execute("INSERT INTO calls VALUES (?, ?, 1, ?, ?) ON CONFLICT (day, documenter) "
                        "DO UPDATE SET calls = calls + 1, cost = cost + excluded.cost, "
                        "tokens = tokens + excluded.tokens", (today(), key, cost or 0.0, tokens))

    def spent_today(self) -> float:
        """US dollars reported by every external documenter today."""
        return self.db.execute("SELECT COALESCE(SUM(cost), 0) FROM calls WHERE day = ?",
                               (today(),)).fetchone()[0]

    def pause(self, key: str) -> tuple[float, str, int]:
        """(until, reason, strikes) of the documenter's pause; until is 0 when not paused."""
        row = self.db.execute("SELECT until, reason, strikes FROM pauses WHERE documenter = ?",
                              (key,)).fetchone()
        return tuple(row) if row else (0.0, "", 0)

    def set_pause(self, key: str, until: float, reason: str, strikes: int) -> None:
        """Pause the documenter until then (strikes: pauses in a row, for the back-off)."""
        self.db.execute("INSERT OR REPLACE INTO pauses VALUES (?, ?, ?, ?)",
                        (key, until, reason[:500], strikes))

    def status(self, git_dir: str, key: str, max_bytes: int,
               shard: Shard = ALL_SHARDS) -> dict:
        """For one worktree and external documenter: summarised (and of those, how many by
        answers shared by another clone), pending, failed, too large, left to other shards;
        its calls and cost today and in all."""
        rows = self.db.execute(
            "SELECT d.llm_key = ?, d.size > ?, s.status, cq_shard(d.blob, ?) = ?, COUNT(*) "
            "FROM files f JOIN docs d ON d.blob = f.blob LEFT JOIN summaries s ON "
            "s.blob = d.blob AND s.documenter = ? WHERE f.git_dir = ? AND f.excluded = '' AND "
            "d.status IN ('ok', 'error') GROUP BY 1, 2, 3, 4",
            (key, max_bytes, shard.of, shard.number - 1, key,
             os.fsencode(git_dir))).fetchall()
        counts = {"done": 0, "shared": 0, "pending": 0, "failed": 0, "too_large": 0,
                  "other_shards": 0}
        for done, large, status, in_shard, n in rows:
            name = "done" if done else "too_large" if large else "failed" if \
                status == "failed" else "pending" if in_shard or status else "other_shards"
            counts[name] += n
            counts["shared"] += n if done and status == "shared" else 0
        day = today()
        calls = self.db.execute(
            "SELECT COALESCE(SUM(calls), 0), COALESCE(SUM(cost), 0), COALESCE(SUM(tokens), 0), "
            "COALESCE(SUM(CASE WHEN day = ? THEN calls END), 0), "
            "COALESCE(SUM(CASE WHEN day = ? THEN cost END), 0) FROM calls WHERE documenter = ?",
            (day, day, key)).fetchone()
        counts.update(zip(("calls", "cost_usd", "tokens", "calls_today", "cost_usd_today"),
                          calls))
        counts["cost_usd"] = round(counts["cost_usd"], 6)
        counts["cost_usd_today"] = round(counts["cost_usd_today"], 6)
        counts["failed_files"] = [  # path by path, as counted above
            {"path": os.fsdecode(p), "error": e} for p, e in self.db.execute(
                "SELECT f.path, s.error FROM summaries s JOIN files f ON f.blob = s.blob "
                "JOIN docs d ON d.blob = s.blob WHERE f.git_dir = ? AND f.excluded = '' AND "
                "s.documenter = ? AND s.status = 'failed' AND d.size <= ? AND "
                "d.status IN ('ok', 'error') AND d.llm_key IS NOT ? ORDER BY 1",
                (os.fsencode(git_dir), key, max_bytes, key))]
        return counts

    def clear_failures(self) -> list[str]:
        """Forget the external documenters' failures, so their files are sent again, and
        close any open circuit breaker (a usage limit stays)."""
        with self.index.transaction():
            rows = self.db.execute("SELECT path FROM summaries WHERE status = 'failed'").fetchall()
            self.db.execute("DELETE FROM summaries WHERE status = 'failed'")
            self.db.execute("DELETE FROM pauses WHERE reason LIKE 'circuit breaker:%'")
        return [os.fsdecode(p) for (p,) in rows]

    def kinds(self, key: str) -> dict:
        """Every blob of the index -> why documenter `key` is sent nothing for it: "done"
        (answered before), "shared" (answered in a clone that shared it), "failed" (until a
        retry), "other" (binary, too large or skipped by the built-in pass), or None
        (documented, and not yet sent)."""
        kinds = dict(self.db.execute(
            "SELECT blob, CASE WHEN status NOT IN ('ok', 'error', ?) THEN 'other' END "
            "FROM docs", (LEXICAL,)))
        kinds.update(self.db.execute(
            "SELECT blob, CASE status WHEN 'ok' THEN 'done' WHEN 'shared' THEN 'shared' "
            "ELSE 'failed' END FROM summaries WHERE documenter = ?", (key,)))
        return kinds
