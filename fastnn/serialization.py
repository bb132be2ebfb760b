"""Saving and loading models: a versioned, pickle-free file format, written atomically.

Format (version 2): a ZIP archive, readable by ``numpy.load`` as an ``.npz``, holding

* ``fastnn.json`` — a JSON header: ``{"format": "fastnn", "version": 2,
  "model": {"type": "Sequential", "config": {...}}, "arrays": [names...],
  "compile": {"loss": ..., "metrics": [...], "optimizer": {...}, "lr_schedule": {...}}
  or null}``.  The model
  entry is the module's own description (:func:`fastnn.module.module_spec`: its class
  name and ``get_config()``, a container's config holding its children's entries), so
  this module lists no layer types: a new layer saves and loads by defining
  ``get_config`` (and ``from_config`` when its constructor needs more);
* one ``.npy`` entry per parameter and buffer, by its dotted name (``0.weight.npy``,
  ``2.running_mean.npy``) and, with the optimiser state, ``optimizer/<i>/<key>.npy``.

The optimiser entry holds its name, constructor hyperparameters, parameter groups (their
hyperparameters and the indices of their parameters in ``model.parameters()``), the
names of each parameter's state arrays and its scalar state (``{"step": int}``); the
schedule entry its type, config, interval and ``state_dict()``.  Files without groups or
scalar state (SGD, before Adam existed) load as one group.

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
import errno
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
from .schedules import schedule_from_spec, schedule_spec

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
    if not os.path.isdir(directory):    # else mkstemp's error names the temporary file
        raise FileNotFoundError(errno.ENOENT, f"cannot write {path!r}: the directory "
                                f"{directory!r} does not exist (create it first, e.g. "
                                "os.makedirs(directory, exist_ok=True))", path)
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
        compile_info = {"loss": model.loss.name, "loss_config": model.loss.get_config(),
                        "metrics": list(model.metrics), "optimizer": None}
        if include_optimizer and model.optimizer is not None:
            entry, opt_arrays = _optimizer_entry(model, model.optimizer)
            compile_info["optimizer"] = entry
            arrays.update(opt_arrays)
            if entry is not None and getattr(model, "lr_schedule", None) is not None:
                compile_info["lr_schedule"] = {**schedule_spec(model.lr_schedule),
                                               "interval": model.schedule_interval,
                                               "state": model.lr_schedule.state_dict()}
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
            try:
                _compile_from_header(model, info, zf, path)
            except ModelFileError:
                raise
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                raise ModelFileError(f"{path}: invalid compile settings ({exc})") from None
    return model


def _optimizer_entry(model, opt):
    """(header entry, arrays) of a compiled model's optimiser; (None, {}) for a class
    that is not in ``OPTIMIZERS`` (it could not be rebuilt)."""
    name = next((n for n, cls in OPTIMIZERS.items() if type(opt) is cls), None)
    if name is None:
        return None, {}
    state_dict = opt.state_dict()
    index = {id(p): i for i, p in enumerate(model.parameters())}
    if any(id(p) not in index for p in opt.params):
        raise ValueError("the model's optimizer holds parameters of another model; save "
                         "with include_optimizer=False or compile with this model's")
    groups = [{**g, "params": [index[id(opt.params[j])] for j in g["params"]]}
              for g in state_dict["param_groups"]]
    arrays, keys, scalars = {}, [], []
    for i, state in enumerate(state_dict["state"]):
        named = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
        arrays.update({f"optimizer/{i}/{k}.npy": v for k, v in named.items()})
        keys.append(sorted(named))
        scalars.append({k: v for k, v in state.items() if k not in named})
    entry = {"name": name, "hyperparameters": state_dict["hyperparameters"],
             "param_groups": groups, "state_keys": keys, "state_scalars": scalars}
    return entry, arrays


def _compile_from_header(model, info, zf, path):
    """Compile ``model`` as the header's ``compile`` entry says, with the optimiser's
    groups and state and the schedule's state."""
    opt_info = info.get("optimizer")
    optimizer = "sgd"
    if opt_info:
        cls = OPTIMIZERS.get(opt_info.get("name"))
        if cls is None:
            raise ModelFileError(f"{path}: unknown optimizer {opt_info.get('name')!r}")
        params = model.parameters()
        groups = opt_info.get("param_groups")
        members = None if not groups else [{"params": [params[i] for i in g["params"]]}
                                           for g in groups]
        optimizer = cls(members, **opt_info.get("hyperparameters", {}))
    schedule_info = info.get("lr_schedule") if opt_info else None
    schedule = schedule_from_spec(schedule_info) if schedule_info else None
    model.compile(optimizer=optimizer, loss=get_loss(info["loss"], info.get("loss_config")),
                  metrics=info.get("metrics") or None, lr_schedule=schedule,
                  schedule_interval=(schedule_info or {}).get("interval", "epoch"))
    if not opt_info:
        return
    keys = opt_info.get("state_keys", [])
    scalars = opt_info.get("state_scalars") or [{} for _ in keys]
    if not len(keys) == len(scalars) == len(model.optimizer.state):
        raise ModelFileError(f"{path}: optimizer state does not match the model")
    state = [{**{k: _read_array(zf, f"optimizer/{i}/{k}.npy", path) for k in names},
              **scalar} for i, (names, scalar) in enumerate(zip(keys, scalars))]
    saved = {"state": state, "hyperparameters": opt_info.get("hyperparameters", {})}
    if groups:
        saved["param_groups"] = groups
    try:
        model.optimizer.load_state_dict(saved)
        if schedule is not None:
            schedule.load_state_dict(schedule_info["state"])
    except ValueError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
