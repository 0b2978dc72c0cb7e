"""tfjs bugs the kit runs into, proved with standalone reproducers (tests/repro/).

fused_scalar_bias.js: grappler (via tensorflowjs_converter) can fold relu6(conv(x) + 3.0)
into a _FusedConv2D whose bias is a rank-0 scalar. In tfjs 4.22 the wasm backend refuses a
rank-0 bias in every fused op (conv2d, depthwiseConv2d, matMul), while tfjs-node's
`tensorflow` backend and `cpu` broadcast it and match the unfused relu6(op + bias). A rank-1
bias works on every backend (the control). These assertions are what was measured.
"""
import json
import subprocess

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "tests" / "repro" / "fused_scalar_bias.js"
BACKENDS = ("tensorflow", "cpu", "wasm")
OPS = ("conv2d", "depthwiseConv2d", "matMul")
# the wasm kernels' names in their error messages
KERNEL = {"conv2d": "FusedConv2D", "depthwiseConv2d": "FusedDepthwiseConv2D", "matMul": "_FusedMatMul"}
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def rows():
    done = subprocess.run(["node", str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    table = {}
    for line in done.stdout.splitlines():
        row = json.loads(line)
        table[row["op"], row["bias_rank"], row["backend"]] = row
    assert set(table) == {(op, rank, b) for op in OPS for rank in (0, 1) for b in BACKENDS}, sorted(table)
    return table


def assert_matches_unfused(row):
    assert row["ok"] and row["error"] is None, row
    assert row["max_abs_diff"] <= TOLERANCE, row


@pytest.mark.parametrize("op", OPS)
def test_wasm_refuses_a_scalar_bias(rows, op):
    row = rows[op, 0, "wasm"]
    assert not row["ok"] and row["max_abs_diff"] is None, row
    assert row["error"] == f"{KERNEL[op]} only supports rank-1 bias but got rank 0.", row


@pytest.mark.parametrize("backend", ("tensorflow", "cpu"))
@pytest.mark.parametrize("op", OPS)
def test_tensorflow_and_cpu_broadcast_a_scalar_bias(rows, op, backend):
    assert_matches_unfused(rows[op, 0, backend])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", OPS)
def test_a_rank1_bias_works_everywhere(rows, op, backend):
    assert_matches_unfused(rows[op, 1, backend])
