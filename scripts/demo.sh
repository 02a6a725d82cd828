#!/usr/bin/env bash
# The main job: install, start the embedded stack, run a workflow to completion, print it.
source "$(dirname "$0")/bootstrap.sh"
exec .venv/bin/convergio demo "$@"
