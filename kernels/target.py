"""The CPU the kernels are compiled for, and the SIMD shapes that follow from it.

The GEMM keeps a block of the output in SIMD registers while it runs along ``k``.  How
wide a register is and how many there are differ between CPUs (AVX-512: 32 x 64 bytes;
AVX2: 16 x 32 bytes; SSE: 16 x 16 bytes; NEON: 32 x 16 bytes), so the vector width and
the register tiles (:data:`TILES`) are chosen here, once, from the CPU that *Numba
compiles for*: the one ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` name, else the host.
Overriding those variables therefore selects another code path, and because Numba's
on-disk cache keys its entries on exactly that CPU name and feature string (with the
target triple), cached machine code built for one path is never loaded for another.

The choice is made by asking LLVM, not by parsing CPU names: :func:`_probe` compiles a
multiply-add of two 64-byte vectors for the target and reads which registers and
instructions the assembly uses (``zmm`` -> AVX-512, ``ymm`` with ``vfmadd`` -> AVX2 + FMA,
anything else -> the portable 16-byte path).  It costs a few milliseconds at import.

Cache sizes (L1d, L2 per core) are read from the operating system.  They set the GEMM's
cache blocking, which is passed to the kernels at run time (never baked into compiled
code), so two machines with the same CPU name but different caches can share a cache
directory safely.
"""
import os
import re
from dataclasses import dataclass

import llvmlite.binding as ll
from numba.core import config
from numba.core.codegen import get_host_cpu_features

__all__ = ["TARGET", "TILES", "Target", "describe"]

#: Register tiles per instruction-set path, as ``(rows, vectors)``: ``rows`` broadcasts
#: (or loads) of the left operand times ``vectors`` SIMD vectors of the right one.
#: Each tile keeps ``rows * vectors`` accumulators in registers, plus the operands of
#: one step; every shape leaves at least one register free on its path, so none spills
#: (a test compiles each path and checks its inner loops for stack traffic).
#:
#: * ``bcast``: the main micro-kernel (packed panels): AVX-512 12 x 2 (24 of 32 zmm;
#:   12 multiply-adds per vector load of the streamed panel: 0-10% faster GEMMs than
#:   8 x 2 on an AVX-512 Xeon); AVX2 6 x 2 (12 of 16 ymm, BLIS's Haswell shape);
#:   16-byte vectors 6 x 2 (12 of 16 xmm on SSE; NEON has 32).
#: * ``bcast_low``: the last micro-panel of a block when it has at most this many rows
#:   (a batch of 32 is 2 x 12 + 8 rows on AVX-512, 5 x 6 + 2 on AVX2): the same packed
#:   panel, fewer rows computed.
#: * ``narrow``: outputs narrower than :data:`NARROW_COLUMNS` (a 10-class layer), the left
#:   operand in place.
#: * ``rows``: products of at most a few rows (batch 2-7), both operands in place;
#:   ``row``: one row (batch 1: a vector times a matrix), eight accumulators so that the
#:   multiply-adds of one ``k`` do not wait on each other.
#:   (The 16-byte path's narrow tile is its rows tile: 3 x 4 would need 18 registers
#:   with SSE's separate multiply and add.)
#: * ``dot``: dot products along ``k`` (``a @ b.T`` with few rows); ``dot_row``: one row.
TILES = {
    "avx512": dict(bcast=(12, 2), bcast_low=(8, 2), narrow=(8, 1), rows=(4, 4), row=(1, 8),
                   dot=(4, 4), dot_row=(1, 8)),
    "avx2": dict(bcast=(6, 2), bcast_low=(4, 2), narrow=(6, 2), rows=(4, 2), row=(1, 8),
                 dot=(3, 3), dot_row=(1, 8)),
    "generic": dict(bcast=(6, 2), bcast_low=(4, 2), narrow=(4, 2), rows=(4, 2), row=(1, 8),
                    dot=(3, 3), dot_row=(1, 8)),
}

#: Output widths below this many columns use the ``narrow`` tiles (a group of
#: ``narrow[1] * lanes`` columns at a time: 16 float32 columns on AVX-512 and AVX2).
NARROW_COLUMNS = 16

_PROBE_IR = """
define void @probe(<16 x float>* %p) {
  %a = load <16 x float>, <16 x float>* %p
  %r = call <16 x float> @llvm.fmuladd.v16f32(<16 x float> %a, <16 x float> %a,
                                               <16 x float> %a)
  store <16 x float> %r, <16 x float>* %p
  ret void
}
declare <16 x float> @llvm.fmuladd.v16f32(<16 x float>, <16 x float>, <16 x float>)
"""


@dataclass(frozen=True)
class Target:
    """What the kernels are compiled for.

    ``cpu``: LLVM's CPU name (``znver3``, ``haswell``, ...); ``isa``: the kernel path
    (``"avx512"``, ``"avx2"`` or ``"generic"``); ``vector_bytes``: the SIMD width the
    kernels use; ``registers``: SIMD registers of that width; ``fma``: fused multiply-add
    instructions; ``l1d_bytes`` / ``l2_bytes``: data caches of one core.
    """
    triple: str
    cpu: str
    isa: str
    vector_bytes: int
    registers: int
    fma: bool
    l1d_bytes: int
    l2_bytes: int

    def lanes(self, itemsize):
        """Elements of ``itemsize`` bytes in one vector."""
        return self.vector_bytes // itemsize

    def tiles(self):
        """The register tiles of this path (see :data:`TILES`)."""
        return TILES[self.isa]


def _compile_target():
    """``(triple, cpu name, feature string)`` exactly as Numba's CPU code generator
    chooses them (numba.core.codegen: ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` or the
    host), i.e. the values its cache index keys on."""
    name = config.CPU_NAME or ll.get_host_cpu_name()
    features = (config.CPU_FEATURES if config.CPU_FEATURES is not None
                else get_host_cpu_features())
    return ll.get_process_triple(), name, features


def _probe(triple, cpu, features):
    """``(isa, vector_bytes, registers, fma)`` from the assembly LLVM emits for a 64-byte
    multiply-add on this target."""
    ll.initialize_native_target()
    ll.initialize_native_asmprinter()
    machine = ll.Target.from_triple(triple).create_target_machine(
        cpu=cpu, features=features, opt=2)
    module = ll.parse_assembly(_PROBE_IR)
    module.triple = triple
    asm = machine.emit_assembly(module)
    x86 = triple.startswith(("x86_64", "i386", "i686"))
    fma = bool(re.search(r"\bv?fmadd|\bfmla\b", asm))
    if x86 and "zmm" in asm:
        return "avx512", 64, 32, fma
    if x86 and "ymm" in asm and fma:
        return "avx2", 32, 16, True
    registers = 32 if triple.startswith(("aarch64", "arm64")) else 16
    return "generic", 16, registers, fma


def _cache_bytes(level, kind, default):
    """Size in bytes of this core's cache ``level`` ("Data"/"Unified" ``kind``), from
    Linux sysfs or ``sysconf``; ``default`` where neither says."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in sorted(os.listdir(base)):
            path = os.path.join(base, entry)
            with open(os.path.join(path, "level")) as f:
                if int(f.read()) != level:
                    continue
            with open(os.path.join(path, "type")) as f:
                if f.read().strip() not in (kind, "Unified"):
                    continue
            with open(os.path.join(path, "size")) as f:
                text = f.read().strip().upper()
            scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            return int(text.rstrip("KMG")) * scale
    except (OSError, ValueError):
        pass
    name = {1: "SC_LEVEL1_DCACHE_SIZE", 2: "SC_LEVEL2_CACHE_SIZE"}[level]
    try:
        size = os.sysconf(name)
        if size > 0:
            return size
    except (ValueError, OSError, AttributeError):
        pass
    return default


def _detect():
    triple, cpu, features = _compile_target()
    isa, vector_bytes, registers, fma = _probe(triple, cpu, features)
    return Target(triple=triple, cpu=cpu, isa=isa, vector_bytes=vector_bytes,
                  registers=registers, fma=fma,
                  l1d_bytes=_cache_bytes(1, "Data", 32 << 10),
                  l2_bytes=_cache_bytes(2, "Unified", 512 << 10))


#: The target of this process (fixed at import, as Numba's own CPU settings are).
TARGET = _detect()


def describe(dtype_itemsize=4):
    """One line naming the kernel path, e.g. ``"avx2 (haswell): 8 x float32 vectors,
    6x16 GEMM tile; L1d 32 KiB, L2 512 KiB"``."""
    t = TARGET
    rows, vectors = t.tiles()["bcast"]
    lanes = t.lanes(dtype_itemsize)
    name = {4: "float32", 8: "float64"}.get(dtype_itemsize, f"{dtype_itemsize}-byte")
    return (f"{t.isa} ({t.cpu}): {lanes} x {name} vectors, {rows}x{vectors * lanes} GEMM "
            f"tile{'' if t.fma else ', no FMA'}; L1d {t.l1d_bytes >> 10} KiB, "
            f"L2 {t.l2_bytes >> 10} KiB")
