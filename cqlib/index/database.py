"""cq's SQLite files (index.db, queue.db): opened safely, damage told apart, moved aside.

Owns: the one way to open a database (a URI that takes any path's bytes, a long busy timeout,
never through a symlink or a foreign file), telling damage from a busy or full disk, the
integrity check and moving a damaged file aside for a rebuild, and write transactions.
Must not: open a live database file with anything but SQLite (closing any descriptor of it
drops every POSIX lock the process's connections hold), or know the index's tables.
"""

from __future__ import annotations

import os
import sqlite3

from cqlib.errors import CqError
from cqlib.state import check_own_file
from cqlib.text import one_line

DAMAGED_SUFFIX = ".damaged"
URI_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/-_.~")


class NotIndexed(CqError):
    """Nothing is indexed here yet, or only by a cq whose index had another schema."""

    def __init__(self, older: bool = False):
        super().__init__("the index was made by another version of cq and is rebuilt when "
                         "its worker starts (run: cq init)" if older else
                         "nothing is indexed here yet (run: cq init)")


class DatabaseDamaged(CqError):
    """One of cq's SQLite files is damaged: not a database, or malformed."""

    def __init__(self, path: str, detail: str):
        super().__init__(f"{os.path.basename(path)} is damaged ({one_line(detail)})")
        self.path = path


def is_damage(exc: BaseException) -> bool:
    """True if a SQLite error means the file itself is damaged, not busy, locked or full:
    SQLITE_CORRUPT and SQLITE_NOTADB raise DatabaseError itself, every other failure one of
    its subclasses."""
    return type(exc) is sqlite3.DatabaseError


def sqlite_uri(path: str, mode: str) -> str:
    """A file: URI for SQLite (mode ro, rw or rwc), the path's bytes percent-encoded, so any
    path works, one that is not UTF-8 included."""
    quoted = "".join(chr(b) if b in URI_SAFE else f"%{b:02X}" for b in os.fsencode(path))
    return f"file:{quoted}?mode={mode}"


def check_database_files(path: str) -> bool:
    """Refuse a symlink or a foreign file where a database or its -wal or -shm should be;
    True if the database exists.

    This looks with lstat and never opens the file: closing any descriptor of a SQLite file
    drops every POSIX lock that the process's connections hold on it, and SQLite relies on
    those locks (several worker threads then corrupt the index)."""
    exists = False
    for name in (path, path + "-wal", path + "-shm"):
        try:
            check_own_file(name, os.lstat(name))
        except FileNotFoundError:
            continue
        exists = exists or name == path
    return exists


def connect_database(path: str, readonly: bool = False):
    """A connection to one of cq's SQLite files, in autocommit mode with a long busy timeout;
    a read-only one never creates the file (and never checkpoints or deletes its WAL)."""
    check_database_files(path)
    db = sqlite3.connect(sqlite_uri(path, "ro" if readonly else "rwc"), uri=True, timeout=30,
                         isolation_level=None)
    db.execute("PRAGMA busy_timeout = 30000")
    return db


def is_unreadable(exc: BaseException) -> bool:
    """True if a SQLite error is an I/O error (SQLITE_IOERR): a WAL removed under the
    connections that use it, say, or a failing disk; not busy, locked or full."""
    return isinstance(exc, sqlite3.OperationalError) and "disk I/O error" in str(exc)


def needs_repair(exc: BaseException) -> bool:
    """True if an error says a database must be repaired: damaged, or unreadable."""
    return isinstance(exc, DatabaseDamaged) or is_damage(exc) or is_unreadable(exc)


def database_problem(path: str) -> str | None:
    """What is wrong with a database file (PRAGMA quick_check), or None if it is sound or
    absent.  It reads every page: for explicit checks and small files, not every open.  It
    opens the file for writing, as the first connection after a crash must to recover the
    WAL's index."""
    if not check_database_files(path):
        return None
    try:
        db = connect_database(path)
        try:
            rows = db.execute("PRAGMA quick_check(1)").fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        if is_damage(exc):
            return one_line(str(exc))
        if is_unreadable(exc):
            return f"unreadable: {exc}"
        raise
    return None if rows == [("ok",)] else one_line(str(rows[0][0]))


def move_aside(path: str) -> str:
    """Rename a damaged database (with its -wal and -shm) to NAME.damaged, replacing an older
    damaged copy; returns the new name.  Only while no connection to it is open."""
    target = path + DAMAGED_SUFFIX
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(target + suffix)
        except FileNotFoundError:
            pass
        try:
            os.rename(path + suffix, target + suffix)
        except FileNotFoundError:
            pass
    return target


class UnsyncedConnection(sqlite3.Connection):
    """A connection whose commits wait for no fsync (WAL, synchronous NORMAL), for the queue
    as for the index: a power cut may lose the last tasks, never the queue, and the index,
    not the queue, decides what is missing.  A first index of 10,000 files waited for 116
    fsyncs instead of 360 (two a task; 0.3 ms each on an SSD, 5 to 10 on a disk)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.execute("PRAGMA synchronous = NORMAL")


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error: a write transaction, or with
    `read=True` a read one (BEGIN), whose statements all see the database as it was at its
    first (WAL keeps that snapshot while writers go on)."""

    def __init__(self, db, read: bool = False):
        self.db, self.begin = db, "BEGIN" if read else "BEGIN IMMEDIATE"

    def __enter__(self):
        self.db.execute(self.begin)

    def __exit__(self, kind, value, tb):
        if not kind:
            self.db.execute("COMMIT")
        elif self.db.in_transaction:  # SQLite ends it itself on some errors (I/O, full disk)
            self.db.execute("ROLLBACK")


class RowCount:
    """The number of rows of one table, read on a connection of its own (opened at the first
    count) that waits at most busy_ms for a writer: sqlite3.Error past that."""

    def __init__(self, path: str, table: str, busy_ms: int):
        self.path, self.table, self.busy_ms, self.db = path, table, busy_ms, None

    def __call__(self) -> int:
        if self.db is None:
            self.db = connect_database(self.path, readonly=True)
            self.db.execute(f"PRAGMA busy_timeout = {int(self.busy_ms)}")
        return self.db.execute(f'SELECT COUNT(*) FROM "{self.table}"').fetchone()[0]

    def close(self) -> None:
        """Close the connection, if one was opened."""
        if self.db is not None:
            self.db.close()
            self.db = None
