#!/usr/bin/env bash
# Prints the path of a ready virtual environment, creating it on first use.
# It lives OUTSIDE the clone (~/.cache/harness/venv-<hash of requirements.lock>) so every
# clone on this machine shares one install (torch is ~6 GB). Idempotent; a half-finished
# install (no .complete marker) is removed and redone.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${PYTHON:-python3.11}
command -v "$py" >/dev/null 2>&1 || py=python3
key=$( { "$py" -c 'import sys, platform; print(sys.version_info[:2], platform.machine())'; cat "$here/requirements.lock"; } \
       | sha256sum | cut -c1-16)
venv="${HARNESS_VENV_ROOT:-$HOME/.cache/harness}/venv-$key"
if [ ! -f "$venv/.complete" ]; then
    echo "bootstrap: creating $venv (first time on this machine: several minutes)" >&2
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet -r "$here/requirements.lock" >&2
    touch "$venv/.complete"
fi
echo "$venv"
