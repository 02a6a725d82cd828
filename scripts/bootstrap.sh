# Sourced by the other scripts: make sure .venv exists and has Convergio installed.
# Usage: source scripts/bootstrap.sh [extras]   e.g. "test"
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
    echo "error: Convergio needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
extras="${1:-}"
spec="."
[ -n "$extras" ] && spec=".[$extras]"
# A run interrupted while making .venv leaves it half-made: no pip, or a partial install, and every
# later run failed the same way. .venv/.incomplete exists from before the venv is created until its
# first install succeeds, so such a venv is known to hold nothing worth keeping.
MARKER=.venv/.incomplete

make_venv() {
    rm -rf .venv
    mkdir .venv
    touch "$MARKER"
    "$PYTHON" -m venv .venv
}

install_convergio() {
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip &&
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec"
}

recreate() {
    echo "==> .venv is unusable ($1), e.g. after an interrupted first run: recreating it" >&2
    make_venv
}

if [ ! -e .venv ]; then
    echo "==> creating .venv" >&2
    make_venv
elif [ ! -f .venv/pyvenv.cfg ]; then
    recreate "it has no pyvenv.cfg"
elif ! .venv/bin/python -c 'import pip' >/dev/null 2>&1; then  # the one check on the normal path (~50 ms)
    if ! .venv/bin/python -c '' >/dev/null 2>&1; then
        recreate "its python does not run"
    elif [ -e "$MARKER" ]; then
        recreate "it was left without pip"
    else
        echo "==> .venv has no pip (made with uv or --without-pip): adding it" >&2
        .venv/bin/python -m ensurepip --upgrade >/dev/null
    fi
elif [ -e "$MARKER" ]; then
    echo "==> .venv was left half-installed by an interrupted run: finishing the install" >&2
fi
echo "==> installing convergio${extras:+ [$extras]} into .venv" >&2
if ! install_convergio; then
    # A venv that once installed completely is kept (the failure may be the network); a half-made one
    # may be what fails, so it is made afresh once.
    [ -e "$MARKER" ] || exit 1
    echo "==> installing into the half-made .venv failed: recreating .venv and trying once more" >&2
    make_venv
    install_convergio
fi
rm -f "$MARKER"
