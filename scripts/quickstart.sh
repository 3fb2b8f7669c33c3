#!/usr/bin/env bash
# README quick start, command 1: system packages, a venv with crossnix, then the embedded demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-system.sh
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet -e '.[dev]'
exec .venv/bin/inv demo
