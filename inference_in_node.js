#!/usr/bin/env node
// Step 2 of 4: run the converted model under Node with @tensorflow/tfjs-node and capture
// every point of the probe plan. Usually started by run_node.py; by hand:
//
//   node inference_in_node.js --model results/keras_converted/model.json \
//       --out capture.safetensors [--backend tensorflow] [--repeat 10] [--budget 10] [--wait]
//
// --wait: start up (tfjs-node, the backend, its self-test), then read the model only once a
// line arrives on stdin (run_node.py --wait-for-model: make run starts this beside step 1).
// --locate: capture nothing; find the point a failed run failed at, each executed alone, and
// say it as the error (run_node.py asks, when a run failed without saying where: a WASM trap).
//
// Writes a safetensors capture (tfjs_parity/capture.py documents it), one tensor at a time:
// a capture never passes through one big string. Prints `progress K/N` lines on stderr.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const common = require('./inference_common.js');

const USAGE = 'usage: node inference_in_node.js --model MODEL_JSON --out CAPTURE.safetensors ' +
  '[--backend tensorflow|cpu|wasm] [--flags JSON] [--metadata JSON] [--repeat N] [--budget SECONDS] ' +
  '[--repeat-check N] [--wait] [--locate]';
const BACKENDS = common.wire.backends.node;  // tfjs_parity/wire.json: Python's list too

function fail(message) {
  console.error(`error: ${message}`);
  process.exit(2);
}

process.on('unhandledRejection', (error) => fail(error && error.message ? error.message : String(error)));

function parseArgs(argv) {
  const args = {backend: 'tensorflow', flags: '{}', metadata: '{}', repeat: String(common.wire.defaults.repeat),
                budget: String(common.wire.defaults.budget), repeatCheck: String(common.wire.defaults.repeat_check)};
  const keys = {'--model': 'model', '--out': 'out', '--backend': 'backend', '--flags': 'flags',
                '--metadata': 'metadata', '--repeat': 'repeat', '--budget': 'budget', '--repeat-check': 'repeatCheck'};
  for (let i = 0; i < argv.length; i += 1) {
    const flag = argv[i];
    if (flag === '--help' || flag === '-h') {
      console.log(USAGE);
      process.exit(0);
    }
    if (flag === '--wait' || flag === '--locate') {
      args[flag.slice(2)] = true;
      continue;
    }
    if (!keys[flag]) fail(`unknown argument ${flag}\n${USAGE}`);
    if (i + 1 >= argv.length) fail(`${flag} needs a value\n${USAGE}`);
    args[keys[flag]] = argv[++i];
  }
  if (!args.model || !args.out) fail(`--model and --out are required\n${USAGE}`);
  if (!BACKENDS.includes(args.backend)) fail(`--backend ${args.backend} is not one of ${BACKENDS.join(', ')}`);
  for (const name of ['flags', 'metadata']) {
    try {
      args[name] = JSON.parse(args[name]);
    } catch (error) {
      fail(`--${name} must be a JSON object, e.g. '{"WEBGL_PACK": false}'`);
    }
  }
  args.repeatCheck = Number(args.repeatCheck);
  if (!Number.isInteger(args.repeatCheck) || args.repeatCheck < 1) fail('--repeat-check must be a whole number of at least 1');
  args.repeat = Number(args.repeat);
  if (!Number.isInteger(args.repeat) || args.repeat < 1) fail('--repeat must be a whole number of at least 1');
  args.budget = Number(args.budget);
  if (!(args.budget > 0)) fail('--budget must be a number of seconds above 0');
  return args;
}

// The capture as a safetensors file: header, then each tensor's bytes. `file` is a staging
// name of run_node.py's, read only after this process exits 0 (by hand: give a fresh name).
async function writeSafetensors(file, metadata, entries, progress) {
  const fd = fs.openSync(file, 'w');
  try {
    fs.writeSync(fd, common.safetensorsHeader(metadata, entries).bytes);
    await common.eachTensorBytes(entries, async (bytes) => { fs.writeSync(fd, bytes); }, progress);
  } finally {
    fs.closeSync(fd);
  }
}

// --wait: resolves once a line arrives on stdin; stdin ending first is an error.
function lineOnStdin() {
  return new Promise((resolve) => {
    let text = '';
    const onData = (chunk) => {
      text += chunk;
      if (!text.includes('\n')) return;
      process.stdin.removeListener('data', onData);
      process.stdin.removeListener('end', onEnd);
      process.stdin.destroy();  // nothing more to read: it must not keep Node running
      resolve();
    };
    const onEnd = () => fail('stdin ended before the line that says the model is ready (--wait)');
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', onData);
    process.stdin.on('end', onEnd);
  });
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const modelPath = path.resolve(args.model);
  const checkModel = () => {
    if (!fs.existsSync(modelPath)) fail(`${args.model} not found; run \`python create_keras_model.py\` first`);
  };
  if (!args.wait) checkModel();

  let tf;
  try {
    // tfjs-node registers the native `tensorflow` backend (and file:// model loading); the
    // tfjs it brings also has `cpu`, and the wasm package adds `wasm`.
    tf = require('@tensorflow/tfjs-node');
    require('@tensorflow/tfjs-backend-wasm');
  } catch (error) {
    fail(`cannot load @tensorflow/tfjs-node (${error.message.split('\n')[0]}); run \`make setup\``);
  }
  const binding = tf.findBackend('tensorflow').binding;
  const tensorflowVersion = binding ? binding.TF_Version : null;
  console.error(`tfjs ${tf.version.tfjs}, TensorFlow ${tensorflowVersion}, backend ${args.backend}`);

  const modelDir = path.dirname(modelPath);
  const readJson = (name, what) => {
    const file = path.join(modelDir, name);
    if (!fs.existsSync(file)) fail(`${file} not found (${what}); run \`python create_keras_model.py\` again`);
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  };
  await common.runCapture(tf, {
    backend: args.backend,
    flags: args.flags,
    repeat: args.repeat,
    repeatCheck: args.repeatCheck,
    perturbRepeat: process.env.TFJS_PARITY_UNREPEATABLE === '1',
    plantedFault: process.env.TFJS_PARITY_PLANTED_FAULT || '',
    budgetSeconds: args.budget,
    locate: args.locate,
    ready: args.wait ? async () => { await lineOnStdin(); checkModel(); } : null,
    loadModel: (kind) => kind.load(tf, `file://${modelPath}`),
    loadPlan: async () => readJson(common.wire.files.plan, 'what to capture'),
    loadInputs: async (plan) => common.decodeInputs(tf, readJson(common.wire.files.inputs, 'the inputs'), plan),
    metadata: Object.assign({
      runtime: 'node',
      versions: Object.assign({node: process.version, tensorflow: tensorflowVersion}, tf.version),
      environment: {TF_ENABLE_ONEDNN_OPTS: process.env.TF_ENABLE_ONEDNN_OPTS || '(unset: oneDNN on)'},
      platform: `${os.type()} ${os.arch()}`,
      cpu: os.cpus()[0].model,
    }, args.metadata),
    progress: (done, total) => console.error(`progress ${done}/${total}`),
    sink: (metadata, entries, progress) => writeSafetensors(path.resolve(args.out), metadata, entries, progress),
  });
}

main();
