"""Saving and loading models: a versioned, pickle-free file format, written atomically.

Format (version 2): a ZIP archive, readable by ``numpy.load`` as an ``.npz``, holding

* ``fastnn.json`` — a JSON header: ``{"format": "fastnn", "version": 2,
  "model": {"type": "Sequential", "config": {...}}, "arrays": [names...],
  "compile": {"loss": ..., "metrics": [...], "optimizer": {...}} or null}``.  The model
  entry is the module's own description (:func:`fastnn.module.module_spec`: its class
  name and ``get_config()``, a container's config holding its children's entries), so
  this module lists no layer types: a new layer saves and loads by defining
  ``get_config`` (and ``from_config`` when its constructor needs more);
* one ``.npy`` entry per parameter and buffer, by its dotted name (``0.weight.npy``,
  ``2.running_mean.npy``) and, with the optimiser state, ``optimizer/<i>/<key>.npy``.

Version 1 files (2026-11: ``"layers": [{"type": "Linear" | "Activation", ...}]``, a flat
Sequential) are still read (:func:`_model_spec_v1`; a test keeps one).

Loading never unpickles (``allow_pickle=False``) and never executes anything from the
file beyond constructing registered fastnn module classes from JSON; it checks the format
name and version, every array's presence, shape and dtype, and the ZIP CRCs, so truncated
or corrupted files raise :class:`ModelFileError`.

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

from .backends.memory import to_host
from .losses import get_loss
from .module import module_from_spec, module_spec
from .optim import OPTIMIZERS

FORMAT_NAME = "fastnn"
FORMAT_VERSION = 2
_HEADER = "fastnn.json"


class ModelFileError(ValueError):
    """A model file is truncated, corrupted, of an unknown format/version, or does not
    match the model it is loaded into."""


def _model_spec_v1(header):
    """The version-2 model entry for a version-1 header (a flat list of Linear and
    Activation layers; activations saved as ``{"name": ..., params}``)."""
    from .layers import Activation
    named = {cls().name: cls.__name__ for cls in Activation.__subclasses__()}
    layers = []
    for entry in header["layers"]:
        kind, config = entry.get("type"), dict(entry.get("config", {}))
        if kind == "Activation" and config.get("name") in named:
            kind = named[config.pop("name")]
        elif kind not in ("Linear", "Activation"):
            raise ModelFileError(f"unknown layer type {kind!r} in model file")
        layers.append({"type": kind, "config": config})
    return {"type": "Sequential", "config": {"layers": layers, "dtype": header["dtype"]}}


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
    state = model.state_dict()
    arrays = {f"{name}.npy": array for name, array in state.items()}
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
              "model": module_spec(model), "arrays": list(state),
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
            spec = _model_spec_v1(header) if version == 1 else header["model"]
            model = module_from_spec(spec)
        except ModelFileError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}: invalid architecture ({exc})") from None
        expected = model.state_dict()
        state = {name: _read_array(zf, f"{name}.npy", path) for name in expected}
        for name, value in state.items():
            if value.shape != expected[name].shape or value.dtype != expected[name].dtype:
                raise ModelFileError(f"{path}: {name} has shape {value.shape} and dtype "
                                     f"{value.dtype}, expected {expected[name].shape} "
                                     f"{expected[name].dtype}")
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
