"""fastnn.threads: the thread count API and the spin defaults applied on import.

Behaviour only, never timings.  The defaults act when a library is loaded, so each case
that depends on them runs in a fresh interpreter with a controlled environment.
"""
import json
import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

import fastnn as fnn
from fastnn import threads

# Every variable that decides what the defaults do; removed from the child's environment
# unless a test sets it.
_CONTROL = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT",
            "GOTO_THREAD_TIMEOUT", threads.OPT_OUT_VARIABLE)

# Prints, as JSON: the control variables as the child sees them after the code under test,
# fastnn.thread_info(), and what NumPy's OpenBLAS reports as its thread timeout (None if
# NumPy's BLAS is not an OpenBLAS that says).
_REPORT = """
import ctypes, json, os
import numpy as np
import fastnn
timeouts = []
for path in fastnn.threads._mapped_libraries(r"openblas"):
    lib = ctypes.CDLL(path)
    if hasattr(lib, "openblas_thread_timeout") and "numpy" in path:
        timeouts.append(lib.openblas_thread_timeout())
a = np.random.default_rng(0).standard_normal((300, 300))
product_ok = bool(np.allclose(a @ a.T, np.einsum("ik,jk->ij", a, a)))
print(json.dumps({"env": {k: os.environ.get(k) for k in %r},
                  "info": fastnn.thread_info(),
                  "numpy_openblas_timeout": timeouts[0] if timeouts else None,
                  "product_ok": product_ok}, default=str))
""" % (_CONTROL,)


def run_child(prelude="", **env_changes):
    """Run ``prelude`` then the report in a fresh interpreter; the report as a dict."""
    env = {k: v for k, v in os.environ.items() if k not in _CONTROL}
    env.update(env_changes)
    code = textwrap.dedent(prelude) + _REPORT
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def numpy_has_openblas_timeout(report):
    if report["numpy_openblas_timeout"] is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS that reports its thread timeout")


# --------------------------------------------------------------------------- defaults
@pytest.mark.parametrize("numpy_first", [True, False], ids=["numpy-then-fastnn", "fastnn-only"])
def test_defaults_are_applied_when_the_user_set_nothing(numpy_first):
    report = run_child("import numpy\n" if numpy_first else "")
    assert report["env"]["GOMP_SPINCOUNT"] == threads.GOMP_SPINCOUNT
    assert report["env"]["OPENBLAS_THREAD_TIMEOUT"] == str(threads.OPENBLAS_THREAD_TIMEOUT)
    assert report["info"]["openmp"]["applied"] is True
    assert report["info"]["openblas"]["applied"] is True
    assert report["product_ok"]          # OpenBLAS still computes after its pool restarted
    numpy_has_openblas_timeout(report)
    # NumPy's OpenBLAS uses the new timeout, whether it was loaded before fastnn (its pool
    # was restarted) or by fastnn (it read the variable when loaded)
    assert report["numpy_openblas_timeout"] == threads.OPENBLAS_THREAD_TIMEOUT


def test_variables_the_user_set_are_respected():
    report = run_child(GOMP_SPINCOUNT="123", OPENBLAS_THREAD_TIMEOUT="25")
    assert report["env"]["GOMP_SPINCOUNT"] == "123"
    assert report["env"]["OPENBLAS_THREAD_TIMEOUT"] == "25"
    for part in ("openmp", "openblas"):
        assert report["info"][part]["applied"] is False
        assert "set by the user" in report["info"][part]["reason"]
    assert report["product_ok"]
    numpy_has_openblas_timeout(report)
    assert report["numpy_openblas_timeout"] == 25


@pytest.mark.parametrize("variable, value", [("OMP_WAIT_POLICY", "passive"),
                                             ("GOTO_THREAD_TIMEOUT", "20")])
def test_a_related_variable_counts_as_a_user_choice(variable, value):
    report = run_child(**{variable: value})
    part = "openmp" if variable.startswith("OMP") else "openblas"
    other = "OPENBLAS_THREAD_TIMEOUT" if part == "openblas" else "GOMP_SPINCOUNT"
    assert report["env"][other] is None
    assert report["env"][variable] == value
    assert report["info"][part]["applied"] is False


@pytest.mark.parametrize("value", ["0", "off"])
def test_opting_out_keeps_every_library_default(value):
    report = run_child(**{threads.OPT_OUT_VARIABLE: value})
    assert report["env"]["GOMP_SPINCOUNT"] is None
    assert report["env"]["OPENBLAS_THREAD_TIMEOUT"] is None
    assert report["info"]["openmp"]["applied"] is False
    assert report["info"]["openblas"]["applied"] is False
    numpy_has_openblas_timeout(report)
    assert report["numpy_openblas_timeout"] == 0      # OpenBLAS's own default


@pytest.mark.parametrize("daemon", [False, True], ids=["user-thread", "daemon-thread"])
def test_openblas_pool_is_not_restarted_while_other_threads_run(daemon):
    prelude = f"""
    import threading
    import numpy
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait, name="busy-user-thread", daemon={daemon})
    worker.start()
    try:
        import fastnn
    finally:
        stop.set(); worker.join()
    """
    report = run_child(prelude)
    # daemon threads (Jupyter's kernel runs some) do not stop the restart
    assert report["info"]["openblas"]["applied"] is daemon
    if not daemon:
        assert "busy-user-thread" in report["info"]["openblas"]["reason"]
    assert report["product_ok"]
    numpy_has_openblas_timeout(report)
    # left as it was without the restart
    expected = threads.OPENBLAS_THREAD_TIMEOUT if daemon else 0
    assert report["numpy_openblas_timeout"] == expected


def test_openmp_loaded_before_fastnn_is_reported():
    prelude = """
    import numba, numpy as np
    @numba.njit(parallel=True)
    def total(x):
        s = 0.0
        for i in numba.prange(x.size):
            s += x[i]
        return s
    total(np.ones(10))
    """
    report = run_child(prelude)
    if report["info"]["threading_layer"] != "omp":
        pytest.skip("Numba does not use the OpenMP threading layer here")
    assert any("libgomp" in path
               for path in report["info"]["openmp"].get("loaded_before_fastnn", []))


def test_environment_without_defaults():
    env = threads.environment_without_defaults()
    assert env[threads.OPT_OUT_VARIABLE] == "0"
    for name in threads._set_by_fastnn:
        assert name not in env
    for name, value in os.environ.items():           # the user's own settings stay
        if name not in threads._set_by_fastnn and name != threads.OPT_OUT_VARIABLE:
            assert env[name] == value


def test_apply_defaults_is_idempotent():
    before = json.dumps(fnn.thread_info(), default=str, sort_keys=True)
    threads.apply_defaults()
    assert json.dumps(fnn.thread_info(), default=str, sort_keys=True) == before


# --------------------------------------------------------------------------- thread count
@pytest.fixture
def restore_threads():
    previous = numba.get_num_threads()
    yield
    numba.set_num_threads(previous)


def test_public_names():
    for name in ("set_num_threads", "get_num_threads", "thread_info"):
        assert name in fnn.__all__
        assert getattr(fnn, name) is getattr(threads, name)


@pytest.mark.usefixtures("restore_threads")
def test_set_get_round_trip():
    maximum = numba.config.NUMBA_NUM_THREADS
    for n in sorted({1, maximum}):
        fnn.set_num_threads(n)
        assert fnn.get_num_threads() == n == numba.get_num_threads()
    fnn.set_num_threads(np.int64(1))                 # NumPy integers are integers
    assert fnn.get_num_threads() == 1
    info = fnn.thread_info()
    assert info["num_threads"] == 1 and info["max_threads"] == maximum


@pytest.mark.usefixtures("restore_threads")
@pytest.mark.parametrize("bad", [0, -1, "max+1"])
def test_set_num_threads_out_of_range(bad):
    maximum = numba.config.NUMBA_NUM_THREADS
    n = maximum + 1 if bad == "max+1" else bad
    before = fnn.get_num_threads()
    with pytest.raises(ValueError, match=rf"between 1 and {maximum}.*NUMBA_NUM_THREADS.*got {n}"):
        fnn.set_num_threads(n)
    assert fnn.get_num_threads() == before


@pytest.mark.usefixtures("restore_threads")
@pytest.mark.parametrize("bad", [1.0, 2.5, "2", None, True, np.bool_(True)])
def test_set_num_threads_needs_an_integer(bad):
    with pytest.raises(TypeError, match="must be an integer"):
        fnn.set_num_threads(bad)


def _train(n_threads):
    fnn.set_num_threads(n_threads)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 97)).astype(np.float32)
    y = rng.integers(0, 7, 300)
    model = fnn.Sequential(fnn.Linear(97, 257, init="he_normal"), fnn.ReLU(),
                           fnn.Linear(257, 7), seed=5)
    model.compile(optimizer=fnn.SGD(lr=0.05, momentum=0.9), loss="cross_entropy")
    model.fit(x, y, epochs=2, batch_size=64, seed=5, verbose=0)
    return model.state_dict(), model.predict(x)


@pytest.mark.usefixtures("restore_threads")
@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 threads")
def test_results_are_identical_for_one_and_two_threads():
    (state1, out1), (state2, out2) = _train(1), _train(2)
    assert state1.keys() == state2.keys()
    for key in state1:
        np.testing.assert_array_equal(state1[key], state2[key], err_msg=key)
    np.testing.assert_array_equal(out1, out2)
