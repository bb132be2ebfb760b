"""model.save / fastnn.load: round trips, resumed training, atomic writes, bad files."""
import json
import os
import zipfile

import numpy as np
import pytest

import fastnn as fnn
from fastnn import serialization


def data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12)).astype(np.float32)
    return x, (x[:, :3].sum(axis=1) > 0).astype(np.int64) + (x[:, 3] > 1)


def model(seed=0, dtype="float32"):
    return fnn.Sequential(fnn.Linear(12, 16, init="he_normal", bias_init=0.01),
                          fnn.LeakyReLU(0.1), fnn.Linear(16, 8), fnn.Sigmoid(beta=2.0),
                          fnn.Linear(8, 3), seed=seed, dtype=dtype)


def compiled(seed=0):
    m = model(seed)
    m.compile(optimizer=fnn.SGD(lr=0.05, momentum=0.9, nesterov=True, clip_norm=5.0),
              loss="cross_entropy", metrics=["accuracy"])
    return m


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_predicts_identically(tmp_path, dtype):
    m = model(dtype=dtype)
    path = tmp_path / "m.fnn"
    m.save(path)
    loaded = fnn.load(path)
    assert repr(loaded) == repr(m) and loaded.dtype == m.dtype
    x, _ = data()
    np.testing.assert_array_equal(loaded(x), m(x))
    with np.load(path, allow_pickle=False) as npz:      # plain .npz, no pickle
        assert "0.weight" in npz.files


def test_resumed_training_equals_uninterrupted(tmp_path):
    x, y = data()
    straight = compiled()
    straight.fit(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0)
    first = compiled()
    first.fit(x, y, epochs=1, batch_size=32, shuffle=False, verbose=0)
    first.save(tmp_path / "mid.fnn")
    resumed = fnn.load(tmp_path / "mid.fnn")
    assert resumed.optimizer.momentum == 0.9 and resumed.optimizer.clip_norm == 5.0
    resumed.fit(x, y, epochs=1, batch_size=32, shuffle=False, verbose=0)
    for (name, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)


def test_interrupted_save_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "m.fnn"
    m = model()
    m.save(path)
    before = path.read_bytes()

    def explode(array):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(serialization, "_npy_bytes", explode)
    with pytest.raises(OSError, match="No space"):
        model(seed=1).save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.fnn"]          # no temporary file left behind
    monkeypatch.undo()
    np.testing.assert_array_equal(fnn.load(path)[0].weight.data, m[0].weight.data)


def test_truncated_and_corrupted_files_are_refused(tmp_path):
    path = tmp_path / "m.fnn"
    model().save(path)
    raw = path.read_bytes()
    for cut in (10, len(raw) // 2, len(raw) - 30):
        bad = tmp_path / f"cut{cut}.fnn"
        bad.write_bytes(raw[:cut])
        with pytest.raises(fnn.ModelFileError):
            fnn.load(bad)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("0.weight.npy")
    flipped = bytearray(raw)
    flipped[info.header_offset + 30 + len(info.filename) + 200] ^= 0xFF   # inside the data
    bad = tmp_path / "flipped.fnn"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(fnn.ModelFileError, match="corrupted"):
        fnn.load(bad)
    (tmp_path / "junk.fnn").write_bytes(b"not a model at all")
    with pytest.raises(fnn.ModelFileError, match="not a fastnn model"):
        fnn.load(tmp_path / "junk.fnn")


def _rewrite_header(src, dst, change):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            payload = zin.read(item)
            if item.filename == "fastnn.json":
                header = json.loads(payload)
                change(header)
                payload = json.dumps(header).encode()
            zout.writestr(item.filename, payload)


def test_newer_version_and_mismatched_shapes_are_refused(tmp_path):
    path = tmp_path / "m.fnn"
    model().save(path)
    newer = serialization.FORMAT_VERSION + 1
    _rewrite_header(path, tmp_path / "next.fnn", lambda h: h.update(version=newer))
    with pytest.raises(fnn.ModelFileError, match="newer"):
        fnn.load(tmp_path / "next.fnn")
    _rewrite_header(path, tmp_path / "wide.fnn", lambda h: h["model"]["config"]["layers"][0][
        "config"].update(out_features=17))
    with pytest.raises(fnn.ModelFileError):
        fnn.load(tmp_path / "wide.fnn")
    _rewrite_header(path, tmp_path / "evil.fnn", lambda h: h["model"]["config"]["layers"].append(
        {"type": "os.system", "config": {}}))
    with pytest.raises(fnn.ModelFileError, match="unknown module type 'os.system'"):
        fnn.load(tmp_path / "evil.fnn")


class Scale(fnn.Module):
    """A layer defined outside fastnn, with a parameter, a buffer and a config: it saves
    and loads with no change to the file format code."""

    def __init__(self, width, factor=2.0):
        super().__init__()
        self.width, self.factor = width, factor
        self.n_features = width
        self.gain = fnn.Parameter(np.linspace(0.5, 1.5, width).astype(np.float32))
        self.register_buffer("calls", np.zeros(1, np.int64))

    def get_config(self):
        return {"width": self.width, "factor": self.factor}

    def _forward(self, x, backend):
        self.calls[0] += 1
        return x * self.gain.data * x.dtype.type(self.factor)


def test_a_layer_defined_elsewhere_saves_its_config_parameters_and_buffers(tmp_path):
    m = fnn.Sequential(fnn.Linear(4, 3), Scale(3, factor=3.0), seed=1)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    expected = m(x)
    assert m.state_dict()["1.calls"][0] == 1
    m.save(tmp_path / "custom.fnn")
    with zipfile.ZipFile(tmp_path / "custom.fnn") as zf:
        header = json.loads(zf.read("fastnn.json"))
    assert header["model"]["config"]["layers"][1] == {
        "type": f"{__name__}.Scale", "config": {"width": 3, "factor": 3.0}}
    assert "1.calls" in header["arrays"] and "1.gain" in header["arrays"]
    loaded = fnn.load(tmp_path / "custom.fnn")
    assert isinstance(loaded[1], Scale) and loaded[1].factor == 3.0
    assert loaded.state_dict()["1.calls"][0] == 1
    np.testing.assert_array_equal(loaded(x), expected)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        fnn.load(tmp_path / "nope.fnn")


def test_saving_into_a_missing_directory_names_the_target(tmp_path):
    target = tmp_path / "runs" / "model.fnn"
    with pytest.raises(FileNotFoundError, match="does not exist") as info:
        model().save(target)
    assert info.value.filename == str(target) and ".tmp" not in str(info.value)
    assert not (tmp_path / "runs").exists()


FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def test_files_of_format_version_1_still_load():
    """A file written by fastnn's first file format (2026-11, ``"version": 1``: a flat
    list of Linear/Activation layers) loads with its weights, compile settings and
    optimiser state, and predicts what it predicted when it was written."""
    path = os.path.join(FIXTURES, "model_format_v1.fnn")
    expected = np.load(os.path.join(FIXTURES, "model_format_v1_expected.npz"))
    with zipfile.ZipFile(path) as zf:
        assert json.loads(zf.read("fastnn.json"))["version"] == 1
    m = fnn.load(path)
    assert [type(layer).__name__ for layer in m.layers] == [
        "Linear", "LeakyReLU", "Linear", "Sigmoid", "Linear"]
    assert m.layers[1].params == {"alpha": 0.05} and m.layers[3].params == {"beta": 1.5}
    np.testing.assert_allclose(m(expected["x"]), expected["logits"], rtol=1e-6, atol=1e-7)
    assert m.loss.name == "cross_entropy" and m.metrics == ("accuracy",)
    assert type(m.optimizer).__name__ == "SGD"
    np.testing.assert_array_equal(m.optimizer.state[0]["velocity"], expected["velocity_0"])
