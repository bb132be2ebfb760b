"""Threads: how many fastnn's kernels use, and how their pool shares the cores with NumPy's.

fastnn's kernels run on Numba's thread pool (GNU OpenMP, the ``omp`` threading layer, on
the pip wheels); ``np.matmul`` and the other BLAS calls run on the BLAS library's own pool
(OpenBLAS on the NumPy wheels).  The two pools are sized separately:

* :func:`set_num_threads` / :func:`get_num_threads`: fastnn's (Numba's) threads.
* NumPy's BLAS threads: ``OPENBLAS_NUM_THREADS`` before NumPy is imported, or at run time
  ``threadpoolctl.threadpool_limits(n, user_api="blas")``.  fastnn never changes them.

Why fastnn also sets how long idle threads *spin* (the defaults applied on import)
-----------------------------------------------------------------------------------
Both pools busy-wait after each parallel call before they go to sleep, so that the next
call finds them awake: OpenBLAS's workers for 2**28 CPU ticks (~0.1 s at 2.6 GHz: 104 ms of
CPU measured after one ``np.matmul``), libgomp's for 300,000 pause instructions (3.5 ms
measured on an Intel Xeon "rocketlake"; the length of a pause differs between CPUs).  A
program that alternates fastnn steps and NumPy matmuls therefore never lets the other
pool's spinner sleep: three busy threads on two cores, and every fork/join hand-over that
lands on a core shared with a spinner waits for the scheduler's tick (4 ms at HZ = 250;
``perf sched`` showed the main thread and the OpenMP worker taking turns on one core in 4 ms
slices while OpenBLAS's spinner held the other).  The benchmark MLP's training step then took
11.9 ms instead of 0.79 ms (B = 32; 13.9 instead of 1.55 at B = 128), and the NumPy matmul
between the steps 4.1 ms instead of 0.42.  Another CPU-bound process on the machine stalls
the hand-overs the same way.  So, unless the user set the variables themselves, importing
fastnn

* sets ``GOMP_SPINCOUNT`` to :data:`GOMP_SPINCOUNT` (0.1 ms here: long enough to bridge
  the gaps between the kernels of one step, so a step alone is as fast as with libgomp's
  default; short enough not to hold a core while NumPy or another process needs it.
  Measured: 3000 made the step alone 13% slower; 60000 also bridged the NumPy call, but
  with another busy process on the machine the B = 128 step took 2.6x as long as with
  10000).  libgomp reads it once, when Numba first starts its pool, which is why this
  module must be imported before any parallel kernel runs (``import fastnn`` does that);
* sets ``OPENBLAS_THREAD_TIMEOUT`` to :data:`OPENBLAS_THREAD_TIMEOUT` (2**n ticks) and
  applies it to every OpenBLAS already loaded (NumPy's is): OpenBLAS reads the variable
  when it is loaded, so fastnn asks it to read its environment again
  (``openblas_read_env``) and restarts its idle worker threads (``blas_thread_shutdown_``,
  ``blas_thread_init``), which then use the new timeout.  This is skipped when other
  (non-daemon) Python threads are running, since restarting the pool while another thread
  is inside a BLAS call would not be safe, and for BLAS libraries without those functions.  2**16 ticks is
  25 us at 2.6 GHz; 2**20 still made the step in the NumPy loop 20-50% slower.

With both, the step in that loop is 1.02-1.10x its time alone (B = 128 / 32), and the NumPy
matmul between 1.3x (it now wakes its sleeping worker, and our step evicted its operands
from the caches).  The price is paid by NumPy alone: a loop of many small products (the
hand-written NumPy training step) is 9-16% slower because OpenBLAS's worker now sleeps
between its calls; a large product is unchanged.

``FASTNN_THREAD_DEFAULTS=0`` in the environment turns all of this off.  :func:`thread_info`
tells what was applied.  The variables stay in ``os.environ``, so child processes and BLAS
or OpenMP libraries loaded later get the same settings.
"""
import os
import re
import threading

#: Set to "0" (or "off", "false", "no") to keep every library's own defaults.
OPT_OUT_VARIABLE = "FASTNN_THREAD_DEFAULTS"

#: libgomp's busy-wait before a waiting thread sleeps, in iterations of a pause loop.
GOMP_SPINCOUNT = "10000"
#: OpenBLAS's busy-wait before an idle worker sleeps: 2**n CPU ticks (OpenBLAS: 4..30).
OPENBLAS_THREAD_TIMEOUT = 16

# Variables with which the user already chose a wait policy: any of them set -> hands off.
_GOMP_VARIABLES = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")
_OPENBLAS_VARIABLES = ("OPENBLAS_THREAD_TIMEOUT", "GOTO_THREAD_TIMEOUT")

_info = {}
_set_by_fastnn = []     # the variables apply_defaults put into os.environ


# --------------------------------------------------------------------------- thread count
def _max_threads():
    import numba
    return numba.config.NUMBA_NUM_THREADS


def set_num_threads(n):
    """Use ``n`` threads for fastnn's kernels (Numba's thread pool).

    Results do not depend on the thread count: every kernel sums in the same order
    whatever the split (see README, "Reliability"); only the *reported* loss may differ in
    its last bits.

    Like :func:`numba.set_num_threads`, the setting holds for the calling thread (each
    Python thread starts with all threads), and it can only lower the count below the
    pool's size, ``NUMBA_NUM_THREADS`` (the number of CPUs unless set before Numba is
    imported).  NumPy's BLAS threads are a separate pool; limit them with
    ``threadpoolctl.threadpool_limits(n, user_api="blas")``.

    Parameters
    ----------
    n : int
        Number of threads, ``1 <= n <= NUMBA_NUM_THREADS``.

    Raises
    ------
    TypeError
        If ``n`` is not an integer.
    ValueError
        If ``n`` is out of range.
    """
    import numba
    import numpy as np
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"set_num_threads: n must be an integer, got {n!r} "
                        f"({type(n).__name__})")
    limit = _max_threads()
    if not 1 <= n <= limit:
        raise ValueError(
            f"set_num_threads: n must be between 1 and {limit} (the size of Numba's thread "
            f"pool, NUMBA_NUM_THREADS), got {n}; to allow more threads set NUMBA_NUM_THREADS "
            "before the first import of numba")
    numba.set_num_threads(int(n))


def get_num_threads():
    """The number of threads fastnn's kernels use in the calling thread (see
    :func:`set_num_threads`)."""
    import numba
    return numba.get_num_threads()


# --------------------------------------------------------------------------- spin defaults
def _opted_out():
    return os.environ.get(OPT_OUT_VARIABLE, "").strip().lower() in ("0", "off", "false", "no")


def _mapped_libraries(pattern):
    """Paths of the shared libraries loaded in this process whose file name matches
    ``pattern`` (Linux: from /proc/self/maps; elsewhere an empty list)."""
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return []
    paths = []
    for line in lines:
        path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
        if path.startswith("/") and re.search(pattern, os.path.basename(path)) \
                and path not in paths:
            paths.append(path)
    return paths


def _gomp_default():
    """Set GOMP_SPINCOUNT unless the user chose a wait policy; say whether it can act."""
    user = [name for name in _GOMP_VARIABLES if name in os.environ]
    if user:
        return {"applied": False, "reason": f"set by the user: {', '.join(user)}"}
    os.environ["GOMP_SPINCOUNT"] = GOMP_SPINCOUNT
    _set_by_fastnn.append("GOMP_SPINCOUNT")
    info = {"applied": True}
    loaded = _mapped_libraries(r"^libgomp")
    if loaded:
        # A libgomp reads its environment when it is loaded: one loaded before fastnn (by
        # another library) keeps its spin.  If Numba's pool uses that same copy, the
        # default does not reach fastnn's threads either.
        info["loaded_before_fastnn"] = loaded
    return info


def _openblas_function(lib, *names):
    for name in names:
        try:
            return getattr(lib, name)
        except AttributeError:
            pass
    return None


def _restart_openblas_pool(path):
    """Make the OpenBLAS at ``path`` re-read its environment and restart its idle workers.

    Returns a short status string."""
    import ctypes
    try:
        lib = ctypes.CDLL(path)     # already loaded: this only returns its handle
    except OSError as exc:
        return f"not changed ({exc})"
    get_parallel = _openblas_function(
        lib, "openblas_get_parallel", "openblas_get_parallel64_", "scipy_openblas_get_parallel",
        "scipy_openblas_get_parallel64_")
    read_env = _openblas_function(lib, "openblas_read_env")
    timeout = _openblas_function(lib, "openblas_thread_timeout")
    shutdown = _openblas_function(lib, "blas_thread_shutdown_")
    init = _openblas_function(lib, "blas_thread_init")
    if None in (get_parallel, read_env, timeout, shutdown, init):
        return "not changed (no openblas_read_env / blas_thread_shutdown_ in this build)"
    if get_parallel() != 1:
        return "not changed (not the pthreads build: its threads follow its OpenMP runtime)"
    read_env()
    if timeout() != OPENBLAS_THREAD_TIMEOUT:
        return "not changed (it did not take the new timeout)"
    # The workers read the timeout when they are created: restart them.  Safe only while
    # no other thread can be inside a BLAS call (checked by the caller).
    shutdown()
    init()
    return f"timeout 2**{OPENBLAS_THREAD_TIMEOUT} ticks"


def _openblas_default():
    user = [name for name in _OPENBLAS_VARIABLES if name in os.environ]
    if user:
        return {"applied": False, "reason": f"set by the user: {', '.join(user)}"}
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = str(OPENBLAS_THREAD_TIMEOUT)
    _set_by_fastnn.append("OPENBLAS_THREAD_TIMEOUT")
    loaded = _mapped_libraries(r"openblas")
    if not loaded:
        return {"applied": True, "libraries": {}}
    # Restarting the pool while another thread is inside a BLAS call could hang that call.
    # Daemon threads are not counted: Jupyter's kernel always runs a few (heartbeat,
    # I/O, history), and they do not call BLAS.
    others = [t.name for t in threading.enumerate() if t is not threading.current_thread()
              and not t.daemon and not isinstance(t, threading._DummyThread)]
    if others:
        return {"applied": False, "reason": "other Python threads were running at import "
                f"({', '.join(others[:3])}); OpenBLAS's pool was not restarted",
                "libraries": {path: "not changed" for path in loaded}}
    return {"applied": True,
            "libraries": {path: _restart_openblas_pool(path) for path in loaded}}


def apply_defaults():
    """Apply fastnn's spin defaults (see the module docstring); called by ``import fastnn``.

    Idempotent: later calls change nothing.  :func:`thread_info` reports the outcome."""
    if not _info:
        if _opted_out():
            _info["openmp"] = _info["openblas"] = {
                "applied": False, "reason": f"{OPT_OUT_VARIABLE}={os.environ[OPT_OUT_VARIABLE]}"}
        else:
            _info["openmp"] = _gomp_default()
            _info["openblas"] = _openblas_default()


def environment_without_defaults():
    """A copy of ``os.environ`` as a program that does not use fastnn would have it: without
    the variables fastnn's defaults set (the user's own settings are kept), and with
    ``FASTNN_THREAD_DEFAULTS=0``.  For child processes that should run with every library's
    own thread settings (e.g. a NumPy-only baseline in a benchmark)."""
    env = {name: value for name, value in os.environ.items() if name not in _set_by_fastnn}
    env[OPT_OUT_VARIABLE] = "0"
    return env


def thread_info():
    """What fastnn's threads look like, and whether its spin defaults were applied.

    Starts Numba's thread pool if it is not running.

    Returns
    -------
    dict
        ``num_threads`` (:func:`get_num_threads`), ``max_threads`` (``NUMBA_NUM_THREADS``),
        ``threading_layer`` (Numba's: ``"omp"``, ``"tbb"`` or ``"workqueue"``; the OpenMP
        default only acts on ``"omp"``), and ``openmp`` / ``openblas``: ``applied`` (bool),
        ``reason`` when not applied, the variables' current values, and per loaded OpenBLAS
        what was done (``libraries``).
    """
    import numba
    num_threads = numba.get_num_threads()      # starts the pool if it is not running
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = None
    return {"num_threads": num_threads, "max_threads": _max_threads(),
            "threading_layer": layer,
            "openmp": dict(_info.get("openmp", {}), GOMP_SPINCOUNT=os.environ.get("GOMP_SPINCOUNT"),
                           OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY")),
            "openblas": dict(_info.get("openblas", {}),
                             OPENBLAS_THREAD_TIMEOUT=os.environ.get("OPENBLAS_THREAD_TIMEOUT"))}
