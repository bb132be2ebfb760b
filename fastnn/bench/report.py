"""Results of ``fastnn bench`` and how they are shown: console lines, Markdown, JSON."""
import json
import os
from dataclasses import asdict, dataclass, field


@dataclass
class Result:
    """One row: fastnn against a baseline, both as block means (ms per call).

    ``kind="speedup"`` (the usual): ``ratio = baseline_ms / fastnn_ms`` (> 1: fastnn is
    faster) and the target is met when ``ratio >= target``.  ``kind="slowdown"``: fastnn
    under some condition against fastnn alone (``baseline_ms``); ``ratio = fastnn_ms /
    baseline_ms`` and the target is met when ``ratio <= target``.  ``median_ratio`` is
    the same ratio of the medians of single calls.  ``mode`` says how the two were
    measured: "interleaved" (alternating blocks in one process) or "own process" (each
    in a fresh process of its own).
    """
    group: str
    case: str
    shape: str
    threads: int
    fastnn_ms: float
    baseline_ms: float
    baseline: str = "numpy"
    mode: str = "interleaved"
    fastnn_median_ms: float = None
    baseline_median_ms: float = None
    gflops: float = None
    peak_pct: float = None
    target: float = None
    kind: str = "speedup"
    notes: str = ""
    fastnn_blocks_ms: list = None
    baseline_blocks_ms: list = None
    fastnn_block_calls: int = None
    baseline_block_calls: int = None
    ratio: float = field(init=False)
    median_ratio: float = field(init=False)
    met: bool = field(init=False)

    def __post_init__(self):
        self.ratio = self._ratio(self.fastnn_ms, self.baseline_ms)
        self.median_ratio = (None if self.fastnn_median_ms is None
                             or self.baseline_median_ms is None
                             else self._ratio(self.fastnn_median_ms, self.baseline_median_ms))
        if self.target is None:
            self.met = None
        elif self.kind == "slowdown":
            self.met = self.ratio <= self.target
        else:
            self.met = self.ratio >= self.target

    def _ratio(self, fastnn, baseline):
        return fastnn / baseline if self.kind == "slowdown" else baseline / fastnn

    @classmethod
    def from_timings(cls, group, case, shape, threads, fastnn_timing, baseline_timing,
                     flops=None, peak_gflops=None, **fields):
        """A row from two :class:`~fastnn.bench.timing.Timing`; GFLOP/s from ``flops``
        per call over fastnn's block mean, and "% of peak" against ``peak_gflops`` per
        core times ``threads``; ``fields`` are the other attributes (``baseline`` is
        the baseline's label)."""
        fastnn, baseline = fastnn_timing, baseline_timing
        gflops = flops / fastnn.mean / 1e9 if flops else None
        peak_pct = (100 * gflops / (peak_gflops * threads)
                    if gflops is not None and peak_gflops else None)
        return cls(group, case, shape, threads, fastnn.mean * 1e3, baseline.mean * 1e3,
                   fastnn_median_ms=fastnn.median * 1e3,
                   baseline_median_ms=baseline.median * 1e3, gflops=gflops,
                   peak_pct=peak_pct,
                   fastnn_blocks_ms=[t * 1e3 for t in fastnn.block_means],
                   baseline_blocks_ms=[t * 1e3 for t in baseline.block_means],
                   fastnn_block_calls=fastnn.block_calls,
                   baseline_block_calls=baseline.block_calls, **fields)

    def target_text(self):
        if self.target is None:
            return ""
        return (f"slowdown <= {self.target:g}x" if self.kind == "slowdown"
                else f">= {self.target:g}x")

    def met_text(self):
        return "" if self.met is None else ("yes" if self.met else "**no**")


def console_line(r):
    """One line per result while the benchmark runs."""
    median = ("" if r.median_ratio is None
              else f" (medians {r.fastnn_median_ms:.4g} / {r.baseline_median_ms:.4g} ms)")
    return (f"{r.group:13s} {r.case:30s} {r.shape:21s} t={r.threads} {r.mode:11s} "
            f"{r.fastnn_ms:9.4g} ms vs {r.baseline_ms:9.4g} ms {r.baseline:22s} "
            f"{r.ratio:5.2f}x{median}"
            + (f"  {r.gflops:.1f} GFLOP/s" if r.gflops else "")
            + (f"  {r.peak_pct:.0f}% of peak" if r.peak_pct else "")
            + ("" if r.met is None else f"  [{r.target_text()}: {'met' if r.met else 'NOT MET'}]"))


_COLUMNS = ("case", "shape", "threads", "mode", "fastnn ms", "baseline", "baseline ms",
            "ratio", "median ms (fastnn / baseline)", "median ratio", "GFLOP/s",
            "% of peak", "target", "met")


def _row(r):
    def num(value, fmt):
        return "" if value is None else format(value, fmt)
    medians = ("" if r.fastnn_median_ms is None
               else f"{r.fastnn_median_ms:.4g} / {r.baseline_median_ms:.4g}")
    cells = (r.case, r.shape, r.threads, r.mode, f"{r.fastnn_ms:.4g}", r.baseline,
             f"{r.baseline_ms:.4g}", f"{r.ratio:.2f}x", medians,
             "" if r.median_ratio is None else f"{r.median_ratio:.2f}x",
             num(r.gflops, ".1f"), "" if r.peak_pct is None else f"{r.peak_pct:.0f}%",
             r.target_text(), r.met_text())
    return "| " + " | ".join(str(c) for c in cells) + " |"


def header_lines(env, peak, settings):
    """The environment block: what ran where, with which kernel path and libraries."""
    libraries = [f"Python {env['python']}", f"NumPy {env['numpy']}", f"Numba {env['numba']}",
                 f"BLAS {env['blas']}"]
    libraries += [f"{label} {env[key]}" for key, label in
                  (("torch", "PyTorch"), ("jax", "JAX"), ("jaxlib", "jaxlib")) if key in env]
    lines = [f"# fastnn benchmark, {env['date']}", "",
             f"- CPU: {env['cpu']} ({env['cores']} cores, {env['machine']})",
             f"- kernel path: **{env['kernel_path']}**"
             + (f" (NUMBA_CPU_NAME={env['NUMBA_CPU_NAME']})" if env.get("NUMBA_CPU_NAME") else ""),
             f"- {', '.join(libraries)}",
             f"- OPENBLAS_CORETYPE: {env['OPENBLAS_CORETYPE'] or '(not set)'}",
             "- peers pinned to an instruction set: " + (", ".join(
                 f"{k}={v}" for k, v in env.get("peer_isa", {}).items()) or "no"),
             f"- {peak.label() + ', float32' if peak else 'FMA peak: not measured in this run'}",
             f"- timing: {settings}", ""]
    return lines


SECTION_NOTES = {
    "training step": (
        "Block means of whole steps; ratio = baseline / fastnn. \"interleaved\": fastnn's "
        "and the baseline's blocks alternate in one process; \"own process\": each ran "
        "alone in a fresh process. The baseline `numpy (hand-written)` is a careful NumPy "
        "user's step (preallocated buffers, `np.matmul(out=)`, in-place updates); "
        "`fastnn numpy backend` is informational (no target)."),
    "training step (BN+dropout)": (
        "Hidden layers Linear(bias=False) -> BatchNorm1d -> ReLU -> Dropout(p) (p in the "
        "case name), training mode, SGD with momentum 0.9; against PyTorch eager with the "
        "same modules. Block "
        "means of whole steps; ratio = baseline / fastnn; \"interleaved\" and \"own "
        "process\" as in the training step table. The dropout masks differ between the "
        "libraries (the tests check the two steps agree with p = 0)."),
    "coexistence": (
        "fastnn's own step time (block mean of the fastnn calls only) when every step is "
        "followed by a NumPy matmul, against fastnn alone; ratio = with / alone."),
}


def to_markdown(results, env, peak=None, settings="", extras=None):
    """The report: environment block, then one table per group (in the order run)."""
    lines = header_lines(env, peak, settings)
    groups = list(dict.fromkeys(r.group for r in results))
    for group in groups:
        lines += [f"## {group}", ""]
        if group in SECTION_NOTES:
            lines += [SECTION_NOTES[group], ""]
        lines += ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
        lines += [_row(r) for r in results if r.group == group]
        lines.append("")
    compile_s = (extras or {}).get("compile_seconds")
    if compile_s:
        lines += ["## first training step in a fresh process", "",
                  f"Import included: {compile_s['cold']:.2f} s with a cold Numba cache "
                  f"(target <= 15 s), {compile_s['warm']:.2f} s warm (target <= 1 s).", ""]
    met = [r.met for r in results if r.met is not None]
    lines.append(f"{sum(met)} of {len(met)} targets met.")
    return "\n".join(lines) + "\n"


def write_report(results, env, out_dir, stem="bench", peak=None, settings="", extras=None):
    """Write ``<stem>.md`` and ``<stem>.json`` into ``out_dir``; returns the two paths."""
    os.makedirs(out_dir, exist_ok=True)
    md_path = os.path.join(out_dir, f"{stem}.md")
    json_path = os.path.join(out_dir, f"{stem}.json")
    with open(md_path, "w") as f:
        f.write(to_markdown(results, env, peak, settings, extras))
    with open(json_path, "w") as f:
        json.dump({"environment": env, "peak": None if peak is None else asdict(peak),
                   "settings": settings, **(extras or {}),
                   "results": [asdict(r) for r in results]}, f, indent=1)
    return md_path, json_path
