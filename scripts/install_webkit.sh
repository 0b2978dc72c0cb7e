#!/usr/bin/env bash
# Installs Debian's webkit2gtk-driver (WebKitWebDriver, and WebKitGTK's MiniBrowser with its
# dependencies), and xvfb for a virtual display, for `run_browser.py --browser webkit`
# (make setup-webkit calls this; it does nothing when all are there), and strace, with which
# the tests log every socket WebKit connects (it calls no one outside loopback).
set -euo pipefail
missing=()
command -v WebKitWebDriver >/dev/null || missing+=(webkit2gtk-driver)
command -v Xvfb >/dev/null || missing+=(xvfb)
command -v strace >/dev/null || missing+=(strace)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing ${missing[*]} with apt-get (for WebKit runs)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  exit 0
fi
echo "error: ${missing[*]} missing; install them (e.g. 'sudo apt-get install ${missing[*]}')" >&2
exit 1
