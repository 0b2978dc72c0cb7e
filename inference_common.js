// What inference_in_node.js and inference_in_browser.html share: choose a backend (and
// prove it is the one in use), run a tfjs Layers model, and capture every layer's weights
// and output in the kit's capture format (tfjs_parity/capture.py documents it; the two
// sides must encode numbers the same way).
(function (root, factory) {
  if (typeof module === 'object' && module.exports) {
    module.exports = factory();
  } else {
    root.inferenceCommon = factory();
  }
}(typeof self !== 'undefined' ? self : this, function () {
  'use strict';

  const SCHEMA = 1;

  // JSON has no NaN, infinities or -0: write them as strings, as capture.py does.
  function encodeNumber(v) {
    if (Number.isNaN(v)) return 'NaN';
    if (v === Infinity) return 'Infinity';
    if (v === -Infinity) return '-Infinity';
    if (Object.is(v, -0)) return '-0';
    return v;
  }

  const SPECIAL = {'NaN': NaN, 'Infinity': Infinity, '-Infinity': -Infinity, '-0': -0};

  function encodeTensor(tensor) {
    return {dtype: 'float32', shape: tensor.shape, data: Array.from(tensor.dataSync(), encodeNumber)};
  }

  function decodeTensor(tf, obj) {
    const values = obj.data.map((v) => (typeof v === 'string' ? SPECIAL[v] : v));
    return tf.tensor(values, obj.shape, 'float32');
  }

  // A requested backend that silently fell back to another is an error, not a result.
  async function useBackend(tf, name) {
    let ok;
    try {
      ok = await tf.setBackend(name);
    } catch (error) {
      throw new Error(`backend ${name} did not initialise: ${error.message || error}`);
    }
    await tf.ready();
    if (!ok || tf.getBackend() !== name) {
      throw new Error(`backend ${name} did not initialise (tfjs is using ${tf.getBackend()}); ` +
                      `registered backends: ${Object.keys(tf.engine().registryFactory).join(', ')}`);
    }
  }

  // The study's input when none was saved beside the model: a batch of one vector of ones.
  function onesInput(tf, model) {
    const shape = model.inputs[0].shape.map((d, i) => (i === 0 ? 1 : d));
    return tf.ones(shape, 'float32');
  }

  // Run `model` on `input` and capture, per layer in order, <name>_weights and <name>_output.
  function captureModel(tf, model, input, metadata) {
    const layers = model.layers.filter((layer) => layer.getClassName() !== 'InputLayer');
    const outputs = layers.map((layer) => (Array.isArray(layer.output) ? layer.output : [layer.output]));
    // A model whose outputs are every layer's outputs: one predict, as the study did.
    const probe = tf.model({inputs: model.inputs, outputs: outputs.flat()});
    let predictions = probe.predict(input);
    if (!Array.isArray(predictions)) predictions = [predictions];
    const capture = {metadata: Object.assign({schema: SCHEMA, input: encodeTensor(input)}, metadata)};
    let position = 0;
    layers.forEach((layer, i) => {
      capture[`${layer.name}_weights`] = layer.getWeights().map(encodeTensor);
      capture[`${layer.name}_output`] = predictions.slice(position, position + outputs[i].length).map(encodeTensor);
      position += outputs[i].length;
    });
    tf.dispose(predictions);
    return capture;
  }

  // The flags that decide precision, for the metadata (only those this backend knows).
  function precisionFlags(tf) {
    const names = ['WEBGL_VERSION', 'WEBGL_RENDER_FLOAT32_ENABLED', 'WEBGL_RENDER_FLOAT32_CAPABLE',
                   'WEBGL_PACK', 'WEBGL_FORCE_F16_TEXTURES', 'WEBGL_USE_SHAPES_UNIFORMS'];
    const flags = {};
    for (const name of names) {
      try {
        flags[name] = tf.env().get(name);
      } catch (error) {
        // not registered in this environment (e.g. WebGL flags under Node)
      }
    }
    return flags;
  }

  return {encodeTensor, decodeTensor, useBackend, onesInput, captureModel, precisionFlags};
}));
