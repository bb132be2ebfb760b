"""Every CUDA kernel compiled for real hardware, and its machine code checked.

The simulator runs kernels as Python and type-checks nothing, so here each entry of every
``fastnn.kernels.cuda`` module's ``PTX_SIGNATURES`` is compiled by NVVM to PTX for
``sm_80`` and ``sm_90`` (``cuda.compile_ptx``) and assembled by ``ptxas -v``:

* no register spills (``N bytes spill stores/loads`` must be 0); registers, stack frame
  and shared memory of each kernel are printed in a table at the end of the module;
* a float32 kernel has no double-precision operation left in its PTX (see
  :func:`f64_findings`): ``0.5 * x`` or a Python float argument promotes to float64 in
  Numba, and a double costs 2x to 64x the float rate on GPUs;
* every module lists all its kernels (a public module without ``PTX_SIGNATURES``, or a
  ``@cuda.jit`` kernel missing from it, fails).

No GPU is needed, only ``numba-cuda`` with NVVM (``libnvvm``; ``numba-cuda`` also loads
``libnvrtc``) and a ``ptxas`` at least as new as the NVVM (ptxas rejects a newer PTX ISA
``.version``).  Toolchains that work:

* wheels only, NVVM, libnvrtc and ptxas of one release:
  ``pip install "numba-cuda[cu13]" "cuda-toolkit[nvcc]==13.*"``;
* a CUDA toolkit's libnvvm (``CUDA_HOME`` or the loader path) and ptxas, with
  ``pip install numba-cuda nvidia-cuda-nvrtc==<toolkit release>.*``.  An installed
  ``nvidia-nvvm`` wheel is preferred over ``CUDA_HOME``.

Numba's built-in ``numba.cuda`` does not work: it asks the GPU driver for the compute
capability when it compiles a device function.  The module is skipped under the
simulator (``NUMBA_ENABLE_CUDASIM=1``: no compiler there), and where the toolchain is
missing, with the reason.  ``FASTNN_REQUIRE_PTX=1`` (for CI, which installs the
toolchain) turns those skips into failures.
"""
import contextlib
import functools
import importlib
import inspect
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import types

import pytest

from cudatest import SIMULATOR

PACKAGE = "fastnn.kernels.cuda"
CCS = ((8, 0), (9, 0))

#: Float32 kernels allowed to keep double-precision instructions: ``{(module, name):
#: reason}``.  Empty: add an entry only with the reason the double cannot be avoided.
F64_EXEMPT = {}

if SIMULATOR:
    pytest.skip("PTX compilation needs NVVM, which the CUDA simulator replaces "
                "(run without NUMBA_ENABLE_CUDASIM=1)", allow_module_level=True)

try:
    from numba import cuda
except ImportError as exc:      # a Numba without its built-in target and no numba-cuda
    pytest.skip(f"numba.cuda cannot be imported: {exc}", allow_module_level=True)


def unavailable(reason):
    """Skip for a missing toolchain, or fail where ``FASTNN_REQUIRE_PTX=1``."""
    if os.environ.get("FASTNN_REQUIRE_PTX") == "1":
        pytest.fail(f"{reason} (FASTNN_REQUIRE_PTX=1)")
    pytest.skip(reason)


# --------------------------------------------------------------------------- discovery
def kernel_modules():
    """(short name, module) of every module of the package, private ones included."""
    package = importlib.import_module(PACKAGE)
    return [(info.name, importlib.import_module(f"{PACKAGE}.{info.name}"))
            for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name)]


def is_kernel(obj):
    """A ``@cuda.jit`` dispatcher of a kernel (device functions compile into kernels)."""
    options = getattr(obj, "targetoptions", None)
    return (hasattr(obj, "py_func") and isinstance(options, dict)
            and not options.get("device", False))


def _contents(value, depth=3):
    """``value`` and what it holds, through dicts, lists, tuples and namespaces (the
    tables of factory-made kernels), ``depth`` levels down."""
    yield value
    if depth == 0 or inspect.ismodule(value) or is_kernel(value):
        return
    if isinstance(value, dict):
        items = value.values()
    elif isinstance(value, (list, tuple)):
        items = value
    elif isinstance(value, types.SimpleNamespace):
        items = vars(value).values()
    else:
        return
    for item in items:
        yield from _contents(item, depth - 1)


def python_function(fn):
    return fn.py_func if hasattr(fn, "py_func") else fn


def dtype_of(sig):
    """The precision of a signature's kernel: float32 if it has float32 data (a float64
    scalar in it is then a finding), else float64 if it has float64 data."""
    text = str(sig)
    if "float32" in text:
        return "float32"
    return "float64" if "float64" in text else text


def case_label(mod_name, name, sig):
    """The case's name, ``module.kernel-dtype``, the dtype left out when the kernel's name ends with it."""
    dtype = dtype_of(sig)
    return f"{mod_name}.{name}" + ("" if name.endswith(dtype) else f"-{dtype}")


MODULES = kernel_modules()
CASES, FLOAT32_CASES = [], []    # (module name, index in its PTX_SIGNATURES, cc)
for _mod_name, _module in MODULES:
    for _index, (_name, _fn, _sig) in enumerate(getattr(_module, "PTX_SIGNATURES", ())):
        _label = case_label(_mod_name, _name, _sig)
        for _cc in CCS:
            _case = pytest.param(_mod_name, _index, _cc, id=f"{_label}-sm{_cc[0]}{_cc[1]}")
            CASES.append(_case)
            if dtype_of(_sig) == "float32":
                FLOAT32_CASES.append(_case)


@pytest.mark.parametrize("mod_name, module", MODULES, ids=[m for m, _ in MODULES])
def test_module_lists_all_its_kernels(mod_name, module):
    """Public modules have ``PTX_SIGNATURES``; every kernel in the module (also inside a
    dict or list of factory-made kernels) appears in it."""
    entries = getattr(module, "PTX_SIGNATURES", None)
    if entries is None:
        assert mod_name.startswith("_"), f"{PACKAGE}.{mod_name} has no PTX_SIGNATURES list"
        entries = ()
    listed = {id(python_function(fn)) for _, fn, _ in entries}
    kernels = {}
    for attr, value in vars(module).items():
        for obj in _contents(value):
            if is_kernel(obj) and obj.py_func.__module__ == module.__name__:
                kernels.setdefault(id(obj.py_func), (attr, obj.py_func.__name__))
    missing = sorted(f"{attr} ({name})" for key, (attr, name) in kernels.items()
                     if key not in listed)
    assert not missing, (f"{PACKAGE}.{mod_name}: kernels missing from PTX_SIGNATURES: "
                         + ", ".join(missing))


# --------------------------------------------------------------------------- toolchain
@cuda.jit(device=True, inline="always")
def _probe_double(v):
    return v + v


def _probe_kernel(x):
    i = cuda.grid(1)
    if i < x.size:
        x[i] = _probe_double(x[i])


@functools.lru_cache(maxsize=None)
def nvvm():
    """((PTX ISA, NVVM release), None), or (None, why PTX cannot be made).

    The probe calls an ``inline="always"`` device function, as the kernels do: Numba's
    built-in ``numba.cuda`` (before ``numba-cuda``) asks the GPU driver for the compute
    capability when it compiles one, so it cannot compile our kernels without a GPU."""
    try:
        ptx, _ = cuda.compile_ptx(_probe_kernel, "void(float32[::1])", cc=CCS[0])
    except Exception as exc:     # NVVM, libdevice, libnvrtc (numba-cuda) or driver missing
        text = " ".join(str(exc).split())[:300]
        builtin = getattr(cuda, "implementation", "") == "Built-in"
        return None, (f"cannot compile PTX with "
                      f"{'Numba built-in numba.cuda' if builtin else 'numba-cuda'} "
                      f"({type(exc).__name__}: {text}); install numba-cuda and NVVM, e.g. "
                      f"pip install 'numba-cuda[cu13]' 'cuda-toolkit[nvcc]==13.*'")
    return ptx_version(ptx), None


def ptx_version(ptx):
    """("9.0", "13.0"): the PTX ISA ``.version`` and the release of the NVVM that wrote it."""
    isa = re.search(r"^\s*\.version\s+(\d+\.\d+)", ptx, re.M)
    release = re.search(r"^//.*release (\d+\.\d+)", ptx, re.M)
    return (isa[1] if isa else "?"), (release[1] if release else "?")


def ptxas_candidates():
    """Every ptxas the usual places have: pip wheels, CUDA_PATH/CUDA_HOME, PATH."""
    found = []
    try:
        from cuda import pathfinder          # ships with numba-cuda
        found.append(pathfinder.find_nvidia_binary_utility("ptxas"))
    except Exception:                        # absent, or too old to have the function
        pass
    for var in ("CUDA_PATH", "CUDA_HOME"):
        if os.environ.get(var):
            found.append(os.path.join(os.environ[var], "bin", "ptxas"))
    found.append(shutil.which("ptxas"))
    for entry in sys.path:                   # nvidia-cuda-nvcc wheels (CUDA 13, CUDA 12)
        found += [os.path.join(entry, "nvidia", "cu13", "bin", "ptxas"),
                  os.path.join(entry, "nvidia", "cuda_nvcc", "bin", "ptxas")]
    found.append("/usr/local/cuda/bin/ptxas")
    paths = []
    for path in found:
        if path and os.access(path, os.X_OK):
            real = os.path.realpath(path)
            if real not in paths:
                paths.append(real)
    return paths


def ptxas_release(path):
    """(major, minor) of ``ptxas --version`` ("release 13.0, V13.0.88"), or None."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"release (\d+)\.(\d+)", out)
    return (int(match[1]), int(match[2])) if match else None


@functools.lru_cache(maxsize=None)
def ptxas():
    """(path, release) of the newest ptxas found, or (None, why there is none)."""
    versions = [(ptxas_release(p), p) for p in ptxas_candidates()]
    versions = sorted((v, p) for v, p in versions if v is not None)
    if not versions:
        return None, ("no ptxas found (looked in the nvidia-cuda-nvcc wheel, CUDA_PATH/bin, "
                      "CUDA_HOME/bin, PATH, /usr/local/cuda/bin); pip install "
                      "nvidia-cuda-nvcc or put a CUDA toolkit's bin on PATH")
    release, path = versions[-1]
    return (path, release), None


@pytest.fixture(scope="module")
def ptx_report(request):
    """Rows of the register table, printed when the module ends."""
    rows = {}
    yield rows
    plugins = request.config.pluginmanager
    reporter, capture = plugins.getplugin("terminalreporter"), plugins.getplugin("capturemanager")
    if not rows or reporter is None:
        return
    # Teardown output is captured; the table is for the terminal.
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write("\n")
        reporter.write_sep("-", "ptxas -v: registers, stack frame, shared memory per kernel")
        width = max(map(len, rows))
        for case, (regs, stack, smem) in sorted(rows.items()):
            reporter.write_line(f"{case:<{width}} {regs:>4} registers {stack:>5} B stack "
                                f"{smem:>6} B smem")


# --------------------------------------------------------------------------- compile
@functools.lru_cache(maxsize=None)
def compile_case(mod_name, index, cc):
    """PTX of one entry for one compute capability (compiled once per case)."""
    module = dict(MODULES)[mod_name]
    _, fn, sig = module.PTX_SIGNATURES[index]
    options = {}
    # A dispatcher's own options change the code: keep those compile_ptx accepts.
    accepted = inspect.signature(cuda.compile_ptx).parameters
    for key in ("fastmath", "launch_bounds", "lineinfo"):
        value = getattr(fn, "targetoptions", {}).get(key)
        if value and key in accepted:
            options[key] = value
    try:
        ptx, _ = cuda.compile_ptx(python_function(fn), sig, cc=cc, **options)
    except Exception as exc:
        if type(exc).__name__ != "CudaSupportError":
            raise
        pytest.fail(f"{mod_name}.{module.PTX_SIGNATURES[index][0]} needs a GPU to compile "
                    f"({exc}): numba-cuda compiles a device function for the current GPU "
                    f"unless it is declared @cuda.jit(device=True, inline=\"always\")")
    return ptx


def _need_nvvm():
    version, why = nvvm()
    if why:
        unavailable(why)
    return version


# Matches a ``.f64`` type or state-space suffix: add.f64, cvt.rn.f32.f64, ld.global.f64,
# ``.reg .f64``, ``.param .f64``.  A float32 register named %f64 has no dot before it.
_F64 = re.compile(r"\.f64\b")
_F64_REGS = re.compile(r"^\s*\.reg\s+\.f64\s+(%\w+?)<\d+>", re.M)


def f64_findings(ptx):
    """Lines of ``ptx`` doing double-precision work: any instruction or declaration with
    a ``.f64`` type (arithmetic, conversions, loads/stores, f64 parameters or memory),
    and any instruction reading or writing a register of a ``.reg .f64`` class, whatever
    its own type (``mov.b64 %rd1, %fd1``).  Comments and debug directives (``.file``,
    ``.loc``) are ignored, so are 64-bit integer and pointer operations (``.u64``,
    ``.s64``, ``.b64`` on integer registers): only floating-point doubles count."""
    classes = _F64_REGS.findall(ptx)
    use = re.compile(r"(?:%s)\d+\b" % "|".join(map(re.escape, classes))) if classes else None
    findings = []
    for line in re.sub(r"/\*.*?\*/", "", ptx, flags=re.S).splitlines():
        code = line.split("//", 1)[0].strip()
        if not code or code.startswith((".file", ".loc", ".section", ".reg")):
            continue
        if _F64.search(code) or (use is not None and use.search(code)):
            findings.append(code)
    return findings


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("mod_name, index, cc", FLOAT32_CASES)
def test_float32_kernel_has_no_double_precision(mod_name, index, cc):
    name, _, sig = dict(MODULES)[mod_name].PTX_SIGNATURES[index]
    _need_nvvm()
    if (mod_name, name) in F64_EXEMPT:
        pytest.skip(f"exempt: {F64_EXEMPT[mod_name, name]}")
    findings = f64_findings(compile_case(mod_name, index, cc))
    shown = "\n  ".join(findings[:12]) + ("\n  ..." if len(findings) > 12 else "")
    assert not findings, (
        f"{mod_name}.{name} ({sig}), sm_{cc[0]}{cc[1]}: {len(findings)} double-precision "
        f"PTX lines in a float32 kernel (a Python float literal or argument, or a "
        f"float64 math function?):\n  {shown}")


_PROPERTIES = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, "
                         r"(\d+) bytes spill loads")
_REGISTERS = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


@pytest.mark.parametrize("mod_name, index, cc", CASES)
def test_assembles_without_spills(mod_name, index, cc, ptx_report, tmp_path):
    name, _, sig = dict(MODULES)[mod_name].PTX_SIGNATURES[index]
    version = _need_nvvm()
    tool, why = ptxas()
    if why:
        unavailable(why)
    path, release = tool
    ptx = compile_case(mod_name, index, cc)
    source = tmp_path / f"{name}_sm{cc[0]}{cc[1]}.ptx"
    source.write_text(ptx)
    arch = f"sm_{cc[0]}{cc[1]}"
    run = subprocess.run([path, f"-arch={arch}", "-v", str(source),
                          "-o", str(tmp_path / "out.cubin")],
                         capture_output=True, text=True, timeout=600)
    log = run.stderr + run.stdout
    if run.returncode and "Unsupported .version" in log:
        isa, nvvm_release = version
        unavailable(f"ptxas {release[0]}.{release[1]} ({path}) cannot assemble PTX ISA {isa} "
                    f"from NVVM {nvvm_release}: pip install 'cuda-toolkit[nvcc]=="
                    f"{nvvm_release}.*' (ptxas of the NVVM's release); CUDA_HOME does not "
                    f"override an installed nvidia-nvvm wheel")
    assert run.returncode == 0, f"ptxas failed on {mod_name}.{name} ({sig}), {arch}:\n{log}"
    properties = _PROPERTIES.findall(log)
    registers = _REGISTERS.findall(log)
    assert properties and registers, f"cannot parse the ptxas -v report:\n{log}"
    spills = [(int(stores), int(loads)) for _, stores, loads in properties
              if int(stores) or int(loads)]
    ptx_report[f"{case_label(mod_name, name, sig)}-{arch}"] = (
        max(map(int, registers)), max(int(stack) for stack, _, _ in properties),
        max(map(int, _SMEM.findall(log)), default=0))
    assert not spills, (f"{mod_name}.{name} ({sig}), {arch}: register spills "
                        f"(store, load bytes) {spills}:\n{log}")


# --------------------------------------------------------------------------- the checks
def test_f64_findings_catch_doubles_and_nothing_else():
    """The double-precision check on hand-written PTX: real f64 work in every form, and
    look-alikes that are not (a float32 register named %f64, comments, 64-bit integers,
    an f64 register class declared but never used)."""
    clean = """
    .reg .f32 %f<70>;
    .reg .b64 %rd<9>;
    .reg .f64 %fd<2>;                  // declared, unused
    mov.f32 %f64, 0fBD563CAE;          // %f64 is the 64th float32 register
    fma.rn.f32 %f66, %f65, %f63, %f64;
    /* add.f64 in a comment */
    cvt.u64.u32 %rd1, %r1;
    mul.wide.s32 %rd2, %r2, 4;
    ld.global.u64 %rd3, [%rd2];
    """
    assert f64_findings(clean) == []
    doubles = [
        "cvt.f64.f32 %fd1, %f1;", "mul.f64 %fd3, %fd2, %fd1;", "cvt.rn.f32.f64 %f2, %fd3;",
        "fma.rn.f64 %fd4, %fd1, %fd2, %fd3;", "@%p1 add.f64 %fd5, %fd4, 0d3FE0000000000000;",
        "ld.global.f64 %fd6, [%rd1];", "st.shared.f64 [%rd2], %fd6;",
        ".param .f64 kernel_param_3", "mov.b64 %rd4, %fd6;", "setp.lt.f64 %p2, %fd1, %fd2;",
    ]
    ptx = ".reg .f64 %fd<7>;\n" + "\n".join(doubles)
    assert f64_findings(ptx) == doubles


def test_ptxas_report_parsing():
    log = ("ptxas info    : Compiling entry function '_Z1k' for 'sm_80'\n"
           "ptxas info    : Function properties for _Z1k\n"
           "    16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads\n"
           "ptxas info    : Used 255 registers, used 1 barriers, 8320 bytes smem, "
           "380 bytes cmem[0]\n")
    assert _PROPERTIES.findall(log) == [("16", "8", "12")]
    assert _REGISTERS.findall(log) == ["255"] and _SMEM.findall(log) == ["8320"]
