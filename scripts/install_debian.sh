#!/usr/bin/env bash
# Installs Debian packages for the engines the kit drives beside Chromium, each only when the
# command it provides is missing (nothing to do when all are there):
#   scripts/install_debian.sh WHAT COMMAND:PACKAGE...
# make setup-firefox: firefox-esr, and xvfb (headless Firefox has no WebGL 2; on a virtual X
#   display it has WebGL 2 on Mesa's llvmpipe, so the kit starts Xvfb itself and Firefox on it).
# make setup-webkit: webkit2gtk-driver (WebKitWebDriver and WebKitGTK's MiniBrowser), xvfb,
#   and strace, with which the tests log every socket WebKit connects (it calls no one).
# make setup-chromedriver: Debian's chromium-driver, a WebDriver server for the --webdriver
#   tests (it must match Debian's chromium, which make setup installs).
set -euo pipefail
what=$1
shift
missing=()
for pair in "$@"; do
  command=${pair%%:*}
  package=${pair#*:}
  command -v "$command" >/dev/null || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing ${missing[*]} with apt-get (for $what)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  exit 0
fi
echo "error: ${missing[*]} missing; install them (e.g. 'sudo apt-get install ${missing[*]}')" >&2
exit 1
