"""numpy half of tests/repro/wasm_bias_first.js, on the same node (wasm_bias_first_block1a.bin):
EfficientNetB0's block1a_dwconv/depthwise (FusedDepthwiseConv2dNative 3x3, stride 1, SAME,
fused BiasAdd), x as wasm produced it, y as wasm gave it inside the graph.

Exact answer, S and bounds in float64 numpy (no TensorFlow, no kit), then float32 evaluations of
the same sum in several orders: how far each correct float32 evaluation goes, relative to
  kit bound  gamma(n+2) sum|x||w| + u|y|        (what the kit applies today: S without |b|)
  doc bound  gamma(n+2) (sum|x||w| + |b|)       (op_bounds._dot_product's docstring)

  .venv/bin/python tests/repro/wasm_bias_first.py
"""
from pathlib import Path

import numpy as np

U = 2.0 ** -24


def gamma(n):
    return n * U / (1 - n * U)


def load():
    a = np.fromfile(Path(__file__).with_name("wasm_bias_first_block1a.bin"), "<f4")
    x, w, b, y = np.split(a, [8192, 8192 + 288, 8192 + 288 + 32])
    return x.reshape(1, 16, 16, 32), w.reshape(3, 3, 32, 1), b, y.reshape(1, 16, 16, 32)


def products(x, w):
    """[9, N, 16, 16, C]: the float64 (exact) products per tap, SAME padding (1 each side)."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    return np.stack([xp[:, i:i + 16, j:j + 16, :] * w[i, j, :, 0] for i in range(3) for j in range(3)])


def main():
    x, w, b, y_wasm = load()
    t = products(x, w)
    exact = t.sum(0) + b  # float64: error ~1e-16 relative, nothing beside u = 6e-8
    s0 = products(np.abs(x), np.abs(w)).sum(0)
    s = s0 + np.abs(b)
    kit_bound, doc_bound = gamma(11) * s0 + U * np.abs(exact), gamma(11) * s
    t32 = t.astype(np.float32)  # each product rounded (what a kernel without FMA stores)
    column_major = [i * 3 + j for j in range(3) for i in range(3)]  # XNNPACK's packed tap order

    def chain(order, start):
        acc = np.broadcast_to(start, exact.shape).astype(np.float32)
        for k in order:
            acc = acc + t32[k]
        return acc
    orders = {
        "bias last, row-major": chain(range(9), 0) + b,
        "bias last, reversed": chain(reversed(range(9)), 0) + b,
        "bias last, pairwise": ((t32[0] + t32[1]) + (t32[2] + t32[3])) + ((t32[4] + t32[5]) + (t32[6] + t32[7])) + t32[8] + b,
        "bias first, row-major": chain(range(9), b),
        "bias first, column-major (XNNPACK)": chain(column_major, b),
        "fma-like: float64 accumulate, round once": (t.sum(0) + b).astype(np.float32),
        "wasm in the graph": y_wasm,
    }
    print(f"{'evaluation':44s} {'err/kit':>8s} {'err/doc':>8s} {'err/uS':>7s}  bits == wasm")
    for name, z in orders.items():
        err = np.abs(z.astype(np.float64) - exact)
        print(f"{name:44s} {np.max(err / kit_bound):8.3f} {np.max(err / doc_bound):8.3f} "
              f"{np.max(err / (U * s)):7.2f}  {np.mean(z == y_wasm):.4f}")
    err = np.abs(y_wasm - exact)
    i = np.unravel_index(np.argmax(err / kit_bound), err.shape)
    print(f"wasm's worst by the kit's bound: {tuple(int(v) for v in i)} (interior: {0 < i[1] < 15 and 0 < i[2] < 15}), "
          f"y {y_wasm[i]:.9g}, exact {exact[i]:.9g}, sum|x||w| {s0[i]:.3g}, |b| {abs(b[i[3]]):.3g}")


if __name__ == "__main__":
    main()
