"""The command line reports what cannot run as one error line and exit status 2."""
import os
import subprocess
import sys

import pytest


def _fastnn(*args):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    return subprocess.run([sys.executable, "-m", "fastnn", *args], capture_output=True,
                          text=True, env=env)


def test_train_with_a_bad_option_is_a_clear_error():
    result = _fastnn("train", "--activation", "swish", "--limit", "10", "--epochs", "1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "fastnn train: error:" in result.stderr and "swish" in result.stderr


def test_train_on_cuda_without_a_gpu_is_a_clear_error():
    result = _fastnn("train", "--backend", "cuda", "--limit", "10", "--epochs", "1")
    if result.returncode == 0:
        pytest.skip("this machine has a usable CUDA GPU")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'cuda' backend" in result.stderr and "fastnn[cuda13]" in result.stderr


def test_train_with_a_misplaced_optimizer_option_is_a_clear_error():
    result = _fastnn("train", "--optimizer", "adam", "--momentum", "0.9", "--limit", "10")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--momentum applies to sgd and rmsprop, not adam" in result.stderr
    assert "MNIST" not in result.stdout               # refused before loading anything
    result = _fastnn("train", "--optimizer", "rmsprop", "--lr", "-1", "--limit", "10")
    assert result.returncode == 2 and "lr must be > 0" in result.stderr


@pytest.mark.parametrize("optimizer, shown", [
    ("adam", "Adam(lr=0.001,"),
    ("adamw", "AdamW(lr=0.001, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.01, "
              "amsgrad=False, 2 parameter groups)"),
    ("rmsprop", "RMSprop(lr=0.01, alpha=0.99, eps=1e-08, weight_decay=0, momentum=0.5"),
])
def test_train_with_each_optimizer(tmp_path, optimizer, shown):
    from mnist_fakes import make_raw, write_idx_dir
    write_idx_dir(tmp_path / "mnist", make_raw())
    extra = ["--lr", "0.01", "--momentum", "0.5"] if optimizer == "rmsprop" else []
    result = _fastnn("train", "--data", str(tmp_path / "mnist"), "--optimizer", optimizer,
                     "--epochs", "2", "--hidden", "8", "--batch-size", "4", "--verbose", "0",
                     *extra)
    assert result.returncode == 0, result.stderr
    assert shown in result.stdout and "test accuracy" in result.stdout


def test_train_with_batchnorm_and_dropout_builds_that_model():
    result = _fastnn("train", "--batchnorm", "--dropout", "0.2", "--hidden", "32",
                     "--limit", "600", "--epochs", "1", "--optimizer", "adam", "--verbose", "0")
    if "MNIST" not in result.stdout and result.returncode == 2:
        pytest.skip(f"no MNIST here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    assert "BatchNorm, dropout 0.2" in result.stdout and "test accuracy" in result.stdout
    bad = _fastnn("train", "--dropout", "1.5", "--limit", "10", "--epochs", "1")
    assert bad.returncode == 2 and "p must be <= 1" in bad.stderr


def test_train_transformer_reads_images_as_sequences_of_rows(tmp_path):
    from mnist_fakes import make_raw, write_idx_dir
    write_idx_dir(tmp_path / "mnist", make_raw())
    result = _fastnn("train", "--data", str(tmp_path / "mnist"), "--model", "transformer",
                     "--embed-dim", "8", "--heads", "2", "--layers", "1", "--ff-dim", "16",
                     "--epochs", "2", "--batch-size", "8", "--verbose", "0")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert ("transformer: rows of 28 pixels -> 8 wide, 1 encoder layer(s), 2 heads, "
            "feed-forward 16" in out)
    assert "Adam(lr=0.001," in out and "2 epochs" in out          # the transformer defaults
    assert out.count("epoch ") == 2 and "test accuracy" in out


@pytest.mark.parametrize("args, message", [
    (["--model", "transformer", "--embed-dim", "10", "--heads", "4"],
     "--embed-dim 10 is not divisible by --heads 4"),
    (["--model", "transformer", "--layers", "0"], "--layers must be >= 1"),
    (["--model", "transformer", "--hidden", "32"], "--hidden applies to --model mlp"),
    (["--model", "transformer", "--batchnorm"], "--batchnorm applies to --model mlp"),
    (["--heads", "2"], "--heads applies to --model transformer, not mlp"),
])
def test_train_model_options_are_checked_before_loading(args, message):
    result = _fastnn("train", *args, "--limit", "10", "--epochs", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr
    assert "MNIST" not in result.stdout
