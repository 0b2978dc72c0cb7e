"""graph_model.js's locate on a fake tfjs graph (no tfjs, no backend): a point that fails
because of a node the plan does not capture names that node, the producer first, even when
another uncaptured node between them fails alike (a diamond: the point reads B and C, C reads B)."""
import json
import subprocess

from conftest import ROOT

SCRIPT = r"""
const kind = require('./tfjs_parity/kinds/graph_model.js');
const mk = (name, op, inputs) => ({name, op, inputs});
const x = mk('x', 'Placeholder', []);
const B = mk('B', 'MatMul', [x]);      // an int32 MatMul: what wasm refuses
const C = mk('C', 'Cast', [B]);        // reads B, so it fails alike
const A = mk('A', 'GatherV2', [B, C]); // the point
const nodes = {x, B, C, A};
const MSG = 'BatchMatMul for non non-float32 tensors not yet supported.';
const reads = (n) => [n, ...n.inputs.flatMap(reads)];
const executed = [];
const model = {executor: {graph: {nodes}}, inputs: [{name: 'x:0'}],
  execute: (map, outputs) => {
    const node = nodes[outputs[0].split(':')[0]];
    executed.push(node.name);
    if (reads(node).some((n) => n.op === 'MatMul')) throw new Error(MSG);
    return [];
  }};
const plan = {inputs: [{name: 'x'}], points: [{name: 'A', layer: 'A', class_name: 'GatherV2', outputs: 1}]};
kind.locate({dispose() {}}, model, plan, [null]).then((found) => {
  console.log(JSON.stringify({layer: found.point.layer, op: found.point.class_name, message: found.message, executed}));
});
"""


def test_locate_names_the_uncaptured_producer_that_fails_not_a_node_after_it():
    done = subprocess.run(["node", "-e", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert (found["layer"], found["op"]) == ("B", "MatMul"), found
    assert found["message"].startswith("BatchMatMul for non non-float32") and found["executed"][:2] == ["A", "B"]
