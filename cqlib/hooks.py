"""The git hooks: the copy-in scripts in hooks/, installing and chaining them, `cq hook run`.

Owns: installing cq's hooks beside a foreign one (kept as NAME.cq-chained and run first),
refusing a hooks directory a commit could carry (core.hooksPath in the working tree) with the
manual steps instead, uninstalling byte for byte, and the hot path behind every hook: which
events move HEAD, a marker, a poke, a start where cq.autostart allows.
Must not: fail, block or slow git (the script backgrounds this with every stream detached),
or import Huey or sqlite3.
"""

from __future__ import annotations

import os

from cqlib.config import load_config
from cqlib.control import wake_worker
from cqlib.errors import EXIT_USAGE, CqError
from cqlib.gitio import git_ignores, hooks_dir, rebase_in_progress, work_tree
from cqlib.state import (
    Repo,
    append_hook_log,
    bundled_file,
    check_own_directory,
    clear_hook_problems,
    ensure_state_dir,
    mark_moved,
)

HOOK_NAMES = ("post-commit", "post-merge", "post-checkout", "post-rewrite")
HOOK_MARKER = b"# cq-hook"
CHAINED_SUFFIX = ".cq-chained"


def hook_script() -> bytes:
    """The hook script shipped with this cq (from the archive or the source tree)."""
    return bundled_file("hooks/post-commit")


def is_cq_hook(path: str) -> bool:
    """True if the file at path is one of cq's hook scripts (any version)."""
    try:
        with open(path, "rb") as f:
            return HOOK_MARKER in f.read(4096)
    except OSError:
        return False


def hook_states(directory: str) -> dict[str, str]:
    """Each hook's state: installed, out of date, foreign (not chained) or missing."""
    script = hook_script()
    states = {}
    for name in HOOK_NAMES:
        path = os.path.join(directory, name)
        if not os.path.lexists(path):
            states[name] = "missing"
        elif is_cq_hook(path):
            with open(path, "rb") as f:
                current = f.read() == script
            chained = os.path.lexists(path + CHAINED_SUFFIX)
            states[name] = ("installed" if current else "out of date") + \
                (", chains a foreign hook" if chained else "")
        else:
            states[name] = "foreign hook, cq not installed"
    return states


def install_hooks(repo: Repo, cwd: str) -> list[str]:
    """Install cq's hooks, keeping foreign ones as chained hooks; returns what was done."""
    directory = os.path.realpath(hooks_dir(repo, cwd))  # symlinks resolved before judging
    if all(state.startswith("installed") for state in hook_states(directory).values()):
        return []  # in place already, perhaps copied by hand where cq will not write
    top = work_tree(cwd)
    top = os.path.realpath(top) if top else None
    inside = [repo.common_dir] + ([top] if top else [])
    if not any(os.path.commonpath([directory, root]) == root for root in inside):
        refuse_hooks_dir(repo, directory, "is outside this repository (core.hooksPath)")
    in_git_dir = os.path.commonpath([directory, repo.common_dir]) == repo.common_dir
    if top and not in_git_dir and os.path.commonpath([directory, top]) == top and \
            not git_ignores(cwd, os.path.join(directory, HOOK_NAMES[0])):
        refuse_hooks_dir(repo, directory, "is in the working tree and not ignored by git "
                         "(husky before v9?), so cq's hooks could be committed")
    os.makedirs(directory, exist_ok=True)
    script = hook_script()
    done = []
    for name in HOOK_NAMES:
        path = os.path.join(directory, name)
        if os.path.lexists(path) and not is_cq_hook(path):
            if os.path.lexists(path + CHAINED_SUFFIX):
                raise CqError(f"both {path} and {path}{CHAINED_SUFFIX} exist; move one away")
            os.rename(path, path + CHAINED_SUFFIX)
            done.append(f"{name}: kept the existing hook as {name}{CHAINED_SUFFIX}, run first")
        elif os.path.lexists(path):
            with open(path, "rb") as f:
                if f.read() == script:
                    continue
        write_executable(path, script)
        done.append(f"{name}: installed")
    return done


def refuse_hooks_dir(repo: Repo, directory: str, why: str) -> None:
    """Refuse to install into directory, printing the exact manual step instead."""
    write_hook_copies(repo)
    raise CqError(f"hooks path {directory} {why}; cq will not write there. To install by "
                  f"hand: {'; '.join(manual_install(repo, directory))}")


def manual_install(repo: Repo, directory: str) -> list[str]:
    """Shell commands that install cq's hooks into directory as `hook install` would: a hook
    that is there already is kept, as the chained one, and runs first."""
    import shlex

    script = hook_script()
    commands = [] if os.path.isdir(directory) else [f"mkdir -p {shlex.quote(directory)}"]
    for name in HOOK_NAMES:
        source = shlex.quote(os.path.join(repo.state_path("hooks"), name))
        target = os.path.join(directory, name)
        if is_cq_hook(target):
            with open(target, "rb") as f:
                if f.read() == script:
                    continue
        elif os.path.lexists(target):
            if os.path.lexists(target + CHAINED_SUFFIX):
                raise CqError(f"both {target} and {target}{CHAINED_SUFFIX} exist; move one "
                              "away")
            commands.append(f"mv {shlex.quote(target)} {shlex.quote(target + CHAINED_SUFFIX)}")
        commands.append(f"cp {source} {shlex.quote(target)}")
    return commands


def write_executable(path: str, data: bytes) -> None:
    """Replace path with an executable file, never writing through a symlink planted at the
    temporary name (a hooks directory may be in the working tree)."""
    tmp = f"{path}.cq-tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o755)
    except FileExistsError:
        os.unlink(tmp)  # removes a link itself, never its target
        fd = os.open(tmp, flags, 0o755)
    try:
        os.fchmod(fd, 0o755)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_hook_copies(repo: Repo) -> None:
    """Put ready-to-copy hook scripts under the state directory for manual installs."""
    ensure_state_dir(repo)
    target = repo.state_path("hooks")
    try:
        os.mkdir(target, 0o700)
    except FileExistsError:
        pass
    check_own_directory(target)
    for name in HOOK_NAMES:
        write_executable(os.path.join(target, name), hook_script())


def uninstall_hooks(repo: Repo, cwd: str) -> list[str]:
    """Remove cq's hooks and put chained foreign hooks back, byte for byte."""
    directory = hooks_dir(repo, cwd)
    done = []
    for name in HOOK_NAMES:
        path = os.path.join(directory, name)
        if is_cq_hook(path):
            os.unlink(path)
            done.append(f"{name}: removed")
        if os.path.lexists(path + CHAINED_SUFFIX) and not os.path.lexists(path):
            os.rename(path + CHAINED_SUFFIX, path)
            done.append(f"{name}: restored the original hook")
    return done


def hook_acts(name: str, args: list[str], git_dir: str) -> bool:
    """Whether this hook event can have moved HEAD in a way the index must follow."""
    if name == "post-commit":
        return not rebase_in_progress(git_dir)  # a rebase is handled once, by post-rewrite
    if name == "post-checkout":
        return len(args) >= 3 and args[2] == "1" and args[0] != args[1]
    if name == "post-rewrite":
        return bool(args) and args[0] == "rebase"  # amend already fired post-commit
    return name == "post-merge"


def run_hook(repo: Repo, name: str, args: list[str]) -> None:
    """The hot path behind every hook: record, poke or start the worker, return."""
    if name not in HOOK_NAMES:
        raise CqError(f"unknown hook {name!r}; expected one of {', '.join(HOOK_NAMES)}",
                      EXIT_USAGE)
    if not hook_acts(name, args, repo.git_dir):
        return
    mark_moved(repo)
    if not wake_worker(repo, start=False):
        if not load_config(repo).autostart:
            append_hook_log(repo, f"{name}: the worker is not running and cq.autostart is "
                            "off; the change is recorded (run: cq worker start)")
            return
        wake_worker(repo, start=True)
    clear_hook_problems(repo)
