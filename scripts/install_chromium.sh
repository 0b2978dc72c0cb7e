#!/usr/bin/env bash
# Installs Debian's chromium for run_browser.py when no Chromium is found (make setup calls
# this only then). pyppeteer's own Chromium download cannot work offline, so the kit drives
# the system browser.
set -euo pipefail
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "no Chromium found: installing Debian's chromium with apt-get" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  exit 0
fi
echo "error: no Chromium found; install one (e.g. 'sudo apt-get install chromium') or set CHROME_PATH to its executable" >&2
exit 1
