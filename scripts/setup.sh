#!/usr/bin/env bash
# Create .venv and install mlff_distiller with its test dependencies and the SevenNet-0 teacher.
# torch==2.13.0 is installed first: on these machines it is a local CPU wheel, and the
# package's own range (torch>=2.2,<3) is then satisfied without downloading a CUDA build;
# later installs get torch==2.13.0 as a constraint so that nothing replaces it.
# EXTRAS (default "test,sevenn") chooses the extras; mace and sevenn cannot share one environment.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${EXTRAS:-test,sevenn}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
echo "torch==2.13.0" > "$constraints"
.venv/bin/python -m pip install -q -c "$constraints" -e ".[${EXTRAS}]"
