#!/usr/bin/env bash
# Installs Debian's firefox-esr, and xvfb for a virtual display, for `run_browser.py --browser
# firefox` (make setup-firefox calls this; it does nothing when both are there). Headless
# Firefox has no WebGL 2; on a virtual X display it has WebGL 2 on Mesa's llvmpipe, so the
# kit starts Xvfb itself and Firefox on it.
set -euo pipefail
missing=()
command -v firefox-esr >/dev/null || command -v firefox >/dev/null || missing+=(firefox-esr)
command -v Xvfb >/dev/null || missing+=(xvfb)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing ${missing[*]} with apt-get (for Firefox runs)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  exit 0
fi
echo "error: ${missing[*]} missing; install them (e.g. 'sudo apt-get install ${missing[*]}')" >&2
exit 1
