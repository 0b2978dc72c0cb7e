// What inference_in_node.js and inference_in_browser.html share: set tfjs flags, choose a
// backend (and prove it is the one in use and that it computes), run a tfjs Layers model,
// time it, and capture every point of the probe plan (written by Python beside the model:
// tfjs_parity/plan.py) in the kit's capture format. The format's names and numbers come from
// the wire contract, tfjs_parity/wire.json (docs/captures.md), which Python reads too: Node
// gets this module made with it; the page calls makeInferenceCommon(wire) with the
// tfjs_parity/wire.json the kit's server hands it beside the page.
// The kinds of model (tfjs_parity/kinds/: how a model is loaded and the plan executed) come
// the same way: required here under Node, window.kitKinds (their script tags) in the page.
(function (root, factory) {
  if (typeof module === 'object' && module.exports) {
    module.exports = factory(require('./tfjs_parity/wire.json'), {layers: require('./tfjs_parity/kinds/layers_model.js'),
                                                           graph: require('./tfjs_parity/kinds/graph_model.js')});
  } else {
    root.makeInferenceCommon = (wire) => factory(wire, root.kitKinds);
  }
}(typeof self !== 'undefined' ? self : this, function (wire, kinds) {
  'use strict';

  const SCHEMA = wire.schema;
  const [NAN, INFINITY, MINUS_INFINITY, MINUS_ZERO] = wire.special_numbers;
  const WEIGHTS_SUFFIX = wire.key_suffixes.weights;
  const OUTPUT_SUFFIX = wire.key_suffixes.output;

  // Flags that decide precision; their values go into every capture's metadata.
  const PRECISION_FLAGS = ['WEBGL_VERSION', 'WEBGL_RENDER_FLOAT32_CAPABLE', 'WEBGL_RENDER_FLOAT32_ENABLED',
                           'WEBGL_FORCE_F16_TEXTURES', 'WEBGL_PACK', 'WEBGL_DOWNLOAD_FLOAT_ENABLED',
                           'WEBGL_MAX_TEXTURE_SIZE', 'WEBGL_MAX_TEXTURES_IN_SHADER',
                           'WEBGPU_USE_LOW_POWER_GPU', 'WASM_HAS_SIMD_SUPPORT', 'WASM_HAS_MULTITHREAD_SUPPORT'];

  // JSON has no NaN, infinities or -0: write them as the wire's strings, as capture.py does.
  function encodeNumber(v) {
    if (Number.isNaN(v)) return NAN;
    if (v === Infinity) return INFINITY;
    if (v === -Infinity) return MINUS_INFINITY;
    if (Object.is(v, -0)) return MINUS_ZERO;
    return v;
  }

  const SPECIAL = {[NAN]: NaN, [INFINITY]: Infinity, [MINUS_INFINITY]: -Infinity, [MINUS_ZERO]: -0};

  // A tensor's values as its declared dtype holds them. tfjs 4.22's cpu and WebGL backends
  // implement Cast (int32 or bool -> float32) by sharing the source's data, so `data()` of a
  // float32 tensor can be an Int32Array or a Uint8Array: its bytes read as float32 are garbage
  // (9 -> 1.26e-44). Converted by value, never by bytes.
  const TYPED = {float32: Float32Array, int32: Int32Array};

  function asDeclared(tensor, data) {
    const Type = TYPED[tensor.dtype] || (tensor.dtype === 'bool' ? Int32Array : null);
    if (Type === null || data instanceof Type) return data;
    return Type.from(data);
  }

  // `point`: the plan's point the tensor is an output of, named when tfjs hands back fewer
  // values than the tensor's shape holds (tfjs 4.22's cpu Cumsum along axis -1 gives none).
  async function valuesOf(tensor, point) {
    const data = asDeclared(tensor, await tensor.data());
    if (data.length !== tensor.size) {
      const shape = `[${tensor.shape.map(String).join(', ')}]`;
      const error = new Error(Number.isInteger(tensor.size)
        ? `tfjs gave ${data.length} values for an output of shape ${shape} (${tensor.size} values)`
        : `tfjs gave an output of shape ${shape}, which is no shape, holding ${data.length} values`);
      error.point = point;
      throw error;
    }
    return data;
  }

  // The plan's point of each output tensor, in the probe's order.
  function owners(plan) {
    const list = [];
    for (const point of plan.points) for (let k = 0; k < point.outputs; k += 1) list.push(point);
    return list;
  }

  // A run that failed, with where: the point tfjs failed at (error.point), else the one the
  // kind finds by executing the plan point by point (a graph model: node by node), when it can.
  async function located(tf, kind, model, plan, feed, error) {
    const message = String((error && error.message) || error);
    let point = error && error.point;
    if (!point && kind.locate && feed && !/memory access|RuntimeError|unreachable/.test(message)) {
      try {  // (after a WASM trap the module's memory is not sound: the runner asks a fresh run, locate mode)
        const found = await kind.locate(tf, model, plan, feed);
        point = found && found.point;
      } catch (ignored) {
        point = null;
      }
    }
    return failedAt(kind, point, message);
  }

  function failedAt(kind, point, message) {
    const unit = kind.unit || 'layer';
    return new Error(point ? `failed at ${unit} ${point.layer} (${point.class_name}): ${message}` : `failed: ${message}`);
  }

  async function encodeTensor(tensor) {
    if (tensor.dtype === 'int32' || tensor.dtype === 'bool') {  // a bool as 0 and 1 (the plan says it is one)
      return {dtype: 'int32', shape: tensor.shape, data: Array.from(await valuesOf(tensor))};
    }
    return {dtype: 'float32', shape: tensor.shape, data: Array.from(await valuesOf(tensor), encodeNumber)};
  }

  function decodeTensor(tf, obj, as) {
    const dtype = as === 'bool' ? 'bool' : obj.dtype === 'int32' ? 'int32' : 'float32';
    const values = obj.data.map((v) => (typeof v === 'string' ? SPECIAL[v] : v));
    return tf.tensor(values, obj.shape, dtype);
  }

  // The inputs file: {input name: tensor}; from before named inputs, one bare tensor.
  function decodeInputs(tf, document, plan) {
    const fed = {};  // what each input is fed as: a bool input's file holds 0 and 1
    for (const spec of plan.inputs) fed[spec.name] = spec.dtype;
    if (document && Array.isArray(document.shape)) {
      return {[plan.inputs[0].name]: decodeTensor(tf, document, fed[plan.inputs[0].name])};
    }
    const inputs = {};
    for (const [name, obj] of Object.entries(document)) inputs[name] = decodeTensor(tf, obj, fed[name]);
    return inputs;
  }

  // Set tfjs environment flags, refusing names tfjs does not know and values of the wrong type.
  async function applyFlags(tf, flags) {
    const registry = tf.env().flagRegistry;
    for (const [name, value] of Object.entries(flags)) {
      if (!(name in registry)) {
        throw new Error(`unknown tfjs flag ${name}; valid flags: ${Object.keys(registry).sort().join(', ')}`);
      }
      const current = await tf.env().getAsync(name);
      if (typeof value !== typeof current) {
        throw new Error(`tfjs flag ${name} takes a ${typeof current} (now ${current}), not ${JSON.stringify(value)}`);
      }
      tf.env().set(name, value);
    }
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

  // A backend can initialise and still compute nothing (WebGPU without a working adapter
  // returns zeros): check one small product whose answer is exact in any precision.
  async function selfTest(tf, name) {
    const expected = [20, 23, 44, 51];
    const result = tf.tidy(() => tf.add(tf.matMul(tf.tensor2d([[1, 2], [3, 4]]), tf.tensor2d([[5, 6], [7, 8]])), 1));
    const got = Array.from(await result.data());
    result.dispose();
    if (got.some((v, i) => v !== expected[i])) {
      throw new Error(`backend ${name} failed its self-test: [[1,2],[3,4]] x [[5,6],[7,8]] + 1 gave ` +
                      `[${got.join(', ')}], expected [${expected.join(', ')}]`);
    }
  }

  // The model's inputs in the probe's order, from {name: tensor}.
  function feedOf(probe, inputs) {
    return probe.inputNames.map((name) => {
      if (!(name in inputs)) throw new Error(`${wire.files.inputs} holds no input ${name} (it has ${Object.keys(inputs).join(', ')})`);
      return inputs[name];
    });
  }

  // The first prediction apart (shader compilation, weight upload), then up to `repeat`
  // predictions, each until its results are read back, while the next one fits in `budgetMs`
  // by the last one's time (at least one): a backend that takes 10 s a prediction gets its
  // cold figure and one warm one, not a second 10 s past the budget; the count is in runs_ms.
  async function timePredictions(tf, predictor, feed, repeat, budgetMs) {
    const once = async () => {
      const start = performance.now();
      const predictions = await predictor.predict(feed);  // a graph with control flow resolves later (executeAsync)
      await Promise.all(predictions.map((t) => t.data()));
      tf.dispose(predictions);
      return performance.now() - start;
    };
    const warmupMs = await once();
    const runsMs = [];
    let spent = 0;
    while (runsMs.length < repeat && (runsMs.length === 0 || spent + runsMs[runsMs.length - 1] <= budgetMs)) {
      runsMs.push(await once());
      spent += runsMs[runsMs.length - 1];
    }
    const sorted = runsMs.slice().sort((a, b) => a - b);
    const median = sorted.length % 2 ? sorted[(sorted.length - 1) / 2]
      : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
    return {warmup_ms: warmupMs, runs_ms: runsMs, median_ms: median, min_ms: sorted[0],
            max_ms: sorted[sorted.length - 1], repeat, budget_s: budgetMs / 1000};
  }

  // The probe run `runs` times on the same input in this session: {runs, identical, first_difference
  // (the first point whose bits differ from the first run's, or null)}. A backend that gives
  // another answer each time is a bug in itself. `perturb` (tests only, TFJS_PARITY_UNREPEATABLE
  // under Node) makes the second run differ, as a backend that is not repeatable would.
  async function repeatCheck(tf, probe, feed, first, plan, runs, perturb) {
    const firstBits = [];
    const owner = owners(plan);
    for (const [i, tensor] of first.entries()) {
      firstBits.push(new Uint32Array((await valuesOf(tensor, owner[i])).slice().buffer));
    }
    let firstDifference = null;
    for (let run = 1; run < runs && firstDifference === null; run += 1) {
      const again = await probe.predict(feed);
      try {
        let position = 0;
        for (const point of plan.points) {
          for (let i = position; i < position + point.outputs && firstDifference === null; i += 1) {
            const values = (await valuesOf(again[i], point)).slice();
            if (perturb && run === 1 && i === 0 && values.length) values[0] = values[0] + 1;
            const bits = new Uint32Array(values.buffer);
            if (bits.length !== firstBits[i].length || bits.some((b, k) => b !== firstBits[i][k])) {
              firstDifference = point.name;
            }
          }
          position += point.outputs;
        }
      } finally {
        tf.dispose(again);
      }
    }
    return {runs, identical: firstDifference === null, first_difference: firstDifference};
  }

  // What tf.memory() says once the model has run: bytes and tensors held, and on WebGL and
  // WebGPU the GPU's bytes (numbers only; `unreliable` when tfjs says the count may be off).
  function memoryOf(tf) {
    const memory = tf.memory();
    const numbers = {};
    for (const [name, value] of Object.entries(memory)) {
      if (typeof value === 'number' || typeof value === 'boolean') numbers[name] = value;
    }
    return numbers;
  }

  // Only this backend's own flags: evaluating another's can have side effects (the WebGL
  // ones try to create a canvas, which fails loudly under Node).
  async function precisionFlagValues(tf, backend) {
    const prefix = wire.flag_prefixes[backend];
    const values = {};
    for (const name of PRECISION_FLAGS) {
      if (prefix && name.startsWith(prefix) && name in tf.env().flagRegistry) {
        try {
          values[name] = await tf.env().getAsync(name);
        } catch (error) {
          values[name] = `(cannot evaluate here: ${error.message || error})`;
        }
      }
    }
    return values;
  }

  // The whole capture: flags, backend, self-test, model, inputs, timing, metadata, then
  // every point's tensors handed to `options.sink`, which writes or uploads them.
  //   options: {backend, flags, repeat, budgetSeconds, ready() (optional: resolves once the
  //             model may be read), loadPlan(), loadModel(kind), loadInputs(plan), metadata,
  //             describe() (more metadata, once the backend runs), sink(metadata, entries, progress),
  //             progress(done, total)}
  async function runCapture(tf, options) {
    await applyFlags(tf, options.flags || {});
    await useBackend(tf, options.backend);
    await selfTest(tf, options.backend);
    // A run started beside step 1 (make run) waits here, started up, until the model is there.
    if (options.ready) await options.ready();
    const plan = await options.loadPlan();
    const kind = kinds[plan.kind || 'layers'];
    if (!kind) throw new Error(`the probe plan is of a model kind ${plan.kind} this kit has no script for`);
    const loadStart = performance.now();
    const model = await options.loadModel(kind);
    const loadMs = performance.now() - loadStart;
    const inputs = await options.loadInputs(plan);
    const probe = kind.probe(tf, model, plan);
    const feed = feedOf(probe, inputs);
    if (options.locate) {  // locate mode: a fresh run only finds the point a failed run failed at
      const found = kind.locate ? await kind.locate(tf, model, plan, feed) : null;
      throw found ? failedAt(kind, found.point, found.message)
        : new Error('failed: no point fails when executed alone (the failure needs the whole run)');
    }
    const budgetMs = 1000 * (options.budgetSeconds || wire.defaults.budget);
    let timing;
    let memory;
    let predictions;
    let repeat;
    const entries = [];  // [{key, tensors}] in plan order
    try {  // a failure here is the model's on this backend: said with the point it failed at
      // Timed first, as shipped: the model's own prediction (its outputs only, as a user calls
      // it), cold (load and first prediction) apart from warm, before the probe runs anything.
      const shipped = kind.shipped(tf, model);
      timing = await timePredictions(tf, shipped, feedOf(shipped, inputs), options.repeat || wire.defaults.repeat, budgetMs);
      Object.assign(timing, {of: 'the model as shipped: its own prediction, outputs only', load_ms: loadMs,
                             cold_ms: loadMs + timing.warmup_ms});
      memory = memoryOf(tf);
      predictions = await probe.predict(feed);
      let position = 0;
      for (const point of plan.points) {
        if (point.weights) entries.push({key: point.name + WEIGHTS_SUFFIX, tensors: probe.weightsOf(point)});
        entries.push({key: point.name + OUTPUT_SUFFIX, tensors: predictions.slice(position, position + point.outputs)});
        position += point.outputs;
      }
      repeat = await repeatCheck(tf, probe, feed, predictions, plan, options.repeatCheck || wire.defaults.repeat_check, options.perturbRepeat);
    } catch (error) {
      if (predictions) tf.dispose(predictions);
      throw await located(tf, kind, model, plan, feed, error);
    }
    const planted = await plantFault(tf, plan, entries, options.plantedFault);
    const encodedInputs = {};
    for (const [name, tensor] of Object.entries(inputs)) encodedInputs[name] = await encodeTensor(tensor);
    const metadata = Object.assign({
      schema: SCHEMA,
      model_id: plan.model_id,  // which converted model this is: a stale capture is named, not compared
      backend: tf.getBackend(),
      versions: Object.assign({}, tf.version),
      flags: options.flags || {},
      precision_flags: await precisionFlagValues(tf, options.backend),
      evaluated_flags: Object.assign({}, tf.env().getFlags()),
      inputs: encodedInputs,
      timing,
      memory,
      repeat,
      created: new Date().toISOString(),
    }, options.metadata, options.describe ? await options.describe() : {});
    try {
      return await options.sink(metadata, entries, options.progress || (() => {}));
    } finally {
      tf.dispose(predictions);
      tf.dispose(planted);
    }
  }

  // Tests only (TFJS_PARITY_PLANTED_FAULT=FLAG=VALUE under Node): a wrong answer that only one
  // value of one flag gives, as a kernel bug behind a flag would: on the backend FLAG belongs to
  // (by its prefix), when FLAG evaluates to VALUE,
  // the first point with weights is off by 1 everywhere (consistently: the repeat check ran
  // before). What `compare_outputs.py --explain` must trace to that flag. Returns the tensors
  // it made, or [].
  async function plantFault(tf, plan, entries, fault) {
    if (!fault) return [];
    const [flag, value] = [fault.slice(0, fault.indexOf('=')), fault.slice(fault.indexOf('=') + 1)];
    const prefix = wire.flag_prefixes[tf.getBackend()];  // a flag of this backend's, as a kernel's would be
    if (!prefix || !flag.startsWith(prefix) || !(flag in tf.env().flagRegistry) ||
        String(await tf.env().getAsync(flag)) !== value) return [];
    const point = plan.points.find((p) => p.weights);
    const entry = point && entries.find((e) => e.key === point.name + OUTPUT_SUFFIX);
    if (!entry) return [];
    entry.tensors = [tf.add(entry.tensors[0], 1), ...entry.tensors.slice(1)];
    return [entry.tensors[0]];
  }

  // safetensors (docs/captures.md): the header for `entries`, from shapes and dtypes alone,
  // and each tensor's bytes, one at a time, so no capture is ever one big string. Typed
  // arrays are little-endian on every platform tfjs runs on. tfjs holds float32 and int32.
  const SAFETENSORS_DTYPES = {float32: wire.dtypes.float32, int32: wire.dtypes.int32};
  const ALIGNMENT = wire.safetensors.alignment;

  function safetensorsHeader(metadata, entries) {
    const header = {};
    let offset = 0;
    for (const {key, tensors} of entries) {
      tensors.forEach((tensor, i) => {
        if (!(tensor.dtype in SAFETENSORS_DTYPES)) throw new Error(`${key}[${i}] has dtype ${tensor.dtype}`);
        const size = tensor.size * 4;
        header[`${key}/${i}`] = {dtype: SAFETENSORS_DTYPES[tensor.dtype], shape: tensor.shape,
                                 data_offsets: [offset, offset + size]};
        offset += size;
      });
    }
    header.__metadata__ = {[wire.safetensors.metadata_key]:
      JSON.stringify({metadata, keys: entries.map((e) => [e.key, e.tensors.length])})};
    let json = JSON.stringify(header);
    json += ' '.repeat((ALIGNMENT - (new TextEncoder().encode(json).length % ALIGNMENT)) % ALIGNMENT);
    const body = new TextEncoder().encode(json);
    const lengthBytes = wire.safetensors.length_bytes;
    const bytes = new Uint8Array(lengthBytes + body.length);
    new DataView(bytes.buffer).setBigUint64(0, BigInt(body.length), true);
    bytes.set(body, lengthBytes);
    return {bytes, dataBytes: offset};
  }

  // Hand each tensor's bytes to `write` in header order; report progress per key. Up to
  // READ_AHEAD tensors (READ_AHEAD_BYTES at most, but always one) are being read at once: on a
  // GPU backend, read-backs one after another wait for each other.
  const READ_AHEAD = wire.read_back.tensors;
  const READ_AHEAD_BYTES = wire.read_back.bytes;

  async function eachTensorBytes(entries, write, progress) {
    // every tensor in header order, with the number of keys complete once it is written
    const order = [];
    entries.forEach(({tensors}, key) => tensors.forEach((tensor, i) => {
      order.push({tensor, bytes: tensor.size * 4, keysDone: i === tensors.length - 1 ? key + 1 : 0});
    }));
    const reads = [];  // started, not yet written, in order
    let next = 0;
    let reading = 0;
    let reported = 0;
    while (next < order.length || reads.length) {
      while (next < order.length && (reads.length === 0 ||
             (reads.length < READ_AHEAD && reading + order[next].bytes <= READ_AHEAD_BYTES))) {
        const item = order[next++];
        const data = valuesOf(item.tensor);
        data.catch(() => {});  // a failure is raised where it is awaited, in order, not as "unhandled"
        reads.push(Object.assign({data}, item));
        reading += item.bytes;
      }
      const item = reads.shift();
      const data = await item.data;
      reading -= item.bytes;
      await write(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      if (item.keysDone) progress(reported = item.keysDone, entries.length);
    }
    if (reported < entries.length) progress(entries.length, entries.length);  // keys without tensors at the end
  }

  // The capture as one JSON object (the study's format), for a page's download link.
  async function jsonCapture(metadata, entries) {
    const capture = {metadata};
    for (const {key, tensors} of entries) capture[key] = await Promise.all(tensors.map(encodeTensor));
    return capture;
  }

  return {wire, encodeTensor, decodeTensor, decodeInputs, applyFlags, useBackend, selfTest, runCapture,
          safetensorsHeader, eachTensorBytes, jsonCapture};
}));
