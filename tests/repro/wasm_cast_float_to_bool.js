// Reproducer: tfjs 4.22's wasm backend casts float32 to bool by copying the values into a
// Uint8Array (tfjs-backend-wasm/src/kernels/Cast.ts: `outVals.set(inVals)`), so a value is
// truncated to an integer and wrapped modulo 256 instead of being compared with 0: 0.5 and
// -0.25 become false, 256 becomes false, 1.5 becomes true. TensorFlow (and tfjs's cpu backend)
// give `x != 0`. This is what the kit judges a mismatch on handtrack's SSD (handtrackjs 0.1.5):
// `Select(Cast(area, bool), scores, -1)` keeps no score on wasm (every box area is below 1),
// and its non-max suppression then keeps 8 boxes where every other runtime keeps 100.
// No converter needed: tf.cast is called directly.
//
// Run from the repository root:  node tests/repro/wasm_cast_float_to_bool.js
// Output (stdout): one JSON object per line {backend, values, expected, wrong} where `wrong`
// lists the inputs whose bool differs from `x != 0`, computed here in plain JavaScript.

const tf = require('@tensorflow/tfjs-node');  // registers `tensorflow`; brings `cpu`
require('@tensorflow/tfjs-backend-wasm');      // registers `wasm`

const inputs = [0, 0.5, -0.25, 0.0036218, 1, 1.5, -3, 256, 512.5, 1e-30];
const expected = inputs.map((x) => x !== 0);

(async () => {
  for (const backend of ['tensorflow', 'cpu', 'wasm']) {
    await tf.setBackend(backend);
    const values = Array.from(await tf.cast(tf.tensor1d(inputs, 'float32'), 'bool').data(), Boolean);
    const wrong = inputs.filter((x, i) => values[i] !== expected[i]);
    console.log(JSON.stringify({backend, values, expected, wrong}));
  }
})();
