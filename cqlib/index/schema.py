"""The index's tables: what each holds and why, its version, and how a definition is written.

Owns: the schema and its version (an index of another version is rebuilt from git; the
external documenter's paid-for answers are kept), the ranking weights of a definition's
columns, the status words a record can carry, how a definition's entries_fts text is made
(the same when it is written and when it is deleted), and the ids its definitions take.
Must not: read or write rows (store.py, summaries.py and queries.py do), or import sqlite3
at its top (the documenting processes import it for its status words).
"""

from __future__ import annotations

from collections import namedtuple

from cqlib.words import NAME_MARK, with_search_words

# How every FTS5 table here (and the stemmer queries.py asks) splits and folds text.
TOKENIZER = "porter unicode61 remove_diacritics 2"
SCHEMA_VERSION = 17  # PRAGMA user_version; an index of another version is rebuilt from git
# The WAL grows while readers hold old snapshots (a long indexing with searches running); a
# checkpoint that empties it cuts the file back to this size, not to keep it at its largest.
WAL_LIMIT = 4 << 20
# What a record's status says beyond "ok" (documented) and "error" (kept despite an error):
LEXICAL = "lexical"  # a record of the lexical pass only: its words, not its entries
CRASHED = "crashed the documenter"  # its names only: it was in flight at too many deaths
# Why a record kept despite an error ("error") holds less than a full one, told by the words
# of its error (the documenters' messages); any other error is the file's own syntax.
PARTIAL_REASONS = (("parser crash", "parser crashes"), ("over budget", "took more than"))
PARSE_ERROR = "parse error"
# That reason as an SQL expression over docs d.
PARTIAL_REASON_SQL = "CASE " + " ".join(f"WHEN instr(d.error, '{words}') THEN '{reason}'"
                                        for reason, words in PARTIAL_REASONS) + \
    f" ELSE '{PARSE_ERROR}' END"
# bm25 weights of entries_fts's columns: name, words, container, body, and the squashed name,
# which finds (an exact name's term) but adds nothing to a rank.  They are given with every
# ranked query (queries.py), never written into the index: a change takes effect at once.
ENTRY_COLUMN_WEIGHTS = "10.0, 5.0, 2.0, 1.0, 0.0"
# Words are stemmed (porter over unicode61, diacritics folded) on both sides, so `parsing` finds
# `parse`. entries_fts holds definitions: the name as written, its words (split identifier parts and
# the squashed name), its container's words, signature, doc, note and members (the names of a
# class's attributes, which find it), and the squashed name alone, by which an exact name is looked
# up however common its words (that column weighs nothing in the BM25; an FTS5 term costs a few
# bytes a row where a B-tree index of the names cost 15 MB at 50k files, and a quarter of the
# writing).  It ends in NAME_MARK, a private-use character unicode61 keeps in the token: the term is
# then the name's own, neither stemmed nor shared with other columns, whose rows a lookup would
# scan.  The same column holds the words of the name behind NAME_MARK (`\ue000parse`, those that
# marked_in_name takes): terms only the definitions named by a word have, so whether any definition
# is named by a query's words is known without reading their every row.  It keeps no copy of that
# text (content=''), so deleting a row takes its text again: entry_text computes it from the entry,
# and what it yields may change only with SCHEMA_VERSION.  (Word positions stay: with detail=column,
# a contentless table's BM25 is always 0.) An entry's id is its doc's id shifted by ENTRY_SLOT_BITS
# plus its number in the file, so a blob's entries are one range of ids, with no index.
# A path whose blob changed keeps the one before in files.prev_blob until the new one is
# documented beyond the lexical pass: meanwhile the old version's definitions answer (marked
# stale) rather than nothing.
# files_fts holds one row per blob (rowid = docs.id): every distinct word of the file, and
# its summary (written once: after a lexical pass, the words already hold a built-in one).
# It keeps word positions (detail=full): without them, BM25 tokenises again the text of each
# row it ranks to count the words (44 ms for a common word in CPython's Lib/, 2.6 ms with
# them; the index is 4% larger at 50,000 generated files, 19% on Lib/).
# term_counts holds how many files_fts rows hold each of its common terms (COMMON_TERM_FILES
# or more), as the worker counted them when it last fell idle after the index changed by
# COUNTS_STALE_SHARE (term_counts_taken: how many docs there were, and when): FTS5 counts a
# term by reading its whole list, 4 ms for a word of every file at 50,000 files, and a query
# weighs each of its words.  A term it does not hold is counted when asked (fewer rows).
# paths_fts holds the words of each path of each worktree (rowid = files.rowid), so a search
# finds the files a word names without reading every path.
# An external documenter's answers live in `summaries`, keyed by blob and by the documenter's
# settings, so no content is sent twice: --rebuild keeps them, with `calls` and `pauses`.  The
# summary in use is copied to docs.llm_summary (and into files_fts), its notes to entries.note.
SCHEMA = f"""
CREATE TABLE worktrees (git_dir BLOB PRIMARY KEY, commit_id TEXT, updated_at REAL,
                        previous_commit TEXT);
CREATE TABLE files (git_dir BLOB, path BLOB, blob TEXT, mode TEXT, excluded TEXT,
                    prev_blob TEXT, PRIMARY KEY (git_dir, path));
CREATE INDEX files_blob ON files (blob);
CREATE INDEX files_prev_blob ON files (prev_blob) WHERE prev_blob IS NOT NULL;
CREATE TABLE docs (id INTEGER PRIMARY KEY, blob TEXT UNIQUE, status TEXT, language TEXT,
                   summary TEXT, error TEXT, size INTEGER, documented_at REAL, orphaned_at REAL,
                   llm_summary TEXT, llm_key TEXT, llm_by TEXT);
CREATE TABLE entries (id INTEGER PRIMARY KEY, kind TEXT, name TEXT, container TEXT,
                      line INTEGER, signature TEXT, doc TEXT, note TEXT DEFAULT '',
                      end_line INTEGER, members TEXT DEFAULT '');
CREATE VIRTUAL TABLE entries_fts USING fts5 (name, words, container, body, squashed,
                                             content = '',
                                             tokenize = '{TOKENIZER}');
CREATE VIRTUAL TABLE files_fts USING fts5 (words, tokenize = '{TOKENIZER}');
CREATE VIRTUAL TABLE paths_fts USING fts5 (words, detail = none,
                                           tokenize = 'unicode61 remove_diacritics 2');
CREATE TABLE term_counts (term TEXT PRIMARY KEY, files INTEGER) WITHOUT ROWID;
CREATE TABLE term_counts_taken (docs INTEGER, taken_at REAL);
CREATE TABLE failures (blob TEXT PRIMARY KEY, path BLOB, error TEXT, failed_at REAL);
CREATE TABLE attempts (blob TEXT PRIMARY KEY, path BLOB, crashes INTEGER, started_at REAL);
"""
# Paid for, so kept when the rest of the index is rebuilt for a new schema (or --rebuild).
KEPT_SCHEMA = {
    "summaries": "CREATE TABLE summaries (blob TEXT, documenter TEXT, status TEXT, summary TEXT, "
                 "notes TEXT, error TEXT, path BLOB, made_at REAL, PRIMARY KEY (blob, documenter))",
    "calls": "CREATE TABLE calls (day TEXT, documenter TEXT, calls INTEGER, cost REAL, "
             "tokens INTEGER, PRIMARY KEY (day, documenter))",
    "pauses": "CREATE TABLE pauses (documenter TEXT PRIMARY KEY, until REAL, reason TEXT, "
              "strikes INTEGER)",
}
COMMON_TERM_FILES = 200  # a term held by this many files_fts rows has its count kept
COUNTS_STALE_SHARE = 0.05  # the share of docs added or changed that has the counts taken again
SUMMARY_GRACE = 90 * 86400.0  # seconds an answer no worktree references is kept
ENTRY_SLOT_BITS = 24  # a file keeps at most 2**24 definitions (the rest are dropped)
# A contentless table forgets a row by being told its text again.
ENTRY_FTS_INSERT = ("INSERT INTO entries_fts (rowid, name, words, container, body, squashed) "
                    "VALUES (?, ?, ?, ?, ?, ?)")
ENTRY_FTS_DELETE = ("INSERT INTO entries_fts (entries_fts, rowid, name, words, container, body, "
                    "squashed) VALUES ('delete', ?, ?, ?, ?, ?, ?)")


def entry_ids(doc_id: int) -> tuple[int, int]:
    """The first and last entry id a doc's definitions may take."""
    return doc_id << ENTRY_SLOT_BITS, ((doc_id + 1) << ENTRY_SLOT_BITS) - 1


def entry_text(e: dict, note: str) -> tuple:
    """The columns of a definition's entries_fts row (name, words, container, body,
    squashed with the marked name words), the same when it is written and when it is
    deleted."""
    e = with_search_words(e)
    members = e.get("members") or ""
    return (e["name"], e["words"], e["container_words"],
            f"{e['signature']}\n{e['doc']}\n{note}" + (f"\n{members}" if members else ""),
            f"{e['squashed']}{NAME_MARK} {e['named']}")


class StoredEntry(namedtuple("StoredEntry", ("id", "name", "container", "signature", "doc",
                                             "note", "members"))):
    """A definition as read back from the index: what its entries_fts row was made of."""

    __slots__ = ()

    def fts_text(self, note: str | None = None) -> tuple:
        """Its entries_fts columns (see entry_text), with another note if one is given."""
        return entry_text({"name": self.name, "container": self.container,
                           "signature": self.signature, "doc": self.doc,
                           "members": self.members},
                          self.note if note is None else note)


def create_schema(db) -> None:
    """Create the tables, or drop an index of another schema version and start over (it is
    derived from git: the worker rebuilds it); once, whoever gets there first."""
    from cqlib.index.database import Transaction  # here: the documenting processes import
    # this module for its status words, and need no sqlite3

    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
    with Transaction(db):
        if db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        old = db.execute("SELECT type, name, sql FROM sqlite_master WHERE type IN "
                         "('table', 'view') AND name NOT LIKE 'sqlite_%' AND "
                         "sql NOT LIKE 'CREATE TABLE ''%'").fetchall()
        kept = set()
        for kind, name, sql in old:
            if KEPT_SCHEMA.get(name) == sql:
                kept.add(name)
            elif db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone():
                db.execute(f'DROP {kind.upper()} "{name}"')
        for statement in [*SCHEMA.split(";"), *(sql for name, sql in KEPT_SCHEMA.items()
                                                if name not in kept)]:
            if statement.strip():
                db.execute(statement)
        # FTS5 merges its segments while inserting; merging 16 at a time, not 4, cut the
        # inserts of 300,000 definitions by a quarter, with searches as fast as before.
        for table in ("entries_fts", "files_fts"):
            db.execute(f"INSERT INTO {table} ({table}, rank) VALUES ('automerge', 16)")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
