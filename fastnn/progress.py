"""What ``fit`` shows while it trains, and the clock behind its samples/s.

* :class:`ProgressBar`, one per epoch.  ``verbose=1``: a live bar, redrawn in place on a
  terminal (``\\r``) and in Jupyter (an ``IPython.display`` handle updated in place);
  written to anything else (a log file, a pipe, CI), it prints the epoch's line once, at
  the end.  ``verbose=2``: exactly one line per epoch, wherever it goes.
* :class:`CompileWatch`: listens to Numba's compiler events while ``fit`` runs, to say
  in one line when kernels are really being compiled (a cache miss, not a cache load)
  and to take compilation out of the samples/s figure.

IPython is never imported here: a Jupyter kernel has imported it already, and without
a kernel there is nothing to display into.
"""
import sys
import threading
import time

from numba.core import event as numba_event

#: What fit prints when Numba starts compiling a kernel (by backend name; others: "cpu").
COMPILING = {"cpu": "compiling kernels for this CPU (first run, cached afterwards; "
                    "`fastnn warmup` does it ahead of time)...",
             "cuda": "compiling the CUDA kernels (first use in this process)..."}


def jupyter_display():
    """``IPython.display.display`` when running in a Jupyter kernel, else None."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return None
    try:
        shell = ipython.get_ipython()
    except Exception:                    # a half-imported or foreign "IPython" module
        return None
    if shell is None or getattr(shell, "kernel", None) is None:
        return None                      # terminal IPython: the terminal's live bar works
    try:
        from IPython.display import display
    except ImportError:
        return None
    return display


class _Line:
    """A line of text for ``IPython.display`` (shown as plain, monospaced text)."""

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text

    def _repr_pretty_(self, printer, cycle):
        printer.text(self.text)


class ProgressBar:
    """The progress of one epoch.

    Parameters
    ----------
    total : int
        Samples in the epoch.
    epoch, epochs : int
        Shown as ``Epoch {epoch}/{epochs}`` (1-based).
    verbose : 1 or 2
        1: live (terminal or Jupyter), else one line at the end; 2: one line at the end.
    stream : file, optional
        Where to write (default ``sys.stdout``; Jupyter is used only for the default).
    width : int
        Characters of the bar.
    interval : float
        Seconds between redraws of a live bar.

    ``update(done, rate, **metrics)`` redraws at most every ``interval`` seconds;
    ``note(text)`` prints a line of its own (above a live bar); ``finish(rate,
    **metrics)`` writes the epoch's final line.  ``rate`` is the samples/s to show,
    measured by the caller (fit: training batches alone, compilation left out).
    """

    def __init__(self, total, epoch, epochs, verbose=1, stream=None, width=30, interval=0.1):
        self.total, self.epoch, self.epochs = total, epoch, epochs
        self.width, self.interval = width, interval
        self.stream = stream if stream is not None else sys.stdout
        self.display = jupyter_display() if verbose == 1 and stream is None else None
        if self.display is not None:
            self.mode = "jupyter"
        elif verbose == 1 and getattr(self.stream, "isatty", lambda: False)():
            self.mode = "live"
        else:
            self.mode = "lines"
        self._handle = None
        self._drawn = False               # a live line is on the terminal
        self.start = time.perf_counter()
        self._last = -float("inf")

    @property
    def live(self):
        return self.mode != "lines"

    def _line(self, done, rate, metrics, bar=True):
        elapsed = time.perf_counter() - self.start
        parts = [f"Epoch {self.epoch}/{self.epochs}"]
        if bar:
            filled = int(self.width * done / max(self.total, 1))
            arrow = "=" * filled + (">" if filled < self.width else "")
            parts.append(f"{done}/{self.total} [{arrow.ljust(self.width, '.')[:self.width]}]")
        else:
            parts.append(f"{done}/{self.total}")
        parts.append(f"{elapsed:.1f}s")
        if rate is not None:
            parts.append(f"{rate:,.0f} samples/s")
        line = " ".join(parts)
        return line + "".join(f" - {k}: {v:.4f}" for k, v in metrics.items())

    def _show(self, text, final):
        if self.mode == "jupyter":
            if self._handle is None:
                self._handle = self.display(_Line(text), display_id=True)
            else:
                self._handle.update(_Line(text))
        elif self.mode == "live":
            self.stream.write("\r" + text + "\x1b[K" + ("\n" if final else ""))
            self.stream.flush()
            self._drawn = not final
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def update(self, done, rate=None, **metrics):
        if not self.live:
            return
        now = time.perf_counter()
        if now - self._last >= self.interval:
            self._last = now
            self._show(self._line(done, rate, metrics), final=False)

    def note(self, text):
        """A line of its own: above the live bar, which is redrawn at the next update."""
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self._drawn = False
            self._last = -float("inf")
        self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self, rate=None, **metrics):
        self._show(self._line(self.total, rate, metrics, bar=self.live), final=True)


class CompileWatch:
    """Numba's compilation during a block (``with CompileWatch() as watch:``), on this
    thread.

    * ``seconds``: time spent in Numba's compiler -- compiling, or loading compiled code
      from the on-disk cache, a Numba function's first call in a process -- so that
      a speed can leave it out.
    * ``announce``: called once, when Numba starts a real compilation (a cache miss;
      loading cached code is not one) -- set it to print a note.  ``compiled`` says
      whether one happened.

    Cheap: Numba sends these events only while it compiles or loads; a call of an
    already compiled function sends none.
    """

    def __init__(self, announce=None):
        self.announce = announce
        self.compiled = False
        self._seconds = 0.0
        self._depth = 0
        self._since = None
        self._thread = threading.get_ident()
        self._listeners = None

    @property
    def seconds(self):
        """Compiler time so far (including a compilation in progress)."""
        if self._since is not None:
            return self._seconds + time.perf_counter() - self._since
        return self._seconds

    # ---- event handlers (Numba calls them on the compiling thread)
    def _lock_start(self, event):
        if threading.get_ident() == self._thread:
            self._depth += 1
            if self._depth == 1:
                self._since = time.perf_counter()

    def _lock_end(self, event):
        if threading.get_ident() == self._thread and self._depth:
            self._depth -= 1
            if self._depth == 0:
                self._seconds += time.perf_counter() - self._since
                self._since = None

    def _compile_start(self, event):
        if threading.get_ident() == self._thread and not self.compiled:
            self.compiled = True
            if self.announce is not None:
                self.announce()

    def __enter__(self):
        self._listeners = [("numba:compiler_lock", _Relay(self._lock_start, self._lock_end)),
                           ("numba:compile", _Relay(self._compile_start))]
        for kind, listener in self._listeners:
            numba_event.register(kind, listener)
        return self

    def __exit__(self, *exc):
        for kind, listener in self._listeners:
            numba_event.unregister(kind, listener)
        self._listeners = None
        return False


class _Relay(numba_event.Listener):
    """A Numba event listener that calls two functions."""

    def __init__(self, on_start, on_end=None):
        self._on_start, self._on_end = on_start, on_end

    def on_start(self, event):
        self._on_start(event)

    def on_end(self, event):
        if self._on_end is not None:
            self._on_end(event)


class TrainingClock:
    """Seconds since it was made, less the time :class:`CompileWatch` saw Numba's
    compiler take meanwhile (never below a nanosecond, so a rate stays finite)."""

    def __init__(self, watch):
        self.watch = watch
        self.start = time.perf_counter()
        self._compiling = watch.seconds

    def seconds(self):
        compiling = self.watch.seconds - self._compiling
        return max(time.perf_counter() - self.start - compiling, 1e-9)
