"""The index itself: each worktree's path -> blob map, each blob's documentation, and the
records of the work done on them.

Owns: opening the index (created, or rebuilt for a new schema, by its first writer), the
worktrees' maps (set from a tree, changed by a diff), which blobs are missing, storing the
documenters' records (a batch in one transaction), the attempts that tell a crashing file,
failures, pruning, and the reads behind `cq index status`, `cq show` and MCP's outline and
files tools.  One connection per thread; every write takes its lock up front.
Must not: rank search results (search.py) or hold the external documenter's tables
(summaries.py).
"""

from __future__ import annotations

import os
import time
from collections import namedtuple

from cqlib.config import Config, skip_reason
from cqlib.errors import CqError
from cqlib.index.database import (
    DatabaseDamaged,
    NotIndexed,
    Transaction,
    check_database_files,
    connect_database,
    is_damage,
)
from cqlib.index.queries import VOCABULARY_SQL
from cqlib.index.schema import (
    COMMON_TERM_FILES,
    COUNTS_STALE_SHARE,
    ENTRY_FTS_DELETE,
    ENTRY_FTS_INSERT,
    LEXICAL,
    PARTIAL_REASON_SQL,
    SCHEMA_VERSION,
    WAL_LIMIT,
    StoredEntry,
    create_schema,
    entry_ids,
    entry_text,
)
from cqlib.index.summaries import Summaries
from cqlib.state import INDEX_DB, Repo
from cqlib.words import path_words

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator


# A search is a new process with a cold page cache: reading the index through a memory map
# instead of a copy per page took a sixth off the CPU time of its queries at 50k files.  (The
# worker's and the repair's connections do not map it: an I/O error would be a signal there.)
READER_MMAP_BYTES = 1 << 30
# Whether a blob (an SQL expression) is documented beyond the lexical pass.
DOCUMENTED = f"EXISTS (SELECT 1 FROM docs WHERE blob = {{}} AND status != '{LEXICAL}')"
# The blobs whose documentation a worktree may show: its files' and their previous versions'.
REFERENCED_BLOBS = ("SELECT blob FROM files UNION ALL SELECT prev_blob FROM files "
                    "WHERE prev_blob IS NOT NULL")


class Record(namedtuple("Record", ("blob", "status", "size", "doc", "path"))):
    """What the index keeps of one blob: its status ("ok", "error" for a record kept despite
    a parse error, LEXICAL, CRASHED, or why it is skipped: "too large", "binary"), its size,
    the built-in documenter's doc (None where skipped; its words None where the lexical
    pass stored them) and a path it has."""

    __slots__ = ()


class Failure(namedtuple("Failure", ("blob", "path", "error"))):
    """A blob documenting failed on, a path it has, and why: kept until `cq queue retry`."""

    __slots__ = ()


class ListedFile(namedtuple("ListedFile", ("path", "language", "summary"))):
    """A file of a worktree as the index lists it (its built-in summary)."""

    __slots__ = ()


class Index:
    """The documentation index of one repository (all worktrees share it)."""

    def __init__(self, repo: Repo, readonly: bool = False):
        import sqlite3

        self.repo = repo
        path = repo.state_path(INDEX_DB)
        if readonly and not check_database_files(path):
            raise NotIndexed()
        self.db = connect_database(path, readonly)
        if readonly:
            self.db.execute(f"PRAGMA mmap_size = {READER_MMAP_BYTES}")
        try:
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                if readonly:
                    raise NotIndexed(older=self.db.execute(
                        "SELECT COUNT(*) FROM sqlite_master").fetchone()[0] > 0)
                create_schema(self.db)
            elif not readonly:
                # NORMAL skips an fsync per commit; a power cut can lose the last few
                # records, which reconciliation finds missing and documents again.
                self.db.execute("PRAGMA synchronous = NORMAL")
                self.db.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
        except sqlite3.DatabaseError as exc:
            self.db.close()
            if is_damage(exc):
                raise DatabaseDamaged(path, str(exc)) from exc
            raise
        except CqError:
            self.db.close()
            raise

    @classmethod
    def in_memory(cls, repo: Repo) -> Index:
        """An empty index in memory, of the same schema (for files edited in a worktree)."""
        import sqlite3

        index = cls.__new__(cls)
        index.repo = repo
        index.db = sqlite3.connect(":memory:", isolation_level=None)
        create_schema(index.db)
        return index

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    def transaction(self):
        """A write transaction taken up front, so concurrent writers queue instead of failing."""
        return Transaction(self.db)

    def snapshot(self):
        """A read transaction: what is read inside it is of one moment, however the worker
        writes meanwhile (counts and the commit they are of must agree)."""
        return Transaction(self.db, read=True)

    def worktrees(self) -> list[str]:
        """Git dirs of the worktrees the index knows."""
        return [os.fsdecode(r[0]) for r in self.db.execute("SELECT git_dir FROM worktrees")]

    def data_version(self) -> int:
        """A number that changes whenever another connection has written the index since
        this one last asked (SQLite's data_version)."""
        return self.db.execute("PRAGMA data_version").fetchone()[0]

    def worktree_commit(self, git_dir: str) -> str | None:
        """The commit this worktree was last indexed at."""
        row = self.db.execute("SELECT commit_id FROM worktrees WHERE git_dir = ?",
                              (os.fsencode(git_dir),)).fetchone()
        return row[0] if row else None

    def previous_commit(self, git_dir: str) -> str | None:
        """The commit this worktree was indexed at before the last one (None if none): what
        `changes` compares HEAD with by default."""
        row = self.db.execute("SELECT previous_commit FROM worktrees WHERE git_dir = ?",
                              (os.fsencode(git_dir),)).fetchone()
        return row[0] if row else None

    def _set_commit(self, git_dir: str, commit: str | None) -> None:
        """Bring the worktree's commit to `commit`, keeping the one before (when it moved)."""
        key = os.fsencode(git_dir)
        row = self.db.execute("SELECT commit_id, previous_commit FROM worktrees WHERE "
                              "git_dir = ?", (key,)).fetchone()
        before = None if row is None else row[1] if row[0] == commit else row[0]
        self.db.execute("INSERT OR REPLACE INTO worktrees VALUES (?, ?, ?, ?)",
                        (key, commit, time.time(), before))

    def replace_worktree(self, git_dir: str, commit: str | None,
                         entries: Iterable[tuple[str, str, str]], config: Config) -> None:
        """Set a worktree's whole map from (path, mode, object id) of each file, taken one
        at a time (inside the caller's transaction)."""
        key = os.fsencode(git_dir)
        self._drop_worktree_files(key)
        self.db.executemany("INSERT INTO files (git_dir, path, blob, mode, excluded) "
                            "VALUES (?, ?, ?, ?, ?)", (
            (key, os.fsencode(path), sha, mode, skip_reason(path, mode, config))
            for path, mode, sha in entries))
        self.db.executemany("INSERT INTO paths_fts (rowid, words) VALUES (?, ?)", (
            (rowid, path_words(os.fsdecode(path))) for rowid, path in self.db.execute(
                "SELECT rowid, path FROM files WHERE git_dir = ?", (key,))))
        self._set_commit(git_dir, commit)

    def _drop_worktree_files(self, key: bytes) -> None:
        """Delete a worktree's map and its paths' words (inside a transaction)."""
        self.db.execute("DELETE FROM paths_fts WHERE rowid IN "
                        "(SELECT rowid FROM files WHERE git_dir = ?)", (key,))
        self.db.execute("DELETE FROM files WHERE git_dir = ?", (key,))

    def apply_changes(self, git_dir: str, commit: str, changes: list, config: Config) -> None:
        """Apply diff-tree changes to a worktree's map (inside the caller's transaction)."""
        key = os.fsencode(git_dir)
        for path, mode, sha in changes:
            row = self.db.execute("SELECT rowid FROM files WHERE git_dir = ? AND path = ?",
                                  (key, os.fsencode(path))).fetchone()
            if sha and row:  # the same path, so the same words; the old version answers
                self.db.execute(  # until the new one is documented (see prev_blob)
                    f"UPDATE files SET prev_blob = CASE WHEN {DOCUMENTED.format('?')} THEN NULL "
                    f"WHEN {DOCUMENTED.format('blob')} THEN blob ELSE prev_blob END, "
                    "blob = ?, mode = ?, excluded = ? WHERE rowid = ?",
                    (sha, sha, mode, skip_reason(path, mode, config), row[0]))
            elif sha:
                rowid = self.db.execute("INSERT INTO files (git_dir, path, blob, mode, "
                                        "excluded) VALUES (?, ?, ?, ?, ?)", (
                    key, os.fsencode(path), sha, mode, skip_reason(path, mode, config))).lastrowid
                self.db.execute("INSERT INTO paths_fts (rowid, words) VALUES (?, ?)",
                                (rowid, path_words(path)))
            elif row:
                self.db.execute("DELETE FROM files WHERE rowid = ?", row)
                self.db.execute("DELETE FROM paths_fts WHERE rowid = ?", row)
        self._set_commit(git_dir, commit)

    def forget_worktree(self, git_dir: str) -> None:
        """Drop a worktree that no longer exists."""
        with self.transaction():
            key = os.fsencode(git_dir)
            self._drop_worktree_files(key)
            self.db.execute("DELETE FROM worktrees WHERE git_dir = ?", (key,))

    def missing_blobs(self, git_dir: str | None, among: list | None = None,
                      recorded: bool | None = None, after: str = "",
                      limit: int | None = None) -> Iterator[tuple[str, str]]:
        """(blob, path) pairs referenced (in one worktree, or any) but neither documented
        (beyond the lexical pass) nor failed; with `recorded` True, only those the lexical
        pass recorded, False only those with no record at all; only of the blobs `among`, if
        given (a commit's: no scan of the whole map).  In path order; with a `limit`, at
        most that many, in blob order from after `after`, read as the blob index hands them
        over (a part costs its own rows, not a sort of the whole map).  One at a time."""
        where, params = ["f.excluded = ''", "x.blob IS NULL"], []
        if after:
            where.append("f.blob > ?")
            params.append(after)
        if recorded:  # from the records of the lexical pass: none at a first index
            tables = "docs d CROSS JOIN files f INDEXED BY files_blob ON f.blob = d.blob"
            where.append(f"d.status = '{LEXICAL}'")
        else:
            files = "files f INDEXED BY files_blob" if among or limit else "files f"
            full_only = "" if recorded is False else f" AND d.status != '{LEXICAL}'"
            tables = f"{files} LEFT JOIN docs d ON d.blob = f.blob{full_only}"
            where.append("d.blob IS NULL")
        if git_dir:
            where.append("f.git_dir = ?")
            params.append(os.fsencode(git_dir))
        if among is not None:
            if not among:
                return
            where.append(f"{'d' if recorded else 'f'}.blob IN ({','.join('?' * len(among))})")
            params += among
        order = "ORDER BY f.blob LIMIT ?" if limit else "ORDER BY MIN(f.path)"
        sql = (f"SELECT f.blob, MIN(f.path) FROM {tables} "
               f"LEFT JOIN failures x ON x.blob = f.blob WHERE {' AND '.join(where)} "
               f"GROUP BY f.blob {order}")
        for blob, path in self.db.execute(sql, params + ([limit] if limit else [])):
            yield blob, os.fsdecode(path)

    def to_document(self, blobs: list) -> list:
        """The (blob, path) pairs still referenced by a worktree and not yet documented
        (beyond the lexical pass)."""
        shas = sorted({blob for blob, _ in blobs})
        marks = ",".join("?" * len(shas))
        done = {r[0] for r in self.db.execute(
            f"SELECT blob FROM docs WHERE blob IN ({marks}) AND status != ?", [*shas, LEXICAL])}
        referenced = {r[0] for r in self.db.execute(
            f"SELECT DISTINCT blob FROM files WHERE blob IN ({marks})", shas)}
        wanted, todo = referenced - done, []
        for blob, path in blobs:
            if blob in wanted:  # each blob once, at its first path
                wanted.discard(blob)
                todo.append((blob, path))
        return todo

    def lexical_only(self, blobs: list) -> set:
        """The blobs among (blob, path) pairs whose record is of the lexical pass only."""
        shas = [blob for blob, _ in blobs]
        return {r[0] for r in self.db.execute(
            f"SELECT blob FROM docs WHERE status = ? AND blob IN ({','.join('?' * len(shas))})",
            [LEXICAL, *shas])}

    def crash_counts(self, blobs: list) -> dict:
        """How often the worker has died while documenting each of these blobs, where it has."""
        shas = [blob for blob, _ in blobs]
        return dict(self.db.execute(
            f"SELECT blob, crashes FROM attempts WHERE crashes > 0 AND blob IN "
            f"({','.join('?' * len(shas))})", shas))

    def store(self, record: Record) -> None:
        """Record one blob's documentation (or why it was skipped); see store_all."""
        self.store_all([record])

    def store_all(self, records: list[Record], failures: list[Failure] = ()) -> None:
        """Record each Record and make it searchable, and each Failure, in one transaction
        that also ends their attempts:
        FTS5 writes a segment at every commit, so a batch costs one commit, not one a file.
        A full record takes over the row of one of the lexical pass, whose words stay in
        files_fts (every word of the file, a built-in summary's among them), so they are
        neither computed nor written twice."""
        # A record of the lexical pass ends no attempt: a crash count must survive it.
        blobs = [r[0] for r in records if r[1] != LEXICAL] + [f[0] for f in failures]
        with self.transaction():
            self.db.executemany("DELETE FROM attempts WHERE blob = ?", [(b,) for b in blobs])
            self.db.executemany("INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?)",
                                [(blob, os.fsencode(path), error[:2000], time.time())
                                 for blob, path, error in failures])
            marks = ",".join("?" * len(records))
            earlier = {blob: (doc_id, status == LEXICAL) for blob, doc_id, status in  # or by
                       self.db.execute(f"SELECT blob, id, status FROM docs WHERE blob IN "
                                       f"({marks})", [r[0] for r in records])}  # another task
            fresh = [r for r in records if r[0] not in earlier or
                     (earlier[r[0]][1] and r[1] != LEXICAL)]
            self.db.executemany("DELETE FROM failures WHERE blob = ?",
                                [(r[0],) for r in fresh if r[1] != LEXICAL])
            files, entries, fts, promoted, added = [], [], [], [], []
            # New rows take the ids SQLite would give them, so they go in with executemany.
            next_id = self.db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM docs").fetchone()[0]
            for blob, status, size, record, _ in fresh:
                doc = record or {"language": "", "summary": "", "entries": [], "error": "",
                                 "words": ""}
                fields = (status, doc["language"], doc["summary"], doc["error"], size,
                          time.time())
                if blob in earlier:  # of the lexical pass: the same row, its words kept
                    doc_id = earlier[blob][0]
                    promoted.append((*fields, doc_id))
                elif doc["words"] is None:
                    continue  # it was to keep a lexical record's words, gone since: redone
                else:
                    doc_id, next_id = next_id, next_id + 1
                    added.append((doc_id, *fields, blob))
                    if doc["summary"] or doc["words"]:
                        files.append((doc_id, f"{doc['summary']}\n{doc['words']}"))
                first, last = entry_ids(doc_id)
                for entry_id, e in zip(range(first, last + 1), doc["entries"]):
                    fts.append((entry_id, *entry_text(e, "")))
                    entries.append((entry_id, e["kind"], e["name"], e["container"], e["line"],
                                    e.get("end", e["line"]), e["signature"], e["doc"],
                                    e.get("members") or ""))
            self.db.executemany("INSERT INTO docs (id, status, language, summary, error, size, "
                                "documented_at, blob) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", added)
            self.db.executemany("UPDATE docs SET status = ?, language = ?, summary = ?, "
                                "error = ?, size = ?, documented_at = ? WHERE id = ?", promoted)
            self.db.executemany("INSERT INTO files_fts (rowid, words) VALUES (?, ?)", files)
            self.db.executemany(
                "INSERT INTO entries (id, kind, name, container, line, end_line, signature, "
                "doc, members) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", entries)
            self.db.executemany(ENTRY_FTS_INSERT, fts)
            if self.db.execute("SELECT 1 FROM files INDEXED BY files_prev_blob WHERE "
                               "prev_blob IS NOT NULL LIMIT 1").fetchone():
                # (none in a first index: looking up each blob took it 0.4 s at 50,000 files)
                self.db.executemany("UPDATE files SET prev_blob = NULL WHERE blob = ? AND "
                                    "prev_blob IS NOT NULL", [(r[0],) for r in fresh
                                                              if r[1] != LEXICAL])

    def begin_attempts(self, blobs: list) -> None:
        """Note durably, in one commit, that documenting these (blob, path) pairs starts."""
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO attempts VALUES (?, ?, COALESCE((SELECT crashes FROM "
                "attempts WHERE blob = ?), 0), ?)",
                [(blob, os.fsencode(path), blob, time.time()) for blob, path in blobs])

    def end_attempts(self, blobs: list) -> None:
        """Documenting these (blob, path) pairs ended, not by a crash."""
        self.db.executemany("DELETE FROM attempts WHERE blob = ?", [(b,) for b, _ in blobs])

    def begin_attempt(self, blob: str, path: str) -> int:
        """Note durably that documenting blob starts, so that a crash in it is remembered;
        returns how often the worker has died while documenting it."""
        with self.transaction():
            row = self.db.execute("SELECT crashes FROM attempts WHERE blob = ?",
                                  (blob,)).fetchone()
            crashes = row[0] if row else 0
            self.db.execute("INSERT OR REPLACE INTO attempts VALUES (?, ?, ?, ?)",
                            (blob, os.fsencode(path), crashes, time.time()))
        return crashes

    def close_attempts(self, crashed: bool) -> int:
        """Close the attempts left open: at a worker's start they were cut short by its
        predecessor's death (crashed); at a clean stop, by the stop.  Returns their number."""
        with self.transaction():
            return self.db.execute(
                "UPDATE attempts SET crashes = crashes + ?, started_at = NULL "
                "WHERE started_at IS NOT NULL", (int(crashed),)).rowcount

    def failures(self) -> list[Failure]:
        """Blobs whose documenting failed, the oldest failure first."""
        return [Failure(blob, os.fsdecode(path), error) for blob, path, error in self.db.execute(
            "SELECT blob, path, error FROM failures ORDER BY failed_at")]

    def clear_failures(self) -> list[tuple[str, str]]:
        """Forget all failures and return them as (blob, path) to queue again."""
        with self.transaction():
            rows = self.db.execute("SELECT blob, path FROM failures").fetchall()
            self.db.execute("DELETE FROM failures")
            for blob, _ in rows:
                self._forget_blob(blob)  # a record kept despite the failure is redone too
        return [(blob, os.fsdecode(path)) for blob, path in rows]

    def _forget_blob(self, blob: str) -> None:
        """Delete a blob's documentation and search entries (inside a transaction)."""
        row = self.db.execute("SELECT id FROM docs WHERE blob = ?", (blob,)).fetchone()
        if row is None:
            return
        self.db.executemany(ENTRY_FTS_DELETE, [(e.id, *e.fts_text())
                                               for e in self.entries_of(row[0])])
        self.db.execute("DELETE FROM entries WHERE id BETWEEN ? AND ?", entry_ids(row[0]))
        self.db.execute("DELETE FROM files_fts WHERE rowid = ?", (row[0],))
        self.db.execute("DELETE FROM docs WHERE id = ?", (row[0],))

    def entries_of(self, doc_id: int) -> list[StoredEntry]:
        """A doc's definitions, as stored."""
        return [StoredEntry(*row) for row in self.db.execute(
            "SELECT id, name, container, signature, doc, note, members FROM entries "
            "WHERE id BETWEEN ? "
            "AND ?", entry_ids(doc_id))]

    def prune(self, grace_seconds: float) -> int:
        """Forget documentation no worktree has referenced for grace_seconds; returns count."""
        now = time.time()
        with self.transaction():
            self.db.execute("UPDATE docs SET orphaned_at = NULL WHERE orphaned_at IS NOT NULL "
                            f"AND blob IN ({REFERENCED_BLOBS})")
            self.db.execute("UPDATE docs SET orphaned_at = ? WHERE orphaned_at IS NULL "
                            f"AND blob NOT IN ({REFERENCED_BLOBS})", (now,))
            doomed = [r[0] for r in self.db.execute(
                "SELECT blob FROM docs WHERE orphaned_at IS NOT NULL AND orphaned_at <= ?",
                (now - grace_seconds,))]
            for blob in doomed:
                self._forget_blob(blob)
            Summaries(self).prune(now, grace_seconds)
            self.db.execute("DELETE FROM failures WHERE blob NOT IN (SELECT blob FROM files)")
        return len(doomed)

    def count_common_terms(self, busy_ms: int) -> bool:
        """Count again how many files hold each common term (see term_counts), where the
        index changed by COUNTS_STALE_SHARE since they were counted (or never was, and has
        COMMON_TERM_FILES documented files); True if it did.  One read of the whole
        vocabulary (0.3 s at 50,000 files), so the worker asks when it falls idle; it waits
        at most busy_ms for another writer (sqlite3.OperationalError past that)."""
        self.db.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
        with self.transaction():
            docs = self.db.execute("SELECT count(*) FROM docs").fetchone()[0]
            taken = self.db.execute("SELECT docs, taken_at FROM term_counts_taken").fetchone()
            if taken is None:
                stale = docs >= COMMON_TERM_FILES
            else:
                changed = max(taken[0] - docs, 0) + self.db.execute(
                    "SELECT count(*) FROM docs WHERE documented_at > ?", (taken[1],)).fetchone()[0]
                stale = changed >= COUNTS_STALE_SHARE * max(taken[0], 1)
            if not stale:
                return False
            self.db.execute(VOCABULARY_SQL[0])
            self.db.execute("DELETE FROM term_counts")
            self.db.execute("INSERT INTO term_counts SELECT term, doc FROM temp.cq_vocabulary "
                            "WHERE doc >= ?", (COMMON_TERM_FILES,))
            self.db.execute("DELETE FROM term_counts_taken")
            self.db.execute("INSERT INTO term_counts_taken VALUES (?, ?)", (docs, time.time()))
        return True

    def clear(self) -> None:
        """Forget everything but the external documenter's answers (for --rebuild)."""
        with self.transaction():
            for table in ("worktrees", "files", "paths_fts", "docs", "entries", "files_fts",
                          "failures", "term_counts", "term_counts_taken"):
                self.db.execute(f"DELETE FROM {table}")
            self.db.execute("INSERT INTO entries_fts (entries_fts) VALUES ('delete-all')")

    def status(self, git_dir: str) -> dict:
        """Counts for one worktree: files, documented (with those documented in part, by
        reason: parse error, over budget, parser crash), pending (with those of the lexical
        pass only, already searchable by their words), skipped by reason, failed."""
        rows = self.db.execute(
            f"SELECT f.excluded, d.status, x.blob IS NOT NULL, CASE WHEN d.status = 'error' "
            f"THEN {PARTIAL_REASON_SQL} END, COUNT(*) FROM files f "
            "LEFT JOIN docs d ON d.blob = f.blob LEFT JOIN failures x ON x.blob = f.blob "
            "WHERE f.git_dir = ? GROUP BY 1, 2, 3, 4", (os.fsencode(git_dir),)).fetchall()
        counts = {"files": 0, "documented": 0, "pending": 0, "lexical": 0, "failed": 0,
                  "skipped": {}, "partial": {}}
        for excluded, status, failed, partial, n in rows:
            counts["files"] += n
            if partial and not (excluded or failed):
                counts["partial"][partial] = counts["partial"].get(partial, 0) + n
            reason = excluded or (status if status not in (None, "ok", "error", LEXICAL)
                                  else "")
            if reason:
                key = "excluded" if reason.startswith("excluded") else reason
                counts["skipped"][key] = counts["skipped"].get(key, 0) + n
            elif failed:
                counts["failed"] += n
            elif status and status != LEXICAL:
                counts["documented"] += n
            else:
                counts["pending"] += n
                counts["lexical"] += n if status else 0
        return counts

    def problem_files(self, git_dir: str) -> dict:
        """The files of a worktree that were skipped (with the reason), failed (with the
        error) or documented in part (with the reason and the error), each list sorted by
        path."""
        skipped = self.db.execute(
            "SELECT f.path, CASE WHEN f.excluded != '' THEN f.excluded ELSE d.status END "
            "FROM files f LEFT JOIN docs d ON d.blob = f.blob WHERE f.git_dir = ? AND "
            "(f.excluded != '' OR d.status NOT IN ('ok', 'error', ?)) ORDER BY f.path",
            (os.fsencode(git_dir), LEXICAL)).fetchall()
        failed = self.db.execute(
            "SELECT f.path, x.error FROM files f JOIN failures x ON x.blob = f.blob "
            "WHERE f.git_dir = ? AND f.excluded = '' ORDER BY f.path",
            (os.fsencode(git_dir),)).fetchall()
        partial = self.db.execute(
            f"SELECT f.path, {PARTIAL_REASON_SQL}, d.error FROM files f JOIN docs d "
            "ON d.blob = f.blob WHERE f.git_dir = ? AND f.excluded = '' AND d.status = 'error' "
            "AND NOT EXISTS (SELECT 1 FROM failures x WHERE x.blob = f.blob) ORDER BY f.path",
            (os.fsencode(git_dir),)).fetchall()
        return {"skipped_files": [{"path": os.fsdecode(p), "reason": r} for p, r in skipped],
                "failed_files": [{"path": os.fsdecode(p), "error": e} for p, e in failed],
                "partial_files": [{"path": os.fsdecode(p), "reason": r, "error": e}
                                  for p, r, e in partial]}

    def files(self, git_dir: str) -> list[ListedFile]:
        """A worktree's files (not excluded), by path, with their language and summary."""
        return [ListedFile(os.fsdecode(path), language or "", summary or "")
                for path, language, summary in self.db.execute(
                    "SELECT f.path, d.language, d.summary FROM files f LEFT JOIN docs d "
                    "ON d.blob = f.blob WHERE f.git_dir = ? AND f.excluded = '' ORDER BY f.path",
                    (os.fsencode(git_dir),))]

    def file_doc(self, git_dir: str, path: str) -> dict | None:
        """The stored documentation of one path in a worktree."""
        row = self.db.execute(
            "SELECT f.blob, f.excluded, d.status, d.language, d.summary, d.error, "
            "d.llm_summary, d.llm_by, d.size, d.id FROM files f "
            "LEFT JOIN docs d ON d.blob = f.blob WHERE f.git_dir = ? AND f.path = ?",
            (os.fsencode(git_dir), os.fsencode(path))).fetchone()
        if row is None:
            return None
        blob, excluded, status, language, summary, error, llm_summary, llm_by, size, doc_id = row
        entries = [] if doc_id is None else [
            dict(zip(("kind", "name", "container", "line", "end", "signature", "doc", "note"),
                     r))
            for r in self.db.execute("SELECT kind, name, container, line, end_line, signature, "
                                     "doc, note FROM entries WHERE id BETWEEN ? AND ? "
                                     "ORDER BY line, id", entry_ids(doc_id))]
        state = excluded or status or "pending"
        return {"path": path, "blob": blob, "status": state, "language": language or "",
                "summary": llm_summary or summary or "", "summary_by": llm_by or "built-in",
                "built_in_summary": summary or "", "error": error or "", "size": size or 0,
                "entries": entries}


def create_index(repo: Repo) -> None:
    """Make sure the index exists with this cq's schema: created, or rebuilt for a new one,
    now rather than by the worker, so that nobody waits on an index that is not there."""
    Index(repo).close()
