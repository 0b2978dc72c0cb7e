"""Provenance of tests/repro/wasm_bias_first_block1a.bin (not needed to run the reproducer).

Writes one failing node of EfficientNetB0 (random weights, tfjs graph model), as the tfjs wasm
backend itself ran it: efficientnetb0/block1a_dwconv/depthwise, a FusedDepthwiseConv2dNative
(3x3, stride 1, SAME, dilation 1, NHWC, fused_ops [BiasAdd]: the batch norm folded into the
filter and the bias). float32 little-endian, concatenated:
  x [1,16,16,32]  the wasm capture's output of efficientnetb0/stem_activation/mul_1 (its input)
  w [3,3,32,1]    depthwise_weights (converted constant)
  b [32]          depthwise_bn_offset
  y [1,16,16,32]  the wasm capture's output of the node (what wasm gave inside the graph)

  .venv/bin/python tests/repro/wasm_bias_first_extract.py OUT_DIR   # OUT_DIR: compare_outputs' --out-dir
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tfjs_parity.capture import Capture  # noqa: E402
from tfjs_parity.kinds.graph_model import read_graph_model  # noqa: E402

NODE, SOURCE = "efficientnetb0/block1a_dwconv/depthwise", "efficientnetb0/stem_activation/mul_1"


def main(out):
    out = Path(out)
    graph = read_graph_model(out / "keras_converted")
    wasm = Capture.load(out / "keras_model_tfjs_node_wasm.safetensors")
    arrays = [wasm.outputs(SOURCE)[0], graph.constants[f"{NODE}_weights"], graph.constants[f"{NODE}_bn_offset"],
              wasm.outputs(NODE)[0]]
    target = Path(__file__).with_name("wasm_bias_first_block1a.bin")
    target.write_bytes(b"".join(np.ascontiguousarray(a, "<f4").tobytes() for a in arrays))
    print(target, [np.shape(a) for a in arrays])


if __name__ == "__main__":
    main(sys.argv[1])
