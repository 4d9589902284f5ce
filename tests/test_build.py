"""build_zipapp.py: one reproducible cq.pyz that runs on every supported Python."""

from __future__ import annotations

import marshal
import os
import re
import subprocess
import sys
import time
import zipfile

import pytest
from conftest import ROOT, build_pyz, find_python, make_repo, wait_until

VERSIONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]


def test_two_builds_are_byte_identical(tmp_path, huey_wheel):
    first = build_pyz(tmp_path / "a.pyz", huey_wheel).read_bytes()
    second = build_pyz(tmp_path / "b.pyz", huey_wheel).read_bytes()
    assert first == second


def test_archive_holds_cq_hooks_huey_and_its_licence_but_not_contrib(cq_pyz):
    with zipfile.ZipFile(cq_pyz) as zf:
        names = set(zf.namelist())
    assert {"__main__.py", "cqboot.py", "cq.py", "LICENSE", "huey/__init__.py", "huey/LICENSE",
            "hooks/post-commit", "hooks/post-rewrite"} <= names
    assert not any(n.startswith(("huey/contrib/", "huey/tests/")) for n in names)
    package = {str(p.relative_to(ROOT)) for p in ROOT.glob("cqlib/**/*.py")}
    assert package and package <= names


def test_a_wheel_with_the_wrong_hash_is_refused(tmp_path, huey_wheel):
    bad = tmp_path / huey_wheel.name
    bad.write_bytes(huey_wheel.read_bytes() + b"tampered")
    proc = subprocess.run([sys.executable, str(ROOT / "build_zipapp.py"), "--output",
                           str(tmp_path / "cq.pyz"), "--huey-wheel", str(bad)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert "sha256" in proc.stderr and "refusing" in proc.stderr
    assert not (tmp_path / "cq.pyz").exists()


def test_runs_through_a_relative_path_from_another_directory(cq_pyz, tmp_path):
    rel = os.path.relpath(cq_pyz, tmp_path)
    proc = subprocess.run([sys.executable, rel, "--version"], cwd=tmp_path,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    assert re.match(r"cq \d+\.\d+\.\d+ \(huey 3\.5\.4, python 3\.", proc.stdout)


@pytest.mark.parametrize("version", VERSIONS)
def test_built_archive_runs_a_worker_under_python(version, cq_pyz, tmp_path):
    python = find_python(version)
    if python is None:
        pytest.skip(f"Python {version} is not installed on this machine")
    proc = subprocess.run([python, str(cq_pyz), "--version"], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert f"python {version}." in proc.stdout
    repo = make_repo(tmp_path / "repo", cq_pyz)
    repo.commit({"mod.py": "def answer():\n    '''Forty-two.'''\n    return 42\n"})
    try:
        assert repo.cq("worker", "start", python=python).returncode == 0
        assert repo.cq("worker", "status", python=python).returncode == 0
        assert repo.cq("index", "--wait", python=python).returncode == 0
        hits = wait_until(lambda: repo.search("answer"))
        assert hits[0]["path"] == "mod.py"
        assert repo.cq("worker", "stop", python=python).returncode == 0
        assert repo.cq("worker", "status", python=python).returncode == 3
    finally:
        repo.cq("worker", "stop", "--force", "--timeout", "2")


def run_version(cq_pyz, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-I", "-S", str(cq_pyz), "--version"], env=env,
                          capture_output=True, text=True, check=False)


def test_the_bytecode_cache_is_written_once_and_survives_corruption(cq_pyz, tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))
    assert run_version(cq_pyz, env).returncode == 0  # --version imports cq and Huey
    entries = sorted((tmp_path / "cq").glob("cq-*.bin"))
    assert len(entries) > 1 and all(e.stat().st_mode & 0o777 == 0o600 for e in entries)
    written = {e: e.stat().st_mtime_ns for e in entries}
    assert run_version(cq_pyz, env).returncode == 0
    assert {e: e.stat().st_mtime_ns for e in entries} == written  # read, not written again
    for entry in entries:
        entry.write_bytes(b"not marshal data")
    proc = run_version(cq_pyz, env)
    assert proc.returncode == 0 and proc.stdout.startswith("cq ")
    assert sorted((tmp_path / "cq").glob("cq-*.bin")) == entries
    assert all(e.read_bytes() != b"not marshal data" for e in entries)  # replaced by good ones


def test_a_copy_of_the_archive_runs_the_code_compiled_for_the_first_without_compiling(
        cq_pyz, tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    assert run_version(cq_pyz, env).returncode == 0
    copy = tmp_path / "repository" / "cq.pyz"  # as cq init makes, but its cq.py would fail
    copy.parent.mkdir()
    with zipfile.ZipFile(cq_pyz) as source, zipfile.ZipFile(copy, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            target.writestr(item, b"raise SystemExit('compiled')\n" if item.filename == "cq.py"
                            else data)
    proc = run_version(copy, env)
    assert proc.returncode == 0 and proc.stdout.startswith("cq ")


def test_a_new_copy_of_the_archive_prunes_entries_unused_for_30_days_once_a_day(cq_pyz,
                                                                                tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    assert run_version(cq_pyz, env).returncode == 0  # compiles, and prunes
    folder = tmp_path / "cache" / "cq"
    old = time.time() - 40 * 86400
    for entry in folder.glob("cq-*.bin"):
        os.utime(entry, (old, old))
    os.utime(folder / "pruned", (time.time() - 2 * 86400,) * 2)  # the last pruning, long ago
    copies = []
    for name in ("one", "two"):
        copies.append(tmp_path / name / "cq.pyz")
        copies[-1].parent.mkdir()
        copies[-1].write_bytes(cq_pyz.read_bytes())
    assert run_version(copies[0], env).returncode == 0  # compiles nothing, but prunes
    assert not any(str(cq_pyz.parent) in marshal.loads(e.read_bytes()).co_filename
                   for e in folder.glob("cq-*.bin") if "-any" not in e.name)
    stale = folder / "cq-0123456789abcdef01234567-deadbeef-00000000.bin"
    stale.write_bytes(b"old")
    os.utime(stale, (old, old))
    assert run_version(copies[1], env).returncode == 0  # pruned less than a day ago
    assert stale.exists()


def test_cq_runs_when_the_bytecode_cache_cannot_be_written(cq_pyz, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    proc = run_version(cq_pyz, dict(os.environ, XDG_CACHE_HOME=str(blocker)))
    assert proc.returncode == 0 and proc.stdout.startswith("cq ")


def test_the_readme_starts_with_two_set_up_commands_and_ci_runs_the_second_as_written():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = block.strip().splitlines()
    assert len(commands) == 2
    build, tests = commands
    assert build.startswith("python3 build_zipapp.py && python3 dist/cq.pyz init")
    assert "python3 -m venv .venv" in tests and "pytest -q tests" in tests
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()
