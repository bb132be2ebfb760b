"""Where fastnn's cold start goes: import time, the first training step with an empty
Numba cache and with a warm one, kernel by kernel, and ``fastnn train``'s first epoch
against a later one (issue 13).

    python benchmarks/coldstart.py                         # mlp and adam-bn, float32
    python benchmarks/coldstart.py --model transformer --dtype float64 --repeat 3
    python benchmarks/coldstart.py --no-train              # the first steps alone

Models, as ``fastnn train`` builds them (its own helpers in fastnn/cli.py):

* ``mlp``: the default, 784-512-256-10, ReLU, SGD with Nesterov momentum 0.9;
* ``adam-bn``: ``fastnn train --optimizer adam --batchnorm --dropout 0.2``;
* ``transformer``: ``fastnn train --model transformer`` (Adam).

Every measurement runs in a fresh Python process (``--worker``):

* cold: an empty ``NUMBA_CACHE_DIR``; import fastnn, build the model, one ``fit`` step of
  a batch of 128 (forward, loss, accuracy, backward, optimiser step), then a second step;
* warm: the same in a second process on the cache the first one filled;
* train: ``python -m fastnn train --epochs 2 --verbose 2`` with an empty cache, then again
  on the filled one: epoch 1 against epoch 2, as printed by the command itself.

Per kernel, Numba's own hooks say where the seconds go: the ``numba:compile`` event
(``numba.core.event``: one per dispatcher and signature compiled, nested when a kernel's
typing compiles a function it calls) and timers around ``Cache.load_overload`` /
``save_overload`` (a cache hit or miss, and the write of a compiled kernel) and around
the compilation of ``numba.cfunc`` callbacks (the GEMM task), which sends no event.
"self" seconds exclude the nested compilations of callees; a kernel's "total" includes
them.  The tables are sorted by compile seconds (median over ``--repeat`` runs, with the
spread).

Not an asv suite: asv imports every module under benchmarks/, and this one defines no
``time_``/``track_``/``mem_``/``peakmem_`` names and does its work only under
``__main__`` (``python -m asv check --python=same`` lists nothing from it).
"""
import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict

MODELS = ("mlp", "adam-bn", "transformer")
#: ``fastnn train`` options that build each model.
TRAIN_OPTIONS = {"mlp": [], "adam-bn": ["--optimizer", "adam", "--batchnorm", "--dropout", "0.2"],
                 "transformer": ["--model", "transformer"]}
#: The same as parsed options (what _build hands to fastnn.cli's helpers).
MODEL_ARGS = {"mlp": {}, "adam-bn": {"optimizer": "adam", "batchnorm": True, "dropout": 0.2},
              "transformer": {"model": "transformer"}}
BATCH = 128


# --------------------------------------------------------------------------- the worker
class _Recorder:
    """Nested timed spans of Numba's compiler on the main thread: compilations (the
    ``numba:compile`` event, cfunc compilations), cache loads and cache saves."""

    def __init__(self):
        self.spans = []
        self._stack = []
        self._thread = threading.get_ident()

    def start(self, kind, name, signature):
        if threading.get_ident() == self._thread:
            self._stack.append([kind, name, signature, time.perf_counter(), 0.0])

    def end(self, **extra):
        if threading.get_ident() != self._thread or not self._stack:
            return
        kind, name, signature, start, children = self._stack.pop()
        seconds = time.perf_counter() - start
        if self._stack:
            self._stack[-1][4] += seconds
        self.spans.append(dict(kind=kind, name=name, sig=signature, seconds=seconds,
                               self_seconds=seconds - children, depth=len(self._stack),
                               **extra))

    def install(self):
        from numba.core import caching, ccallback
        from numba.core import event as numba_event
        recorder = self

        class Compiles(numba_event.Listener):
            def on_start(self, event):
                data = event.data
                recorder.start("compile", _function_name(data["dispatcher"].py_func),
                               _signature(data["args"]))

            def on_end(self, event):
                recorder.end()

        numba_event.register("numba:compile", Compiles())

        def timed(owner, method, kind, describe, **extra_of):
            original = getattr(owner, method)

            def wrapper(self, *args, **kwargs):
                name, signature = describe(self, *args)
                recorder.start(kind, name, signature)
                result = None
                try:
                    result = original(self, *args, **kwargs)
                    return result
                finally:
                    recorder.end(**{k: f(result) for k, f in extra_of.items()})

            setattr(owner, method, wrapper)

        def cache_entry(cache, sig, *_):
            return _function_name(cache._py_func), _signature(getattr(sig, "args", sig))

        timed(caching.Cache, "load_overload", "load", cache_entry,
              hit=lambda result: result is not None)
        timed(caching.Cache, "save_overload", "save", cache_entry)
        timed(ccallback.CFunc, "_compile_uncached", "compile",
              lambda cfunc: (_function_name(cfunc._pyfunc), _signature(cfunc._sig.args)))


def _function_name(py_func):
    module = py_func.__module__.replace("fastnn.kernels.", "")
    return f"{module}.{py_func.__qualname__}"


_ARRAY = re.compile(r"array\((\w+), (\d)d, (\w)(?:, readonly)?\)")
_SHORT = {"float32": "f32", "float64": "f64", "int64": "i64", "int32": "i32", "uint64": "u64",
          "uint8": "u8", "bool": "b1", "boolean": "b1"}


def _signature(args):
    """A short form of Numba argument types: ``array(float32, 2d, C)`` -> ``f32[2d]``."""
    def array(match):
        dtype, ndim, layout = match.groups()
        return f"{_SHORT.get(dtype, dtype)}[{ndim}d{'' if layout == 'C' else ',' + layout}]"

    text = ", ".join(_ARRAY.sub(array, str(a)) for a in args)
    text = re.sub(r"\b(float32|float64|int64|uint64|int32|bool)\b",
                  lambda m: _SHORT[m.group(1)], text)
    return text if len(text) <= 90 else text[:87] + "..."


def _build(model_name, dtype):
    """(model, x, y): the model ``fastnn train`` builds for ``model_name``, compiled as it
    compiles it, and a batch of random inputs and labels of its shape."""
    import numpy as np

    import fastnn as fnn
    from fastnn import cli

    args = argparse.Namespace(model="mlp", epochs=None, optimizer=None, lr=None,
                              momentum=None, weight_decay=None, dropout=0.0)
    for name in (n for names in cli.MODEL_OPTIONS.values() for n in names):
        setattr(args, name, None)              # None: the command's default
    for name, value in MODEL_ARGS[model_name].items():
        setattr(args, name, value)
    cli._model_settings(args)
    optimizer_cls, optimizer_kwargs = cli._optimizer_settings(args)
    rng = np.random.default_rng(0)
    if args.model == "transformer":
        layers = cli._transformer_layers(args, 28)
        x = rng.random((BATCH, 28, 28), dtype=np.float64).astype(dtype)
    else:
        layers = cli._mlp_layers(args, [784, *args.hidden, 10])
        x = rng.random((BATCH, 784), dtype=np.float64).astype(dtype)
    y = rng.integers(0, 10, BATCH)
    model = fnn.Sequential(*layers, dtype=dtype, seed=0)
    model.compile(optimizer=cli._optimizer(optimizer_cls, optimizer_kwargs, model),
                  loss="cross_entropy", metrics=["accuracy"])
    return model, x, y


def _step_worker(model_name, dtype):
    """In a fresh process: import, build, two training steps; one JSON line."""
    start = time.perf_counter()
    import numpy  # noqa: F401
    numpy_done = time.perf_counter()
    import numba
    numba_done = time.perf_counter()
    import fastnn
    imported = time.perf_counter()
    recorder = _Recorder()
    recorder.install()
    model, x, y = _build(model_name, dtype)
    built = time.perf_counter()
    model.fit(x, y, epochs=1, batch_size=BATCH, shuffle=False, verbose=0)
    first = time.perf_counter()
    model.fit(x, y, epochs=1, batch_size=BATCH, shuffle=False, verbose=0)
    second = time.perf_counter()
    print(json.dumps({
        "import_numpy": numpy_done - start, "import_numba": numba_done - numpy_done,
        "import_fastnn": imported - numba_done, "import_total": imported - start,
        "build": built - imported, "first_step": first - built, "second_step": second - first,
        "threads": numba.get_num_threads(), "numba": numba.__version__,
        "fastnn": fastnn.__version__, "spans": recorder.spans}))


def _kernel_sources():
    """(name, mtime, size) of the kernel sources: an edit between the cold and the warm
    process makes the warm one compile again (the cache stamp, kernels/_jit.py)."""
    from fastnn.kernels import _jit
    return _jit._sources_stamp()


def _cold_and_warm(model_name, dtype, attempts=3):
    """A cold process and a warm one on the cache it filled; again (up to ``attempts``)
    when a kernel source changed meanwhile (someone editing the checkout)."""
    for attempt in range(attempts):
        before = _kernel_sources()
        with tempfile.TemporaryDirectory(prefix="fastnn-coldstart-") as cache:
            cold = _step(model_name, dtype, cache)
            warm = _step(model_name, dtype, cache)
        if _kernel_sources() == before:
            break
        print("  a kernel source changed during the run: measuring again", file=sys.stderr)
    return cold, warm


def _run(command, cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-4000:]}")
    return done.stdout, wall


def _step(model_name, dtype, cache_dir):
    out, wall = _run([sys.executable, os.path.abspath(__file__), "--worker", model_name,
                      dtype], cache_dir)
    result = json.loads(out.strip().splitlines()[-1])
    result["process"] = wall
    return result


_EPOCH = re.compile(r"^Epoch (\d+)/\d+ \S+ ([\d.]+)s")


def _train(model_name, dtype, cache_dir, epochs):
    """``fastnn train`` in a fresh process: the seconds of each epoch as it prints them
    (training and test evaluation), and the whole command's wall time."""
    command = [sys.executable, "-m", "fastnn", "train", "--epochs", str(epochs), "--verbose",
               "2", "--dtype", dtype, *TRAIN_OPTIONS[model_name]]
    out, wall = _run(command, cache_dir)
    epochs_s = [float(m.group(2)) for line in out.splitlines() if (m := _EPOCH.match(line))]
    return {"epochs": epochs_s, "process": wall}


# --------------------------------------------------------------------------- the report
def _cpu():
    import llvmlite.binding as llvm
    name = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name} (LLVM CPU {llvm.get_host_cpu_name()}), {os.cpu_count()} logical CPUs"


def _spread(values, digits=2):
    """``median (min-max)``, or the value alone for one run."""
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1 or max(values) - min(values) < 0.5 * 10 ** -digits:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def _per_kernel(cold_runs, warm_runs):
    """{(kernel, signature): {"compile": [...], "total": [...], "depth": d, "save": [...],
    "miss": [...], "load": [...]}} with one value per run (0 where a run had none)."""
    rows = defaultdict(lambda: defaultdict(list))
    for runs, fields in ((cold_runs, {"compile": "self_seconds", "total": "seconds"}),
                         (warm_runs, {"load": "seconds"})):
        for i, run in enumerate(runs):
            for span in run["spans"]:
                key = (span["name"], span["sig"])
                row = rows[key]
                if span["kind"] == "compile" and "compile" in fields:
                    _add(row, "compile", i, span["self_seconds"])
                    _add(row, "total", i, span["seconds"])
                    row["depth"] = min(row.get("depth", 99), span["depth"])
                elif span["kind"] == "save" and runs is cold_runs:
                    _add(row, "save", i, span["seconds"])
                elif span["kind"] == "load" and runs is cold_runs:
                    _add(row, "miss", i, span["seconds"])
                elif span["kind"] == "load" and span.get("hit") and runs is warm_runs:
                    _add(row, "load", i, span["seconds"])
    return rows


def _add(row, field, run, seconds):
    values = row[field]
    while len(values) <= run:
        values.append(0.0)
    values[run] += seconds


def _kernel_table(cold_runs, warm_runs, limit):
    rows = _per_kernel(cold_runs, warm_runs)
    n_cold, n_warm = len(cold_runs), len(warm_runs)

    def values(row, field, n):
        v = list(row.get(field, []))
        return v + [0.0] * (n - len(v))

    order = sorted(rows.items(), key=lambda kv: -statistics.median(
        values(kv[1], "compile", n_cold) or [0.0]))
    lines = ["| kernel | signature | called | compile s (self) | compile s (with callees) "
             "| cache write s | warm: cache load s |", "|---|---|---|---|---|---|---|"]
    shown = 0
    for (name, sig), row in order:
        compiled = values(row, "compile", n_cold)
        loads = values(row, "load", n_warm)
        if not any(compiled) and not any(loads):
            continue
        shown += 1
        if shown > limit:
            continue
        depth = row.get("depth")
        called = "directly" if depth == 0 else "by a kernel" if depth else "-"
        lines.append(f"| `{name}` | `{sig}` | {called} | {_spread(compiled)} "
                     f"| {_spread(values(row, 'total', n_cold))} "
                     f"| {_spread(values(row, 'save', n_cold), 3)} "
                     f"| {_spread(loads, 3) if any(loads) else '-'} |")
    if shown > limit:
        lines.append(f"| ... {shown - limit} more (`--rows`) | | | | | | |")
    return "\n".join(lines)


def _by_module(cold_runs):
    """Compile seconds (self) summed per kernel module, median over runs."""
    per_run = []
    for run in cold_runs:
        sums = defaultdict(float)
        for span in run["spans"]:
            if span["kind"] == "compile":
                sums[span["name"].split(".")[0]] += span["self_seconds"]
        per_run.append(sums)
    modules = sorted({m for sums in per_run for m in sums},
                     key=lambda m: -statistics.median(s.get(m, 0.0) for s in per_run))
    lines = ["| module | compile s (self) | signatures compiled |", "|---|---|---|"]
    for module in modules:
        count = len({(s["name"], s["sig"]) for s in cold_runs[0]["spans"]
                     if s["kind"] == "compile" and s["name"].split(".")[0] == module})
        lines.append(f"| {module} | {_spread([s.get(module, 0.0) for s in per_run])} | "
                     f"{count} |")
    return "\n".join(lines)


def _summary(cold_runs, warm_runs):
    def field(runs, name):
        return [r[name] for r in runs]

    def spans(runs, kind, attr="seconds", top=False, hit=None):
        out = []
        for r in runs:
            out.append(sum(s[attr] for s in r["spans"] if s["kind"] == kind
                           and (not top or s["depth"] == 0)
                           and (hit is None or s.get("hit") == hit)))
        return out

    compiled = [len({(s["name"], s["sig"]) for s in r["spans"] if s["kind"] == "compile"})
                for r in cold_runs]
    direct = [len({(s["name"], s["sig"]) for s in r["spans"]
                   if s["kind"] == "compile" and s["depth"] == 0}) for r in cold_runs]
    loaded = [len({(s["name"], s["sig"]) for s in r["spans"] if s["kind"] == "load"
                   and s.get("hit")}) for r in warm_runs]
    rows = [
        ("import numpy + numba + fastnn (fresh process)", field(cold_runs, "import_total"),
         field(warm_runs, "import_total")),
        ("  of which fastnn itself", field(cold_runs, "import_fastnn"),
         field(warm_runs, "import_fastnn")),
        ("build + compile the model", field(cold_runs, "build"), field(warm_runs, "build")),
        ("first training step (B=128, fit)", field(cold_runs, "first_step"),
         field(warm_runs, "first_step")),
        ("  Numba compiling (self time, all kernels)", spans(cold_runs, "compile",
                                                            "self_seconds"), None),
        ("  cache writes", spans(cold_runs, "save"), None),
        ("  cache lookups (misses / hits)", spans(cold_runs, "load"),
         spans(warm_runs, "load", hit=True)),
        ("second training step", field(cold_runs, "second_step"),
         field(warm_runs, "second_step")),
        ("whole process (interpreter start to exit)", field(cold_runs, "process"),
         field(warm_runs, "process")),
    ]
    lines = ["| | cold cache (s) | warm cache (s) |", "|---|---|---|"]
    for label, cold, warm in rows:
        lines.append(f"| {label} | {_spread(cold)} | {_spread(warm) if warm else '-'} |")
    recompiled = [len({(s["name"], s["sig"]) for s in r["spans"] if s["kind"] == "compile"})
                  for r in warm_runs]
    lines.append(f"| kernels compiled: signatures (of them called directly) | "
                 f"{_spread(compiled, 0)} ({_spread(direct, 0)}) | {_spread(recompiled, 0)} |")
    lines.append(f"| kernels loaded from the cache | - | {_spread(loaded, 0)} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", choices=MODELS,
                        help="repeatable; default mlp and adam-bn")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeat", type=int, default=2,
                        help="cold/warm pairs per model, each with a new empty cache")
    parser.add_argument("--no-train", action="store_true",
                        help="skip the fastnn train epoch 1 vs epoch 2 measurement")
    parser.add_argument("--rows", type=int, default=40, help="kernel rows per table")
    parser.add_argument("--json", metavar="PATH", help="also write the raw results here")
    parser.add_argument("--from-json", metavar="PATH",
                        help="print the tables of results saved with --json; measure nothing")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "DTYPE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _step_worker(*args.worker)
        return 0
    if args.from_json:
        with open(args.from_json) as f:
            raw = json.load(f)
    else:
        raw = _measure(args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(raw, f, indent=1)
    for model_name, runs in raw["models"].items():
        _report(raw, model_name, runs, args.rows)
    return 0


def _measure(args):
    """Every model's cold, warm and train runs, as raw results."""
    raw = {"cpu": _cpu(), "dtype": args.dtype, "repeat": args.repeat, "models": {}}
    for model_name in args.model or ["mlp", "adam-bn"]:
        cold_runs, warm_runs, train_runs = [], [], []
        loads = [os.getloadavg()[0]]
        for repeat in range(args.repeat):
            print(f"{model_name} {args.dtype}: run {repeat + 1}/{args.repeat} (load "
                  f"{os.getloadavg()[0]:.2f})...", file=sys.stderr, flush=True)
            cold, warm = _cold_and_warm(model_name, args.dtype)
            cold_runs.append(cold)
            warm_runs.append(warm)
            loads.append(os.getloadavg()[0])
            if not args.no_train:
                for attempt in range(3):
                    before = _kernel_sources()
                    with tempfile.TemporaryDirectory(prefix="fastnn-coldstart-") as cache:
                        pair = (_train(model_name, args.dtype, cache, 2),
                                _train(model_name, args.dtype, cache, 2))
                    if _kernel_sources() == before:
                        break
                train_runs.append(pair)
                loads.append(os.getloadavg()[0])
        raw["models"][model_name] = {"cold": cold_runs, "warm": warm_runs,
                                     "train": train_runs, "loads": loads}
    return raw


def _report(raw, model_name, runs, rows):
    cold_runs, warm_runs, train_runs = runs["cold"], runs["warm"], runs["train"]
    loads, first, dtype = runs["loads"], cold_runs[0], raw["dtype"]
    print(f"\n## {model_name}, {dtype}, batch {BATCH}: the first training step\n")
    print(f"CPU: {raw['cpu']}; Numba {first['numba']}, {first['threads']} threads; "
          f"{len(cold_runs)} run(s): median (min-max); load average "
          f"{min(loads):.2f}-{max(loads):.2f} during the runs\n")
    print(_summary(cold_runs, warm_runs))
    print("\nCompile seconds by kernel module (cold):\n")
    print(_by_module(cold_runs))
    print("\nBy kernel and signature (compiled in the cold process; loaded from the cache "
          "in the warm one):\n")
    print(_kernel_table(cold_runs, warm_runs, rows))
    if train_runs:
        print(f"\n`python -m fastnn train --epochs 2 {' '.join(TRAIN_OPTIONS[model_name])}`"
              " (epoch seconds as printed: training + test evaluation):\n")
        print("| cache | epoch 1 (s) | epoch 2 (s) | epoch 1 / epoch 2 | whole command (s) |")
        print("|---|---|---|---|---|")
        for label, index in (("empty", 0), ("warm", 1)):
            e1 = [t[index]["epochs"][0] for t in train_runs]
            e2 = [t[index]["epochs"][1] for t in train_runs]
            print(f"| {label} | {_spread(e1, 1)} | {_spread(e2, 1)} | "
                  f"{_spread([a / b for a, b in zip(e1, e2)], 1)} | "
                  f"{_spread([t[index]['process'] for t in train_runs], 1)} |")


if __name__ == "__main__":
    sys.exit(main())
