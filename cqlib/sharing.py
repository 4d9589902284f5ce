"""Sharing: the external documenter's answers travel between clones as git notes.

The pipeline, from one clone to the next:

    summaries (index.db) --export--> refs/notes/cq --push--> remote's refs/notes/cq
    remote's refs/notes/cq --fetch--> refs/notes/remotes/<remote>/cq --merge--> refs/notes/cq
    refs/notes/cq --import (checked, capped)--> summaries, status 'shared' --> in use

A note annotates the blob it describes and holds one line of JSON per documenter settings
(`{"key": ..., "notes": {...}, "summary": ..., "v": 1}`, keys sorted): the settings' key is
the hash ExternalDocumenter makes of its preset or command, model and prompt version, so
teammates with different models never overwrite each other, and git's `cat_sort_uniq` notes
merge (a union of lines) joins concurrent pushes without losing an answer.  A push the remote
refuses (someone pushed first) fetches, merges and tries again.

Owns: the note format, export, import, and moving refs/notes/cq to and from a remote (with
GIT_TERMINAL_PROMPT=0 and a deadline, so a missing credential is an error, never a prompt).
Must not: call the documenter, or trust a note: anyone who can push to the remote writes
them.  A note is size-capped before it is read, each line schema-checked (a settings key, a
summary, notes on definitions, within the documenter's own caps: nothing that could name a
path, a command or a setting), and one for an object that is not a blob here is skipped.
Shown, its text is escaped as a file's contents are.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Iterator
from typing import NamedTuple

from cqlib.errors import EXIT_USAGE, CqError
from cqlib.gitio import BlobReader, network_git, resolve_commit, run_git, scrubbed_env
from cqlib.index.store import Index
from cqlib.index.summaries import SharedAnswer, Summaries
from cqlib.llm import MOST_NOTES, NOTE_CHARS, SUMMARY_CHARS
from cqlib.state import (
    INDEX_DB,
    Repo,
    ensure_state_dir,
    log,
    open_state_file,
    read_state_file,
    write_state_file,
)
from cqlib.text import is_text

NOTES_REF = "refs/notes/cq"
NOTE_VERSION = 1
NOTE_MAX_BYTES = 64 << 10  # one note: an answer per documenter settings, each a few KB
KEY_PATTERN = re.compile(r"[0-9a-f]{16}")
OBJECT_PATTERN = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")  # SHA-1 or SHA-256
NAME_CHARS = 200  # a definition's name a note may speak of
PUSH_TRIES = 5  # a push refused because another landed first: fetch, merge, push again
IMPORTED_MARK = "notes-imported"  # the notes commit last imported (a state file)
WAITING_NOTES = "notes-waiting"  # "OBJECT NOTE" lines: notes on content not here yet
WAITING_MAX = 200_000
IMPORT_BATCH = 2_000  # notes read and taken in at a time (so memory stays bounded)
EXPORTED_MARK = "notes-exported"  # "TIME COMMIT": answers up to TIME are in COMMIT's notes
# An answer stored while an export runs may carry an earlier time than the newest it saw:
# each export looks again at the answers of this many seconds before that one.
EXPORT_OVERLAP = 60.0
SHARE_LOCK = "share.lock"  # one share at a time, the worker's and the command line's
# Who writes cq's notes commits (git asks for an identity; a CI machine may have none).
NOTES_IDENTITY = {"GIT_AUTHOR_NAME": "cq", "GIT_AUTHOR_EMAIL": "cq@localhost",
                  "GIT_COMMITTER_NAME": "cq", "GIT_COMMITTER_EMAIL": "cq@localhost"}


class Imported(NamedTuple):
    """What one import took from the notes: answers new to the index, and lines skipped."""

    answers: int
    skipped: int


def note_line(answer: SharedAnswer) -> str:
    """An answer as its note line: canonical JSON, so the same answer is the same line."""
    return json.dumps({"key": answer.key, "notes": answer.notes, "summary": answer.summary,
                       "v": NOTE_VERSION}, sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"))


def parsed_line(blob: str, line: str) -> SharedAnswer | str:
    """A note line as an answer, or why it is not one (a line of another version is not
    this cq's to read, and is skipped too)."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):  # (nested thousands deep: no answer is)
        return "not JSON"
    if not isinstance(value, dict) or set(value) != {"key", "notes", "summary", "v"}:
        return "not a cq answer (its fields are key, notes, summary and v)"
    if value["v"] != NOTE_VERSION:
        return f"of another format ({str(value['v'])[:20]!r})"
    key, summary, notes = value["key"], value["summary"], value["notes"]
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        return "its key is not a documenter settings key (16 hexadecimal digits)"
    if not isinstance(summary, str) or not summary.strip() or len(summary) > SUMMARY_CHARS:
        return f"its summary is empty, not text, or over {SUMMARY_CHARS} characters"
    if not isinstance(notes, dict) or len(notes) > MOST_NOTES or not all(
            isinstance(k, str) and isinstance(v, str) and 0 < len(k) <= NAME_CHARS and
            len(v) <= NOTE_CHARS for k, v in notes.items()):
        return (f"its notes are not at most {MOST_NOTES} names of at most {NAME_CHARS} "
                f"characters with texts of at most {NOTE_CHARS}")
    if not all(is_text(text) for text in (summary, *notes, *notes.values())):
        return "not text (it escapes half a UTF-16 character, which no file can hold)"
    return SharedAnswer(blob, key, summary, notes)


def note_files(repo: Repo, commit: str, since: str | None = None) -> dict[str, tuple]:
    """Annotated object -> (note blob, size, path in the notes tree) for the notes of a notes
    commit; with `since`, only those added or changed after that commit."""
    if since:
        proc = run_git(["diff-tree", "-r", "-z", "--no-renames", "--diff-filter=AM", since,
                        commit], repo.common_dir, check=False)
        if proc.returncode == 0:
            fields = proc.stdout.split(b"\0")
            changed = {os.fsdecode(path): meta.split()[3].decode()
                       for meta, path in zip(fields[0::2], fields[1::2]) if meta}
            sizes = object_sizes(repo, list(changed.values()))
            return {path.replace("/", ""): (note, sizes.get(note, -1), path)
                    for path, note in changed.items()}
    listing = run_git(["ls-tree", "-r", "-z", "-l", commit], repo.common_dir).stdout
    found = {}
    for entry in filter(None, listing.split(b"\0")):
        meta, _, path = entry.partition(b"\t")
        _, kind, note, size = meta.split()
        if kind == b"blob":
            name = os.fsdecode(path)
            found[name.replace("/", "")] = (note.decode(), int(size), name)
    return found


def object_sizes(repo: Repo, objects: list[str]) -> dict[str, int]:
    """Object -> its size, for those of these that are blobs in the repository."""
    if not objects:
        return {}
    proc = run_git(["cat-file", "--batch-check=%(objectname) %(objecttype) %(objectsize)"],
                   repo.common_dir, input="".join(f"{o}\n" for o in objects).encode())
    sizes = {}
    for line in proc.stdout.decode().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "blob":
            sizes[parts[0]] = int(parts[2])
    return sizes


def note_answers(blob: str, data: bytes) -> tuple[list[SharedAnswer], int]:
    """The answers of one note's text, and how many of its lines were refused (logged)."""
    answers, refused = [], 0
    for line in data.decode("utf-8", "replace").split("\n"):  # (U+2028 is no line end)
        found = parsed_line(blob, line) if line.strip() else None
        if isinstance(found, SharedAnswer):
            answers.append(found)
        elif found:
            refused += 1
            log(f"sharing: a line of the note on blob {blob} was skipped: {found}", error=True)
    return answers, refused


def answers_for(repo: Repo, blob: str) -> list[SharedAnswer]:
    """The answers refs/notes/cq holds for one blob (checked as an import checks them): what
    the worker reads before it calls the documenter, whatever has been imported."""
    proc = run_git(["notes", f"--ref={NOTES_REF}", "list", blob], repo.common_dir,
                   check=False)
    note = proc.stdout.decode().strip()
    if proc.returncode != 0 or not OBJECT_PATTERN.fullmatch(note):
        return []
    size = object_sizes(repo, [note]).get(note, -1)
    if not 0 <= size <= NOTE_MAX_BYTES:
        log(f"sharing: the note on blob {blob} was skipped: it is {size} bytes, over the "
            f"cap of {NOTE_MAX_BYTES}", error=True)
        return []
    return note_answers(blob, run_git(["cat-file", "blob", note], repo.common_dir).stdout)[0]


def import_notes(repo: Repo, index: Index) -> Imported | None:
    """Take the answers of refs/notes/cq that the index lacks into it (status 'shared'):
    those of the notes changed since the last import, and of notes that waited for their
    content (a teammate's branch not fetched yet), IMPORT_BATCH notes at a time; None when
    there was nothing to look at."""
    commit = resolve_commit(repo.common_dir, NOTES_REF)
    mark = repo.state_path(IMPORTED_MARK)
    last = (read_state_file(mark) or b"").decode(errors="replace").strip() or None
    waiting = read_waiting(repo)
    if (commit is None or commit == last) and not waiting:
        return None
    files = note_files(repo, commit, since=last) if commit and commit != last else {}
    if waiting:
        sizes = object_sizes(repo, list(waiting.values()))
        for obj, note in waiting.items():
            files.setdefault(obj, (note, sizes.get(note, -1), ""))
    present = object_sizes(repo, [o for o in files if OBJECT_PATTERN.fullmatch(o)])
    wanted, still_waiting, refused = [], {}, 0
    for obj, (note, size, _) in files.items():
        if not OBJECT_PATTERN.fullmatch(obj):
            refused += 1
            log(f"sharing: a note at {obj[:80]!r} was skipped: it names no object", error=True)
        elif obj not in present:
            if size >= 0:  # (a note gone from the ref waits no more)
                still_waiting[obj] = note
            if obj not in waiting:
                log(f"sharing: the note on {obj} waits: it describes no blob of this "
                    "repository (yet)")
        elif not 0 <= size <= NOTE_MAX_BYTES:
            refused += 1
            log(f"sharing: the note on blob {obj} was skipped: it is {size} bytes, over the "
                f"cap of {NOTE_MAX_BYTES}", error=True)
        else:
            wanted.append((obj, note))
    added = 0
    for start in range(0, len(wanted), IMPORT_BATCH):
        answers, bad = batch_answers(repo, wanted[start:start + IMPORT_BATCH])
        refused += bad
        with index.transaction():
            added += Summaries(index).take_shared(answers)
    ensure_state_dir(repo)
    write_waiting(repo, still_waiting)
    if commit:
        write_state_file(mark, commit.encode())
    if added or refused:
        log(f"sharing: took {added} answer(s) from {NOTES_REF}; refused {refused}; "
            f"{len(still_waiting)} wait for their content")
    return Imported(added, refused)


def batch_answers(repo: Repo, notes: list[tuple[str, str]]) -> tuple[list, int]:
    """The answers of these (blob, note) pairs, checked, and how many lines were refused."""
    answers, refused = [], 0
    reader = BlobReader(repo.common_dir)
    try:
        for (obj, _), (_, data) in zip(notes, reader.read_all([n for _, n in notes],
                                                                NOTE_MAX_BYTES)):
            found, bad = note_answers(obj, data or b"")
            answers += found
            refused += bad
    finally:
        reader.close()
    return answers, refused


def noted_blobs(repo: Repo, key: str, blobs: list[str]) -> set[str]:
    """Those of these blobs that refs/notes/cq holds an answer for with settings `key`
    (imported or not: what `cq index --estimate` spares)."""
    commit = resolve_commit(repo.common_dir, NOTES_REF)
    files = note_files(repo, commit) if commit and blobs else {}
    notes = [(blob, files[blob][0]) for blob in blobs
             if blob in files and 0 <= files[blob][1] <= NOTE_MAX_BYTES]
    found: set = set()
    for start in range(0, len(notes), IMPORT_BATCH):
        answers, _ = batch_answers(repo, notes[start:start + IMPORT_BATCH])
        found.update(a.blob for a in answers if a.key == key)
    return found


def read_waiting(repo: Repo) -> dict[str, str]:
    """The notes that wait for their content: object -> note."""
    data = read_state_file(repo.state_path(WAITING_NOTES), WAITING_MAX * 82) or b""
    pairs = (line.split() for line in data.decode(errors="replace").splitlines())
    return {p[0]: p[1] for p in pairs if len(p) == 2}


def write_waiting(repo: Repo, waiting: dict[str, str]) -> None:
    """Keep the notes that wait for their content (at most WAITING_MAX of them)."""
    path = repo.state_path(WAITING_NOTES)
    if waiting or os.path.exists(path):
        write_state_file(path, "".join(f"{obj} {note}\n" for obj, note in
                                       list(waiting.items())[:WAITING_MAX]).encode())


def export_answers(repo: Repo, index: Index) -> int:
    """Write the index's answers that refs/notes/cq lacks into it, as one commit; how many
    answers were added.  Only answers made or taken in since the last export are looked at,
    while the notes that export wrote are still in refs/notes/cq (else all are)."""
    summaries = Summaries(index)
    commit = resolve_commit(repo.common_dir, NOTES_REF)
    mark = repo.state_path(EXPORTED_MARK)
    since, exported = export_mark(repo)
    newest = summaries.newest_answer()
    kept = bool(commit and exported and run_git(
        ["merge-base", "--is-ancestor", exported, commit], repo.common_dir,
        check=False).returncode == 0)
    ours: dict = {}
    for answer in summaries.answers(since - EXPORT_OVERLAP if kept else 0.0):
        ours.setdefault(answer.blob, set()).add(note_line(answer))
    files = note_files(repo, commit) if commit and ours else {}
    present = {obj: note for obj, (note, size, _) in files.items() if obj in ours and
               0 <= size <= NOTE_MAX_BYTES}
    texts = {}
    if present:
        reader = BlobReader(repo.common_dir)
        try:
            for obj, (_, data) in zip(present, reader.read_all(list(present.values()),
                                                                NOTE_MAX_BYTES)):
                texts[obj] = [line for line in (data or b"").decode("utf-8", "replace")
                              .split("\n") if line]
        finally:
            reader.close()
    changed, added = {}, 0
    for blob, lines in ours.items():
        held = set(texts.get(blob, ()))
        if blob in files and blob not in texts:
            continue  # a note too large to read: left as it is
        new = lines - held
        if new:
            changed[blob] = sorted(held | lines)
            added += len(new)
    if changed:
        write_notes(repo, commit, changed, {obj: path for obj, (_, _, path) in files.items()})
    commit = resolve_commit(repo.common_dir, NOTES_REF)
    if commit:
        ensure_state_dir(repo)
        write_state_file(mark, f"{newest} {commit}".encode())
    return added


def export_mark(repo: Repo) -> tuple[float, str]:
    """(time of the newest answer the last export looked at, the notes commit it left)."""
    text = (read_state_file(repo.state_path(EXPORTED_MARK)) or b"").decode(errors="replace")
    since, _, commit = text.partition(" ")
    try:
        return float(since), commit.strip()
    except ValueError:
        return 0.0, ""


def has_unshared(repo: Repo, index: Index) -> bool:
    """True if the index holds an answer newer than the last export looked at."""
    return Summaries(index).newest_answer() > export_mark(repo)[0]


def write_notes(repo: Repo, parent: str | None, changed: dict, paths: dict) -> None:
    """One commit on refs/notes/cq that sets these notes (blob -> lines), through
    `git fast-import` (thousands of notes in one process); a note keeps its path (`paths`:
    blob -> its path in the parent's tree), a new one takes git's two-level fan-out."""
    message = b"cq: answers to share\n"
    chunks = [f"commit {NOTES_REF}\ncommitter cq <cq@localhost> {int(time.time())} +0000\n"
              f"data {len(message)}\n".encode() + message]
    if parent:
        chunks.append(f"from {parent}\n".encode())
    for blob, lines in changed.items():
        body = "".join(f"{line}\n" for line in lines).encode()
        path = paths.get(blob) or f"{blob[:2]}/{blob[2:]}"
        chunks.append(f"M 100644 inline {path}\ndata {len(body)}\n".encode() + body + b"\n")
    run_git(["fast-import", "--quiet"], repo.common_dir, input=b"".join(chunks))


def share_remote(remote: str | None, configured: str) -> str:
    """The remote to share with: as given, else cq.shareRemote, else origin; never one that
    git would read as an option."""
    name = remote or configured or "origin"
    if name.startswith("-") or not name.strip() or "\n" in name or "\0" in name:
        raise CqError(f"not a remote: {name!r} (give a remote's name or URL)", EXIT_USAGE)
    return name


def tracking_ref(remote: str) -> str:
    """Where a remote's notes are fetched to: refs/notes/remotes/<name>/cq, the name made
    safe for a ref (a URL by its hash)."""
    import hashlib

    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", remote) and ".." not in remote and \
            not remote.endswith((".lock", ".")):
        return f"refs/notes/remotes/{remote}/cq"
    return f"refs/notes/remotes/url-{hashlib.sha256(remote.encode()).hexdigest()[:16]}/cq"


def fetch_notes(repo: Repo, remote: str, timeout: float) -> bool:
    """Fetch the remote's refs/notes/cq and merge it into ours (a union of lines); False if
    the remote has none yet."""
    tracking = tracking_ref(remote)
    code, err = network_git(repo.common_dir, [
        "fetch", "--no-tags", "--quiet", "--no-write-fetch-head", "--no-recurse-submodules",
        remote, f"+{NOTES_REF}:{tracking}"], timeout)
    if code != 0:
        if "couldn't find remote ref" in err:
            return False
        raise CqError(f"cannot fetch {NOTES_REF} from {remote}: {git_problem(err)}")
    merge_notes(repo, tracking)
    return True


def merge_notes(repo: Repo, ref: str) -> None:
    """Join another notes ref into refs/notes/cq: its lines and ours, each once."""
    if resolve_commit(repo.common_dir, NOTES_REF) is None:
        run_git(["update-ref", NOTES_REF, ref], repo.common_dir)
        return
    env = {**scrubbed_env(), **NOTES_IDENTITY}
    run_git(["notes", f"--ref={NOTES_REF}", "merge", "-q", "-s", "cat_sort_uniq", ref],
            repo.common_dir, env=env)


def push_notes(repo: Repo, remote: str, timeout: float) -> None:
    """Push refs/notes/cq; where the remote took another push first, fetch and merge it,
    then push again (PUSH_TRIES in all)."""
    err = ""
    for _ in range(PUSH_TRIES):
        code, err = network_git(repo.common_dir, ["push", "--quiet", remote,
                                                  f"{NOTES_REF}:{NOTES_REF}"], timeout)
        if code == 0:
            return
        if code < 0 or not re.search(r"rejected|fetch first|non-fast-forward|cannot lock|"
                                     r"failed to update ref", err):
            break
        fetch_notes(repo, remote, timeout)
    raise CqError(f"cannot push {NOTES_REF} to {remote}: {git_problem(err)}")


def git_problem(err: str) -> str:
    """The line of a failed git command's stderr that says what went wrong: its last fatal
    error, else its first error, else its last line."""
    lines = [line.strip() for line in err.splitlines() if line.strip()]
    fatal = [line for line in lines if line.startswith("fatal:")]
    said = fatal[-1:] or [line for line in lines if line.startswith("error:")][:1]
    return ((said or lines[-1:] or ["no reason given"])[0])[:300]


class Shared(NamedTuple):
    """What `cq share push` or `fetch` did."""

    action: str  # push or fetch
    remote: str
    exported: int  # answers written into refs/notes/cq from the index
    imported: int  # answers taken into the index from refs/notes/cq
    skipped: int  # note lines refused (see the worker log)
    found: bool  # there were notes: the remote's to fetch, or ours to push
    indexed: bool  # there was an index to take them into (else the worker takes them in)

    def text(self) -> str:
        """What it did, in words (for `cq share` and `worker status`)."""
        if not self.found:
            return f"no answers to push yet (no {NOTES_REF})" if self.action == "push" \
                else f"{self.remote} has no shared answers yet (no {NOTES_REF})"
        done = [f"pushed {self.exported} answer(s) to {self.remote}"] \
            if self.action == "push" else [f"fetched from {self.remote}"]
        done.append(f"took in {self.imported}" if self.indexed else
                    "the worker takes the answers in before it calls the documenter")
        if self.skipped:
            done.append(f"refused {self.skipped} malformed (see: cq worker logs)")
        return "; ".join(done)


def share(repo: Repo, action: str, remote: str, timeout: float) -> Shared:
    """`cq share push`: export the index's answers, push (fetching and merging first where
    the remote moved).  `cq share fetch`: fetch, merge, and import into the index where
    there is one (else the worker imports them before it first calls the documenter).  One
    answer for both the command line and the worker's background sharing."""
    if action == "push" and not os.path.exists(repo.state_path(INDEX_DB)):
        raise CqError("nothing to share: this repository is not indexed (run: cq init)",
                      EXIT_USAGE)
    ensure_state_dir(repo)
    with share_lock(repo):
        return shared_locked(repo, action, remote, timeout)


@contextlib.contextmanager
def share_lock(repo: Repo) -> Iterator[None]:
    """An exclusive flock on the state directory's share.lock, held while the `with` lasts:
    a merge or an export must not move refs/notes/cq under another's feet."""
    import fcntl

    fd = open_state_file(repo.state_path(SHARE_LOCK), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def shared_locked(repo: Repo, action: str, remote: str, timeout: float) -> Shared:
    """share(), under the share lock."""
    if not os.path.exists(repo.state_path(INDEX_DB)):
        return Shared(action, remote, 0, 0, 0, fetch_notes(repo, remote, timeout), False)
    with Index(repo) as index:
        exported = export_answers(repo, index) if action == "push" else 0
        if action == "push" and resolve_commit(repo.common_dir, NOTES_REF) is None:
            return Shared(action, remote, 0, 0, 0, False, True)
        if action == "push":
            push_notes(repo, remote, timeout)
        found = fetch_notes(repo, remote, timeout) if action == "fetch" else True
        result = import_notes(repo, index) or Imported(0, 0)
    return Shared(action, remote, exported, result.answers, result.skipped, found, True)
