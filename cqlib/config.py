"""cq's settings: the cq.* keys of git config, validated into one Config.

Owns: the table of keys (name, parser, default, hint), parsing a value or saying in one line
how to fix it, reading them (local, global or system config; never a file in the working tree,
so a stranger's clone cannot choose a program for cq to run), re-reading them in long-lived
readers, and the gitignore-style patterns they hold (cq.exclude, cq.demote).
Must not: read the working tree, or cost a hot path more than one git process.
"""

from __future__ import annotations

import os
import sys
import time

from cqlib.errors import EXIT_USAGE, CqError
from cqlib.gitio import SUBMODULE_MODE, SYMLINK_MODE, PendingGit, run_git, scrubbed_env
from cqlib.state import Repo


class Config:
    """cq's settings for one repository, read from git config (local, global or system)."""

    KEYS = {
        # git key, as documented: (attribute, parser, default, hint)
        "cq.workers": ("workers", "int:1:64", 2, "a whole number from 1 to 64"),
        "cq.autostart": ("autostart", "bool", True, "true or false"),
        "cq.shutdownTimeout": ("shutdown_timeout", "float:0.1:3600", 30.0,
                               "seconds, from 0.1 to 3600"),
        "cq.heartbeatInterval": ("heartbeat_interval", "float:0.05:60", 2.0,
                                 "seconds, from 0.05 to 60"),
        "cq.reconcileInterval": ("reconcile_interval", "float:0.1:86400", 60.0,
                                 "seconds, from 0.1 to 86400"),
        "cq.workerIdleExit": ("idle_exit", "float:0:604800", 600.0,
                              "seconds, from 0 (never) to 604800"),
        "cq.logMaxBytes": ("log_max_bytes", "size:4096:1073741824", 1 << 20,
                           "a size from 4k to 1g"),
        "cq.logBackups": ("log_backups", "int:1:100", 3, "a whole number from 1 to 100"),
        "cq.maxFileSize": ("max_file_size", "size:1:1073741824", 1 << 20,
                           "a size in bytes, with an optional k, m or g, up to 1g"),
        "cq.exclude": ("exclude", "list", (), "gitignore-style patterns, one per value"),
        "cq.demote": ("demote", "list", (), "gitignore-style patterns, one per value"),
        "cq.pruneAfter": ("prune_after_days", "float:0:36500", 7.0, "days, from 0 to 36500"),
        "cq.parseBudget": ("parse_budget", "float:0.1:3600", 5.0,
                           "seconds, from 0.1 to 3600"),
        "cq.mcpWaitMs": ("mcp_wait_ms", "int:0:60000", 1000, "milliseconds, from 0 to 60000"),
        "cq.mcpToken": ("mcp_token", "str", "", "a bearer token for cq mcp --http"),
        "cq.mcpRequestTimeout": ("mcp_request_timeout", "float:0.1:3600", 30.0,
                                 "seconds, from 0.1 to 3600"),
        "cq.overlayMaxFiles": ("overlay_max_files", "int:0:10000", 50,
                               "a whole number from 0 to 10000"),
        "cq.documenter": ("documenter", "str", "",
                          "claude (Claude Code's CLI, or the path to it) or a shell command"),
        "cq.documenterModel": ("documenter_model", "str", "", "a model name, such as sonnet"),
        "cq.documenterTimeout": ("documenter_timeout", "float:0.1:86400", 300.0,
                                 "seconds, from 0.1 to 86400"),
        "cq.documenterJobs": ("documenter_jobs", "int:1:64", 2, "a whole number from 1 to 64"),
        "cq.documenterMaxBytes": ("documenter_max_bytes", "size:1:1073741824", 100 << 10,
                                  "a size in bytes, with an optional k, m or g, up to 1g"),
        "cq.documenterBudget": ("documenter_budget", "float:0:1000000", 0.0,
                                "US dollars a day, 0 for no cap"),
        "cq.documenterFailures": ("documenter_failures", "int:1:1000", 3,
                                  "a whole number from 1 to 1000"),
        "cq.documenterBackoff": ("documenter_backoff", "float:0.1:86400", 60.0,
                                 "seconds, from 0.1 to 86400"),
        "cq.documenterShard": ("documenter_shard", "shard", (1, 1),
                               "K/N: this machine summarises shard K of N (1/1: all)"),
        "cq.share": ("share", "bool", True, "true or false"),
        "cq.shareRemote": ("share_remote", "str", "", "a remote's name or URL"),
        "cq.shareAuto": ("share_auto", "bool", False, "true or false"),
        "cq.shareInterval": ("share_interval", "float:10:604800", 600.0,
                             "seconds, from 10 to 604800"),
        "cq.shareTimeout": ("share_timeout", "float:1:3600", 60.0, "seconds, from 1 to 3600"),
    }
    BY_GIT_NAME = {key.lower(): key for key in KEYS}  # git prints keys in lowercase

    def __init__(self, values: dict | None = None):
        for attr, _, default, _ in self.KEYS.values():
            setattr(self, attr, default)
        for key, value in (values or {}).items():
            setattr(self, self.KEYS[key][0], value)


SIZE_SUFFIXES = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_config_value(key: str, raw: str) -> object:
    """Convert one git config value, or raise CqError naming the key and the expected form."""
    _, kind, _, hint = Config.KEYS[key]
    fix = f"(fix with: git config {key} VALUE, or git config --unset-all {key})"
    if kind == "bool":
        lowered = raw.strip().lower()
        if lowered in ("true", "yes", "on", "1", ""):
            return True
        if lowered in ("false", "no", "off", "0"):
            return False
    elif kind in ("list", "str"):
        return raw
    elif kind == "shard":
        return parse_shard(raw, fix)
    else:
        name, low, high = kind.split(":")
        text = raw.strip().lower()
        scale = 1
        if name == "size" and text[-1:] in SIZE_SUFFIXES:  # git's own k, m, g suffixes
            scale, text = SIZE_SUFFIXES[text[-1:]], text[:-1]
        try:
            value = float(text) if name == "float" else int(text) * scale
        except ValueError:
            value = None
        if value is not None and float(low) <= value <= float(high):
            return value
    raise CqError(f"invalid value {raw!r} for {key}: expected {hint} {fix}", EXIT_USAGE)


SHARDS_MAX = 4096


def parse_shard(raw: str, fix: str = "") -> tuple[int, int]:
    """`K/N` (shard K of N, 1 <= K <= N <= SHARDS_MAX) as (K, N); CqError otherwise."""
    number, _, of = raw.strip().partition("/")
    if number.isdigit() and of.isdigit() and 1 <= int(number) <= int(of) <= SHARDS_MAX:
        return int(number), int(of)
    raise CqError(f"invalid shard {raw!r}: expected K/N, shard K of N, with 1 <= K <= N <= "
                  f"{SHARDS_MAX} (such as 2/4){' ' + fix if fix else ''}", EXIT_USAGE)


def parse_config(pairs: list[tuple[str, str]]) -> Config:
    """Build a Config from (key, value) pairs as git prints them; unknown cq.* keys are errors."""
    values: dict = {}
    for name, raw in pairs:
        key = Config.BY_GIT_NAME.get(name.lower())
        if key is None:
            known = ", ".join(sorted(Config.KEYS))
            raise CqError(f"unknown setting {name} (known: {known}); "
                          f"remove it with: git config --unset-all {name}", EXIT_USAGE)
        value = parse_config_value(key, raw)
        if Config.KEYS[key][1] == "list":
            values[key] = (*values.get(key, ()), value)
        else:
            values[key] = value
    return Config(values)


class FreshConfig:
    """The settings of a long-running reader (the summarizer, the MCP server): read again at
    most every 2 seconds, since each read is a git process; while they are invalid, the last
    valid ones (the defaults at first), with the problem passed to warn."""

    def __init__(self, repo: Repo, warn, config: Config | None = None):
        self.repo, self.warn = repo, warn
        self.read: tuple = (time.monotonic(), config) if config else (0.0, None)

    def __call__(self) -> Config:
        when, config = self.read
        if config is None or time.monotonic() - when > 2:
            try:
                config = load_config(self.repo)
            except CqError as exc:
                self.warn(f"{exc}; using the last valid settings")
                config = config or Config()
            self.read = (time.monotonic(), config)
        return config

    def last(self) -> Config:
        """The settings as last read, without reading (safe in a signal handler)."""
        return self.read[1] or Config()


def config_or_defaults(repo: Repo, pending: PendingGit | None = None) -> Config:
    """The settings, or the defaults with a warning where they are invalid: for commands that
    must work even then, such as stopping the worker.  `pending`: as for load_config."""
    try:
        return load_config(repo, pending)
    except CqError as exc:
        print(f"cq: warning: {exc}; using the defaults", file=sys.stderr)
        return Config()


CONFIG_ARGS = ["config", "-z", "--get-regexp", r"^cq\."]  # every cq.* setting, NUL-separated


def start_config_read(repo: Repo) -> PendingGit:
    """Start reading the cq.* settings, for load_config to take later."""
    return PendingGit(["--git-dir", repo.git_dir, *CONFIG_ARGS], env=scrubbed_env())


def load_config(repo: Repo, pending: PendingGit | None = None) -> Config:
    """Read and validate the cq.* settings that apply to this repository (the answer of
    `pending`, started by start_config_read, where given)."""
    code, out = (pending or start_config_read(repo)).answer()
    if code not in (0, 1):  # asked again, for what git says on stderr
        proc = run_git(CONFIG_ARGS, git_dir=repo.git_dir, check=False)
        detail = os.fsdecode(proc.stderr).strip().splitlines()
        raise CqError(f"cannot read git config: {detail[-1] if detail else code}", EXIT_USAGE)
    pairs = []
    for item in os.fsdecode(out).split("\0"):
        if item:
            key, _, value = item.partition("\n")
            pairs.append((key, value))
    return parse_config(pairs)


def config_files_state(repo: Repo) -> tuple:
    """The size and modification time of every file git reads settings from by default."""
    home = os.environ.get("HOME", "")
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    state = []
    for path in (os.path.join(repo.common_dir, "config"),
                 os.path.join(repo.git_dir, "config.worktree"),
                 os.environ.get("GIT_CONFIG_GLOBAL") or os.path.join(home, ".gitconfig"),
                 os.path.join(xdg, "git", "config"),
                 os.environ.get("GIT_CONFIG_SYSTEM") or "/etc/gitconfig"):
        try:
            info = os.stat(path)
            state.append((info.st_mtime_ns, info.st_size, info.st_ino))
        except OSError:
            state.append(None)
    return tuple(state)


def fnmatch_exclude(path: str, patterns: tuple) -> str:
    """The first exclude pattern (gitignore style, simplified) that matches path, or ''."""
    if not patterns:  # the usual case, for each path of a first sync
        return ""
    from fnmatch import fnmatchcase

    for pattern in patterns:
        anchored = pattern.startswith("/")
        body = pattern.strip("/")
        if pattern.endswith("/"):
            if path.startswith(body + "/") or f"/{body}/" in f"/{path}":
                return pattern
            continue
        candidates = [path] if anchored or "/" in body else \
            [path, os.path.basename(path)] + ["/".join(path.split("/")[:i + 1])
                                              for i in range(path.count("/"))]
        if any(fnmatchcase(c, body) or fnmatchcase(c, body + "/*") for c in candidates) \
                or fnmatchcase(path, body + "/*"):
            return pattern
    return ""


def skip_reason(path: str, mode: str, config: Config) -> str:
    """Why a tree entry is not documented ('' if it is)."""
    if mode == SUBMODULE_MODE:
        return "submodule"
    if mode == SYMLINK_MODE:
        return "symlink"
    pattern = fnmatch_exclude(path, config.exclude)
    return f"excluded by {pattern}" if pattern else ""
