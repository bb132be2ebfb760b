"""One record per activation: everything the rest of fastnn needs to know about it.

:data:`SPECS` is the only list of activations.  The layers (names, parameters, their
constraints, whether a gradient flows), the backends (the ``name_forward`` /
``name_backward`` operations), the fused dense layer (which activations run in the GEMM
epilogue, and which derivatives come from the output), the CUDA kernels (the same codes)
and the tests and benchmarks all derive their tables from it: :data:`ACTIVATIONS`,
:data:`EPILOGUE_CODES`, :data:`FROM_OUTPUT`, :data:`NOT_DIFFERENTIABLE`, :data:`ROW_WISE`.

Adding an element-wise activation: a record here, its formulas in the kernel modules
(:mod:`.act_piecewise` / :mod:`.act_smooth`, and its case in the epilogue and derivative
switches, :mod:`.epilogue` and :mod:`.dense`, if it has a code), its NumPy reference in
``fastnn/backends/numpy_ops.py``, and its tests.  (The switches on codes are the part
that still lists activations by hand: Numba compiles them as one function per kernel, and
a first-class function argument would cost the on-disk cache; see the issue notes.)

This module imports no kernels, so every kernel module can import it.
"""
from dataclasses import dataclass, field

__all__ = ["ActivationSpec", "SPECS", "ACTIVATIONS", "EPILOGUE_CODES", "FROM_OUTPUT",
           "NOT_DIFFERENTIABLE", "ROW_WISE", "check_params"]


@dataclass(frozen=True)
class ActivationSpec:
    """One activation.

    ``params``: ``(name, default)`` pairs in the order the kernels take them.
    ``constraints``: conditions on the parameters, each ``(left, op, right)`` with ``op``
    one of ``">=", ">", "<"`` and ``right`` a number or another parameter's name.
    ``code``: the integer the fused kernels (GEMM epilogue, fused dense backward, CUDA)
    switch on; ``None`` for an activation that is not element-wise (softmax).
    ``from_output``: its derivative can be computed from the output ``y = f(z)`` alone
    (so the fused dense backward needs no ``z``), under ``from_output_if`` conditions
    (leaky ReLU: only for ``alpha >= 0``, where ``y > 0`` tells ``z > 0``).
    ``differentiable``: ``False`` when the derivative is zero almost everywhere (step).
    ``row_wise``: acts on whole rows (softmax).
    """
    name: str
    params: tuple = ()
    constraints: tuple = ()
    code: int = None
    from_output: bool = False
    from_output_if: tuple = ()
    differentiable: bool = True
    row_wise: bool = False
    doc: str = field(default="", compare=False)

    @property
    def defaults(self):
        """``{parameter: default}`` in kernel order."""
        return dict(self.params)

    def derivative_from_output(self, params):
        """True if ``f'(z)`` follows from ``y`` for these parameter values."""
        return self.from_output and _holds(self.from_output_if, params)


_OPS = {">=": lambda a, b: a >= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b}


def _holds(conditions, params):
    for left, op, right in conditions:
        value = params[right] if isinstance(right, str) else right
        if not _OPS[op](params[left], value):
            return False
    return True


def check_params(spec, params):
    """Raise ``ValueError`` naming the first constraint of ``spec`` that ``params`` break."""
    for left, op, right in spec.constraints:
        if not _holds(((left, op, right),), params):
            value = params[right] if isinstance(right, str) else right
            raise ValueError(f"{spec.name} needs {left} {op} {right}, got {left}="
                             f"{params[left]}" + (f", {right}={value}"
                                                  if isinstance(right, str) else ""))


#: The only list of activations (see the module docstring).  Codes are stable: they are
#: compiled into the fused kernels.
SPECS = (
    ActivationSpec("identity", code=0, from_output=True, doc="f(x) = x"),
    ActivationSpec("sigmoid", params=(("beta", 1.0),), code=4, from_output=True,
                   doc="f(x) = 1 / (1 + exp(-beta x))"),
    ActivationSpec("tanh", code=5, from_output=True, doc="f(x) = tanh(x)"),
    ActivationSpec("relu", code=1, from_output=True, doc="f(x) = max(x, 0)"),
    ActivationSpec("leaky_relu", params=(("alpha", 0.01),), code=2, from_output=True,
                   from_output_if=(("alpha", ">=", 0.0),),
                   doc="f(x) = x for x > 0, else alpha x"),
    ActivationSpec("elu", params=(("alpha", 1.0),), constraints=(("alpha", ">=", 0.0),),
                   code=3, from_output=True, doc="f(x) = x for x > 0, else alpha (exp(x) - 1)"),
    ActivationSpec("softplus", code=6, from_output=True, doc="f(x) = log(1 + exp(x))"),
    ActivationSpec("gelu", code=7, doc="f(x) = x Phi(x) (exact erf form)"),
    ActivationSpec("piecewise_linear", params=(("x_min", -0.5), ("x_max", 0.5)),
                   constraints=(("x_min", "<", "x_max"),), code=8, from_output=True,
                   doc="0 below x_min, 1 above x_max, linear in between"),
    ActivationSpec("gaussian", code=9, doc="f(x) = exp(-x**2)"),
    ActivationSpec("step", code=10, from_output=True, differentiable=False,
                   doc="1 for x >= 0, else 0 (no gradient flows through it)"),
    ActivationSpec("softmax", row_wise=True, doc="row-wise softmax"),
)

#: name -> record.
BY_NAME = {spec.name: spec for spec in SPECS}
#: name -> default parameters in kernel order (what the layers and backends iterate).
ACTIVATIONS = {spec.name: spec.defaults for spec in SPECS}
#: name -> code of the fused kernels, for the element-wise activations.
EPILOGUE_CODES = {spec.name: spec.code for spec in SPECS if spec.code is not None}
#: Activations whose derivative the fused dense backward computes from the output.
FROM_OUTPUT = frozenset(spec.name for spec in SPECS if spec.from_output)
#: Activations whose derivative is zero almost everywhere: no gradient flows through them.
NOT_DIFFERENTIABLE = frozenset(spec.name for spec in SPECS if not spec.differentiable)
#: Activations that act on whole rows rather than element by element.
ROW_WISE = frozenset(spec.name for spec in SPECS if spec.row_wise)

assert len(set(EPILOGUE_CODES.values())) == len(EPILOGUE_CODES), "codes must be unique"
