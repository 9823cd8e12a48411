#!/usr/bin/env bash
# Installs clients/typescript's npm dependencies exactly as package-lock.json pins them
# (npm ci), skipping the install when node_modules already matches the lock file.
# Usage: clients/typescript/scripts/setup.sh [--build]   (--build also runs `npm run build`)
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=node_modules/.pushplat-lock.sha256
want="$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" || ! -x node_modules/.bin/tsc ]]; then
  echo "==> npm ci in clients/typescript"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi
if [[ "${1:-}" == "--build" ]]; then
  npm run --silent build
fi
