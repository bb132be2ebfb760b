"""Ctrl-C: a plain KeyboardInterrupt everywhere, and fit stops with whole steps.

Each case starts a child process that trains (or evaluates, or predicts), waits for its
marker line, sends SIGINT after a delay and reads what the child printed.  The delays
differ so that the interrupt lands in different places: in a kernel, between the kernels
of a backward pass or of an optimiser step, in Python code between batches.  Before the
fix 5 of 5 such interrupts ended in ``SystemError: CPUDispatcher(...) returned a result
with an exception set`` (fastnn/interrupts.py explains why).
"""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from fastnn.interrupts import plain_interrupts
import fastnn as fnn

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child is POSIX")

# Shared by every child: wide layers on random data.  With batches of one sample the
# optimiser step (Adam: four arrays per parameter) takes about as long as forward and
# backward, so an interrupt often lands in it, between the kernels of its parameters.
PRELUDE = """
import sys
import numpy as np
import fastnn as fnn

rng = np.random.default_rng(0)
x = rng.standard_normal((64, 32)).astype(np.float32)
y = rng.integers(0, 5, 64)

def build():
    widths = [32, 256, 256, 256, 256, 5]
    layers = []
    for a, b in zip(widths, widths[1:]):
        layers += [fnn.Linear(a, b), fnn.Tanh()]
    return fnn.Sequential(*layers[:-1], seed=0)

model = build()
model.compile(optimizer=fnn.Adam(lr=1e-3), loss="cross_entropy")
"""

# fit, interrupted, then checked against a replay: Adam counts its steps per parameter
# (before its kernel runs), so a step stopped between two of its kernels leaves unequal
# counts, or a count that the parameters and moments do not match.  The replay takes as
# many whole steps as the counts say, in fit's order (its documented explicit loop), on a
# fresh model, and must give the same parameters and moments bit for bit.  Nothing is
# added to the training steps, so the interrupt lands where the time goes.
FIT_CHILD = PRELUDE + """
compute = model.loss._compute

def announce(*args):            # the marker, once, from inside the first batch
    model.loss._compute = compute
    print("TRAINING", flush=True)
    return compute(*args)

model.loss._compute = announce

def arrays(model, opt):
    out = [p.data for p in model.parameters()]
    return out + [s[k] for s in opt.state for k in ("exp_avg", "exp_avg_sq")]

try:
    model.fit(x, y, epochs=1_000_000, batch_size=1, seed=0, verbose=0)
except KeyboardInterrupt:
    opt = model.optimizer
    counts = {s["step"] for s in opt.state}
    steps = max(counts)
    fresh = build()
    fresh_opt = fnn.Adam(fresh.parameters(), lr=1e-3)
    loss_fn, order, done = fnn.CrossEntropyLoss(), np.random.default_rng(0), 0
    while done < steps:
        for xb, yb in fnn.batches(x, y, batch_size=1, shuffle=True, seed=order):
            if done == steps:
                break
            loss, grad = loss_fn(fresh(xb), yb)
            fresh_opt.zero_grad(); fresh.backward(grad); fresh_opt.step()
            done += 1
    same = all(np.array_equal(a, b) for a, b in zip(arrays(model, opt),
                                                   arrays(fresh, fresh_opt)))
    h = model.history
    print(f"INTERRUPTED counts={len(counts)} replay={same} steps={steps} "
          f"epochs={len(h.epoch)} numbered={h.epoch == list(range(len(h.epoch)))} "
          f"finite={all(np.isfinite(h.history.get('loss', [])))}", flush=True)
    raise
"""

# The README's explicit loop, for ever.
LOOP_CHILD = PRELUDE + """
loss_fn = fnn.CrossEntropyLoss()
opt = fnn.SGD(model.parameters(), lr=0.01, momentum=0.9)
epoch = 0
while True:
    for xb, yb in fnn.batches(x, y, batch_size=4, shuffle=True, seed=epoch):
        logits = model(xb)
        loss, grad = loss_fn(logits, yb)
        opt.zero_grad(); model.backward(grad); opt.step()
    if epoch == 0:
        print("TRAINING", flush=True)
    epoch += 1
"""

INFERENCE_CHILD = PRELUDE + """
what = sys.argv[1]
model.evaluate(x, y, batch_size=4); model.predict(x, batch_size=4)
print("TRAINING", flush=True)
while True:
    model.evaluate(x, y, batch_size=4) if what == "evaluate" else model.predict(x, batch_size=4)
"""


def interrupt_child(tmp_path, code, delay, *args):
    """Run ``code`` in a child, SIGINT it ``delay`` s after its marker; (stdout, stderr)."""
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(code))
    # The child gets SIGINT's default disposition back: a test run started in the
    # background by a non-interactive shell (or a CI runner) ignores SIGINT, children
    # inherit that, and Python then installs no KeyboardInterrupt handler at all.
    child = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=dict(os.environ),
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        marker = child.stdout.readline()
        assert marker.strip() == "TRAINING", (marker, child.stderr.read())
        time.sleep(delay)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode != 0, out
    return out, err


def assert_plain_keyboard_interrupt(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1] == "KeyboardInterrupt", err
    assert "SystemError" not in err and "exception set" not in err, err


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.07, 0.19, 0.45, 0.9])
def test_ctrl_c_in_fit_stops_after_a_whole_step(tmp_path, delay):
    out, err = interrupt_child(tmp_path, FIT_CHILD, delay)
    assert_plain_keyboard_interrupt(err)
    line = next(l for l in out.splitlines() if l.startswith("INTERRUPTED"))
    fields = dict(item.split("=") for item in line.split()[1:])
    assert fields["counts"] == "1" and fields["replay"] == "True", line
    # the epochs kept are exactly those whose batches were all done (64 batches each)
    assert int(fields["epochs"]) == int(fields["steps"]) // 64, line
    assert fields["numbered"] == "True" and fields["finite"] == "True", line
    if delay >= 0.8:
        assert int(fields["epochs"]) >= 1, line


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.05, 0.4])
def test_ctrl_c_in_the_explicit_loop(tmp_path, delay):
    _, err = interrupt_child(tmp_path, LOOP_CHILD, delay)
    assert_plain_keyboard_interrupt(err)


@pytest.mark.slow
@pytest.mark.parametrize("what", ["evaluate", "predict"])
def test_ctrl_c_in_evaluate_and_predict(tmp_path, what):
    _, err = interrupt_child(tmp_path, INFERENCE_CHILD, 0.2, what)
    assert_plain_keyboard_interrupt(err)


def test_plain_interrupts_translates_only_numbas_disguise():
    def disguised():
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as cause:
            raise SystemError("returned a result with an exception set") from cause

    def other():
        raise SystemError("something else")

    with pytest.raises(KeyboardInterrupt) as info:
        plain_interrupts(disguised)()
    assert info.value.__suppress_context__          # the traceback shows no SystemError
    with pytest.raises(SystemError, match="something else"):
        plain_interrupts(other)()
    assert plain_interrupts(len)([1, 2]) == 2


def test_numba_operations_are_wrapped_and_reference_ones_are_not():
    numba_backend, numpy_backend = fnn.get_backend("numba"), fnn.get_backend("numpy")
    assert hasattr(numba_backend.matmul, "__wrapped__")
    assert hasattr(numba_backend.dense_forward, "__wrapped__")
    assert not hasattr(numpy_backend.matmul, "__wrapped__")


def test_fit_outside_the_main_thread_and_with_sigint_ignored():
    """No handler to defer (a worker thread, or SIGINT ignored): fit trains as before and
    leaves the handler as it was."""
    import threading

    import numpy as np
    x = np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model = fnn.Sequential(fnn.Linear(3, 2), seed=0).compile(loss="cross_entropy")
    errors = []
    worker = threading.Thread(target=lambda: errors.append(
        len(model.fit(x, y, epochs=2, verbose=0).epoch)))
    worker.start(); worker.join()
    assert errors == [2]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert len(model.fit(x, y, epochs=2, verbose=0).epoch) == 2
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    handler = signal.getsignal(signal.SIGINT)
    model.fit(x, y, epochs=1, verbose=0)
    assert signal.getsignal(signal.SIGINT) is handler
