#!/usr/bin/env bash
# Debian's headless Chromium and its driver, for tests/browser (nothing to start: each test
# launches its own browser with a fresh profile).
#   scripts/services/chromium.sh install STATE_DIR   # apt-get install chromium chromium-driver if missing
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -eq 2 && "$1" == install ]] || die "usage: $0 install STATE_DIR"
STATE=$(abs_state_dir "$2")
ensure_chromium "$STATE/apt.log"
log "$(/usr/bin/chromium --version 2>/dev/null || echo chromium) and $(/usr/bin/chromedriver --version 2>/dev/null | cut -d' ' -f1-2)"
