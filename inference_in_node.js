#!/usr/bin/env node
// Step 2 of 4: run the converted model under Node with @tensorflow/tfjs-node and capture
// every layer. Usually started by run_node.py; by hand:
//
//   node inference_in_node.js --model results/keras_converted/model.json \
//       --out results/keras_model_tfjs_node.json [--backend tensorflow]
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const common = require('./inference_common.js');

const USAGE = 'usage: node inference_in_node.js --model MODEL_JSON --out CAPTURE_JSON ' +
  '[--backend tensorflow|cpu|wasm] [--flags JSON] [--repeat N]';
const BACKENDS = ['tensorflow', 'cpu', 'wasm'];

function fail(message) {
  console.error(`error: ${message}`);
  process.exit(2);
}

process.on('unhandledRejection', (error) => fail(error && error.message ? error.message : String(error)));

function parseArgs(argv) {
  const args = {backend: 'tensorflow', flags: '{}', repeat: '10'};
  const keys = {'--model': 'model', '--out': 'out', '--backend': 'backend', '--flags': 'flags', '--repeat': 'repeat'};
  for (let i = 0; i < argv.length; i += 1) {
    const flag = argv[i];
    if (flag === '--help' || flag === '-h') {
      console.log(USAGE);
      process.exit(0);
    }
    if (!keys[flag]) fail(`unknown argument ${flag}\n${USAGE}`);
    if (i + 1 >= argv.length) fail(`${flag} needs a value\n${USAGE}`);
    args[keys[flag]] = argv[++i];
  }
  if (!args.model || !args.out) fail(`--model and --out are required\n${USAGE}`);
  if (!BACKENDS.includes(args.backend)) fail(`--backend ${args.backend} is not one of ${BACKENDS.join(', ')}`);
  try {
    args.flags = JSON.parse(args.flags);
  } catch (error) {
    fail(`--flags must be a JSON object, e.g. '{"WEBGL_PACK": false}'`);
  }
  args.repeat = Number(args.repeat);
  if (!Number.isInteger(args.repeat) || args.repeat < 1) fail('--repeat must be a whole number of at least 1');
  return args;
}

// Write through a temporary file and rename, so no reader ever sees half a capture.
function writeAtomically(file, text) {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const modelPath = path.resolve(args.model);
  if (!fs.existsSync(modelPath)) fail(`${args.model} not found; run \`python create_keras_model.py\` first`);

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
  const capture = await common.runCapture(tf, {
    backend: args.backend,
    flags: args.flags,
    repeat: args.repeat,
    loadModel: () => tf.loadLayersModel(`file://${modelPath}`),
    loadPlan: async () => readJson('probe_plan.json', 'what to capture'),
    loadInputs: async (plan) => common.decodeInputs(tf, readJson('input.json', 'the inputs'), plan),
    metadata: {
      runtime: 'node',
      versions: Object.assign({node: process.version, tensorflow: tensorflowVersion}, tf.version),
      environment: {TF_ENABLE_ONEDNN_OPTS: process.env.TF_ENABLE_ONEDNN_OPTS || '(unset: oneDNN on)'},
      platform: `${os.type()} ${os.arch()}`,
      cpu: os.cpus()[0].model,
    },
  });
  writeAtomically(path.resolve(args.out), JSON.stringify(capture));
}

main();
