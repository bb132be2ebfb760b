"""plot_history and ``fastnn train --plot``: a PNG of the training curves, matplotlib as an
optional extra that ``import fastnn`` never loads."""
import subprocess
import sys

import numpy as np
import pytest

import fastnn as fnn

pytest.importorskip("matplotlib")
from matplotlib.image import imread  # noqa: E402


def _blobs(n, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(3, 5))
    y = rng.integers(0, 3, n)
    return (centres[y] + rng.normal(size=(n, 5))).astype(np.float32), y


def _assert_drawn(image):
    """Not blank: many pixels that are not the white background, in several colours."""
    rgb = image[..., :3]
    assert (rgb.min(axis=2) < 0.9).mean() > 0.01
    assert len(np.unique(rgb.reshape(-1, 3).round(1), axis=0)) > 3


def test_plot_history_of_a_fit_writes_a_png_of_its_size(tmp_path):
    model = fnn.Sequential(fnn.Linear(5, 8), fnn.ReLU(), fnn.Linear(8, 3), seed=0)
    model.compile(optimizer=fnn.SGD(lr=0.1), loss="cross_entropy", metrics=["accuracy"])
    history = model.fit(*_blobs(60, 0), epochs=3, batch_size=16,
                        validation_data=_blobs(30, 1), seed=0, verbose=0)
    path = tmp_path / "curves.png"
    assert fnn.plot_history(history, path) == path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    # two panels (loss, accuracy; lr and samples/s are left out) of 4.5 x 3.5 in at 100 dpi
    assert image.shape[:2] == (350, 900)
    _assert_drawn(image)


def test_plot_history_takes_the_dict_and_lays_out_rows(tmp_path):
    logs = {"loss": [1.0, 0.6, 0.4, 0.3], "val_loss": [1.1, 0.8, 0.7, 0.7],
            "mae": [0.9, 0.7, 0.5, 0.4], "rmse": [1.0, 0.8, 0.6, 0.5],
            "val_top_k_accuracy": [0.5, 0.6, 0.7, 0.8],      # validation only: a panel too
            "lr": [0.1, 0.1, 0.01, 0.01], "samples_per_second": [1e4] * 4}
    path = tmp_path / "four.png"
    fnn.plot_history(logs, str(path), columns=3, panel_size=(3, 2), dpi=50, title="run")
    image = imread(path)
    assert image.shape[:2] == (2 * 2 * 50, 3 * 3 * 50)        # 4 panels: 2 rows of 3
    _assert_drawn(image)
    fnn.plot_history({"loss": [0.5]}, tmp_path / "one.png", dpi=40)
    assert imread(tmp_path / "one.png").shape[:2] == (140, 180)


def test_plot_history_refuses_what_is_not_a_history(tmp_path):
    with pytest.raises(TypeError, match="History .* or its .history dict"):
        fnn.plot_history([1, 2, 3], tmp_path / "x.png")
    with pytest.raises(ValueError, match="no epochs to plot"):
        fnn.plot_history(fnn.History(), tmp_path / "x.png")
    with pytest.raises(ValueError, match="differ in length"):
        fnn.plot_history({"loss": [1, 2], "val_loss": [1]}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_without_matplotlib_the_error_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)          # import fails
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r'pip install "fastnn\[plot\]"'):
        fnn.plot_history({"loss": [1.0]}, tmp_path / "x.png")


def test_no_global_matplotlib_state():
    """import fastnn loads no matplotlib; plotting uses a Figure, never pyplot, so a
    user's backend choice and open figures are untouched."""
    code = ("import sys, fastnn; assert 'matplotlib' not in sys.modules; "
            "import matplotlib; matplotlib.use('svg'); "
            "fastnn.plot_history({'loss': [1.0, 0.5]}, sys.argv[1]); "
            "assert 'matplotlib.pyplot' not in sys.modules; "
            "assert matplotlib.get_backend() == 'svg'; print('ok')")
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        result = subprocess.run([sys.executable, "-c", code, f"{folder}/c.png"],
                                capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def _fastnn(*args):
    import os
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    return subprocess.run([sys.executable, "-m", "fastnn", *args], capture_output=True,
                          text=True, env=env)


def test_train_plot_writes_the_curves(tmp_path):
    from mnist_fakes import make_raw, write_idx_dir
    write_idx_dir(tmp_path / "mnist", make_raw())
    png = tmp_path / "curves.png"
    result = _fastnn("train", "--data", str(tmp_path / "mnist"), "--epochs", "2",
                     "--hidden", "8", "--batch-size", "4", "--verbose", "0", "--plot", str(png))
    assert result.returncode == 0, result.stderr
    assert f"training curves written to {png}" in result.stdout
    image = imread(png)
    assert image.shape[:2] == (350, 900)                        # loss and accuracy
    _assert_drawn(image)


def test_train_plot_into_a_missing_directory_fails_before_training(tmp_path):
    result = _fastnn("train", "--plot", str(tmp_path / "no" / "such" / "c.png"),
                     "--limit", "10", "--epochs", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--plot" in result.stderr and "does not exist" in result.stderr
    assert "MNIST" not in result.stdout
