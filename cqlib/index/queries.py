"""The reads behind a search: FTS5 queries that hand the ranking its candidates, cheaply.

Owns: every query search.py makes (the best definitions and files for an FTS5 expression
within a worktree and the filters, definitions by their exact name, files by the words of
their paths, which rows match a word, the index's vocabulary near a misspelt word), and the
ways each is kept cheap however common a word is: a pool of the newest matches, the marked
name words, one term for an exact name.
Must not: decide what ranks first (search.py) or build FTS5 expressions from a user's text.
"""

from __future__ import annotations

import os
from collections import namedtuple

from cqlib.index.schema import ENTRY_COLUMN_WEIGHTS, ENTRY_SLOT_BITS, TOKENIZER
from cqlib.words import NAME_MARK


class Filters(namedtuple("Filters", ("git_dir", "path", "language", "outdated"),
                         defaults=(False,))):
    """Which rows a search may return: those of one worktree (its git dir), under a `--path`
    (its spec, or None; the connection's path_matches decides: see use_path_filter), in one
    language (or None); with outdated, also the definitions of the versions before those of
    files not documented yet (see has_outdated)."""

    __slots__ = ()

    def params(self) -> tuple:
        """The SQL parameters of the filters, in the order the queries take them (whether a
        path is filtered, not the spec itself: path_matches has it, and a spec need not be
        text SQLite can take)."""
        filtered = 1 if self.path is not None else None
        return (os.fsencode(self.git_dir), filtered, self.language, self.language)


class EntryHit(namedtuple("EntryHit", ("id", "kind", "name", "container", "line", "end",
                                       "signature", "doc", "path", "language", "outdated",
                                       "rank"))):
    """A definition a query found: where it is (its first and last lines), what it says
    (its doc, else the external documenter's note), whether it is of the version of its file
    before the one not documented yet, and its BM25 rank (lower is better; 0.0 when not
    ranked)."""

    __slots__ = ()

    @classmethod
    def of(cls, row: tuple) -> EntryHit:
        """A hit from a row of ENTRY_COLUMNS and a rank."""
        rowid, kind, name, container, line, end, signature, doc, path, language, outdated, \
            rank = row
        return cls(rowid, kind, name, container or "", line, end or line, signature or "",
                   doc or "", os.fsdecode(path), language or "", bool(outdated), rank)


class FileHit(namedtuple("FileHit", ("id", "path", "language", "summary", "summary_by",
                                     "rank"))):
    """A file a query found (id: its doc's), with its summary, who wrote that summary (the
    external documenter's name, '' for the built-in one) and its BM25 rank."""

    __slots__ = ()

    @classmethod
    def of(cls, row: tuple) -> FileHit:
        """A hit from a row of FILE_SQL or PATH_SQL."""
        doc_id, path, language, summary, by, rank = row
        return cls(doc_id, os.fsdecode(path), language or "", summary or "", by or "", rank)


def use_path_filter(db, matches) -> None:
    """Set the path_matches function the queries call for `--path` (matches: path -> bool)."""
    db.create_function("path_matches", 1, lambda raw: matches(os.fsdecode(raw)),
                       deterministic=True)


# The best matches come from FTS5 first (its `rank` is the weighted BM25), then are joined
# with the worktree's files and filtered; where filters leave too few, the search widens.
# Ranking costs FTS5 a lookup per match (after a pass over each word's rows, for its weight),
# so an expression matched by more than POOL rows is ranked within a pool: its newest POOL
# matches (the current versions of files come last).  For definitions the pool is first of
# its matches in a name (which weighs most in the BM25), and only where those fill fewer rows
# than asked, of all its matches as well.  Whether any definition is named by the words at
# all is asked first of their marked terms: the column filter reads every row of every word
# (17 ms for three common words at 50k files), those terms 1 to 2 ms.  If the worktree and
# the filters leave too few rows, every match is ranked.
POOL = 1500
WIDER = 4  # FTS5 hands over this many times the rows wanted before joins and filters
# `rank` is FTS5's own: with the weights given in the query (WEIGHTS), `ORDER BY rank LIMIT n`
# runs inside FTS5, before any join.
WEIGHTS = {"entries_fts": f" AND rank MATCH 'bm25({ENTRY_COLUMN_WEIGHTS})'", "files_fts": ""}
HITS_SQL = ("SELECT rowid, rank FROM {table} WHERE {table} MATCH ?{weights} ORDER BY rank "
            "LIMIT ?")
POOLED_HITS_SQL = (f"SELECT rowid, rank FROM (SELECT rowid, rank FROM {{table}} WHERE {{table}} "
                   f"MATCH ?{{weights}} ORDER BY rowid DESC LIMIT {POOL}) ORDER BY rank LIMIT ?")
ENTRY_COLUMNS = ("e.id, e.kind, e.name, e.container, e.line, e.end_line, e.signature, "
                 "CASE WHEN e.doc = '' THEN e.note ELSE e.doc END, f.path, d.language, "
                 "f.blob != d.blob")
# A definition joins its file by the file's blob, or (`prev_blob`) by the version before.
LINKS = ("blob", "prev_blob")
ENTRY_SQL = (
    f"SELECT {ENTRY_COLUMNS}, hits.rank FROM ({{hits}}) AS hits "
    "JOIN entries e ON e.id = hits.rowid "
    f"JOIN docs d ON d.id = e.id >> {ENTRY_SLOT_BITS} "
    "JOIN files f ON f.{link} = d.blob AND f.git_dir = ? "
    "WHERE (? IS NULL OR path_matches(f.path)) AND (? IS NULL OR d.language = ?) "
    "ORDER BY hits.rank LIMIT ?")
EXACT_SQL = (  # one term's rows: an exact name is found however common its words are
    f"SELECT {ENTRY_COLUMNS}, 0.0 FROM entries_fts "  # CROSS JOIN: the term's rows first
    "CROSS JOIN entries e ON e.id = entries_fts.rowid "
    f"CROSS JOIN docs d ON d.id = e.id >> {ENTRY_SLOT_BITS} "
    "CROSS JOIN files f ON f.{link} = d.blob AND f.git_dir = ? "
    "WHERE entries_fts MATCH ? AND (? IS NULL OR path_matches(f.path)) "
    "AND (? IS NULL OR d.language = ?) LIMIT ?")
FILE_SQL = (
    "SELECT d.id, f.path, d.language, COALESCE(d.llm_summary, d.summary), d.llm_by, hits.rank "
    "FROM ({hits}) AS hits "
    "JOIN docs d ON d.id = hits.rowid JOIN files f ON f.blob = d.blob AND f.git_dir = ? "
    "WHERE (? IS NULL OR path_matches(f.path)) AND (? IS NULL OR d.language = ?) "
    "ORDER BY hits.rank LIMIT ?")
PATH_SQL = (  # paths_fts narrows by words' first letters; path_has_word() decides
    "SELECT d.id, f.path, d.language, COALESCE(d.llm_summary, d.summary), d.llm_by, 0.0 "
    "FROM paths_fts p CROSS JOIN files f ON f.rowid = p.rowid JOIN docs d ON d.blob = f.blob "
    "WHERE paths_fts MATCH ? AND f.git_dir = ? AND path_has_word(f.path) "
    "AND (? IS NULL OR path_matches(f.path)) AND (? IS NULL OR d.language = ?) LIMIT ?")


WORD_FILES_SQL = (
    "SELECT f.path, d.id FROM files_fts CROSS JOIN docs d ON d.id = files_fts.rowid "
    "CROSS JOIN files f ON f.blob = d.blob AND f.git_dir = ? WHERE files_fts MATCH ? "
    "AND (? IS NULL OR path_matches(f.path)) ORDER BY f.path")


def files_with_words(db, expression: str, filters: Filters) -> list[tuple[str, int]]:
    """(path, doc id) of the worktree's files whose words match an FTS expression (over
    files_fts: every word of a file), within the `--path` filter, in path order."""
    git_dir, path, _, _ = filters.params()
    return [(os.fsdecode(raw), doc_id) for raw, doc_id in
            db.execute(WORD_FILES_SQL, (git_dir, expression, path))]


def best_rows(db, table: str, expression: str, filters: Filters, limit: int,
              named: str = "") -> list:
    """The first `limit` hits (EntryHit or FileHit) of a ranked query within the filters: FTS5
    hands over a few times that many (from a pool, for a common word), and all of its
    matches, fully ranked, if the filters left too few.  `named`: for definitions, the
    expression's marked name words (which only rows named by them hold)."""
    entries = table == "entries_fts"
    sql, hit = (ENTRY_SQL, EntryHit) if entries else (FILE_SQL, FileHit)
    wanted = WIDER * limit if filters.path or filters.language else limit + limit // 4

    def ranked(hits: str, text: str, count: int) -> list:
        found = []
        for link in LINKS if entries and filters.outdated else LINKS[:1]:
            found += [hit.of(row) for row in db.execute(
                sql.format(hits=hits.format(table=table, weights=WEIGHTS[table]), link=link),
                (text, count, *filters.params(), limit))]
        return sorted(found, key=lambda row: row.rank)[:limit] if len(found) > limit \
            else found

    if not matches_more_than(db, table, expression, POOL):
        rows = ranked(HITS_SQL, expression, wanted)
    elif not entries:
        rows = ranked(POOLED_HITS_SQL, expression, wanted)
    else:
        rows = []  # the marked name words tell cheaply whether any definition is named so
        if not named or matches_more_than(db, table, named, 0):
            rows = ranked(POOLED_HITS_SQL, f"{{name words}} : ({expression})", wanted)
        if len(rows) < limit:  # too few are named by it: its other matches count as well
            rows = sorted({row.id: row for row in reversed(
                rows + ranked(POOLED_HITS_SQL, expression, wanted))}.values(),
                key=lambda row: row.rank)[:limit]
    if len(rows) < limit and matches_more_than(db, table, expression, len(rows)):
        rows = ranked(HITS_SQL, expression, -1)  # rare: most matches are elsewhere
    return rows


def matches_more_than(db, table: str, expression: str, count: int) -> bool:
    """True if an FTS expression matches more than count rows (reading at most count + 1)."""
    return db.execute(f"SELECT COUNT(*) FROM (SELECT rowid FROM {table} WHERE {table} MATCH ? "
                      "LIMIT ?)", (expression, count + 1)).fetchone()[0] > count


def named_entries(db, squashed: str, filters: Filters) -> list[EntryHit]:
    """Definitions whose squashed name has this term (up to POOL of them, unranked)."""
    git_dir, filtered, language, _ = filters.params()
    return [EntryHit.of(row) for link in (LINKS if filters.outdated else LINKS[:1])
            for row in db.execute(EXACT_SQL.format(link=link), (
                git_dir, f'squashed : "{squashed}{NAME_MARK}"', filtered, language, language,
                POOL))]


def has_outdated(db, git_dir: str) -> bool:
    """True if some file of the worktree is not documented yet in its version at the
    worktree's commit, while the version before is (files.prev_blob)."""
    # By the partial index of the few such rows: by git_dir, SQLite would read every file.
    return db.execute("SELECT 1 FROM files INDEXED BY files_prev_blob WHERE prev_blob IS NOT "
                      "NULL AND git_dir = ? LIMIT 1", (os.fsencode(git_dir),)).fetchone() \
        is not None


def entry_ranks(db, expression: str, ids: list[int]) -> dict:
    """The BM25 rank of each of these definitions for an FTS expression (those it matches)."""
    marks = ",".join("?" * len(ids))
    return dict(db.execute(f"SELECT rowid, rank FROM entries_fts WHERE entries_fts MATCH ?"
                           f"{WEIGHTS['entries_fts']} AND rowid IN ({marks})",
                           (expression, *ids)))


PROBE_RATIO = 100  # a term with this many matches per row asked about is asked row by row


def rows_matching(db, table: str, expression: str, ids: list[int]) -> set[int]:
    """Which of these rows an FTS expression matches: its matching rows read as a set, unless
    it has so many that asking about these rows alone is cheaper (a lookup per row costs
    FTS5 about a hundred times what reading a match does)."""
    matching: set = set()
    if matches_more_than(db, table, expression, PROBE_RATIO * len(ids)):
        for i in range(0, len(ids), 500):  # within SQLite's limit on variables
            chunk = ids[i:i + 500]
            matching.update(rowid for (rowid,) in db.execute(
                f"SELECT rowid FROM {table} WHERE {table} MATCH ? AND rowid IN "
                f"({','.join('?' * len(chunk))})", (expression, *chunk)))
    else:
        matching.update(rowid for (rowid,) in db.execute(
            f"SELECT rowid FROM {table} WHERE {table} MATCH ?", (expression,)))
    return matching & set(ids)


def path_files(db, narrow: str, filters: Filters, has_word, limit: int) -> list[FileHit]:
    """Files whose path's words match `narrow` (an FTS expression over paths_fts) and which
    has_word (path -> bool) accepts, within the filters."""
    db.create_function("path_has_word", 1, lambda raw: has_word(os.fsdecode(raw)),
                       deterministic=True)
    git_dir, path, language, _ = filters.params()
    return [FileHit.of(row) for row in db.execute(PATH_SQL, (narrow, git_dir, path, language,
                                                             language, limit))]


# The index's vocabulary (files_fts's terms, stemmed, with how many rows hold each) and a
# stemmer (an FTS5 table of one row that tokenises as files_fts does), made on the connection
# that asks: temporary, so a read-only connection may make them and the index holds nothing.
VOCABULARY_SQL = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS temp.cq_vocabulary USING fts5vocab(main, files_fts, 'row')",
    f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.cq_stemmer USING fts5(word, tokenize='{TOKENIZER}')",
    "CREATE VIRTUAL TABLE IF NOT EXISTS temp.cq_stems USING fts5vocab(temp, cq_stemmer, 'row')",
    "CREATE VIRTUAL TABLE IF NOT EXISTS temp.cq_places USING fts5vocab(temp, cq_stemmer, instance)")


def stemming(db, text: str) -> None:
    """Put a text in the stemmer, making the vocabulary's tables first where they are not
    (terms_starting reads them: stem_of, word_terms or held_terms comes first)."""
    for statement in VOCABULARY_SQL:
        db.execute(statement)
    db.execute("DELETE FROM temp.cq_stemmer")
    db.execute("INSERT INTO temp.cq_stemmer (word) VALUES (?)", (text,))


def word_terms(db, words: list[str]) -> dict[str, tuple[str, int]]:
    """Each word -> (its term as the index stores it, how many files_fts rows hold that
    term), read together (a word the tokeniser keeps nothing of is left out): a common
    term's count as the worker last took it (term_counts), any other's counted now."""
    for statement in VOCABULARY_SQL:
        db.execute(statement)
    db.execute("DELETE FROM temp.cq_stemmer")
    words = list(dict.fromkeys(words))
    db.executemany("INSERT INTO temp.cq_stemmer (rowid, word) VALUES (?, ?)",
                   enumerate(words, 1))
    found: dict = {}
    for row, term, rows in db.execute(
            "SELECT p.doc, p.term, COALESCE((SELECT files FROM term_counts c WHERE "
            "c.term = p.term), (SELECT v.doc FROM temp.cq_vocabulary v WHERE v.term = p.term), "
            "0) FROM temp.cq_places p ORDER BY p.doc, p.offset"):
        found.setdefault(words[row - 1], (term, rows))
    return found


def stem_of(db, word: str) -> str:
    """A word as the index stores it: stemmed and folded as files_fts tokenises."""
    stemming(db, word)
    row = db.execute("SELECT term FROM temp.cq_stems LIMIT 1").fetchone()
    return row[0] if row else ""


def documented_files(db) -> int:
    """How many file versions the index holds words for (files_fts's rows, one per blob):
    as many as when the common terms were counted, where they were (their counts are of
    that moment; counting the rows again took 1.5 ms at 50,000 files)."""
    return db.execute("SELECT COALESCE((SELECT docs FROM term_counts_taken), "
                      "(SELECT count(*) FROM docs))").fetchone()[0]


def terms_starting(db, prefix: str, lengths: tuple[int, int], rows_at_least: int,
                   limit: int) -> list[tuple[str, int]]:
    """The index's stemmed terms that begin with prefix, of a length within lengths and held
    by at least rows_at_least rows, with the rows holding each: the `limit` most held."""
    return db.execute("SELECT term, doc FROM temp.cq_vocabulary WHERE term >= ? AND term < ? "
                      "AND length(term) BETWEEN ? AND ? AND doc >= ? ORDER BY doc DESC LIMIT ?",
                      (prefix, prefix + "\U0010ffff", *lengths, rows_at_least,
                       limit)).fetchall()


def text_holding(db, term: str) -> str:
    """The words of one file that holds a stemmed term ('' if none does)."""
    row = db.execute("SELECT words FROM files_fts WHERE files_fts MATCH ? LIMIT 1",
                     (f'"{term}"',)).fetchone()
    return row[0] or "" if row else ""


def held_terms(db, words: list[str]) -> list[tuple[str, int]]:
    """The stemmed terms of these words that the index holds, with the rows holding each."""
    stemming(db, " ".join(words))
    return db.execute("SELECT v.term, v.doc FROM temp.cq_stems s JOIN temp.cq_vocabulary v "
                      "ON v.term = s.term").fetchall()
