"""A small Keras-style progress bar for ``fit``."""
import sys
import time


class ProgressBar:
    """Live one-line progress on a terminal; a single summary line per epoch elsewhere.

    ``update(done, **metrics)`` redraws at most every ``interval`` seconds;
    ``finish(**metrics)`` prints the final line of the epoch.
    """

    def __init__(self, total, epoch, epochs, stream=None, width=30, interval=0.1):
        self.total, self.epoch, self.epochs = total, epoch, epochs
        self.stream = stream or sys.stdout
        self.width, self.interval = width, interval
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = self._last = time.perf_counter()

    def _line(self, done, metrics):
        elapsed = time.perf_counter() - self.start
        filled = int(self.width * done / max(self.total, 1))
        bar = "=" * filled + (">" if filled < self.width else "") + "." * (self.width - filled - 1)
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = " - ".join(f"{k}: {v:.4f}" for k, v in metrics.items())
        return (f"Epoch {self.epoch}/{self.epochs} {done}/{self.total} [{bar[:self.width]}] "
                f"{elapsed:.1f}s {rate:,.0f} samples/s" + (f" - {parts}" if parts else ""))

    def update(self, done, **metrics):
        now = time.perf_counter()
        if self.live and now - self._last >= self.interval:
            self._last = now
            self.stream.write("\r" + self._line(done, metrics) + "\x1b[K")
            self.stream.flush()

    def finish(self, **metrics):
        self.stream.write(("\r" if self.live else "") + self._line(self.total, metrics)
                          + ("\x1b[K" if self.live else "") + "\n")
        self.stream.flush()
