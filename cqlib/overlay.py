"""The working tree laid over the index: what an assistant edited a minute ago is found, and
what it deleted is not.

Owns: WorktreeOverlay (`git status` started at once, the edited files documented into an
in-memory index of the same schema while the real one is searched), WorktreeWatch (inotify
on the work tree, so a long-lived reader asks `git status` again only when something there
changed), and search_worktree, which merges the two.
Must not: write the index, or follow a link or open anything but a regular file of the tree.
"""

from __future__ import annotations

import errno
import os
import sys

from cqlib.config import Config
from cqlib.documenters import document_text, looks_binary
from cqlib.gitio import WorkTreeFiles, WorkTreeStatus, work_tree
from cqlib.index.store import Index, Record
from cqlib.search import PER_FILE, coverage_penalty, search
from cqlib.state import Repo


class WorktreeOverlay:
    """The files of a worktree that differ from HEAD (modified, added, untracked and not
    ignored), documented in memory with the built-in documenter, and the deleted ones: what
    an assistant changed a minute ago is found, and what it deleted is not.  `git status`
    starts at once and runs while the caller searches the index; the first look at what it
    found waits for it."""

    def __init__(self, repo: Repo, config: Config, cwd: str):
        self.repo, self.config, self.top = repo, config, work_tree(cwd)
        self.status = None if self.top is None else WorkTreeStatus(self.top)
        self.found: tuple | None = None  # (edited, deleted, index, complete)
        self.failed = False  # git status failed: nothing is known to be edited

    def finish(self) -> tuple:
        """Wait for `git status` and document what it lists (once)."""
        if self.found is None:
            edited, deleted = set(), set()
            if self.status is not None:
                edited, deleted, ok = self.status.changes()
                self.failed = not ok
            index = Index.in_memory(self.repo)
            complete = len(edited) <= self.config.overlay_max_files
            self.found = (edited, deleted, index, complete)  # known, even if documenting fails
            if complete and self.top is not None:
                self.document(index, edited)
        return self.found

    @property
    def edited(self) -> set:
        """Paths modified, added or untracked (and not ignored)."""
        return self.finish()[0]

    @property
    def deleted(self) -> set:
        """Paths deleted in the working tree."""
        return self.finish()[1]

    @property
    def index(self) -> Index:
        """The in-memory index of the edited files (empty when there are too many)."""
        return self.finish()[2]

    @property
    def complete(self) -> bool:
        """False when more files are edited than cq.overlayMaxFiles: they are marked only."""
        return self.finish()[3]

    def document(self, index: Index, edited: set) -> None:
        """Document the edited files into the in-memory index."""
        config, entries = self.config, {}
        with WorkTreeFiles(self.top) as files:
            for path in sorted(edited):
                data = files.read_file(path, config.max_file_size)
                if data is None:
                    continue
                # The name's bytes, so that any name, UTF-8 or not, makes a blob id.
                blob = f"worktree:{os.fsencode(path).hex()}"
                entries[path] = ("100644", blob)
                if not looks_binary(data):
                    index.store(Record(blob, "ok", len(data),
                                       document_text(path, data, config.parse_budget), path))
        with index.transaction():
            index.replace_worktree(self.repo.git_dir, None,
                                   ((p, mode, sha) for p, (mode, sha) in entries.items()), config)


class WorktreeWatch:
    """Linux inotify on every directory of a work tree (but .git), through ctypes: a
    long-lived reader (the MCP server over stdio) asks `git status` again only when something
    there changed, which at 50,000 files saves a tenth of a second a query.  Watches are set
    up by a background thread; until then `changed()` says yes every time, and for good where
    inotify is missing or its limits are reached.  A directory moved away or renamed, or a
    queue overflow, starts the watch over (its paths would be stale)."""

    MASK = 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800  # writes, moves...
    MOVED_FROM, MOVED_TO, CREATE, OVERFLOW, ISDIR = 0x40, 0x80, 0x100, 0x4000, 0x40000000

    def __init__(self, top: str, repo: Repo):
        import threading

        self.top, self.repo = top, repo
        self.lock = threading.Lock()
        self.fd, self.dirs, self.ready, self.first = -1, {}, False, True
        self.generation, self.broken, self.libc = 0, False, None
        self.restart()

    def restart(self) -> None:
        """Drop every watch and set them up again in the background."""
        import threading

        with self.lock:
            self.generation += 1
            old, self.fd, self.dirs, self.ready, self.first = self.fd, -1, {}, False, True
            generation = self.generation
        if old >= 0:
            os.close(old)
        if not self.broken:
            threading.Thread(target=self.start, args=(generation,), name="worktree-watch",
                             daemon=True).start()

    def close(self) -> None:
        """Release the inotify descriptor and its watches for good."""
        self.broken = True
        self.restart()

    def start(self, generation: int) -> None:
        """Open inotify and watch every directory; give up (noted on stderr) on failure."""
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd < 0:
                raise OSError(ctypes.get_errno(), "inotify_init1")
        except (OSError, AttributeError) as exc:
            self.give_up(exc)
            return
        dirs: dict = {}
        try:
            self.watch_tree(libc, fd, self.top, dirs)
        except OSError as exc:
            os.close(fd)
            self.give_up(exc)
            return
        with self.lock:
            if generation != self.generation:  # started over (or closed) meanwhile
                os.close(fd)
                return
            self.libc, self.fd, self.dirs, self.ready = libc, fd, dirs, True

    def give_up(self, exc: OSError | AttributeError) -> None:
        """No watching from here on: every query runs git status."""
        self.broken = True
        print(f"cq: note: not watching the work tree ({exc}); every query runs git status",
              file=sys.stderr)

    def watch_tree(self, libc, fd: int, top: str, dirs: dict) -> None:
        """Watch top and every directory under it, each before it is listed, so nothing made
        in it meanwhile is missed (OSError past the system's watch limit)."""
        import ctypes

        stack = [top]
        while stack:
            directory = stack.pop()
            wd = libc.inotify_add_watch(fd, os.fsencode(directory), self.MASK)
            if wd < 0:
                if ctypes.get_errno() in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                    continue  # gone meanwhile (its parent's event says so), or unreadable
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")
            dirs[wd] = directory
            try:
                with os.scandir(directory) as entries:
                    stack.extend(e.path for e in entries
                                 if e.name != ".git" and e.is_dir(follow_symlinks=False))
            except OSError:
                continue  # gone or unreadable: as above

    def changed(self) -> bool:
        """True if anything in the work tree may have changed since the last call (always,
        while the watch is not ready); new directories are watched as they appear."""
        import struct

        if not self.ready:
            return True
        changed, self.first = self.first, False
        try:
            while True:
                data = os.read(self.fd, 65536)
                offset = 0
                while offset + 16 <= len(data):
                    wd, mask, _, length = struct.unpack_from("iIII", data, offset)
                    name = data[offset + 16:offset + 16 + length].rstrip(b"\0")
                    offset += 16 + length
                    changed = True
                    if mask & self.OVERFLOW or (mask & self.ISDIR and mask & self.MOVED_FROM):
                        self.restart()
                        return True
                    if mask & self.ISDIR and mask & (self.CREATE | self.MOVED_TO) and \
                            name != b".git":
                        self.watch_tree(self.libc, self.fd, os.path.join(
                            self.dirs.get(wd, self.top), os.fsdecode(name)), self.dirs)
        except BlockingIOError:
            pass
        except OSError as exc:
            self.close()
            self.give_up(exc)
        return changed or not self.ready


def search_worktree(index: Index, repo: Repo, text: str, overlay: WorktreeOverlay,
                    limit: int = 10, **filters) -> list[dict]:
    """search() over the index with the working tree laid over it: edited files answer from
    the overlay, deleted ones not at all."""
    slack = PER_FILE * (overlay.config.overlay_max_files + 10)  # room for what is hidden
    found = search(index, repo.git_dir, text, limit, spare=slack, **filters)  # while git runs
    hidden = overlay.edited | overlay.deleted if overlay.complete else overlay.deleted
    if PER_FILE * len(hidden) > slack:
        found = search(index, repo.git_dir, text, limit, spare=PER_FILE * len(hidden),
                       **filters)
    base = [r for r in found if r["path"] not in hidden]
    # (an overlay with no edited file documented holds nothing: a search of it costs a few ms)
    extra = search(overlay.index, repo.git_dir, text, limit, **filters) \
        if overlay.edited and overlay.complete else []
    lifted, demote = bool(filters.get("path") or filters.get("tests")), filters.get("demote", ())
    merged = sorted(base + extra, key=lambda r: (
        -(r["covered"] - coverage_penalty(r["path"], lifted, demote)), -r["score"]))
    for r in merged:
        r["edited"] = r["path"] in overlay.edited
    return merged[:limit]
