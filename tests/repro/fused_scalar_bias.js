// Reproducer: tfjs 4.22's wasm backend refuses a rank-0 (scalar) bias in fused ops.
//
// TensorFlow's graph optimizer (grappler, run by tensorflowjs_converter) can fold
// relu6(conv(x) + 3.0) -- MobileNetV3's hard-sigmoid -- into a _FusedConv2D whose bias
// is a scalar constant. This script needs no converter: it calls tf.fused.conv2d,
// tf.fused.depthwiseConv2d and tf.fused.matMul directly with bias = tf.scalar(3) (and,
// as a control, a rank-1 bias) and activation 'relu6' on the tensorflow (tfjs-node),
// cpu and wasm backends, and compares each with the unfused reference
// relu6(op(x, w) + bias) computed on the cpu backend.
//
// Run from the repository root:  node tests/repro/fused_scalar_bias.js
// Output (stdout): one JSON object per line
//   {op, bias_rank, backend, ok, error, max_abs_diff}
// ok=false with `error` holding the thrown message when the backend refuses the op.
// (TensorFlow's native logging goes to stderr.)

const tf = require('@tensorflow/tfjs-node');  // registers `tensorflow`; brings `cpu`
require('@tensorflow/tfjs-backend-wasm');      // registers `wasm` (binaries found next to the package)

const BACKENDS = ['tensorflow', 'cpu', 'wasm'];

// Deterministic, mixed-sign values: conv + 3 lands both below 0 and above 6, so relu6 clips both ways.
const values = (n, scale) => Float32Array.from({length: n}, (_, i) => scale * Math.sin(1.7 * i + 0.3));

// Each case: build inputs as plain arrays (so they can be created on any backend), the fused call,
// and the unfused reference.
const CASES = {
  conv2d: {
    x: [values(1 * 5 * 5 * 2, 2), [1, 5, 5, 2]],
    w: [values(3 * 3 * 2 * 3, 1), [3, 3, 2, 3]],
    biasRank1: [Float32Array.from([3, -1, 0.5]), [3]],
    fused: (x, w, bias) => tf.fused.conv2d({x, filter: w, strides: 1, pad: 'same', bias, activation: 'relu6'}),
    plain: (x, w) => tf.conv2d(x, w, 1, 'same'),
  },
  depthwiseConv2d: {
    x: [values(1 * 5 * 5 * 2, 2), [1, 5, 5, 2]],
    w: [values(3 * 3 * 2 * 1, 1), [3, 3, 2, 1]],
    biasRank1: [Float32Array.from([3, -1]), [2]],
    fused: (x, w, bias) => tf.fused.depthwiseConv2d({x, filter: w, strides: 1, pad: 'same', bias, activation: 'relu6'}),
    plain: (x, w) => tf.depthwiseConv2d(x, w, 1, 'same'),
  },
  matMul: {
    x: [values(3 * 4, 2), [3, 4]],
    w: [values(4 * 5, 1), [4, 5]],
    biasRank1: [Float32Array.from([3, -1, 0.5, 2, 7]), [5]],
    fused: (a, b, bias) => tf.fused.matMul({a, b, bias, activation: 'relu6'}),
    plain: (a, b) => tf.matMul(a, b),
  },
};

const makeBias = (c, rank) => (rank === 0 ? tf.scalar(3) : tf.tensor(...c.biasRank1));

async function run(backend, fn) {
  if (!(await tf.setBackend(backend))) throw new Error(`backend ${backend} unavailable`);
  await tf.ready();
  if (tf.getBackend() !== backend) throw new Error(`asked for ${backend}, got ${tf.getBackend()}`);
  return tf.tidy(fn).data();
}

async function main() {
  for (const [op, c] of Object.entries(CASES)) {
    for (const rank of [0, 1]) {
      const reference = await run('cpu', () =>
        tf.relu6(tf.add(c.plain(tf.tensor(...c.x), tf.tensor(...c.w)), makeBias(c, rank))));
      for (const backend of BACKENDS) {
        const row = {op, bias_rank: rank, backend, ok: false, error: null, max_abs_diff: null};
        try {
          const got = await run(backend, () => c.fused(tf.tensor(...c.x), tf.tensor(...c.w), makeBias(c, rank)));
          if (got.length !== reference.length) throw new Error(`size ${got.length}, expected ${reference.length}`);
          row.max_abs_diff = got.reduce((m, v, i) => Math.max(m, Math.abs(v - reference[i])), 0);
          row.ok = true;
        } catch (error) {
          row.error = String(error.message || error);
        }
        console.log(JSON.stringify(row));
      }
    }
  }
}

main().catch((error) => { console.error(error); process.exit(1); });
