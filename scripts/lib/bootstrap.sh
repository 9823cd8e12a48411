# Sourced by scripts/run and scripts/test: make .venv and install pushplat (and its SDK) into it,
# at the versions pinned in constraints.txt (the Dockerfile installs the same pins).
# Usage: BOOTSTRAP_EXTRAS=test source scripts/lib/bootstrap.sh
# The extras come from a variable, never from "$1": a sourced file sees the caller's own
# arguments there (scripts/run --help would become pip extras).
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
extras="${BOOTSTRAP_EXTRAS:-}"
spec="$ROOT"
[[ -n "$extras" ]] && spec="$ROOT[$extras]"
# Editable installs follow source edits on their own; reinstall only when what pip reads
# (the two pyproject files, the pins, the extras) changed since the last install.
# An install with the test extras also covers a plain one (scripts/run after scripts/test).
stamp="$VENV/.pushplat-install${extras:+-$extras}.sha256"
want="$(cat "$ROOT/pyproject.toml" "$ROOT/clients/python/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -d' ' -f1)"
current() { [[ -f "$1" && "$(cat "$1")" == "$want" ]]; }
if ! current "$stamp" && ! { [[ -z "$extras" ]] && current "$VENV/.pushplat-install-test.sha256"; }; then
  echo "==> installing pushplat${extras:+[$extras]} into $VENV"
  # setuptools warns about every editable install in 20 lines on stderr, the first thing a
  # newcomer's scripts/run printed: a folder named like the package may shadow it (here it is it).
  quiet="ignore:Editable installation"
  pip=(env PYTHONWARNINGS="${PYTHONWARNINGS:+$PYTHONWARNINGS,}$quiet"
       "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --constraint "$ROOT/constraints.txt")
  "${pip[@]}" --upgrade pip
  # The SDK first: the server imports the generated stubs it ships.
  "${pip[@]}" -e "$ROOT/clients/python" -e "$spec"
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
