#!/usr/bin/env bash
# The README's run command: install, ingest examples/, show a search, then serve (`docvec up`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/docvec ingest examples --kb examples --wait
.venv/bin/docvec search "how does a worker recover tasks after a crash?" --kb examples -k 3
exec .venv/bin/docvec up "$@"
