#!/usr/bin/env bash
# Builds @tensorflow/tfjs-node's native addon against the TensorFlow C library that the
# virtualenv's pip wheel already ships, instead of the libtensorflow 2.9.1 download that its
# install script attempts (that host is unreachable offline). Side effect worth having:
# Python and Node then run the very same TensorFlow kernels.
#
# Usage: scripts/build_tfjs_node.sh PYTHON   (the virtualenv's python)
set -euo pipefail
python=${1:?usage: build_tfjs_node.sh PYTHON}
cd "$(dirname "$0")/.."
pkg=node_modules/@tensorflow/tfjs-node
[ -d "$pkg" ] || { echo "error: $pkg is missing; run 'npm ci --ignore-scripts' first" >&2; exit 1; }

tf_dir=$("$python" -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("tensorflow").origin))')
for lib in libtensorflow_cc.so.2 libtensorflow_framework.so.2; do
  [ -f "$tf_dir/$lib" ] || { echo "error: $tf_dir/$lib not found; is tensorflow installed in the virtualenv?" >&2; exit 1; }
done

lib_dir=$pkg/deps/lib
rm -rf "$pkg/deps"
mkdir -p "$lib_dir"
# Link-time names (-ltensorflow -ltensorflow_framework), run-time sonames, and the marker
# file whose presence makes scripts/install.js skip its download.
ln -s "$tf_dir/libtensorflow_cc.so.2" "$lib_dir/libtensorflow.so"
ln -s "$tf_dir/libtensorflow_cc.so.2" "$lib_dir/libtensorflow_cc.so.2"
ln -s "$tf_dir/libtensorflow_cc.so.2" "$lib_dir/libtensorflow.so.2.9.1"
ln -s "$tf_dir/libtensorflow_framework.so.2" "$lib_dir/libtensorflow_framework.so"
ln -s "$tf_dir/libtensorflow_framework.so.2" "$lib_dir/libtensorflow_framework.so.2"
ln -s "$tf_dir/include" "$pkg/deps/include"

# node-pre-gyp and node-gyp come from npm; build from source so nothing is downloaded.
export PATH="$PWD/node_modules/.bin:$(dirname "$(command -v npm)")/../lib/node_modules/npm/bin/node-gyp-bin:$PATH"
export npm_config_build_from_source=true npm_config_nodedir=${npm_config_nodedir:-/usr}
(cd "$pkg" && node scripts/install.js)
# Prove it: the addon loads and tfjs reports the native backend.
TF_CPP_MIN_LOG_LEVEL=3 node -e "
const tf = require('@tensorflow/tfjs-node');
if (tf.getBackend() !== 'tensorflow') { console.error('error: tfjs-node loaded backend ' + tf.getBackend()); process.exit(1); }
console.error('tfjs-node ' + tf.version['tfjs-node'] + ' built against TensorFlow ' + tf.backend().binding.TF_Version);"
