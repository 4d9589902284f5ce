"""The documenting processes: a batch's reading and CPU-bound work in child processes, so that
every core works while the worker writes SQLite, and a file that crashes a parser takes down
only its child.

Owns: Job and Documented (what crosses the pipe, as plain tuples marshal takes), the pool the
worker threads share (each child lent to one thread at a time, with up to POOL_DEPTH jobs,
replaced when it ends, the job it died on tried once more, then documented in the worker),
and the child's own loop.
Must not: write the index (the worker's thread stores what the children answer).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import namedtuple

from cqlib.documenters import document_text, minimal_record, skip_status
from cqlib.errors import EXIT_OK
from cqlib.gitio import BlobReader, WorkTreeFiles, read_exactly, scrubbed_env
from cqlib.index.schema import LEXICAL
from cqlib.lifecycle import Progress, Shutdown
from cqlib.state import DOCUMENTING_PROCESS, log, self_command
from cqlib.words import with_search_words

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator


# A batch's reading and CPU-bound work (the documenters) runs in child processes, so that
# every core works while the worker writes SQLite; the index keeps one writer.  A process
# leaves after POOL_IDLE seconds without work, or when the worker is gone.
POOL_MIN_FILES = 24  # a batch with fewer files to document is documented in the worker itself
POOL_GROUP = 16  # files sent to a process at once (a round trip each)
POOL_MAX = 8  # documenting processes at most, one per core up to this (all threads together)
POOL_IDLE = 10.0  # (a first index keeps them busy; a commit's few files need none)
POOL_REST = 60.0  # seconds without processes after they kept ending
POOL_DEPTH = 2  # jobs a process has at once
# Seconds a thread waits for a documenting process before the thread holding them all hands
# one back: until then one thread's files go to every process while the other writes the
# index.  A batch takes them for a fraction of a second; a first index took 0.95x the time of
# processes of each thread's own (CPython's Lib/, 7 interleaved runs), 0.98x where a waiting
# thread was handed one after 0.5 s.  Past this, a batch of files that each take long to
# parse holds no other thread's files for longer.
POOL_PATIENCE = 2.0
# A job sent while the process has another is this small at most: a pipe holds a page at
# least, so once the process has read the job before, this one fits whole, and the write
# cannot block while the process, blocked writing its answer, reads nothing.
POOL_AHEAD_BYTES = 4096
DIED_TWICE = "died twice"  # the answer to a group of jobs two processes ended on


class Job(namedtuple("Job", ("kind", "path", "blob", "budget", "words", "limit", "git_dir"))):
    """One file to document: the pass (LEXICAL, for its language and words only, or "full"),
    a path it has, its blob, its time budget (cq.parseBudget), whether its words are wanted
    (not where the lexical pass stored them), the size limit (cq.maxFileSize) and the git
    directory its blob is read from.  (It crosses the pipe as a plain tuple: marshal takes
    no other.)"""

    __slots__ = ()


class Documented(namedtuple("Documented", ("size", "doc"))):
    """What a job found: the blob's size (negative where git did not have it) and its doc
    (the documenter's record, or why it is not documented: "too large", "binary"; None for
    a missing blob)."""

    __slots__ = ()


class DocumentingPool:
    """The worker's documenting processes, shared by its threads and started when first
    needed, at most `size` of them.  A thread's run borrows every process no other thread is
    using (one, where other threads wait too), and hands each back once it has nothing more
    to give it, or once another thread has waited POOL_PATIENCE seconds for one (keeping one
    for itself): so while one thread writes the index, every process documents the files of
    another, where each thread with processes of its own left them idle at every write (a
    third of the time, at 50,000 generated files)."""

    def __init__(self, size: int):
        self.size = size
        self.free: list = []  # started processes no thread has borrowed
        self.lent = 0  # processes borrowed (or being started) by threads
        self.waiters: list = []  # since when each thread waiting for a process has waited
        self.turns = threading.Condition()
        self.resting_until = 0.0  # after processes kept ending, none is started until then

    def run(self, jobs: list) -> list | None:
        """The answers to each of `jobs` (each a group of Jobs, one round trip), in order:
        the list of their Documented, DIED_TWICE where a process died twice on the group, or
        None where none was run (processes kept ending).  None if the worker is stopping
        meanwhile."""
        return PoolRun(self, jobs).answers()

    def borrow(self, wanted: int, wait: bool) -> list:
        """Up to `wanted` processes for one thread: free ones, then new ones while fewer than
        `size` are started; with `wait`, at least one (waiting for one to be handed back),
        just one where other threads wait too.  None (an empty list) while the worker stops
        or the pool rests."""
        with self.turns:  # (its lock is reentrant: reap takes it too)
            self.reap()
            if wait and not self.free and self.lent >= self.size:
                since = time.monotonic()
                self.waiters.append(since)
                try:
                    while not self.free and self.lent >= self.size and not self.stopped():
                        self.turns.wait(timeout=0.25)
                        self.reap()
                finally:
                    self.waiters.remove(since)
            if self.stopped():
                return []
            if self.waiters:
                wanted = 1
            taken = self.free[:wanted]
            del self.free[:wanted]
            starting = max(0, min(wanted - len(taken), self.size - self.lent - len(self.free)
                                  - len(taken)))
            self.lent += len(taken) + starting
        reserved = len(taken) + starting
        try:
            for _ in range(starting):
                taken.append(start_documenting_process())
        except BaseException:
            self.give_back(taken + [None] * (reserved - len(taken)))
            raise
        return taken

    def give_back(self, procs: list) -> None:
        """Processes a thread has done with (None: one it could not start); those that ended
        are not kept, nor one still owing answers (ended: they would come out of step)."""
        with self.turns:
            for proc in procs:
                self.lent -= 1
                if proc is not None and proc.poll() is None:
                    if not proc.jobs:
                        self.free.append(proc)
                    else:
                        proc.kill()
                        proc.wait()
            self.turns.notify_all()

    def stopped(self) -> bool:
        """True while no process is to be started or lent: the worker stops, or the pool
        rests after its processes kept ending."""
        return Shutdown.requested or time.monotonic() < self.resting_until

    def wanted(self) -> bool:
        """True if a thread has waited POOL_PATIENCE seconds or more for a process."""
        oldest = min(self.waiters, default=None)  # without the lock: late by a round trip
        return oldest is not None and time.monotonic() - oldest >= POOL_PATIENCE

    def reap(self) -> None:
        """Poll the free processes, so that one that left (idle for POOL_IDLE) is reaped."""
        with self.turns:
            self.free = [proc for proc in self.free if proc.poll() is None]

    def close(self) -> None:
        """End the free processes (those borrowed end with their thread's run)."""
        with self.turns:
            free, self.free = self.free, []
        for proc in free:
            proc.kill()
            proc.wait()


class PoolRun:
    """One thread's run of a DocumentingPool over its jobs: the processes it borrowed, each
    with up to POOL_DEPTH jobs at once (so that it starts the next while its answer to the
    last one waits for this thread to read it), the jobs still to give, and how often a
    process died on each."""

    def __init__(self, pool: DocumentingPool, jobs: list):
        self.pool, self.jobs = pool, jobs
        self.waiting = list(range(len(jobs) - 1, -1, -1))  # popped from the end: in order
        self.deaths = [0] * len(jobs)
        self.procs: list = []  # borrowed
        self.busy: dict = {}  # stdout's descriptor -> its process, which has jobs to answer

    def answers(self) -> list | None:
        """Run the jobs to their answers (see DocumentingPool.run)."""
        import selectors

        answers: list = [None] * len(self.jobs)
        self.procs = self.pool.borrow(len(self.jobs), wait=True)
        if not self.procs:  # stopping, or resting: the jobs are done in the worker
            return None if Shutdown.requested else answers
        try:
            with selectors.DefaultSelector() as self.selector:
                while self.waiting or self.busy:
                    if Shutdown.requested:
                        self.close()
                        return None
                    if sum(self.deaths) > self.pool.size + 2:  # they keep ending: the rest here
                        log("documenting processes keep ending; the worker documents alone "
                            f"for {POOL_REST:g} s", error=True)
                        self.close()
                        self.pool.resting_until = time.monotonic() + POOL_REST
                        return answers
                    self.share()
                    for proc in self.procs[:1] if self.pool.wanted() else list(self.procs):
                        while self.waiting and len(proc.jobs) < POOL_DEPTH and self.give(proc):
                            pass
                    for key, _ in self.selector.select(timeout=0.25):
                        self.receive(self.busy[key.fd], answers)
        except BaseException:
            self.close()  # answers still due would come out of step
            raise
        self.pool.give_back(self.procs)
        self.procs = []
        return [DIED_TWICE if self.deaths[n] >= 2 else answer for n, answer in enumerate(answers)]

    def share(self) -> None:
        """Hand back the processes that have answered their jobs where this run has no more
        to give, or where the pool is wanted (then keeping one, which the run's next jobs
        go to); take free ones while no thread waits and jobs wait for them."""
        if not self.waiting or self.pool.wanted():
            keep = self.procs[:1] if self.waiting else []
            spare = [proc for proc in self.procs if not proc.jobs and proc not in keep]
            if spare:
                self.procs = [proc for proc in self.procs if proc not in spare]
                self.pool.give_back(spare)
        elif len(self.waiting) > len(self.procs) and not self.pool.waiters:
            try:
                self.procs += self.pool.borrow(len(self.waiting) - len(self.procs),
                                               wait=False)
            except OSError as exc:  # the run goes on with the processes it has
                log(f"no more documenting processes could start ({exc})", error=True)

    def receive(self, proc, answers: list) -> None:
        """Read a process's answer to its oldest job."""
        answer = receive_message(proc.stdout)
        if answer is None:
            self.died(proc)
            return
        answers[proc.jobs.pop(0)] = [Documented(*a) for a in answer]
        Progress.made()
        if not proc.jobs:
            self.idle(proc)

    def give(self, proc) -> bool:
        """Send a process the next job; False if it was not sent: too large to send ahead of
        an answer (see POOL_AHEAD_BYTES), or the process had ended (see died)."""
        import selectors

        message = message_bytes([tuple(job) for job in self.jobs[self.waiting[-1]]])
        if proc.jobs and len(message) > POOL_AHEAD_BYTES:
            return False
        proc.jobs.append(self.waiting.pop())
        if proc.stdout.fileno() not in self.busy:
            self.busy[proc.stdout.fileno()] = proc
            self.selector.register(proc.stdout, selectors.EVENT_READ)
        try:
            write_all(proc.stdin, message)
            return True
        except BrokenPipeError:  # it ended before taking the job (or could not start)
            self.died(proc)
            return False

    def idle(self, proc) -> None:
        """A process has answered all its jobs: no more waiting on it."""
        del self.busy[proc.stdout.fileno()]
        self.selector.unregister(proc.stdout)

    def died(self, proc) -> None:
        """A process ended on its oldest job: replace it, give that job once more, and the
        others it had again."""
        culprit, *innocent = proc.jobs
        self.deaths[culprit] += 1
        log(f"a documenting process ended on one of {len(self.jobs[culprit])} files from "
            f"{self.jobs[culprit][0].path}; "
            + ("trying once more" if self.deaths[culprit] < 2 else "documenting it here"),
            error=True)
        self.waiting += innocent[::-1]
        if self.deaths[culprit] < 2:
            self.waiting.append(culprit)
        self.idle(proc)
        proc.kill()
        proc.wait()
        self.procs[self.procs.index(proc)] = start_documenting_process()

    def close(self) -> None:
        """End every borrowed process now (answers still due would come out of step)."""
        try:
            for proc in self.procs:
                proc.kill()
                proc.wait()
        finally:
            self.pool.give_back(self.procs)
            self.procs = []


def start_documenting_process():
    """A child that answers documenting jobs (see serve_documenting), with none yet."""
    import subprocess

    proc = subprocess.Popen([*self_command(), "worker", DOCUMENTING_PROCESS],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=scrubbed_env())
    proc.jobs = []  # the indexes of the jobs it was sent and has not answered, oldest first
    return proc


SHARED_POOL: list = []  # the worker's DocumentingPool, made at its first use
SHARED_POOL_GUARD = threading.Lock()


def shared_pool() -> DocumentingPool:
    """The worker's DocumentingPool: one process per usable core, up to POOL_MAX."""
    with SHARED_POOL_GUARD:
        if not SHARED_POOL:
            SHARED_POOL.append(DocumentingPool(min(POOL_MAX, usable_cores())))
    return SHARED_POOL[0]


def reap_ended_processes() -> None:
    """Reap the documenting processes that left (idle for POOL_IDLE) while no thread had a
    batch to notice, so that none stays a zombie while the worker idles."""
    if SHARED_POOL:
        SHARED_POOL[0].reap()


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, which `taskset` and a container's
    cpuset narrow (os.cpu_count() counts the machine's, and more processes than cores only
    cost memory)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no affinity to ask for (not Linux)
        return os.cpu_count() or 1


def run_jobs(jobs: list, reader: BlobReader, before_here=None) -> list | None:
    """The answer to each documenting job (see answer_job), or the exception it raised: in
    the documenting processes where there are enough jobs, else (or where no process could
    answer) here, reading through `reader`, after calling before_here (if given).  None if
    the worker is stopping."""
    answers: list | None = [None] * len(jobs)
    if len(jobs) >= POOL_MIN_FILES:
        groups = [jobs[i:i + POOL_GROUP] for i in range(0, len(jobs), POOL_GROUP)]
        try:
            grouped = shared_pool().run(groups)
            answers = None if grouped is None else [
                answer for group, answered in zip(groups, grouped)
                for answer in (answered if isinstance(answered, list) else [None] * len(group))]
        except OSError as exc:
            log(f"documenting in this process: no documenting process could start ({exc})",
                error=True)
    if answers is None:
        return None
    left = [n for n, answer in enumerate(answers) if answer is None]
    if left and before_here:
        before_here()
    for n, (size, data) in zip(left, read_jobs([jobs[n] for n in left], reader)):
        Progress.made()
        try:
            answers[n] = answer_job(jobs[n], size, data)
        except Exception as exc:  # noqa: BLE001 - logged by the caller, as the file's failure
            answers[n] = exc
    return answers


def read_jobs(jobs: list[Job], reader: BlobReader) -> Iterator[tuple]:
    """(size, content) of each job's blob in turn, POOL_GROUP jobs at a time: from its file
    in the work tree where git keeps it loose and that file holds exactly the blob (see
    WorkTreeFiles), else through one git process (left unfinished, it is ended: see
    BlobReader.read_all).  A batch's jobs are of one repository and one size limit."""
    for start in range(0, len(jobs), POOL_GROUP):
        group = jobs[start:start + POOL_GROUP]
        with WorkTreeFiles.of_repository(group[0].git_dir) as files:
            found = [files.read(job.path, job.blob, job.limit) for job in group]
        missing = [job.blob for job, content in zip(group, found) if content is None]
        contents = reader.read_all(missing, group[0].limit)
        try:
            for content in found:
                yield content if content is not None else next(contents)
        finally:
            contents.close()


def answer_job(job: Job, size: int, data: bytes | None) -> Documented:
    """What a job whose blob was read (size: negative if git did not have it; data: None if
    it is over the limit) finds: the search words of each definition are worked out here,
    in the documenting process, so that the worker's writing thread does not."""
    if size < 0:
        return Documented(size, None)
    skipped = skip_status(data)
    if skipped:
        return Documented(size, skipped)
    if job.kind == LEXICAL:
        return Documented(size, minimal_record(job.path, data, ""))
    doc = document_text(job.path, data, job.budget, job.words)
    for e in doc["entries"]:
        with_search_words(e)
    return Documented(size, doc)


def serve_documenting() -> int:
    """A documenting process: answer each group of jobs read from stdin on stdout, reading
    their blobs through a `git cat-file` of its own, until stdin ends or POOL_IDLE seconds
    pass without one."""
    import gc
    import select
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C in the worker's terminal is its to take
    # An AST is a million objects for a large file, none of them in a cycle: the collector,
    # run by the allocations, scanned them again and again (12% of documenting CPython's
    # Lib/).  It runs once a group instead, over what that group left (the start-up's
    # objects, frozen, are never scanned).
    gc.freeze()
    gc.disable()
    readers: dict = {}  # git directory -> its BlobReader
    try:
        while select.select([sys.stdin], [], [], POOL_IDLE)[0]:
            message = receive_message(sys.stdin.buffer.raw)
            if message is None:
                break
            group = [Job(*item) for item in message]
            reader = readers.get(group[0].git_dir)
            if reader is None or not reader.alive():
                reader = readers[group[0].git_dir] = BlobReader(group[0].git_dir)
            send_message(sys.stdout.buffer.raw, [
                tuple(answer_job(job, size, data))
                for job, (size, data) in zip(group, read_jobs(group, reader))])
            gc.collect()
    except BrokenPipeError:  # the worker is gone or gave up on this answer (or git ended)
        pass
    finally:
        for reader in readers.values():
            reader.close()
    return EXIT_OK


def send_message(stream, value) -> None:
    """Write one value (marshal, after its length) to a pipe."""
    write_all(stream, message_bytes(value))


def message_bytes(value) -> bytes:
    """One value as send_message writes it."""
    import marshal

    body = marshal.dumps(value)
    return len(body).to_bytes(8, "big") + body


def write_all(stream, data: bytes) -> None:
    """Write all of data to a pipe."""
    view = memoryview(data)
    while view:
        view = view[os.write(stream.fileno(), view):]


def receive_message(stream):
    """Read one value written by send_message; None if the pipe ended first."""
    import marshal

    header = read_exactly(stream.fileno(), 8)
    body = header and read_exactly(stream.fileno(), int.from_bytes(header, "big"))
    return None if body is None else marshal.loads(body)
