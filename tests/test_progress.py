"""fit's progress display: a live bar on a terminal and in Jupyter, one line per epoch
with verbose=2 or when written to a file, samples/s of the training batches alone, and
one line when Numba compiles."""
import io
import sys
import threading
import types

import numba
import numpy as np
import pytest

import fastnn as fnn
import fastnn.progress as progress
from fastnn.progress import CompileWatch, ProgressBar, jupyter_display


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def _fresh_function():
    """A Numba function compiled on its first call (no on-disk cache): a real compile."""
    return numba.njit(cache=False)(lambda a: a * 2 + 1)


def _fit(model=None, verbose=1, epochs=2, n=40, batch_size=10, **kw):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((n, 4)), rng.integers(0, 3, n)
    model = model or fnn.Sequential(fnn.Linear(4, 6), fnn.ReLU(), fnn.Linear(6, 3), seed=0,
                                    dtype="float64")
    model.compile(optimizer=fnn.SGD(lr=0.05), loss="cross_entropy", metrics=["accuracy"])
    return model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=verbose,
                     shuffle=False, **kw)


@pytest.fixture(autouse=True)
def no_jupyter(monkeypatch):
    """Tests run under whatever imported IPython; each says which display it wants."""
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    monkeypatch.delitem(sys.modules, "IPython.display", raising=False)


# ----------------------------------------------------------------------------- the bar


def test_live_bar_on_a_terminal_redraws_one_line(monkeypatch):
    monkeypatch.setattr(progress, "time", FakeClock())
    stream = FakeTerminal()
    bar = ProgressBar(100, 1, 3, verbose=1, stream=stream, width=10, interval=0)
    assert bar.mode == "live"
    bar.update(50, 1234.0, loss=0.5)
    assert stream.getvalue() == ("\rEpoch 1/3 50/100 [=====>....] 0.0s 1,234 samples/s - "
                                 "loss: 0.5000\x1b[K")
    bar.note("compiling...")                         # the live line is cleared first
    assert stream.getvalue().endswith("\x1b[K\r\x1b[Kcompiling...\n")
    bar.finish(2000.0, loss=0.25, val_loss=0.3)
    last = stream.getvalue().split("compiling...\n")[1]
    assert last.startswith("\rEpoch 1/3 100/100 [==========] ")
    assert last.endswith("2,000 samples/s - loss: 0.2500 - val_loss: 0.3000\x1b[K\n")


@pytest.mark.parametrize("verbose, stream", [(1, io.StringIO()), (2, FakeTerminal()),
                                             (2, io.StringIO())])
def test_one_line_per_epoch_for_files_and_verbose_2(verbose, stream):
    bar = ProgressBar(100, 2, 3, verbose=verbose, stream=stream, interval=0)
    assert bar.mode == "lines"
    bar.update(10, 5.0, loss=1.0)
    assert stream.getvalue() == ""
    bar.finish(7.0, loss=0.5)
    out = stream.getvalue()
    assert out.count("\n") == 1 and "\r" not in out and "\x1b" not in out
    assert out.startswith("Epoch 2/3 100/100 ") and "[" not in out
    assert out.endswith("7 samples/s - loss: 0.5000\n")


def test_fit_verbose_1_on_a_terminal_is_live_and_verbose_2_one_line_per_epoch(monkeypatch):
    terminal = FakeTerminal()
    # set here, not in a fixture: pytest's capture puts its own sys.stdout back when
    # the test starts
    monkeypatch.setattr(sys, "stdout", terminal)
    _fit(verbose=1, epochs=3, n=5000, batch_size=10)
    out = terminal.getvalue()
    assert out.count("\r") >= 3 and out.count("Epoch 3/3") >= 1
    terminal.seek(0)
    terminal.truncate()
    _fit(verbose=2, epochs=3, validation_data=(np.ones((5, 4)), np.zeros(5, int)))
    lines = terminal.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    assert "\r" not in terminal.getvalue() and all("val_accuracy" in line for line in lines)


def test_fit_written_to_a_file_prints_each_epoch_once(capsys):
    _fit(verbose=1, epochs=2)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("Epoch")] == ["1/2", "2/2"]
    assert all("samples/s" in line and "accuracy:" in line for line in lines)


# ----------------------------------------------------------------------------- Jupyter


class FakeDisplay:
    """``IPython.display`` as a Jupyter kernel has it: ``display(obj, display_id=True)``
    returns a handle whose ``update(obj)`` replaces the output in place."""

    def __init__(self):
        self.outputs = []            # one list of shown texts per display() call

    def display(self, obj, display_id=False):
        assert display_id is True
        texts = [repr(obj)]
        self.outputs.append(texts)
        return types.SimpleNamespace(update=lambda new: texts.append(repr(new)))


def _install_ipython(monkeypatch, kernel=True):
    fake = FakeDisplay()
    shell = types.SimpleNamespace(kernel=object()) if kernel else types.SimpleNamespace()
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: shell
    display_module = types.ModuleType("IPython.display")
    display_module.display = fake.display
    ipython.display = display_module
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display_module)
    return fake


def test_jupyter_is_detected_only_in_a_kernel(monkeypatch):
    assert jupyter_display() is None                       # no IPython imported
    _install_ipython(monkeypatch, kernel=False)            # terminal IPython
    assert jupyter_display() is None
    fake = _install_ipython(monkeypatch, kernel=True)
    assert jupyter_display() == fake.display


def test_fit_in_jupyter_updates_one_display_per_epoch_in_place(monkeypatch, capsys):
    fake = _install_ipython(monkeypatch)
    _fit(verbose=1, epochs=2, n=3000, batch_size=10)
    assert len(fake.outputs) == 2                          # one output per epoch
    for epoch, texts in enumerate(fake.outputs, 1):
        assert len(texts) >= 2                              # drawn, then updated in place
        assert all(t.startswith(f"Epoch {epoch}/2 ") for t in texts)
        assert texts[-1].startswith(f"Epoch {epoch}/2 3000/3000 [") and "accuracy:" in texts[-1]
    assert "Epoch" not in capsys.readouterr().out          # nothing printed besides


def test_fit_in_jupyter_with_verbose_2_prints_lines(monkeypatch, capsys):
    fake = _install_ipython(monkeypatch)
    _fit(verbose=2, epochs=2)
    assert fake.outputs == []
    assert capsys.readouterr().out.count("Epoch ") == 2


# ----------------------------------------------------------------------------- compilation


def test_compile_watch_sees_real_compiles_on_its_thread_only():
    announced = []
    with CompileWatch(announce=lambda: announced.append(1)) as watch:
        other = _fresh_function()
        thread = threading.Thread(target=other, args=(1.0,))
        thread.start()
        thread.join()
        assert not watch.compiled and watch.seconds == 0      # another thread's compile
        f, g = _fresh_function(), _fresh_function()
        assert f(1.0) == 3.0 and g(2) == 5
    assert watch.compiled and announced == [1]                 # said once
    spent = watch.seconds
    assert spent > 0
    _fresh_function()(3.0)                                     # after the block: unheard
    assert watch.seconds == spent


def test_calls_of_compiled_functions_are_not_compilation():
    f = _fresh_function()
    f(1.0)
    with CompileWatch() as watch:
        for _ in range(100):
            f(2.0)
    assert not watch.compiled and watch.seconds == 0


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def perf_counter(self):
        return self.now


def test_samples_per_second_counts_training_batches_alone(monkeypatch, capsys):
    """Each training batch takes 1 s of a fake clock; a Numba compilation in the first
    batch takes 50 s and each validation 100 s: neither counts.  The compilation is
    announced once, in one line."""
    clock = FakeClock()
    monkeypatch.setattr(progress, "time", clock)
    fresh = _fresh_function()

    class SlowCompile(numba.core.event.Listener):
        def on_start(self, event):
            clock.now += 50.0

        def on_end(self, event):
            pass

    class Batches(fnn.Callback):
        def on_batch_begin(self, batch, logs=None):
            if batch == 0:
                fresh(1.0)                      # compiles (first call) in the first epoch

        def on_batch_end(self, batch, logs=None):
            clock.now += 1.0

    model = fnn.Sequential(fnn.Linear(4, 6), fnn.ReLU(), fnn.Linear(6, 3), seed=0,
                           dtype="float64")
    real_evaluate = model._evaluate

    def slow_evaluate(*args, **kwargs):
        clock.now += 100.0
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(model, "_evaluate", slow_evaluate)
    listener = SlowCompile()
    numba.core.event.register("numba:compile", listener)
    try:
        _fit(model, verbose=2, epochs=2, n=40, batch_size=10, callbacks=[Batches()],
             validation_data=(np.ones((6, 4)), np.zeros(6, int)))
    finally:
        numba.core.event.unregister("numba:compile", listener)
    history = model.history.history
    assert history["samples_per_second"] == [10.0, 10.0]      # 40 samples in 4 batches of 1 s
    out = capsys.readouterr().out
    assert out.count(progress.COMPILING["cpu"]) == 1
    lines = out.splitlines()
    assert lines[0] == progress.COMPILING["cpu"] and len(lines) == 3
    assert "10 samples/s" in lines[1] and "10 samples/s" in lines[2]


def test_no_compile_note_when_silent_or_when_nothing_compiles(monkeypatch, capsys):
    fresh = _fresh_function()

    class CompileFirst(fnn.Callback):
        def on_batch_begin(self, batch, logs=None):
            fresh(float(batch))

    _fit(verbose=0, epochs=1, callbacks=[CompileFirst()])     # compiles, silently
    assert capsys.readouterr().out == ""
    _fit(verbose=2, epochs=1)                                  # warm: nothing compiles
    out = capsys.readouterr().out
    assert "compiling" not in out and out.count("\n") == 1
