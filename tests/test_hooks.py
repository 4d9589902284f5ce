"""The copy-in git hooks: installing, chaining foreign hooks, and never breaking git."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, git, wait_until

HOOKS = ("post-commit", "post-merge", "post-checkout", "post-rewrite")

RECORDER = """#!/bin/sh
# a foreign hook that records how it was called (and, for post-rewrite, its stdin)
echo "$(basename "$0") $*" >> "{log}"
if [ "$(basename "$0")" = post-rewrite ]; then cat >> "{log}"; fi
exit {code}
"""


def add_foreign_hook(directory: Path, name: str, log: Path, code: int = 0) -> bytes:
    """Install a hook of someone else's that logs its name, arguments and stdin."""
    directory.mkdir(parents=True, exist_ok=True)
    body = RECORDER.format(log=log, code=code).encode()
    (directory / name).write_bytes(body)
    (directory / name).chmod(0o750)
    return body


def hook_log(repo) -> str:
    path = repo.state / "hook.log"
    return path.read_text() if path.exists() else ""


def test_hook_scripts_in_the_tree_are_identical_posix_sh():
    bodies = {(ROOT / "hooks" / name).read_bytes() for name in HOOKS}
    assert len(bodies) == 1
    body = bodies.pop()
    assert body.startswith(b"#!/bin/sh\n")
    for name in HOOKS:
        assert os.access(ROOT / "hooks" / name, os.X_OK)
    # dash is a strict POSIX shell: a syntax check there catches bashisms.
    assert subprocess.run(["sh", "-n", str(ROOT / "hooks" / "post-commit")],
                          check=False).returncode == 0


def test_install_writes_all_four_hooks_and_status_lists_them(repo):
    proc = repo.cq("hook", "install")
    assert proc.returncode == 0, proc.stderr
    for name in HOOKS:
        path = repo.path / ".git" / "hooks" / name
        assert os.access(path, os.X_OK)
        assert path.read_bytes() == (ROOT / "hooks" / name).read_bytes()
    status = repo.cq("hook", "status").stdout
    assert all(f"{name}: installed" in status for name in HOOKS)


def test_install_twice_changes_nothing(repo):
    repo.cq("hook", "install")
    again = repo.cq("hook", "install")
    assert again.returncode == 0
    assert "nothing to do" in again.stdout


def test_status_reports_missing_and_out_of_date_hooks(repo):
    repo.cq("hook", "install")
    hooks = repo.path / ".git" / "hooks"
    (hooks / "post-merge").unlink()
    (hooks / "post-commit").write_bytes(b"#!/bin/sh\n# cq-hook 0: an old version\n")
    status = repo.cq("hook", "status").stdout
    assert "post-merge: missing" in status
    assert "post-commit: out of date" in status
    repo.cq("hook", "install")
    assert "out of date" not in repo.cq("hook", "status").stdout


def test_foreign_hook_is_kept_run_first_with_its_arguments_and_stdin(repo, tmp_path):
    log = tmp_path / "foreign.log"
    hooks = repo.path / ".git" / "hooks"
    add_foreign_hook(hooks, "post-rewrite", log)
    add_foreign_hook(hooks, "post-checkout", log)
    proc = repo.cq("hook", "install")
    assert "kept the existing hook" in proc.stdout
    assert "chains a foreign hook" in repo.cq("hook", "status").stdout
    old = repo.git("rev-parse", "HEAD").strip()
    repo.git("commit", "-q", "--amend", "-m", "amended")
    new = repo.git("rev-parse", "HEAD").strip()
    repo.git("checkout", "-q", "-b", "other")
    text = log.read_text()
    assert f"post-rewrite amend\n{old} {new}" in text  # stdin reached the foreign hook
    assert f"post-checkout {new} {new} 1" in text


def test_a_chained_hook_in_another_language_is_executed_with_its_arguments(repo, tmp_path):
    log = tmp_path / "python-hook.log"
    hook = repo.path / ".git" / "hooks" / "post-checkout"
    hook.write_text(f"#!{sys.executable}\nimport sys\n"
                    f"open({str(log)!r}, 'a').write(' '.join(sys.argv[1:]))\n")
    hook.chmod(0o755)
    repo.cq("hook", "install")
    repo.git("checkout", "-q", "-b", "other")
    head = repo.git("rev-parse", "HEAD").strip()
    assert log.read_text() == f"{head} {head} 1"


def test_exit_status_of_a_chained_post_checkout_hook_is_kept(repo, tmp_path):
    hooks = repo.path / ".git" / "hooks"
    add_foreign_hook(hooks, "post-checkout", tmp_path / "log", code=3)
    without_cq = subprocess.run(["git", "checkout", "-q", "-b", "one"], cwd=repo.path,
                                check=False).returncode
    repo.cq("hook", "install")
    with_cq = subprocess.run(["git", "checkout", "-q", "-b", "two"], cwd=repo.path,
                             check=False).returncode
    assert without_cq == with_cq != 0  # git turns the hook's failure into its own


def test_uninstall_restores_foreign_hooks_byte_for_byte(repo, tmp_path):
    hooks = repo.path / ".git" / "hooks"
    body = add_foreign_hook(hooks, "post-merge", tmp_path / "log")
    mode = (hooks / "post-merge").stat().st_mode
    repo.cq("hook", "install")
    proc = repo.cq("hook", "uninstall")
    assert proc.returncode == 0
    assert (hooks / "post-merge").read_bytes() == body
    assert (hooks / "post-merge").stat().st_mode == mode
    for name in ("post-commit", "post-checkout", "post-rewrite"):
        assert not (hooks / name).exists()
    assert not list(hooks.glob("*.cq-chained"))


def test_install_honours_a_hooks_path_inside_the_repository(repo):
    repo.git("config", "core.hooksPath", ".husky/_")
    repo.write(".husky/_/.gitignore", "*\n")  # as husky 9 makes it
    proc = repo.cq("hook", "install")
    assert proc.returncode == 0, proc.stderr
    assert (repo.path / ".husky" / "_" / "post-commit").exists()
    assert not (repo.path / ".git" / "hooks" / "post-commit").exists()


def test_install_refuses_a_hooks_directory_whose_files_git_would_commit(repo):
    repo.git("config", "core.hooksPath", ".husky")  # husky 8: hooks are tracked files
    repo.commit({".husky/pre-commit": "#!/bin/sh\nnpm test\n"})
    proc = repo.cq("hook", "install")
    assert proc.returncode == 1 and "could be committed" in proc.stderr
    assert not (repo.path / ".husky" / "post-commit").exists()


def test_install_never_writes_through_a_symlink_planted_in_the_hooks_directory(repo, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    repo.git("config", "core.hooksPath", ".husky/_")
    repo.write(".husky/_/.gitignore", "*\n")
    (repo.path / ".husky" / "_" / "post-commit.cq-tmp").symlink_to(victim)
    assert repo.cq("hook", "install").returncode == 0
    assert victim.read_text() == "precious"
    assert (repo.path / ".husky" / "_" / "post-commit").read_bytes().startswith(b"#!/bin/sh")


def test_install_refuses_a_hooks_path_that_leads_outside_through_a_symlink(repo, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (repo.path / ".husky").symlink_to(outside)
    repo.git("config", "core.hooksPath", ".husky")
    proc = repo.cq("hook", "install")
    assert proc.returncode == 1 and "outside this repository" in proc.stderr
    assert list(outside.iterdir()) == []


def test_install_refuses_a_hooks_path_outside_the_repository_and_prints_the_manual_step(
        repo, tmp_path):
    shared = tmp_path / "global-hooks"
    repo.git("config", "core.hooksPath", str(shared))
    proc = repo.cq("hook", "install")
    assert proc.returncode == 1
    assert "outside this repository" in proc.stderr
    assert f"cp {repo.state}/hooks/post-commit {shared}/post-commit" in proc.stderr
    assert not shared.exists()
    assert (repo.state / "hooks" / "post-commit").exists()


def test_hooks_copied_by_hand_work(repo):
    assert repo.cq("init").returncode == 0
    repo.cq("hook", "uninstall")
    hooks = repo.path / ".git" / "hooks"
    for name in HOOKS:  # what the README tells a user to do
        (hooks / name).write_bytes((ROOT / "hooks" / "post-commit").read_bytes())
        (hooks / name).chmod(0o755)
    repo.commit({"manual.py": "def copied_by_hand():\n    pass\n"})
    wait_until(lambda: repo.search("copied_by_hand"), what="the commit to be indexed")


def commit_time(repo, n: int) -> list[float]:
    times = []
    for i in range(n):
        repo.write(f"f{i}.txt", f"{i}\n")
        repo.git("add", "-A")
        start = time.perf_counter()
        repo.git("commit", "-q", "-m", f"c{i}")
        times.append(time.perf_counter() - start)
    return times


@pytest.fixture
def hooked(repo):
    """Hooks installed and the archive in place, but no worker and no autostart."""
    assert repo.cq("init", "--no-wait").returncode == 0
    assert repo.cq("worker", "stop").returncode == 0
    repo.git("config", "cq.autostart", "false")
    return repo


def test_commit_succeeds_with_the_worker_dead_and_status_says_why(hooked):
    hooked.commit({"a.py": "x = 1\n"})
    wait_until(lambda: "not running" in hook_log(hooked), what="the hook to log")
    assert "cq.autostart is off" in hooked.cq("worker", "status").stdout


def test_a_hook_that_gets_through_clears_earlier_problems(hooked):
    hooked.commit({"a.py": "x = 1\n"})
    wait_until(lambda: "not running" in hook_log(hooked), what="the hook to log")
    assert hooked.cq("worker", "start").returncode == 0
    hooked.commit({"b.py": "x = 2\n"})
    wait_until(lambda: "last hook problem" not in hooked.cq("worker", "status").stdout)
    assert "not running" in (hooked.state / "hook.log.1").read_text()


def test_hook_status_exits_0_only_when_every_hook_is_installed_and_cq_is_set_up(repo):
    assert repo.cq("hook", "status").returncode == 1
    repo.cq("hook", "install")
    proc = repo.cq("hook", "status")  # installed, but the hooks do nothing before init
    assert proc.returncode == 1 and "not set up in this repository" in proc.stdout
    assert repo.cq("init", "--no-wait").returncode == 0
    proc = repo.cq("hook", "status")
    assert proc.returncode == 0 and "not set up" not in proc.stdout


def test_commit_starts_the_worker_when_autostart_is_on(hooked):
    hooked.git("config", "cq.autostart", "true")
    hooked.commit({"auto.py": "def started_by_a_hook():\n    pass\n"})
    wait_until(lambda: hooked.status()["state"] == "running", what="autostart")
    wait_until(lambda: hooked.search("started_by_a_hook"))


def test_commit_succeeds_with_broken_config(hooked):
    hooked.git("config", "cq.workers", "lots")
    hooked.commit({"a.py": "x = 1\n"})
    wait_until(lambda: "cq.workers" in hook_log(hooked), what="the hook to log")


def test_commit_succeeds_with_the_state_unwritable(hooked):
    pending = hooked.state / "pending"
    for child in pending.iterdir():
        child.unlink()
    pending.rmdir()
    pending.write_text("not a directory")  # (as root, chmod cannot make it read-only)
    hooked.commit({"a.py": "x = 1\n"})
    wait_until(lambda: "not a directory" in hook_log(hooked), what="the hook to log")


def test_commit_succeeds_with_the_database_locked(hooked):
    hooked.git("config", "cq.autostart", "true")
    db = sqlite3.connect(hooked.state / "index.db", timeout=1, isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    try:
        start = time.perf_counter()
        hooked.commit({"locked.py": "def while_locked():\n    pass\n"})
        assert time.perf_counter() - start < 2
    finally:
        db.execute("ROLLBACK")
        db.close()
    wait_until(lambda: hooked.search("while_locked"), timeout=40)


def test_commit_succeeds_without_python_and_the_hook_logs_it(hooked, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git", "cat", "date"):
        (bin_dir / tool).symlink_to(subprocess.check_output(["which", tool]).decode().strip())
    (hooked.state / "python").write_text("/nonexistent/python3\n")
    env = dict(os.environ, PATH=str(bin_dir))
    hooked.write("a.py", "x = 1\n")
    git(hooked.path, "add", "-A", env=env)
    proc = subprocess.run(["git", "commit", "-q", "-m", "no python"], cwd=hooked.path, env=env,
                          check=False)
    assert proc.returncode == 0
    wait_until(lambda: "no Python found" in hook_log(hooked), what="the hook to log")


def test_commit_succeeds_when_cq_was_removed_from_the_state_directory(hooked):
    (hooked.state / "cq.pyz").unlink()
    hooked.commit({"a.py": "x = 1\n"})
    assert hooked.git("log", "--oneline").count("\n") == 2


def test_hook_does_not_keep_git_waiting(hooked):
    # The cq part runs in the background with every stream detached: a git (or GUI) reading
    # the hook's output must not wait for it. A worker start takes far longer than this bound.
    hooked.git("config", "cq.autostart", "true")
    proc = subprocess.Popen(["git", "commit", "-q", "--allow-empty", "-m", "x"], cwd=hooked.path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    start = time.perf_counter()
    proc.communicate(timeout=10)  # reads until every writer has closed the pipes
    assert time.perf_counter() - start < 1.0
    wait_until(lambda: hooked.status()["state"] == "running", what="the autostart")


def test_state_files_are_private_after_init(initialised):
    for path in initialised.state.rglob("*"):
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_dir():
            assert mode == 0o700, path
        elif path.parent.name != "hooks":
            assert mode & 0o077 == 0, path
