#!/usr/bin/env bash
# Create .venv and install mlff_distiller with its test dependencies.
# torch==2.13.0 is installed first: on these machines it is a local CPU wheel, and the
# package's own range (torch>=2.2,<3) is then satisfied without downloading a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[test]"
