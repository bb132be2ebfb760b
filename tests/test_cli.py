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
