"""The GEMM's instruction-set paths (kernels/target.py): each is chosen from the CPU Numba
compiles for, keeps its register tiles in registers, and never shares cached machine code
with another path.

Each check runs in a subprocess, because the path is fixed when the kernels are
imported: ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` select it (an empty feature string
means the named CPU's own features; with the name alone Numba keeps the host's features).
The spill checks only compile (a path the host cannot run is still compiled and read);
the cache check runs two paths the host can execute.
"""
import json
import os
import platform
import re
import subprocess
import sys
import textwrap

import pytest

from fastnn.kernels.target import TARGET, TILES

X86 = platform.machine().lower() in ("x86_64", "amd64")

# The CPU name that selects each path on x86-64.
PATH_CPUS = {"avx512": "skylake-avx512", "avx2": "haswell", "generic": "x86-64"}


def _run(code, cpu=None, cache_dir=None, own_features=True):
    """Run ``code`` in a fresh interpreter compiling for ``cpu`` (with its own features,
    or the host's if not ``own_features``); return the JSON it prints last."""
    env = dict(os.environ)
    env.pop("NUMBA_CPU_FEATURES", None)
    if cpu is not None:
        env["NUMBA_CPU_NAME"] = cpu
        if own_features:
            env["NUMBA_CPU_FEATURES"] = ""
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- assembly
_LABEL = re.compile(r"^([.\w$]+):")
_JUMP = re.compile(r"^\s+j\w+\s+([.\w$]+)\s*$")
# Packed multiply-adds (FMA) or multiplies (the SSE path has no FMA).
_PACKED = re.compile(r"\bv?fmadd\d*p[sd]\b|\bv?mulp[sd]\b")
# A memory operand relative to the stack pointer: a spill or a reload.  (Numba code
# omits the frame pointer, so %rbp is an ordinary register there.)
_STACK = re.compile(r"\(%rsp[,)]")


def innermost_loops(asm):
    """The innermost loops of x86 assembly text, as lists of lines: the ranges from a
    label to a later jump back to it that contain no other such range."""
    lines = asm.splitlines()
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := _LABEL.match(line))}
    edges = [(labels[m.group(1)], i) for i, line in enumerate(lines)
             if (m := _JUMP.match(line)) and labels.get(m.group(1), i) < i]
    return [lines[s:e + 1] for s, e in edges
            if not any((o != (s, e)) and s <= o[0] and o[1] <= e for o in edges)]


def test_innermost_loops_finds_a_planted_spill():
    asm = textwrap.dedent("""\
        f:
        .LBB0_1:
        \tvfmadd231ps\t%ymm1, %ymm2, %ymm0
        \tvmovaps\t%ymm3, -40(%rsp)
        \tdecq\t%rax
        \tjne\t.LBB0_1
        \tret
        """)
    (loop,) = innermost_loops(asm)
    assert any(_PACKED.search(line) for line in loop)
    assert any(_STACK.search(line) for line in loop)
    assert not _STACK.search("\tvmovups\t(%rbp,%r13,4), %zmm8")


_SPILL_PROBE = """
    import json, numpy as np
    from fastnn.kernels import gemm_task, gemm_tiles
    from fastnn.kernels.target import TARGET
    for dtype in (np.float32, np.float64):
        gemm_task._compile_task(np.dtype(dtype))      # compiles every tile; runs nothing
    found = []
    for fn in (gemm_tiles.panel_rows, gemm_tiles.tile_in_place, gemm_tiles.tile_dot):
        for sig in fn.signatures:
            found.append([fn.py_func.__name__, str(sig), fn.inspect_asm(sig)])
    print(json.dumps({"isa": TARGET.isa, "vector_bytes": TARGET.vector_bytes,
                      "kernels": found}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not X86, reason="the register checks read x86 assembly")
@pytest.mark.parametrize("isa", sorted(PATH_CPUS))
def test_register_tiles_never_spill(isa, tmp_path):
    """Every micro-kernel of every path (bcast, narrow/rows in place, dot and dot-row
    tiles; float32 and float64) has an inner loop doing packed multiply-adds of the
    path's vector width, with no stack load or store in it."""
    report = _run(_SPILL_PROBE, cpu=PATH_CPUS[isa], cache_dir=tmp_path)
    assert report["isa"] == isa
    register = {64: "zmm", 32: "ymm", 16: "xmm"}[report["vector_bytes"]]
    names = {name for name, _, _ in report["kernels"]}
    assert names == {"panel_rows", "tile_in_place", "tile_dot"}
    assert len(report["kernels"]) >= 6          # both dtypes, every tile shape
    for name, sig, asm in report["kernels"]:
        loops = [loop for loop in innermost_loops(asm)
                 if any(_PACKED.search(line) for line in loop)]
        assert loops, f"{isa} {name} {sig}: no inner loop of packed multiply-adds"
        for loop in loops:
            spills = [line.strip() for line in loop if _STACK.search(line)]
            assert not spills, f"{isa} {name} {sig} spills in its inner loop: {spills[:4]}"
            assert any(register in line for line in loop if _PACKED.search(line)), (
                f"{isa} {name} {sig}: the inner loop does not use {register} registers")


@pytest.mark.skipif(not X86, reason="CPU names are x86 ones")
def test_the_path_follows_the_compile_target():
    code = """
        import json
        from numba.core.codegen import get_host_cpu_features
        from fastnn.kernels.target import TARGET
        print(json.dumps([TARGET.isa, TARGET.cpu, TARGET.vector_bytes,
                          "+avx512f" in get_host_cpu_features()]))
    """
    assert _run(code, cpu="haswell")[:3] == ["avx2", "haswell", 32]
    assert _run(code, cpu="x86-64")[:3] == ["generic", "x86-64", 16]
    assert _run(code, cpu="skylake-avx512")[:3] == ["avx512", "skylake-avx512", 64]
    # The name alone keeps the host's feature string, and Numba compiles with it: an
    # AVX-512 host then still gets AVX-512 code, and so the AVX-512 path.
    isa, cpu, _, host_avx512 = _run(code, cpu="haswell", own_features=False)
    assert cpu == "haswell" and isa == ("avx512" if host_avx512 else "avx2")


def test_every_path_has_every_tile_and_fits_its_registers():
    registers = {"avx512": 32, "avx2": 16, "generic": 16}
    for isa, tiles in TILES.items():
        assert set(tiles) == {"bcast", "bcast_low", "narrow", "rows", "row", "dot", "dot_row"}
        for name, (rows, vectors) in tiles.items():
            # accumulators + the operands of one step that are used more than once (+1
            # for a product without FMA); an operand used once is a memory operand
            if name.startswith("dot"):
                reused = rows if vectors > 1 else 1
            else:
                reused = vectors if rows > 1 else 1
            live = rows * vectors + reused + 2
            assert live <= registers[isa], (isa, name)
    assert TARGET.isa in TILES
    assert TARGET.l1d_bytes >= 8 << 10 and TARGET.l2_bytes >= 64 << 10


_CACHE_PROBE = """
    import json, numpy as np
    from fastnn.kernels import gemm_task, matmul as mm
    from fastnn.kernels.target import TARGET
    rng = np.random.default_rng(0)
    a = rng.standard_normal((70, 50)).astype(np.float32)
    b = rng.standard_normal((50, 40)).astype(np.float32)
    out = np.empty((70, 40), np.float32)
    mm.matmul(a, b, out)
    err = float(np.abs(out - a.astype(np.float64) @ b).max())
    task = gemm_task._compile_task(np.dtype(np.float32))
    print(json.dumps({"isa": TARGET.isa, "task_hits": task.cache_hits,
                      "gemm_hits": sum(mm._gemm.stats.cache_hits.values()), "err": err}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not X86, reason="CPU names are x86 ones")
def test_a_shared_cache_never_serves_another_paths_code(tmp_path):
    """Two paths the host can run, one cache directory: the second path compiles its own
    code (no cache hit) and computes correctly; the first path then loads its own."""
    from numba.core.codegen import get_host_cpu_features
    if "+avx2" not in get_host_cpu_features():
        pytest.skip("the host cannot run the AVX2 path")
    first = _run(_CACHE_PROBE, cpu="haswell", cache_dir=tmp_path)
    other = _run(_CACHE_PROBE, cpu="x86-64", cache_dir=tmp_path)
    again = _run(_CACHE_PROBE, cpu="haswell", cache_dir=tmp_path)
    assert (first["isa"], other["isa"], again["isa"]) == ("avx2", "generic", "avx2")
    assert first["task_hits"] == 0 and first["gemm_hits"] == 0
    assert other["task_hits"] == 0 and other["gemm_hits"] == 0
    assert again["task_hits"] == 1 and again["gemm_hits"] == 1
    for r in (first, other, again):
        assert r["err"] < 1e-4
