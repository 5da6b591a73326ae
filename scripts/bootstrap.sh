#!/usr/bin/env bash
# Create (or reuse) .venv and install docvec into it. Usage: scripts/bootstrap.sh [extra]
# Needs only Python 3.11+; torch is pinned to 2.13.0 (CPU build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "docvec needs Python 3.11+")'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
extra="${1:-}"
spec="."
[ -n "$extra" ] && spec=".[$extra]"
stamp=".venv/.docvec-installed${extra:+-$extra}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e "$spec"
  touch "$stamp"
fi
