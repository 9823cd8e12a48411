# Sourced by scripts/run and scripts/test: make .venv and install pushplat (and its SDK) into it.
# Usage: source scripts/lib/bootstrap.sh [EXTRAS]   e.g. EXTRAS=test
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-python3}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "pushplat needs Python >= 3.11; $PYTHON is $("$PYTHON" --version 2>&1)" >&2
  exit 1
fi

VENV="$ROOT/.venv"
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "==> creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
extras="${1:-}"
spec="$ROOT"
[[ -n "$extras" ]] && spec="$ROOT[$extras]"
echo "==> installing pushplat${extras:+[$extras]} into $VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
# The SDK first: the server imports the generated stubs it ships.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT/clients/python" -e "$spec"
export PATH="$VENV/bin:$PATH"
