#!/usr/bin/env bash
# The README's test command: install with dev extras, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh dev

# Headless Chromium for the dashboard's browser tests (tests/api/test_dashboard.py): the Debian package
# (playwright's own browser download is not used). If it cannot be installed, those tests skip and say why.
ensure_chromium() {
  [ -x /usr/bin/chromium ] && return 0
  [ -n "${DOCVEC_NO_BROWSER_INSTALL:-}" ] && return 0
  local sudo=() log="${TMPDIR:-/tmp}/docvec-chromium-install.log"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: /usr/bin/chromium missing and no apt-get here; the dashboard browser tests will skip" >&2
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      echo "test.sh: /usr/bin/chromium missing and no root or passwordless sudo to install it;" \
        "the dashboard browser tests will skip (apt-get install chromium chromium-driver)" >&2
      return 0
    fi
  fi
  echo "test.sh: installing chromium for the dashboard browser tests (log: $log)" >&2
  if ! { "${sudo[@]}" apt-get update -q \
      && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
         apt-get install -y -q --no-install-recommends chromium chromium-driver; } >"$log" 2>&1; then
    echo "test.sh: installing chromium failed (see $log); the dashboard browser tests will skip" >&2
  fi
}
ensure_chromium
exec .venv/bin/python -m pytest "$@"
