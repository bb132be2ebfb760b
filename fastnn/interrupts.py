"""Ctrl-C: a plain ``KeyboardInterrupt`` from every operation, and whole training steps.

Why a compiled kernel turned Ctrl-C into ``SystemError``
--------------------------------------------------------
A kernel runs without the GIL, so a SIGINT that arrives meanwhile only trips CPython's
flag; Python's handler (the one that raises ``KeyboardInterrupt``) runs at the next
Python bytecode.  A kernel that returns an array boxes it in Numba's generated wrapper,
which calls back into Python (``numba.core.serialize._numba_unpickle``, to get the array
type) and does not check that call for an exception.  The handler runs there, the
wrapper returns the array with ``KeyboardInterrupt`` still set, and CPython reports
``SystemError: CPUDispatcher(...) returned a result with an exception set`` with the
``KeyboardInterrupt`` as its ``__cause__``.  The kernel itself had finished.

:func:`plain_interrupts` undoes that for one operation; :class:`fastnn.backends.Backend`
applies it to every operation of a compiled operations module, so no call site needs to.

Whole steps in ``fit``
----------------------
Between the kernels of one optimiser step a raised ``KeyboardInterrupt`` would leave some
parameters updated and others not.  :class:`DeferredInterrupts` holds Ctrl-C back during
``fit`` and raises it at the points where the model is whole (before a batch, between
epochs).  One handler swap per ``fit``, not per step: on some machines ``signal.signal``
costs ~10 µs, as much as a small training step.
"""
import functools
import signal


def plain_interrupts(operation):
    """``operation`` raising ``KeyboardInterrupt`` where Numba would raise the
    ``SystemError`` described in the module docstring; every other error is unchanged."""
    @functools.wraps(operation)
    def run(*args, **kwargs):
        try:
            return operation(*args, **kwargs)
        except SystemError as error:
            if isinstance(error.__cause__, KeyboardInterrupt):
                raise KeyboardInterrupt from None
            raise
    return run


class DeferredInterrupts:
    """Within ``with DeferredInterrupts() as interrupts:``, Ctrl-C (SIGINT) only takes
    note; :meth:`check` hands a noted SIGINT to the handler that was installed before
    (Python's default raises ``KeyboardInterrupt``), and so does leaving the block.

    Nothing is changed when SIGINT is ignored or left to the operating system (no Python
    handler to defer), or outside the main thread (where Python never runs a signal
    handler, so no interrupt can land in the block's steps).
    """

    def __init__(self):
        self.pending = False
        self._previous = None

    def __enter__(self):
        previous = signal.getsignal(signal.SIGINT)
        if callable(previous):
            try:
                signal.signal(signal.SIGINT, self._note)
                self._previous = previous
            except ValueError:          # not the main thread
                pass
        return self

    def _note(self, signum, frame):
        self.pending = True

    def check(self):
        """Call at a point where stopping leaves everything whole."""
        if self.pending:
            self.pending = False
            self._previous(signal.SIGINT, None)

    def __exit__(self, *exc_info):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            if exc_info[0] is None:     # an interrupt noted after the last check
                self.check()
        return False
