"""Saving and loading models: a versioned, pickle-free file format, written atomically.

Format (version 1): a ZIP archive, readable by ``numpy.load`` as an ``.npz``, holding

* ``fastnn.json`` — a JSON header: ``{"format": "fastnn", "version": 1, "dtype": ...,
  "layers": [{"type": "Linear", "config": {...}}, ...], "parameters": [names...],
  "compile": {"loss": ..., "metrics": [...], "optimizer": {...}} or null}``;
* one ``.npy`` entry per parameter (``0.weight.npy``, ...) and, with the optimiser
  state, ``optimizer/<i>/<key>.npy``.

Loading never unpickles (``allow_pickle=False``) and never executes anything from the
file; it checks the format name and version, every array's presence, shape and dtype,
and the ZIP CRCs, so truncated or corrupted files raise :class:`ModelFileError`.

Writes go to a temporary file in the destination directory, are flushed and fsynced,
and then atomically renamed over the destination: a crash or a full disk mid-save
leaves the previous file intact.
"""
import io
import json
import os
import tempfile
import zipfile

import numpy as np

from . import layers as _layers
from .backends.memory import to_host
from .losses import get_loss
from .optim import OPTIMIZERS

FORMAT_NAME = "fastnn"
FORMAT_VERSION = 1
_HEADER = "fastnn.json"


class ModelFileError(ValueError):
    """A model file is truncated, corrupted, of an unknown format/version, or does not
    match the model it is loaded into."""


def _activation_classes():
    return {cls().name: cls for cls in _layers.Activation.__subclasses__()}


def _layer_entry(layer):
    if isinstance(layer, _layers.Linear):
        return {"type": "Linear", "config": layer.get_config()}
    if isinstance(layer, _layers.Activation):
        return {"type": "Activation", "config": layer.get_config()}
    raise TypeError(f"cannot save a layer of type {type(layer).__name__}")


def _layer_from_entry(entry):
    kind, config = entry.get("type"), dict(entry.get("config", {}))
    if kind == "Linear":
        return _layers.Linear(**config, seed=0)
    if kind == "Activation":
        name = config.pop("name")
        cls = _activation_classes().get(name)
        return cls(**config) if cls is not None else _layers.Activation(name, **config)
    raise ModelFileError(f"unknown layer type {kind!r} in model file")


def _npy_bytes(array):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def atomic_write(path, write):
    """Call ``write(file)`` on a temporary file next to ``path``, fsync it and rename
    it over ``path``.  On any error the temporary file is removed and ``path`` is
    untouched."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def save_model(model, path, include_optimizer=True):
    """Write ``model`` (a :class:`fastnn.Sequential`) to ``path``; see the module doc."""
    arrays = {f"{name}.npy": to_host(p.data) for name, p in model.named_parameters()}
    compile_info = None
    if model.loss is not None:
        compile_info = {"loss": model.loss.name, "metrics": list(model.metrics),
                        "optimizer": None}
        opt = model.optimizer
        if include_optimizer and opt is not None:
            name = next((n for n, cls in OPTIMIZERS.items() if type(opt) is cls), None)
            if name is not None:
                compile_info["optimizer"] = {"name": name,
                                             "hyperparameters": opt.hyperparameters(),
                                             "state_keys": [sorted(s) for s in opt.state]}
                for i, state in enumerate(opt.state):
                    for key, value in state.items():
                        arrays[f"optimizer/{i}/{key}.npy"] = value
    header = {"format": FORMAT_NAME, "version": FORMAT_VERSION,
              "dtype": str(model.dtype), "layers": [_layer_entry(l) for l in model.layers],
              "parameters": [name for name, _ in model.named_parameters()],
              "compile": compile_info}

    def write(f):
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr(_HEADER, json.dumps(header, indent=1))
            for name, array in arrays.items():
                zf.writestr(name, _npy_bytes(array))

    atomic_write(path, write)


def _read_array(zf, name, path):
    try:
        with zf.open(name) as f:
            data = f.read()          # a CRC mismatch raises BadZipFile here
        return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    except KeyError:
        raise ModelFileError(f"{path}: array {name!r} is missing") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ModelFileError(f"{path}: array {name!r} is corrupted ({exc})") from None


def load_model(path):
    """Read a model written by :func:`save_model`; returns a :class:`fastnn.Sequential`
    (compiled, with its optimiser state, if it was saved compiled)."""
    from .model import Sequential

    path = os.fspath(path)
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ModelFileError(f"{path}: not a fastnn model file, or truncated ({exc})") from None
    with zf:
        try:
            header = json.loads(zf.read(_HEADER))
        except KeyError:
            raise ModelFileError(f"{path}: no {_HEADER} header; not a fastnn model") from None
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
            raise ModelFileError(f"{path}: header is corrupted ({exc})") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
            raise ModelFileError(f"{path}: not a fastnn model file")
        version = header.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ModelFileError(f"{path}: format version {version!r} is newer than this "
                                 f"fastnn understands ({FORMAT_VERSION}); upgrade fastnn")
        try:
            layers = [_layer_from_entry(e) for e in header["layers"]]
            model = Sequential(*layers, dtype=header["dtype"])
        except ModelFileError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}: invalid architecture ({exc})") from None
        state = {name: _read_array(zf, f"{name}.npy", path) for name, _ in model.named_parameters()}
        for name, p in model.named_parameters():
            if state[name].shape != p.shape or state[name].dtype != p.dtype:
                raise ModelFileError(f"{path}: {name} has shape {state[name].shape} and dtype "
                                     f"{state[name].dtype}, expected {p.shape} {p.dtype}")
        model.load_state_dict(state)
        info = header.get("compile")
        if info:
            opt_info = info.get("optimizer")
            optimizer = "sgd"
            if opt_info:
                cls = OPTIMIZERS.get(opt_info.get("name"))
                if cls is None:
                    raise ModelFileError(f"{path}: unknown optimizer {opt_info.get('name')!r}")
                hyper = dict(opt_info.get("hyperparameters", {}))
                clip = {k: hyper.pop(k, None) for k in ("clip_norm", "clip_value")}
                optimizer = cls(**hyper, **clip)
            model.compile(optimizer=optimizer, loss=get_loss(info["loss"]),
                          metrics=info.get("metrics") or None)
            if opt_info:
                keys = opt_info.get("state_keys", [])
                if len(keys) != len(model.optimizer.state):
                    raise ModelFileError(f"{path}: optimizer state does not match the model")
                opt_state = [{k: _read_array(zf, f"optimizer/{i}/{k}.npy", path) for k in ks}
                             for i, ks in enumerate(keys)]
                try:
                    model.optimizer.load_state_dict({"state": opt_state})
                except ValueError as exc:
                    raise ModelFileError(f"{path}: {exc}") from None
    return model
