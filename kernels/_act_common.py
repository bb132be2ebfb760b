"""What the activation kernel modules share: fast-math flags and when to use the
second core.  The modules (:mod:`.act_elementwise`, :mod:`.act_softmax`) follow the
pattern described in :mod:`.activations`."""

# 'contract' lets LLVM fuse a*b + c into one FMA: rounding only, never NaN/Inf behaviour.
_FLAGS = {"contract"}
# Row reductions (softmax sums) also need 'reassoc' to vectorise: again rounding only.
_REDUCE_FLAGS = {"contract", "reassoc"}

# When to use the second core, measured on the 2-core Zen 5 (warm pool: waking it costs
# ~1.2 µs; serial span vs the chunked parallel loop, float32):
#: Kernels built on exp/log/erf/tanh are compute-bound (~0.25-0.5 ns per float32 element
#: on one core): serial up to 8192 elements (2-4 µs), then tasks of 4096 elements
#: (sigmoid: 16K elements 3.7 µs serial, 3.1 µs on two threads; 8K: 2.0 vs 2.3 µs).
SERIAL_MAX_TRANSCENDENTAL = 8192
CHUNK_TRANSCENDENTAL = 4096
#: The other kernels are memory-bound: serial while all their array operands together
#: span at most 512 KiB (half the 1 MiB L2), i.e. 64K float32 elements for a forward
#: (x, out) and ~43K for a backward (dy, x, out); then tasks of 16384 elements
#: (ReLU forward at 64K elements: 2.4 µs serial, 2.9 µs parallel; at 128K 7.1 vs 3.5 µs;
#: ReLU backward at 32K: 1.9 vs 2.5 µs, at 64K 4.3 vs 3.3 µs).
SERIAL_MAX_BYTES = 1 << 19
CHUNK_CHEAP = 16384
