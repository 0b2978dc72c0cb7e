// Reproducer: tfjs 4.22's Cumsum along a negative axis (the axis a converted graph holds:
// TensorFlow's tf.math.cumsum(x, axis=-1)) is broken on every backend but tfjs-node's
// `tensorflow`: the cpu and wasm backends give an output whose shape is [undefined, 2, 3]
// for an input of shape [2, 3, 5] (no values at all), where axis 2 gives the right answer.
// No converter needed: tf.cumsum is called directly.
//
// Run from the repository root:  node tests/repro/cumsum_negative_axis.js
// Output (stdout): one JSON object per line {backend, axis, shape, values, max_abs_diff, error}
// against the running sum computed here in plain JavaScript (exact for these small integers).

const tf = require('@tensorflow/tfjs-node');  // registers `tensorflow`; brings `cpu`
require('@tensorflow/tfjs-backend-wasm');      // registers `wasm`

const shape = [2, 3, 5];
const data = Float32Array.from({length: 30}, (_, i) => (i % 7) - 3);
const expected = Float32Array.from(data, (_, i) => {
  let sum = 0;
  for (let k = i - (i % 5); k <= i; k += 1) sum += data[k];
  return sum;
});

(async () => {
  for (const backend of ['tensorflow', 'cpu', 'wasm']) {
    await tf.setBackend(backend);
    for (const axis of [2, -1]) {
      const row = {backend, axis};
      try {
        const result = tf.cumsum(tf.tensor(data, shape), axis);
        row.shape = result.shape.map(String);
        const values = await result.data();
        row.values = values.length;
        row.max_abs_diff = values.length === expected.length
          ? Math.max(...Array.from(values, (v, i) => Math.abs(v - expected[i]))) : null;
      } catch (error) {
        row.error = String(error.message || error);
      }
      console.log(JSON.stringify(row));
    }
  }
})();
