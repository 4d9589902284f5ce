"""Build cq.pyz: cq.py, the cqlib package, the hook scripts and a pinned, hash-checked Huey in
one runnable file.

    python3 build_zipapp.py [--output PATH] [--huey-wheel PATH]

Without --huey-wheel the pinned wheel is fetched with pip (from the package index pip is set up
for); with it the build is fully offline.  Either way the wheel must match HUEY_SHA256.  The
archive is reproducible: entries are sorted and carry fixed timestamps and permissions, so two
builds from the same inputs are byte-identical.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile

HUEY_VERSION = "3.5.4"
HUEY_WHEEL = f"huey-{HUEY_VERSION}-py3-none-any.whl"
HUEY_SHA256 = "a3b68953fc62fbbbfe15cd6c48bef9d8072a267234c647121c31ec466e35e8e8"
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUTPUT = os.path.join(HERE, "dist", "cq.pyz")
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
# The archive's entry point.  zipimport never writes .pyc files, so importing cq's modules from
# the archive would compile them on every run (about 40 ms, most of `cq worker status`), and
# Huey's at every start of the worker (about 200 ms).  They are loaded through a per-user
# bytecode cache keyed by a hash of the sources (computed at build time, so a cache hit does
# not even read a source), the module's path in the archive (compiled code names the file it
# came from in tracebacks) and the interpreter's magic number; where the cache cannot be used
# they are simply compiled.  A build's modules are also kept for any path: a new copy of the
# archive (cq init makes one in each repository) names them anew instead of compiling them,
# 0.3 s of its worker's first start.  Entries unused for CACHE_DAYS are removed at a write,
# once a day.
# runpy compiles __main__.py from source at every run (compiling the whole loader took a third
# of what `cq worker status` does beyond an empty archive), so __main__.py is only what
# reads the loader itself, BOOT (cqboot.py in the archive), from the cache; BOOT runs in
# __main__'s namespace.  It must run, far enough to say what is wrong, on any Python: no
# f-strings before the check.
MAIN = b'''"""cq.pyz entry point: the loader (cqboot.py) from the bytecode cache, which runs cq."""
import sys

if sys.version_info < (3, 9):
    sys.stderr.write("cq: cq needs Python 3.9 or newer (this is %s)\\n" % sys.version.split()[0])
    sys.exit(2)

import marshal
import os
import stat
import time
from importlib.util import MAGIC_NUMBER

SOURCE_KEY = "@SOURCE_KEY@"  # filled in by build_zipapp.py: a hash of everything in the archive


def entry_path(where):
    """The cache entry of this build and interpreter for `where` (a path's or a module's)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "cq", "cq-%s-%s-%s.bin" % (SOURCE_KEY, where, MAGIC_NUMBER.hex()))


def read_code(path, filename):
    """The code object cached at path (its file named filename, unless None), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid():
                code = marshal.loads(os.read(fd, st.st_size + 1))
                if isinstance(code, type(read_code.__code__)) and \\
                        filename in (None, code.co_filename):  # not another's (crc32)
                    if time.time() - st.st_mtime > 86400:
                        os.utime(fd)  # in use: keep it from being pruned
                    return code
        finally:
            os.close(fd)
    except (OSError, ValueError, EOFError, TypeError):
        pass
    return None


BOOT = read_code(entry_path("boot"), "cqboot.py")
COMPILED = BOOT is None
if COMPILED:
    BOOT = compile(__loader__.get_data("cqboot.py"), "cqboot.py", "exec")
exec(BOOT)  # defines the rest of the loader here, and run
sys.exit(run())
'''
# The rest of the loader, run by MAIN in its own namespace (entry_path, read_code, BOOT and
# COMPILED are MAIN's).
BOOT = b'''"""The rest of cq.pyz's loader (see __main__.py): cq, cqlib and Huey from the cache."""
import zlib

BUNDLED = @BUNDLED@  # filled in by build_zipapp.py: every module's name -> whether a package
CACHE_DAYS = 30
PRUNED = []  # the cache is pruned once per process at most, at its first write
ARCHIVE = os.path.dirname(os.path.abspath(__file__))


def cache_path(filename):
    """Where a module of this archive (filename: its path) is cached for this interpreter."""
    return entry_path("%08x" % zlib.crc32(os.fsencode(filename)))


def template_path(inner):
    """Where a module of this build is cached for any archive's path (see relocated)."""
    return entry_path("any%08x" % zlib.crc32(inner.encode()))


def cached_code(filename, inner):
    """The code object of a module of the archive (inner: its name there, filename: its path),
    from the cache when an intact entry of ours is there; else from this build's entry for
    any path, named anew (a copy of the archive, as each repository's, compiles nothing)."""
    code = read_code(cache_path(filename), filename)
    if code is not None:
        return code
    code = read_code(template_path(inner), None)
    if code is None or not code.co_filename.endswith("/" + inner):  # none, or another's
        # get_data takes the name inside the archive: the archive's own path may be relative.
        code = compile(__loader__.get_data(inner), filename, "exec")
        write_code(template_path(inner), code)
    code = relocated(code, filename)
    write_code(cache_path(filename), code)
    return code


def write_code(path, code):
    """Cache a code object at path, if it can be (pruning the folder first, once a day)."""
    tmp = None
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        if not PRUNED:
            PRUNED.append(path)
            prune_daily(os.path.dirname(path))
        tmp = "%s.%d.tmp" % (path, os.getpid())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(marshal.dumps(code))
        os.replace(tmp, path)
    except OSError:
        if tmp:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def prune_daily(folder):
    """prune, unless it ran less than a day ago (listing a large cache costs a new copy's
    start: 0.28 s for 38,000 entries)."""
    stamp = os.path.join(folder, "pruned")
    try:
        if time.time() - os.lstat(stamp).st_mtime < 86400:
            return
    except OSError:
        pass
    prune(folder)
    try:
        fd = os.open(stamp, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.utime(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def relocated(code, filename):
    """A code object, and every one within it, naming filename as its file (for tracebacks)."""
    if code.co_filename == filename:
        return code
    return code.replace(co_filename=filename, co_consts=tuple(
        relocated(c, filename) if isinstance(c, type(code)) else c for c in code.co_consts))


def prune(folder):
    """Remove cache entries no run has used for CACHE_DAYS (other builds, moved archives)."""
    cutoff = time.time() - CACHE_DAYS * 86400
    for name in os.listdir(folder):
        entry = os.path.join(folder, name)
        try:
            if name.startswith("cq-") and os.lstat(entry).st_mtime < cutoff:
                os.unlink(entry)
        except OSError:
            pass


class BundledLoader:
    """Runs one of the archive's modules through the bytecode cache."""

    def __init__(self, inner):
        self.inner = inner

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        exec(cached_code(module.__file__, self.inner), module.__dict__)

    def get_data(self, path):
        """A file of the archive (path: its name there), as zipimport reads it."""
        return __loader__.get_data(path)


class BundledFinder:
    """Finds the archive's modules (ahead of zipimport, which would compile them)."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        package = BUNDLED.get(name)
        if package is None:
            return None
        from importlib.machinery import ModuleSpec

        folder = name.replace(".", "/")
        inner = folder + ("/__init__.py" if package else ".py")
        spec = ModuleSpec(name, BundledLoader(inner), origin=os.path.join(ARCHIVE, inner),
                          is_package=package)
        spec.has_location = True
        if package:
            spec.submodule_search_locations = [os.path.join(ARCHIVE, folder)]
        return spec


def run():
    """Cache this loader if it was compiled, then run cq (found by BundledFinder)."""
    if COMPILED:
        write_code(entry_path("boot"), BOOT)
    sys.meta_path.insert(0, BundledFinder)
    import cq

    return cq.main()
'''
HOOK_NAMES = ("post-commit", "post-merge", "post-checkout", "post-rewrite")


class BuildError(Exception):
    """A build failure to report in one line."""


def fetch_wheel(directory: str) -> str:
    """Download the pinned Huey wheel with pip into directory and return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary",
           ":all:", "--dest", directory, f"huey=={HUEY_VERSION}"]
    proc = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    path = os.path.join(directory, HUEY_WHEEL)
    if proc.returncode != 0 or not os.path.isfile(path):
        raise BuildError("could not download huey with pip (offline? pass --huey-wheel PATH):\n"
                         + proc.stdout.decode(errors="replace").strip())
    return path


def verified_wheel(path: str) -> bytes:
    """The wheel's bytes, after checking them against the pinned sha256."""
    with open(path, "rb") as f:
        data = f.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != HUEY_SHA256:
        raise BuildError(f"{path} has sha256 {digest}, expected {HUEY_SHA256} "
                         f"(huey {HUEY_VERSION}); refusing to bundle it")
    return data


def huey_members(wheel: bytes) -> dict[str, bytes]:
    """The files of Huey that cq needs (no contrib, tests or scripts), plus its licence."""
    members = {}
    with zipfile.ZipFile(io.BytesIO(wheel)) as zf:
        for name in zf.namelist():
            if name.startswith("huey/") and name.endswith(".py") and not name.startswith(
                    ("huey/contrib/", "huey/tests/", "huey/bin/")):
                members[name] = zf.read(name)
            elif ".dist-info/" in name and os.path.basename(name).upper().startswith("LICENSE"):
                members["huey/LICENSE"] = zf.read(name)
    if "huey/__init__.py" not in members or "huey/LICENSE" not in members:
        raise BuildError("the huey wheel does not contain huey/__init__.py and its licence")
    return members


def source_names() -> list[str]:
    """cq.py and every module of the cqlib package, as paths relative to HERE, sorted."""
    names = ["cq.py"]
    for folder, dirs, files in os.walk(os.path.join(HERE, "cqlib")):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        names += [os.path.relpath(os.path.join(folder, f), HERE).replace(os.sep, "/")
                  for f in files if f.endswith(".py")]
    return sorted(names)


def module_names(paths: list[str]) -> dict[str, bool]:
    """Module name -> whether it is a package, for the .py files among paths."""
    return {name[:-len(".py")].replace("/", ".").removesuffix(".__init__"):
            name.endswith("/__init__.py") for name in sorted(paths) if name.endswith(".py")}


def project_members(huey: dict[str, bytes]) -> dict[str, bytes]:
    """cq's sources, the entry point and the loader (knowing every module), the hook scripts
    and cq's licence."""
    members = {}
    sources = source_names()
    for name in [*sources, "LICENSE"] + [f"hooks/{h}" for h in HOOK_NAMES]:
        with open(os.path.join(HERE, name), "rb") as f:
            members[name] = f.read()
    members["cqboot.py"] = BOOT.replace(b"@BUNDLED@",
                                        repr(module_names([*sources, *huey])).encode())
    digest = hashlib.sha256()
    for name in [*sources, "cqboot.py"]:  # each under its name: a module moved is another build
        digest.update(name.encode() + b"\0" + members[name] + b"\0")
    digest.update(MAIN + HUEY_SHA256.encode())
    members["__main__.py"] = MAIN.replace(b"@SOURCE_KEY@", digest.hexdigest()[:24].encode())
    return members


def write_archive(output: str, members: dict[str, bytes]) -> None:
    """Write a reproducible zipapp: shebang, sorted entries, fixed times and modes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            mode = 0o755 if name.startswith("hooks/") else 0o644
            info.external_attr = (0o100000 | mode) << 16
            info.create_system = 3
            zf.writestr(info, members[name])
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    tmp = f"{output}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(b"#!/usr/bin/env python3\n")
        f.write(buffer.getvalue())
    os.chmod(tmp, 0o755)
    os.replace(tmp, output)


def build(output: str, wheel_path: str | None) -> None:
    """Build cq.pyz at output from the given wheel, or from one pip downloads."""
    with tempfile.TemporaryDirectory() as tmp:
        wheel = verified_wheel(wheel_path or fetch_wheel(tmp))
    huey = huey_members(wheel)
    members = project_members(huey)
    members.update(huey)
    write_archive(output, members)


def main() -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=DEFAULT_OUTPUT,
                        help=f"where to write the archive (default: {DEFAULT_OUTPUT})")
    parser.add_argument("--huey-wheel", metavar="PATH",
                        help=f"build offline from this {HUEY_WHEEL}")
    args = parser.parse_args()
    try:
        build(args.output, args.huey_wheel)
    except (BuildError, OSError) as exc:
        print(f"build_zipapp: {exc}", file=sys.stderr)
        return 1
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
