// The graph-model kind's JS half (tfjs_parity/kinds/graph_model.py is its Python half): load
// a tfjs graph model and execute the probe plan with model.execute(inputs, nodeNames), so one
// execution yields every point (each point a node, its outputs `<node>:<k>`). Shared by Node
// (require) and the page (a script tag: window.kitKinds.graph).
(function (root, factory) {
  if (typeof module === 'object' && module.exports) {
    module.exports = factory();
  } else {
    (root.kitKinds = root.kitKinds || {}).graph = factory();
  }
}(typeof self !== 'undefined' ? self : this, function () {
  'use strict';

  function load(tf, url, options) {
    return tf.loadGraphModel(url, options);
  }

  // The graph's inputs by node name (what the plan names them), as model.execute takes them.
  function inputNamesOf(model) {
    return model.inputs.map((input) => input.name.split(':')[0]);
  }

  function feedMap(names, feed) {
    const map = {};
    names.forEach((name, i) => { map[name] = feed[i]; });
    return map;
  }

  function asList(result) {
    return Array.isArray(result) ? result : [result];
  }

  // model.execute, or model.executeAsync once tfjs says the graph needs it (control flow: a
  // Merge, Switch or Enter is a dynamic op); the caller awaits either.
  function executor(model) {
    let needsAsync = false;
    return async (map, outputs) => {
      if (!needsAsync) {
        try {
          return asList(model.execute(map, outputs));
        } catch (error) {
          if (!/executeAsync/.test(String(error && error.message))) throw error;
          needsAsync = true;
        }
      }
      return asList(await model.executeAsync(map, outputs));
    };
  }

  // The model as a user calls it: its own outputs.
  function shipped(tf, model) {
    const inputNames = inputNamesOf(model);
    const execute = executor(model);
    return {
      inputNames,
      predict: (feed) => execute(feedMap(inputNames, feed)),
    };
  }

  // Every point's outputs, in plan order, from one execution; a point's weights are the
  // graph's constants it reads (model.weights: the constants by node name).
  function probe(tf, model, plan) {
    const inputNames = plan.inputs.map((input) => input.name);
    const known = new Set(inputNamesOf(model));
    for (const name of inputNames) {
      if (!known.has(name)) {
        throw new Error(`the probe plan names input ${name}, which the graph model does not have; ` +
                        'run create_keras_model.py again');
      }
    }
    const outputs = [];
    for (const point of plan.points) {
      for (let k = 0; k < point.outputs; k++) outputs.push(`${point.layer}:${k}`);
    }
    const weights = model.weights;
    const execute = executor(model);
    return {
      inputNames,
      predict: (feed) => execute(feedMap(inputNames, feed), outputs),
      weightsOf: (point) => point.constants.map((name) => {
        if (!(name in weights)) throw new Error(`the graph model has no constant ${name}; run create_keras_model.py again`);
        return weights[name][0];
      }),
    };
  }

  // The first point (in plan order) whose node fails alone, each executed by itself, and its
  // error: {point, message}, where a failed run failed when tfjs did not say; null if none
  // does within `budgetMs` (a slow backend: the search stops). After a WASM trap the module's
  // memory is no longer sound: run it in a fresh process or page (locate mode).
  async function locate(tf, model, plan, feed, budgetMs = 60000) {
    const execute = executor(model);
    const map = feedMap(plan.inputs.map((input) => input.name), feed);
    const start = performance.now();
    for (const point of plan.points) {
      if (performance.now() - start > budgetMs) return null;
      let outputs;
      try {
        outputs = await execute(map, [`${point.layer}:0`]);
        for (const tensor of outputs) {
          const got = (await tensor.data()).length;
          if (got !== tensor.size) return {point, message: `tfjs gave ${got} values for an output of shape [${tensor.shape.map(String).join(', ')}]`};
        }
      } catch (error) {
        const message = String((error && error.message) || error);
        return (await uncaptured(tf, model, execute, map, plan, point, message)) || {point, message};
      }
      try {  // a kernel that wrote beyond its memory (a WASM trap) can fail only here
        tf.dispose(outputs);
      } catch (error) {
        return {point, message: String((error && error.message) || error)};
      }
    }
    return null;
  }

  // The node that failed when `point` did, if it is one the plan does not capture: executing
  // a point executes every node it reads, and only float32 nodes are points, so an int32
  // MatMul before a float Gather fails as the Gather. Those nodes, producers first (up to
  // `most`), each executed alone; one failing with the same message is the one named.
  async function uncaptured(tf, model, execute, map, plan, point, message, most = 200) {
    const nodes = model.executor && model.executor.graph && model.executor.graph.nodes;
    if (!nodes || !nodes[point.layer]) return null;
    const captured = new Set(plan.points.map((p) => p.layer));
    const order = [];  // producers first: a node after every node it reads (a depth-first post-order)
    const done = new Set();
    const expanding = new Set();
    const stack = [[nodes[point.layer], false]];
    while (stack.length && order.length < most) {
      const [node, expanded] = stack.pop();
      if (expanded) {
        done.add(node.name);
        if (node.name !== point.layer) order.push(node);
        continue;
      }
      if (done.has(node.name) || expanding.has(node.name)) continue;
      expanding.add(node.name);
      stack.push([node, true]);
      for (const input of node.inputs || []) {
        if (done.has(input.name) || captured.has(input.name) || input.op === 'Const' || input.op === 'Placeholder') continue;
        stack.push([input, false]);
      }
    }
    for (const node of order) {
      try {
        tf.dispose(await execute(map, [`${node.name}:0`]));
      } catch (error) {
        if (String((error && error.message) || error) === message) {
          return {point: {layer: node.name, class_name: node.op}, message};
        }
      }
    }
    return null;
  }

  return {name: 'graph', unit: 'node', load, shipped, probe, locate};
}));
