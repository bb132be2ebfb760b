"""Numba's on-disk cache of fastnn's kernels never serves stale or foreign machine code
(issue 13): an edit of any kernel source, another CPU or another Numba version makes the
kernels compile again, and a read-only install caches in the user's cache directory.

The checks run in fresh interpreters on a throw-away package: a copy of kernels/_jit.py
(the options and the cache locators every kernel uses) with two tiny kernels, one
calling the other across files, so each run compiles in a fraction of a second.  The
GEMM's own per-path check (a shared cache never serves another instruction-set path's
code) is tests/test_kernel_paths.py::test_a_shared_cache_never_serves_another_paths_code.
"""
import json
import os
import platform
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fastnn.kernels import _jit, bias

KERNELS = Path(_jit.__file__).parent

PROBE = '''\
from ._jit import kernel
from .probe_helper import helper


@kernel
def probe(x):
    return helper(x) * 2.0
'''
HELPER = '''\
from ._jit import kernel


@kernel
def helper(x):
    return x + 1.0
'''
# Run in the child: call the kernel and report what its dispatcher did.
RUN = '''
import json, sys
sys.path.insert(0, {root!r})
{before}
from probepkg.probe import probe
value = probe(1.0)
stats = probe.stats
print(json.dumps({{"value": value, "hits": sum(stats.cache_hits.values()),
                  "misses": sum(stats.cache_misses.values()), "path": stats.cache_path}}))
'''


def make_package(root):
    """``root/probepkg``: _jit.py, probe.py (calls helper) and probe_helper.py."""
    package = root / "probepkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    shutil.copy(KERNELS / "_jit.py", package / "_jit.py")
    (package / "probe.py").write_text(PROBE)
    (package / "probe_helper.py").write_text(HELPER)
    return package


def run(root, cache_dir=None, cpu=None, before="", prefix=(), **env_extra):
    """Call the probe kernel in a fresh interpreter: ``{"value", "hits", "misses",
    "path"}``.  ``cache_dir``: NUMBA_CACHE_DIR (None: Numba chooses); ``cpu``: compile
    for this CPU with its own features; ``prefix``: a command that runs the interpreter."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES")}
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    if cpu is not None:
        env.update(NUMBA_CPU_NAME=cpu, NUMBA_CPU_FEATURES="")
    env.update(env_extra)
    code = RUN.format(root=str(root), before=textwrap.dedent(before))
    out = subprocess.run([*prefix, sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def edit(path, old, new):
    """Replace ``old`` by ``new`` (same length) and move the modification time on, as
    an editor would; the size stays the same, so only the time can tell."""
    text = path.read_text()
    assert len(old) == len(new) and old in text
    stat = path.stat()
    path.write_text(text.replace(old, new))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


def test_every_kernel_is_stamped_with_every_kernel_source():
    """The real kernels use the locators of _jit.py, whose stamp lists every source of
    the kernels folder (name, modification time, size)."""
    locator = bias.bias_add._cache._impl.locator
    assert type(locator).__name__.startswith("FastnnSources")
    _, sources = locator.get_source_stamp()
    names = sorted(p.name for p in KERNELS.glob("*.py"))
    assert [name for name, _, _ in sources] == names
    assert "vmath.py" in names and "_jit.py" in names


@pytest.mark.parametrize("edited", ["probe.py", "probe_helper.py"])
def test_a_kernel_source_edit_never_loads_stale_code(tmp_path, edited):
    """After an edit of the kernel's file, or of another file of the folder that it
    calls (which Numba's own stamp does not see), the kernel compiles again and
    computes what the new source says."""
    package = make_package(tmp_path)
    cache = tmp_path / "cache"
    first = run(tmp_path, cache)
    assert (first["value"], first["misses"], first["hits"]) == (4.0, 1, 0)
    again = run(tmp_path, cache)
    assert (again["value"], again["misses"], again["hits"]) == (4.0, 0, 1)
    if edited == "probe.py":
        edit(package / edited, "* 2.0", "* 3.0")
        expected = 6.0
    else:
        edit(package / edited, "x + 1.0", "x + 2.0")
        expected = 6.0
    after = run(tmp_path, cache)
    assert (after["value"], after["misses"], after["hits"]) == (expected, 1, 0)


def _host_runs_haswell_code():
    from numba.core.codegen import get_host_cpu_features
    features = get_host_cpu_features()
    return all(f"+{f}" in features for f in ("avx2", "fma", "bmi2"))


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="CPU names are x86 ones")
def test_another_cpu_never_loads_this_cpus_code(tmp_path):
    """Code compiled for Haswell (``NUMBA_CPU_NAME=haswell``, its own features) into a
    cache directory is not what a native run loads from it: the native run compiles
    its own; then each finds its own code there."""
    from llvmlite import binding as llvm
    if llvm.get_host_cpu_name() == "haswell":
        pytest.skip("the host is a Haswell: no other CPU to compare with")
    if not _host_runs_haswell_code():
        pytest.skip("the host cannot run Haswell code")
    make_package(tmp_path)
    cache = tmp_path / "cache"
    haswell = run(tmp_path, cache, cpu="haswell")
    native = run(tmp_path, cache)
    assert (haswell["misses"], haswell["hits"]) == (1, 0)
    assert (native["misses"], native["hits"]) == (1, 0)
    assert (run(tmp_path, cache)["hits"], run(tmp_path, cache, cpu="haswell")["hits"]) == (1, 1)
    assert haswell["value"] == native["value"] == 4.0


def test_another_numba_version_never_loads_this_versions_code(tmp_path):
    """Numba writes its version into each cache index and ignores an index of another
    version (a process that reports another version compiles again)."""
    make_package(tmp_path)
    cache = tmp_path / "cache"
    assert run(tmp_path, cache)["misses"] == 1
    other = run(tmp_path, cache, before="import numba; numba.__version__ = '0.0.0.test'")
    assert (other["value"], other["misses"], other["hits"]) == (4.0, 1, 0)


def _user_cache_run(tmp_path, package, prefix=()):
    """Run twice with no NUMBA_CACHE_DIR and a private XDG_CACHE_HOME: the code goes to
    the user cache directory (``$XDG_CACHE_HOME/numba``), nothing into the package, and
    the second run loads it."""
    xdg = tmp_path / "xdg"
    first = run(tmp_path, XDG_CACHE_HOME=str(xdg), prefix=prefix)
    second = run(tmp_path, XDG_CACHE_HOME=str(xdg), prefix=prefix)
    assert (first["misses"], second["hits"]) == (1, 1)
    assert Path(first["path"]).is_relative_to(xdg / "numba")
    assert list((xdg / "numba").rglob("*.nbi")) and list((xdg / "numba").rglob("*.nbc"))
    assert not [p for p in package.rglob("*") if p.suffix in (".nbi", ".nbc")]


def test_an_unwritable_package_folder_caches_in_the_user_cache_dir(tmp_path):
    """Where the package's ``__pycache__`` cannot be created (here a file of that name
    blocks it, which holds even for root), the kernels are cached in the user's cache
    directory, as Numba's own UserWideCacheLocator does."""
    package = make_package(tmp_path)
    (package / "__pycache__").write_text("")
    _user_cache_run(tmp_path, package)


#: Runs a command as root without the capability that lets root write anywhere, so
#: that file permissions hold for it (util-linux's setpriv).
WITHOUT_DAC_OVERRIDE = ("setpriv", "--bounding-set=-dac_override,-dac_read_search")


def _permission_enforcing_prefix(read_only_dir):
    """A command prefix under which ``read_only_dir`` cannot be written: none for a
    normal user, setpriv without CAP_DAC_OVERRIDE for root; None if there is none."""
    probe = [sys.executable, "-c", f"open({str(read_only_dir / 'probe-write')!r}, 'w')"]
    for prefix in ((), WITHOUT_DAC_OVERRIDE):
        if prefix and not shutil.which(prefix[0]):
            continue
        if subprocess.run([*prefix, *probe], capture_output=True).returncode != 0:
            return prefix
        (read_only_dir / "probe-write").unlink(missing_ok=True)
    return None


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_a_read_only_install_caches_in_the_user_cache_dir(tmp_path):
    """A package installed read-only (e.g. a system site-packages, or a user without
    write access): the same fallback.  As root, run without CAP_DAC_OVERRIDE."""
    package = make_package(tmp_path)
    paths = [package, *package.iterdir()]
    for path in paths:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        prefix = _permission_enforcing_prefix(package)
        if prefix is None:
            pytest.skip("permissions are not enforced (root with CAP_DAC_OVERRIDE, no "
                        "setpriv); the unwritable-folder case is tested with a blocking "
                        "file instead")
        _user_cache_run(tmp_path, package, prefix)
    finally:
        for path in paths:
            path.chmod(0o755 if path.is_dir() else 0o644)
