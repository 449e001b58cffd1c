#!/usr/bin/env bash
# Development stage entrypoint: JupyterLab, never without a token.
# JUPYTER_TOKEN set: that token is required. Unset: a random one is generated and printed once.
# An empty token (open server) is refused.
set -euo pipefail

if [[ -z "${JUPYTER_TOKEN+set}" ]]; then
    JUPYTER_TOKEN="$(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
    echo "detbench: generated JUPYTER_TOKEN=${JUPYTER_TOKEN}" >&2
fi
if [[ ${#JUPYTER_TOKEN} -lt 16 ]]; then
    echo "detbench: JUPYTER_TOKEN must be at least 16 characters; refusing to start an open or weak server" >&2
    exit 2
fi
export JUPYTER_TOKEN

# Preflight is informative here: a notebook is still useful on a half-working machine.
envcheck --quick || echo "detbench: preflight reported problems (see above); starting JupyterLab anyway" >&2

exec jupyter lab --no-browser --ip=0.0.0.0 --port="${JUPYTER_PORT:-8888}" \
    --ServerApp.root_dir=/opt/detbench "$@"
