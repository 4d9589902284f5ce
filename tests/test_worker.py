"""The worker's life cycle and the detector that always knows whether it is alive."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import (
    ROOT,
    boot_id,
    documenters_of,
    kill_workers_of,
    live_processes,
    read_record,
    spawn_sleeper,
    start_time_of,
    wait_until,
    with_default_sigint,
    write_record,
)

sys.path.insert(0, str(ROOT))
from cqlib.detector import proc_stat_fields


def worker_processes(repo) -> list[int]:
    """PIDs of live `cq ... worker run` processes for this repository."""
    return [pid for pid, read in live_processes()
            if b"run" in read("cmdline").split(b"\0") and str(repo.path).encode() in
            read("cmdline")]


def test_status_outside_a_repository_says_so_and_exits_2(tmp_path, cq_pyz):
    proc = subprocess.run([sys.executable, "-I", "-S", str(cq_pyz), "-C", str(tmp_path),
                           "worker", "status"], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "not a git repository" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_status_before_any_worker_is_not_running_exit_3(repo):
    proc = repo.cq("worker", "status")
    assert proc.returncode == 3
    assert "stopped" in proc.stdout


def test_start_reports_pid_and_status_shows_it_running(started):
    report = started.status()
    assert report["returncode"] == 0
    assert report["state"] == "running"
    assert report["pid"] == started.worker_pid()
    assert report["queue_length"] is not None
    assert report["heartbeat_age_seconds"] < 5
    for key in ("uptime_seconds", "tasks_done", "tasks_failed", "current", "detail"):
        assert key in report


def test_start_when_running_says_so_and_exits_0(started):
    pid = started.worker_pid()
    proc = started.cq("worker", "start")
    assert proc.returncode == 0
    assert f"already running (PID {pid})" in proc.stdout


def test_twenty_concurrent_starts_leave_exactly_one_worker(repo):
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _: repo.cq("worker", "start"), range(20)))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    pids = {r.stdout.split("PID ")[1].rstrip(")\n") for r in results}
    assert len(pids) == 1
    time.sleep(0.5)
    assert worker_processes(repo) == [int(pids.pop())]


def test_state_directory_is_private(started):
    assert started.state.stat().st_mode & 0o777 == 0o700
    for name in ("worker.pid", "worker.log", "heartbeat", "queue.db"):
        assert (started.state / name).stat().st_mode & 0o777 == 0o600, name


def test_kill_9_leaves_dead_state_and_start_recovers(started):
    pid = started.worker_pid()
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: started.status()["returncode"] == 1, what="status 1 after kill -9")
    assert started.status()["state"] == "dead"
    proc = started.cq("worker", "start")
    assert proc.returncode == 0, proc.stderr
    assert started.status()["state"] == "running"
    assert started.worker_pid() != pid


def test_stop_waits_until_gone_and_is_idempotent(started):
    pid = started.worker_pid()
    proc = started.cq("worker", "stop")
    assert proc.returncode == 0, proc.stderr
    assert not os.path.exists(f"/proc/{pid}") or worker_processes(started) == []
    assert started.status()["returncode"] == 3
    again = started.cq("worker", "stop")
    assert again.returncode == 0
    assert "not running" in again.stdout


def test_restart_replaces_the_worker(started):
    pid = started.worker_pid()
    proc = started.cq("worker", "restart")
    assert proc.returncode == 0, proc.stderr
    assert started.status()["state"] == "running"
    assert started.worker_pid() != pid
    assert worker_processes(started) == [started.worker_pid()]


def test_init_replaces_a_running_worker_of_another_index_schema(initialised):
    pid = initialised.worker_pid()
    pid_file = initialised.state / "worker.pid"
    pid_file.write_text("".join(  # as a worker of an older cq would have written it
        line.replace(line.partition("=")[2], "7") if line.startswith("schema=") else line
        for line in pid_file.read_text().splitlines(keepends=True)))
    proc = initialised.cq("init")
    assert proc.returncode == 0, proc.stderr
    assert f"stopped the worker (PID {pid})" in proc.stdout
    assert initialised.worker_pid() not in (None, pid)


def forge_record(repo, pid: int) -> None:
    repo.state.mkdir(mode=0o700, exist_ok=True)
    record = {"pid": pid, "start_time": start_time_of(pid), "boot_id": boot_id(),
              "started_at": time.time()}
    write_record(repo.state / "worker.pid", record)


@pytest.fixture
def sleeper():
    """An unrelated live process, killed after the test."""
    process = spawn_sleeper()
    yield process
    process.kill()


def assert_spared(*processes) -> None:
    """None of these processes was signalled (give a stray signal time to land)."""
    time.sleep(0.2)
    assert all(p.poll() is None for p in processes)


def test_forged_pid_file_naming_a_live_process_is_not_running_and_stop_spares_it(repo,
                                                                                  sleeper):
    forge_record(repo, sleeper.pid)  # even the identity fields are right
    report = repo.status()
    assert report["state"] == "dead" and report["returncode"] == 1
    assert repo.cq("worker", "stop").returncode == 0
    assert_spared(sleeper)


def test_locked_pid_file_naming_another_process_is_unknown_and_nothing_is_signalled(repo,
                                                                                    sleeper):
    forge_record(repo, sleeper.pid)
    holder = subprocess.Popen([sys.executable, "-c",
                               ("import fcntl,sys,time;f=open(sys.argv[1]);"
                                "fcntl.flock(f,fcntl.LOCK_EX);print('locked',flush=True);"
                                "time.sleep(300)"), str(repo.state / "worker.pid")],
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"locked\n"
        report = repo.status()
        assert report["state"] == "unknown" and report["returncode"] == 4
        stop = repo.cq("worker", "stop", "--force", "--timeout", "1")
        assert stop.returncode == 1 and "not stopping" in stop.stderr
        assert_spared(sleeper, holder)
    finally:
        holder.kill()


def test_pid_of_a_reused_process_after_kill_9_is_left_alone(started, sleeper):
    record = read_record(started.state / "worker.pid")
    os.kill(record["pid"], signal.SIGKILL)
    wait_until(lambda: started.status()["returncode"] == 1)
    # As if the kernel had handed the dead worker's PID to an unrelated process.
    record["pid"] = sleeper.pid
    write_record(started.state / "worker.pid", record)
    assert started.status()["state"] == "dead"
    assert started.cq("worker", "stop", "--force").returncode == 0
    assert started.cq("worker", "cleanup").returncode == 0
    assert_spared(sleeper)


def test_empty_pid_file_means_stopped(repo):
    repo.state.mkdir(mode=0o700)
    (repo.state / "worker.pid").write_bytes(b"")
    assert repo.status()["returncode"] == 3


def test_corrupt_pid_file_means_dead_and_start_overwrites_it(repo):
    repo.state.mkdir(mode=0o700)
    (repo.state / "worker.pid").write_bytes(b"\x00garbage{{{")
    assert repo.status()["returncode"] == 1
    assert repo.cq("worker", "start").returncode == 0
    assert repo.status()["state"] == "running"


def test_huge_pid_file_is_read_bounded_and_replaced(repo):
    repo.state.mkdir(mode=0o700)
    (repo.state / "worker.pid").write_bytes(b"7" * (20 * 1024 * 1024))
    started = time.monotonic()
    assert repo.status()["returncode"] == 1
    assert time.monotonic() - started < 5
    assert repo.cq("worker", "start").returncode == 0
    assert (repo.state / "worker.pid").stat().st_size < 4096


def test_symlinked_pid_file_is_refused_and_its_target_untouched(repo, tmp_path):
    target = tmp_path / "victim"
    target.write_text("precious")
    repo.state.mkdir(mode=0o700)
    (repo.state / "worker.pid").symlink_to(target)
    report = repo.status()
    assert report["returncode"] == 4 and "symlink" in report["detail"]
    start = repo.cq("worker", "start")
    assert start.returncode != 0 and "symlink" in start.stderr
    assert target.read_text() == "precious"


def test_symlinked_state_directory_is_refused(repo, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    repo.state.symlink_to(elsewhere)
    proc = repo.cq("worker", "start")
    assert proc.returncode == 1 and "symlink" in proc.stderr
    assert list(elsewhere.iterdir()) == []


def test_a_second_worker_run_refuses_while_one_runs(started):
    proc = started.cq("worker", "run", timeout=30)
    assert proc.returncode == 1
    assert "already running" in proc.stderr


def test_stopped_worker_shows_hung_status_150_while_suspended(started):
    pid = started.worker_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: started.status()["returncode"] == 150, what="status 150")
        assert started.status()["state"] == "hung"
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: started.status()["returncode"] == 0, what="status 0 again")


def test_start_with_an_invalid_setting_fails_in_one_line(repo):
    repo.git("config", "cq.workers", "0")
    proc = repo.cq("worker", "start")
    assert proc.returncode == 2
    assert "cq.workers" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_worker_that_dies_during_start_up_shows_its_log(repo):
    repo.state.mkdir(mode=0o700)
    (repo.state / "index.db").mkdir()  # not a file: the worker refuses to use it
    proc = repo.cq("worker", "start")
    assert proc.returncode == 1
    assert "failed to start" in proc.stderr
    assert "index.db is not a regular file" in proc.stderr  # the tail of the worker's log


def test_invalid_config_names_the_key_in_one_line(repo):
    repo.git("config", "cq.autostart", "maybe")
    proc = repo.cq("worker", "start")
    assert proc.returncode == 2
    assert "cq.autostart" in proc.stderr and "maybe" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_logs_show_the_worker_log(started):
    proc = started.cq("worker", "logs", "-n", "100")
    assert proc.returncode == 0
    assert f"worker {started.worker_pid()} started" in proc.stdout


def test_logs_rotate_by_size_and_follow_continues_across_rotation(repo):
    repo.git("config", "cq.logMaxBytes", "4096")
    repo.git("config", "cq.reconcileInterval", "0.1")  # every pass writes log lines
    follower = subprocess.Popen(with_default_sigint([
        sys.executable, "-I", "-S", str(repo.pyz), "-C", str(repo.path), "worker", "logs", "-f",
        "-n", "0"]), stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(follower.stdout), daemon=True)
    reader.start()
    try:
        assert repo.cq("worker", "start").returncode == 0
        wait_until((repo.state / "worker.log.2").exists, what="two rotations")
        first_rotated = (repo.state / "worker.log.1").stat().st_ino
        wait_until(lambda: (repo.state / "worker.log.1").stat().st_ino != first_rotated,
                   what="another rotation")
        marker_pid = repo.worker_pid()
        assert repo.cq("worker", "stop").returncode == 0
        wait_until(lambda: any(f"worker {marker_pid} stopped" in line for line in lines),
                   what="the follower to show the line written after several rotations")
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(timeout=60)
        reader.join(timeout=60)
    assert sum("started" in line for line in lines) >= 1
    assert repo.cq("worker", "logs", "-n", "3").stdout.count("\n") == 3


def test_cleanup_after_kill_9_clears_stale_state_and_keeps_queued_work(started):
    started.commit({"a.py": "def alpha():\n    pass\n"})
    os.kill(started.worker_pid(), signal.SIGKILL)
    wait_until(lambda: started.status()["returncode"] == 1)
    proc = started.cq("worker", "cleanup")
    assert proc.returncode == 0
    assert "stale pid record" in proc.stdout
    assert started.status()["returncode"] == 3
    assert (started.state / "queue.db").exists()
    assert started.cq("worker", "cleanup").stdout.strip() == "nothing to clean up"


def test_cleanup_kills_a_leftover_worker_process_that_lost_its_lock(repo):
    assert repo.cq("worker", "start").returncode == 0
    pid = repo.worker_pid()
    # A `worker run` for this repository whose pid file was replaced underneath it, as a
    # crash mid-restart could leave behind: no longer the worker cq knows.
    (repo.state / "worker.pid").rename(repo.state / "old.pid")
    proc = repo.cq("worker", "cleanup")
    assert f"killed leftover worker process {pid}" in proc.stdout
    wait_until(lambda: pid not in worker_processes(repo), what="the stray worker to end")


def test_a_worker_that_starts_kills_a_leftover_worker_process_that_lost_its_lock(repo):
    assert repo.cq("worker", "start").returncode == 0
    pid = repo.worker_pid()
    (repo.state / "worker.pid").rename(repo.state / "old.pid")
    assert repo.cq("worker", "start").returncode == 0
    new_pid = repo.worker_pid()
    assert new_pid != pid
    wait_until(lambda: pid not in worker_processes(repo), what="the stray worker to end")
    assert repo.status()["pid"] == new_pid
    assert repo.cq("worker", "cleanup").stdout == "nothing to clean up\n"


def start_slow_task(repo, documenter: str, shutdown_timeout: str) -> None:
    """Start a worker whose external documenter is slow, and wait until it is summarising
    slow.py."""
    repo.git("config", "cq.documenter", documenter)
    repo.git("config", "cq.shutdownTimeout", shutdown_timeout)
    assert repo.cq("worker", "start").returncode == 0
    repo.commit({"slow.py": "x = 1\n"})
    assert repo.cq("index").returncode == 0
    wait_until(lambda: any(c["task"] == "summarize" and c["detail"] == "slow.py"
                           for c in repo.status()["current"]), what="the slow call to start")


def start_stuck_task(repo) -> None:
    start_slow_task(repo, "sleep 30", "60")


def test_stop_lets_the_call_in_flight_finish(repo):
    start_slow_task(repo, "sleep 2; echo documented-slowly", "10")
    proc = repo.cq("worker", "stop")
    assert proc.returncode == 0, proc.stderr
    kill_workers_of(repo.path)  # nothing must be left; a later start must not be needed
    shown = repo.cq("show", "slow.py", "--json")
    assert json.loads(shown.stdout)["summary"] == "documented-slowly"


def test_a_call_cut_short_by_the_shutdown_timeout_is_made_again_and_finished(repo):
    start_slow_task(repo, "sleep 3; echo finally", "0.5")
    assert repo.cq("worker", "stop").returncode == 0
    assert documenters_of(repo) == []
    assert "summary of slow.py cut short by the stop" in \
        repo.cq("worker", "logs", "-n", "50").stdout
    assert repo.cq("worker", "start").returncode == 0
    wait_until(lambda: json.loads(repo.cq("show", "slow.py", "--json").stdout)["summary"]
               == "finally", what="the summary")


def test_stop_that_times_out_says_how_to_go_on_and_leaves_the_worker_running(repo):
    start_stuck_task(repo)
    gentle = repo.cq("worker", "stop", "--timeout", "0.5")
    assert gentle.returncode == 1 and "--force" in gentle.stderr
    assert repo.status()["state"] == "running"


def test_a_second_stop_cuts_the_call_short_to_be_made_again_later(repo):
    start_stuck_task(repo)
    assert repo.cq("worker", "stop", "--timeout", "0.5").returncode == 1
    again = repo.cq("worker", "stop", "--timeout", "5")
    assert again.returncode == 0, again.stderr
    assert repo.status()["returncode"] == 3
    assert "cut short by the stop" in repo.cq("worker", "logs", "-n", "50").stdout


def test_stop_force_kills_a_worker_that_will_not_finish(repo):
    start_stuck_task(repo)
    forced = repo.cq("worker", "stop", "--timeout", "0.5", "--force")
    assert forced.returncode == 0 and "killed" in forced.stdout
    assert repo.status()["returncode"] == 3  # stopped: nothing for cleanup to do
    assert documenters_of(repo) == []


def test_cleanup_after_kill_9_kills_the_orphaned_documenter(repo):
    start_stuck_task(repo)
    wait_until(lambda: documenters_of(repo), what="the documenter to run")
    os.kill(repo.worker_pid(), signal.SIGKILL)
    assert documenters_of(repo)
    proc = repo.cq("worker", "cleanup")
    assert "killed leftover documenter process" in proc.stdout
    wait_until(lambda: documenters_of(repo) == [], what="the orphan to go")


def test_cleanup_leaves_a_running_workers_documenter_alone(repo):
    start_stuck_task(repo)
    running = wait_until(lambda: documenters_of(repo), what="the documenter to run")
    proc = repo.cq("worker", "cleanup")
    assert proc.returncode == 0 and "killed" not in proc.stdout
    assert documenters_of(repo) == running


def test_sighup_stops_gracefully_instead_of_re_executing(started):
    pid = started.worker_pid()
    os.kill(pid, signal.SIGHUP)
    wait_until(lambda: started.status()["returncode"] == 3, what="a clean stop")


# What the hot paths may import of cq's own: the lean modules at the top of cq.py's map.
HOT_PATH_MODULES = {
    ("worker", "status"): {"cqlib", "cqlib.errors", "cqlib.text", "cqlib.state",
                           "cqlib.gitio", "cqlib.detector"},
    ("hook", "run", "post-merge", "0"): {"cqlib", "cqlib.errors", "cqlib.text", "cqlib.state",
                                         "cqlib.gitio", "cqlib.detector", "cqlib.config",
                                         "cqlib.control", "cqlib.hooks"},
}


@pytest.mark.parametrize("args", HOT_PATH_MODULES, ids=" ".join)
def test_status_and_hook_paths_import_only_the_lean_modules(initialised, args):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-I", "-S",
                           str(initialised.pyz), "-C", str(initialised.path), *args],
                          capture_output=True, text=True, check=False)
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert {"cqlib", "cqlib.errors", "cqlib.state"} <= imported  # it did import through here
    assert {m for m in imported if m.startswith("cqlib")} <= HOT_PATH_MODULES[args]
    assert not {m for m in imported if m.split(".")[0] in ("huey", "sqlite3", "argparse")}


def test_git_local_env_list_matches_git(repo):
    sys.path.insert(0, str(repo.pyz))
    try:
        from cqlib.gitio import GIT_LOCAL_ENV
    finally:
        sys.path.remove(str(repo.pyz))
    assert set(repo.git("rev-parse", "--local-env-vars").split()) <= set(GIT_LOCAL_ENV)


def test_windows_is_refused_in_one_line(cq_pyz):
    code = ("import runpy,sys; sys.platform='win32'; sys.argv=['cq','worker','status'];"
            f"runpy.run_path({str(cq_pyz)!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("cq: Windows is not supported (cq needs POSIX flock, "
                                   "FIFOs and signals)")


def test_a_task_queued_by_cq_0_5_is_listed_and_run_by_this_cq(initialised):
    repo = initialised
    assert repo.cq("worker", "stop").returncode == 0
    git_dir = os.path.realpath(repo.path / ".git")
    # A sync queued as cq 0.5 queued it, from cq.py: Huey names a task by its function's module.
    script = ("import sys; sys.path.insert(0, sys.argv[1]); from huey import SqliteHuey\n"
              "queue = SqliteHuey(name='cq', filename=sys.argv[2], results=False, utc=True)\n"
              "def sync(git_dir): pass\n"
              "sync.__module__ = 'cq'\n"
              "task = queue.task(name='sync', priority=2)(sync).s(sys.argv[3])\n"
              "queue.enqueue(task); print(task.id)")
    task_id = subprocess.run([sys.executable, "-c", script, str(repo.pyz),
                              str(repo.state / "queue.db"), git_dir], capture_output=True,
                             text=True, check=True).stdout.strip()
    listed = repo.cq("queue", "list")
    assert listed.returncode == 0 and f"sync worktree {git_dir}" in listed.stdout
    assert repo.cq("worker", "start").returncode == 0
    log = repo.state / "worker.log"
    wait_until(lambda: f"cq.sync: {task_id} p=2 executed" in log.read_text(),
               what="the old task to run")
    assert "not found in TaskRegistry" not in log.read_text()


def test_whose_process_a_pid_is_has_one_answer():
    sys.path.insert(0, str(ROOT))
    from cqlib.detector import pid_owner, process_exists

    sleeper = spawn_sleeper()
    try:
        assert pid_owner(sleeper.pid) == "this user" and process_exists(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert pid_owner(sleeper.pid) == "none" and not process_exists(sleeper.pid)


def worker_log(repo) -> str:
    """The worker's log so far."""
    return (repo.state / "worker.log").read_text(errors="replace")


def test_an_idle_worker_stops_after_the_quiet_period_and_a_commit_starts_it_again(repo):
    repo.git("config", "cq.workerIdleExit", "2")
    repo.git("config", "cq.reconcileInterval", "0.3")  # its reconciles are not work
    assert repo.cq("init").returncode == 0
    wait_until(lambda: repo.status()["returncode"] == 3, timeout=60,
               what="the idle worker to stop")
    assert "(cq.workerIdleExit); stopping" in worker_log(repo)
    assert "stopped itself after 2s without work" in repo.status()["detail"]
    repo.commit({"late.py": "def arrived_after_the_stop():\n    pass\n"})
    repo.wait_indexed()
    assert repo.status()["returncode"] == 0
    assert repo.cq("worker", "stop").returncode == 0
    assert repo.status()["detail"] == "not running"  # stopped, not for idleness
    assert repo.search("arrived_after_the_stop")[0]["path"] == "late.py"


def test_with_idle_exit_0_the_worker_never_stops_for_idleness(repo):
    repo.git("config", "cq.workerIdleExit", "0")
    repo.git("config", "cq.reconcileInterval", "0.3")
    assert repo.cq("init").returncode == 0
    time.sleep(4)
    assert repo.status()["returncode"] == 0
    assert "cq.workerIdleExit" not in worker_log(repo)


def test_commits_made_while_the_idle_worker_stops_are_all_indexed(repo):
    repo.git("config", "cq.workerIdleExit", "0.5")
    assert repo.cq("init").returncode == 0
    for number in range(3):
        stops = worker_log(repo).count("(cq.workerIdleExit); stopping")
        wait_until(lambda stops=stops: worker_log(repo).count("(cq.workerIdleExit); stopping")
                   > stops, timeout=60, interval=0.01, what="the worker to decide to stop")
        pid = repo.worker_pid()
        os.kill(pid, signal.SIGSTOP)  # held between its decision and its exit, still listening
        try:
            repo.commit({f"during_{number}.py": f"def made_during_stop_{number}():\n    pass\n"})
        finally:
            os.kill(pid, signal.SIGCONT)
        repo.wait_indexed()
        assert repo.search(f"made_during_stop_{number}")[0]["path"] == f"during_{number}.py"
    assert "running again" in worker_log(repo)
    assert zombie_children(repo.worker_pid()) == []


def zombie_children(pid: int) -> list[int]:
    """The children of a process that ended and were never reaped."""
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            state, parent = proc_stat_fields(int(name))[:2]
        except (OSError, ValueError):
            continue  # gone
        if int(parent) == pid and state == b"Z":
            found.append(int(name))
    return found
