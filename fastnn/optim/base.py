"""The optimiser base class and what every optimiser shares: hyperparameter checks,
parameter groups, binding, gradient clipping, per-parameter state and its
``state_dict``; and :func:`weight_decay_groups`.

A concrete optimiser (:mod:`.sgd`, :mod:`.adam`, :mod:`.rmsprop`) declares its
hyperparameters and their checks in ``_CHECKS`` and implements two methods:
``_init_state(param, group)`` (the state arrays of one parameter, zeros, plus ``"step"``
where the update counts steps) and ``_update(backend, param, state, group)`` (one fused
kernel call on the flat parameter, gradient and state).
"""
import math
import numbers

import numpy as np

from ..backends import get_backend
from ..backends.memory import backend_for, place, to_host
from ..module import Parameter
from ..validation import check_number


def _flat(array):
    return array.reshape(-1)


def _is_array(value):
    return not isinstance(value, (numbers.Number, bool))


# --------------------------------------------------------------------------- checks
def _lr(value, name="lr"):
    return check_number(value, name, low=0, low_open=True)


def _fraction(value, name):
    """A coefficient in [0, 1) (momentum, betas, alpha)."""
    return check_number(value, name, low=0, high=1, high_open=True)


def _non_negative(value, name):
    return check_number(value, name, low=0)


def _positive(value, name):
    return check_number(value, name, low=0, low_open=True)


def _flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _betas(value, name="betas"):
    if (isinstance(value, (str, bytes)) or not hasattr(value, "__len__")
            or len(value) != 2):
        raise TypeError(f"{name} must be a pair (beta1, beta2), got {value!r}")
    return (_fraction(value[0], f"{name}[0]"), _fraction(value[1], f"{name}[1]"))


class Optimizer:
    """Base class: parameter groups, clipping, per-parameter state, state_dict.

    A subclass declares its hyperparameters in ``_CHECKS`` (name -> check function,
    applied to the constructor's values and to every group's overrides) and implements
    ``_init_state(param, group)`` and ``_update(backend, param, state, group)``.
    """

    _CHECKS = {}

    def __init__(self, params=None, defaults=None, *, clip_norm=None, clip_value=None,
                 backend=None):
        self.clip_norm = None if clip_norm is None else _positive(clip_norm, "clip_norm")
        self.clip_value = None if clip_value is None else _positive(clip_value, "clip_value")
        self.backend = backend
        self.defaults = self._checked(defaults or {})
        self._check_group(self.defaults)
        self.param_groups = []
        self.params = []
        self.state = []
        self._groups_of_params = []     # the group of each entry of self.params
        self._user_params = False
        self._placement = None          # (memory, dtype) the state arrays are in
        self._empty = {}                # (memory, dtype) -> a 0-size array (absent state)
        if params is not None:
            self.bind(params)

    # ------------------------------------------------------------------ hyperparameters
    def _checked(self, values, *, loading=False):
        """``values`` (a dict) validated one by one by ``_CHECKS``; ``loading`` accepts
        lr = 0, which a schedule may have set."""
        out = {}
        for name, value in values.items():
            if name not in self._CHECKS:
                raise ValueError(f"{type(self).__name__} has no hyperparameter {name!r}; "
                                 f"valid: {', '.join(sorted(self._CHECKS))}")
            if loading and name == "lr":
                out[name] = _non_negative(value, name)
            else:
                out[name] = self._CHECKS[name](value, name)
        return out

    def _check_group(self, group):
        """Checks that involve several hyperparameters of one group (subclasses)."""

    def __getattr__(self, name):
        # only reached when normal lookup fails: hyperparameters by name (opt.lr, ...)
        defaults = self.__dict__.get("defaults")
        if defaults is not None and name in defaults:
            groups = self.__dict__.get("param_groups")
            return groups[0][name] if groups else defaults[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name, value):
        defaults = self.__dict__.get("defaults")
        if defaults is not None and name in defaults:
            value = self._checked({name: value})[name]
            for group in (defaults, *self.param_groups):    # check all, then change all
                self._check_group({**group, name: value})
            for group in (defaults, *self.param_groups):
                group[name] = value
            self._sync_state()
        else:
            object.__setattr__(self, name, value)

    def hyperparameters(self):
        """The constructor's hyperparameters and clipping settings (``type(opt)(**h)``
        rebuilds the optimiser without its groups and state)."""
        return {"clip_norm": self.clip_norm, "clip_value": self.clip_value, **self.defaults}

    # ------------------------------------------------------------------ binding
    def bind(self, params, *, keep=False):
        """Attach the parameters to optimise: a list of :class:`fastnn.Parameter` (or of
        ``(name, Parameter)`` pairs, as ``named_parameters()`` gives), or a list of
        parameter groups (dicts with ``"params"`` and hyperparameter overrides).

        ``keep=True`` (what ``compile`` does) keeps the parameters, groups and state this
        optimiser already has when they all belong to ``params``: an optimiser built
        for some of a model's parameters trains just those, and recompiling does not
        reset momentum.
        """
        params = self._as_list(params, "params")
        if keep and self.params:
            given = {id(p) for item in params
                     for p in (self._group_params(item, 0) if isinstance(item, dict)
                               else [self._param(item)])}
            if all(id(p) in given for p in self.params):
                return self
            if self._user_params:
                raise ValueError(
                    f"this {type(self).__name__} was built for parameters that are not all "
                    "in this model; create it without parameters (compile binds the "
                    "model's) or with this model's parameters")
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if all(isinstance(p, dict) for p in params) else None
        if groups is None and any(isinstance(p, dict) for p in params):
            raise TypeError("params must be a list of parameters or a list of parameter "
                            "groups (dicts with 'params'), not a mixture")
        groups = groups or [{"params": params}]
        built, seen = [], set()
        for i, group in enumerate(groups):
            members = self._group_params(group, i)
            for p in members:
                if id(p) in seen:
                    raise ValueError(f"a parameter {p!r} appears in more than one parameter "
                                     "group (or twice in one)")
                seen.add(id(p))
            overrides = {k: v for k, v in group.items() if k != "params"}
            unknown = sorted(set(overrides) - set(self._CHECKS))
            if unknown:
                raise ValueError(f"parameter group {i} has unknown keys {unknown}; a "
                                 f"{type(self).__name__} group takes 'params' and "
                                 f"{', '.join(sorted(self._CHECKS))}")
            built.append({"params": members, **self.defaults, **self._checked(overrides)})
            self._check_group(built[-1])
        if not seen:
            raise ValueError("optimizer got an empty parameter list")
        self.param_groups = built
        self.params = [p for g in built for p in g["params"]]
        self._groups_of_params = [g for g in built for _ in g["params"]]
        self.state = [self._init_state(p, g) for p, g in self._pairs()]
        self._user_params = not keep
        self._placement = None
        return self

    @staticmethod
    def _as_list(params, what):
        if isinstance(params, (Parameter, dict, str)) or not hasattr(params, "__iter__"):
            raise TypeError(f"{what} must be an iterable of Parameters (model.parameters()) "
                            f"or of parameter-group dicts, got {type(params).__name__}")
        return list(params)

    @staticmethod
    def _param(item):
        if (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            item = item[1]                                   # from named_parameters()
        if not isinstance(item, Parameter):
            raise TypeError(f"expected a fastnn Parameter, got {type(item).__name__}")
        return item

    def _group_params(self, group, index):
        if "params" not in group:
            raise ValueError(f"parameter group {index} has no 'params' entry")
        members = group["params"]
        members = [members] if isinstance(members, Parameter) else self._as_list(
            members, f"parameter group {index}'s params")
        return [self._param(p) for p in members]

    def _pairs(self):
        return zip(self.params, self._groups_of_params)

    def _init_state(self, param, group):
        return {}

    def _zeros(self, param):
        return np.zeros(param.data.size, param.dtype)

    def _state_array(self, backend, state, key, param):
        """``state[key]``, created as zeros in ``backend``'s memory if a hyperparameter
        change (e.g. ``opt.param_groups[0]["momentum"] = 0.9``) made it needed."""
        array = state.get(key)
        if array is None:
            array = state[key] = backend.zeros(param.data.size, param.dtype)
        return array

    def _sync_state(self):
        """After a hyperparameter change: state arrays the groups now need are added,
        those they no longer use dropped (kept ones are untouched)."""
        for p, s, g in zip(self.params, self.state, self._groups_of_params):
            template = self._init_state(p, g)
            for key in [k for k in s if k not in template]:
                del s[key]
            for key, value in template.items():
                s.setdefault(key, value)
        self._placement = None       # new arrays are on the host

    def _absent(self, backend, dtype):
        """A 0-size array in ``backend``'s memory: the kernels' "no such state" argument."""
        key = (backend.memory, np.dtype(dtype))
        if key not in self._empty:
            self._empty[key] = backend.empty(0, dtype)
        return self._empty[key]

    # ------------------------------------------------------------------ stepping
    def zero_grad(self):
        for p in self.params:
            p.zero_grad()

    def step(self):
        """Apply one update to every parameter that received a gradient."""
        if not self.params:
            raise RuntimeError("optimizer has no parameters: pass model.parameters() or "
                               "use model.compile(optimizer=...)")
        # without a backend of its own: where the parameters live (e.g. after model.to("cuda"))
        backend = (get_backend(self.backend) if self.backend is not None
                   else backend_for(self.params[0].data))
        placement = (backend.memory, self.params[0].dtype)
        if self._placement != placement:         # e.g. after model.to("cuda") or astype
            self.state = [{k: place(v, backend, p.dtype) if _is_array(v) else v
                           for k, v in s.items()} for p, s in zip(self.params, self.state)]
            self._placement = placement
        live = [(p, s, g) for p, s, g in zip(self.params, self.state, self._groups_of_params)
                if not p._grad_stale]
        if self.clip_value is not None:
            for p, _, _ in live:
                backend.clip_inplace(_flat(p._grad), self.clip_value)
        if self.clip_norm is not None:
            norm = math.sqrt(sum(backend.sum_of_squares(_flat(p._grad)) for p, _, _ in live))
            if norm > self.clip_norm:
                scale = self.clip_norm / (norm + 1e-6)
                for p, _, _ in live:
                    backend.scale_inplace(_flat(p._grad), scale)
        for p, s, g in live:
            self._update(backend, p, s, g)

    def _update(self, backend, param, state, group):
        raise NotImplementedError

    # ------------------------------------------------------------------ state
    def state_dict(self):
        """Everything needed to resume: ``{"hyperparameters": the constructor's,
        "param_groups": [{"params": [indices into opt.params], <hyperparameters>}],
        "state": [{"step": int, <name>: NumPy copy}, ...] per parameter}``."""
        groups, start = [], 0
        for g in self.param_groups:
            n = len(g["params"])
            groups.append({**{k: v for k, v in g.items() if k != "params"},
                           "params": list(range(start, start + n))})
            start += n
        return {"hyperparameters": self.hyperparameters(), "param_groups": groups,
                "state": [{k: np.array(to_host(v)) if _is_array(v) else v
                           for k, v in s.items()} for s in self.state]}

    def load_state_dict(self, state_dict):
        """Restore what :meth:`state_dict` returned (also the older form without
        ``"param_groups"``).  Everything is checked before anything changes."""
        if not self.params:
            raise RuntimeError("bind the optimizer to parameters before loading its state")
        hyper = dict(state_dict.get("hyperparameters", {}))
        clipping = {k: hyper.pop(k) for k in ("clip_norm", "clip_value") if k in hyper}
        clipping = {k: None if v is None else _positive(v, k) for k, v in clipping.items()}
        defaults = {**self.defaults, **self._checked(hyper)}
        saved_groups = state_dict.get("param_groups")
        groups = [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]
        if saved_groups is not None:
            if [len(g["params"]) for g in saved_groups] != [len(g["params"])
                                                            for g in self.param_groups]:
                raise ValueError(
                    "optimizer state has groups of "
                    f"{[len(g['params']) for g in saved_groups]} parameters, this optimizer "
                    f"{[len(g['params']) for g in self.param_groups]}")
            for mine, theirs in zip(groups, saved_groups):
                mine.update(self._checked({k: v for k, v in theirs.items() if k != "params"},
                                          loading=True))
        else:       # the older form: one set of hyperparameters for every group
            for mine in groups:
                mine.update(defaults)
        for group in groups:
            self._check_group(group)
        state = state_dict["state"]
        if len(state) != len(self.params):
            raise ValueError(f"optimizer state has {len(state)} entries, the optimizer has "
                             f"{len(self.params)} parameters")
        group_of = [g for g, mine in zip(groups, self.param_groups) for _ in mine["params"]]
        new_state = []
        for i, (p, g, theirs) in enumerate(zip(self.params, group_of, state)):
            fresh = self._init_state(p, g)
            if set(theirs) != set(fresh):
                raise ValueError(f"optimizer state of parameter {i} has keys "
                                 f"{sorted(theirs)}, expected {sorted(fresh)} (a state of "
                                 "another optimizer or other hyperparameters?)")
            for key, value in theirs.items():
                if _is_array(fresh[key]):
                    if np.shape(value) != fresh[key].shape:
                        raise ValueError(f"optimizer state {key!r} of parameter {i} has shape "
                                         f"{np.shape(value)}, expected {fresh[key].shape}")
                    fresh[key][...] = to_host(value)
                else:
                    fresh[key] = int(check_number(value, f"state {key!r} of parameter {i}",
                                                  low=0, integer=True))
            new_state.append(fresh)
        # all checked: change
        for mine, new in zip(self.param_groups, groups):
            mine.update(new)
        self.defaults.update(defaults)
        for key, value in clipping.items():
            object.__setattr__(self, key, value)
        self.state = new_state
        self._placement = None       # host arrays now; moved on the next step if needed

    def __repr__(self):
        shown = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in self.defaults.items())
        groups = (f", {len(self.param_groups)} parameter groups"
                  if len(self.param_groups) > 1 else "")
        return f"{type(self).__name__}({shown}{groups})"


# --------------------------------------------------------------------------- groups
def weight_decay_groups(parameters, no_decay=None):
    """Split parameters into two groups: weight matrices (decayed) and the rest.

    ``AdamW(weight_decay_groups(model), lr=1e-3, weight_decay=0.01)`` decays only the
    weight matrices: the usual recipe of no weight decay on biases and on normalisation
    scales and shifts.

    Parameters
    ----------
    parameters : a model, or an iterable of Parameters or of (name, Parameter) pairs
        A model's ``named_parameters()`` are used when it has them.
    no_decay : callable(name, param) -> bool, optional
        Which parameters get no decay; default: those with fewer than 2 dimensions
        (biases, normalisation parameters).  ``name`` is None when the parameters come
        without names.

    Returns
    -------
    list of dict
        ``[{"params": decayed}, {"params": others, "weight_decay": 0.0}]``, an empty
        group left out.
    """
    if hasattr(parameters, "named_parameters"):
        named = list(parameters.named_parameters())
    else:
        named = [item if isinstance(item, tuple) else (None, item) for item in parameters]
    if no_decay is None:
        def no_decay(name, param):
            return len(param.shape) < 2
    decayed = [p for name, p in named if not no_decay(name, p)]
    others = [p for name, p in named if no_decay(name, p)]
    groups = [{"params": decayed}] if decayed else []
    if others:
        groups.append({"params": others, "weight_decay": 0.0})
    if not groups:
        raise ValueError("weight_decay_groups got no parameters")
    return groups
