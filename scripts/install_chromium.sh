#!/usr/bin/env bash
# Install Debian's chromium for the report's browser test (tests/test_bench_report.py) and for
# `marsedge report --screenshot`. Does nothing when a chromium is already on PATH.
# Needs root (CI runs as root); elsewhere run it with sudo.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  echo "chromium already installed: $(chromium --version 2>/dev/null | head -1)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "no apt-get here: install a chromium by hand (the browser test skips without one)" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium >/dev/null
echo "installed $(chromium --version 2>/dev/null | head -1)"
