// The layers-model kind's JS half (tfjs_parity/kinds/layers_model.py is its Python half):
// load a tfjs Layers model and execute the probe plan on tfjs's own graph. Each point is the
// output tensors of one call (inbound node) of one layer, so a model whose outputs are all of
// them yields every point in one predict, as Keras does on the Python side. Shared by Node
// (require) and the page (a script tag: window.kitKinds.layers).
(function (root, factory) {
  if (typeof module === 'object' && module.exports) {
    module.exports = factory();
  } else {
    (root.kitKinds = root.kitKinds || {}).layers = factory();
  }
}(typeof self !== 'undefined' ? self : this, function () {
  'use strict';

  // `url`: file://... under Node, the page's URL of model.json in a browser; `options` are
  // tf.io's load options (the page's fetchFunc).
  function load(tf, url, options) {
    return tf.loadLayersModel(url, options);
  }

  // The model as a user calls it: {inputNames, predict(feed) -> [its own output tensors]}.
  function shipped(tf, model) {
    return {
      inputNames: model.inputNames,
      predict(feed) {
        const predictions = model.predict(feed.length === 1 ? feed[0] : feed);
        return Array.isArray(predictions) ? predictions : [predictions];
      },
    };
  }

  // {inputNames, predict(feed) -> [every point's output tensors, in plan order],
  //  weightsOf(point) -> [the point's weight tensors]}
  function probe(tf, model, plan) {
    const outputs = [];
    for (const point of plan.points) {
      let layer;
      try {
        layer = model.getLayer(point.layer);
      } catch (error) {
        throw new Error(`the probe plan names layer ${point.layer}, which the model does not have; ` +
                        'run create_keras_model.py again');
      }
      const node = layer.inboundNodes[point.node];
      if (!node || node.outputTensors.length !== point.outputs) {
        throw new Error(`layer ${point.layer}: call ${point.node} is not the one the probe plan describes ` +
                        `(${node ? node.outputTensors.length : 'no'} outputs, plan: ${point.outputs})`);
      }
      outputs.push(...node.outputTensors);
    }
    const probed = tf.model({inputs: model.inputs, outputs});
    return {
      inputNames: model.inputNames,
      predict(feed) {
        const predictions = probed.predict(feed.length === 1 ? feed[0] : feed);
        return Array.isArray(predictions) ? predictions : [predictions];
      },
      weightsOf: (point) => model.getLayer(point.layer).getWeights(),
    };
  }

  return {name: 'layers', load, shipped, probe};
}));
