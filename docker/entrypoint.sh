#!/usr/bin/env bash
# Container entrypoint: a quick preflight (`envcheck --quick`), then the command.
# A failed preflight stops the container with envcheck's exit code, before the benchmark wastes GPU time.
#   DETBENCH_SKIP_PREFLIGHT=1          run the command without the preflight (report-only jobs, debugging)
#   DETBENCH_PREFLIGHT_ARGS="--require-gpu --gpus 2"   extra envcheck options
set -euo pipefail

if [[ $# -eq 0 ]]; then
    set -- pytest bench/ --benchmark-json=/results/run.json
fi

# The command is envcheck itself: running it twice would only double the output.
if [[ "${DETBENCH_SKIP_PREFLIGHT:-0}" != "1" && "$1" != "envcheck" ]]; then
    status=0
    results_dir=()  # the host check measures free disk where results go
    if [[ -d /results ]]; then results_dir=(--results-dir /results); fi
    # Word splitting of the extra options is intended: they are separate flags.
    # shellcheck disable=SC2086
    envcheck --quick "${results_dir[@]}" ${DETBENCH_PREFLIGHT_ARGS:-} || status=$?
    if [[ ${status} -ne 0 ]]; then
        echo "detbench: preflight failed (envcheck exit ${status}); fix the environment or set DETBENCH_SKIP_PREFLIGHT=1" >&2
        exit "${status}"
    fi
fi

exec "$@"
