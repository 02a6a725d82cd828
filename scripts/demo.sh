#!/usr/bin/env bash
# The main job: install, start the embedded stack, run a workflow to completion, print it.
# The "" keeps this script's arguments (for the demo) from reaching bootstrap.sh as its extras.
source "$(dirname "$0")/bootstrap.sh" ""
exec .venv/bin/convergio demo "$@"
