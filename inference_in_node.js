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

const USAGE = 'usage: node inference_in_node.js --model MODEL_JSON --out CAPTURE_JSON [--backend tensorflow]';
const BACKENDS = ['tensorflow'];

function fail(message) {
  console.error(`error: ${message}`);
  process.exit(2);
}

process.on('unhandledRejection', (error) => fail(error && error.message ? error.message : String(error)));

function parseArgs(argv) {
  const args = {backend: 'tensorflow'};
  for (let i = 0; i < argv.length; i += 1) {
    const flag = argv[i];
    if (flag === '--help' || flag === '-h') {
      console.log(USAGE);
      process.exit(0);
    }
    const key = {'--model': 'model', '--out': 'out', '--backend': 'backend'}[flag];
    if (!key) fail(`unknown argument ${flag}\n${USAGE}`);
    if (i + 1 >= argv.length) fail(`${flag} needs a value\n${USAGE}`);
    args[key] = argv[++i];
  }
  if (!args.model || !args.out) fail(`--model and --out are required\n${USAGE}`);
  if (!BACKENDS.includes(args.backend)) fail(`--backend ${args.backend} is not one of ${BACKENDS.join(', ')}`);
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
    tf = require('@tensorflow/tfjs-node');
  } catch (error) {
    fail(`cannot load @tensorflow/tfjs-node (${error.message.split('\n')[0]}); run \`make setup\``);
  }
  await common.useBackend(tf, args.backend);
  const binding = tf.backend().binding;
  console.error(`tfjs ${tf.version.tfjs}, backend ${tf.getBackend()}, TensorFlow ${binding ? binding.TF_Version : '-'}`);

  const model = await tf.loadLayersModel(`file://${modelPath}`);
  const inputFile = path.join(path.dirname(modelPath), 'input.json');
  const input = fs.existsSync(inputFile)
    ? common.decodeTensor(tf, JSON.parse(fs.readFileSync(inputFile, 'utf8')))
    : common.onesInput(tf, model);

  const capture = common.captureModel(tf, model, input, {
    runtime: 'node',
    backend: tf.getBackend(),
    versions: Object.assign({node: process.version, tensorflow: binding ? binding.TF_Version : null}, tf.version),
    environment: {TF_ENABLE_ONEDNN_OPTS: process.env.TF_ENABLE_ONEDNN_OPTS || '(unset: oneDNN on)'},
    flags: common.precisionFlags(tf),
    platform: `${os.type()} ${os.arch()}`,
    cpu: os.cpus()[0].model,
    created: new Date().toISOString(),
  });
  writeAtomically(path.resolve(args.out), JSON.stringify(capture));
}

main();
