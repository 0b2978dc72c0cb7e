#!/usr/bin/env bash
# Installs Debian's bubblewrap when no bwrap is found (make setup calls this only then):
# create_keras_model.py --model loads, converts and runs a user's model in its sandbox
# (tfjs_parity/sandbox.py); without it step 1 runs a user's model only with --trust-model.
set -euo pipefail
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "no bwrap found: installing Debian's bubblewrap with apt-get (the sandbox of create_keras_model.py --model)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
  exit 0
fi
echo "error: no bwrap found; install bubblewrap (e.g. 'sudo apt-get install bubblewrap'): create_keras_model.py --model runs your model in its sandbox (or only with --trust-model without it)" >&2
exit 1
