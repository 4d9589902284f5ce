"""What a user sees when something fails: one exception type and the exit codes.

Owns: CqError (a failure reported as one line, caught once in cq.py's main), the exit codes of
every command, and the LSB init-script codes of `cq worker status` (0 running, 1 dead, 3
stopped, 4 unknown, and 150/151 of our own for hung and blocked).
Must not: import anything of cq's; every module imports it.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

# LSB init-script status codes, plus one of our own from the 150-199 range.
STATUS_RUNNING = 0
STATUS_DEAD = 1
STATUS_STOPPED = 3
STATUS_UNKNOWN = 4
STATUS_HUNG = 150
STATUS_BLOCKED = 151


class CqError(Exception):
    """A failure to report to the user as one line, with the exit code to use."""

    def __init__(self, message: str, code: int = EXIT_FAILURE):
        super().__init__(message)
        self.code = code
