#!/usr/bin/env bash
# The whole test suite against real servers started from pip packages.
source "$(dirname "$0")/bootstrap.sh" test
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
