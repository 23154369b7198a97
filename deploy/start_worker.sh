#!/usr/bin/env bash
# Start a Prefect worker on the process work pool that the deployments in prefect.yaml use.
# The pool is created on first start. Flow runs are subprocesses of this worker; the
# deployments' pull step moves them into the repository they were deployed from.
#   PREFECT_API_URL     server API (default http://127.0.0.1:4200/api)
#   TAGGER_WORK_POOL    pool name (default tagger-process)
#   TAGGER_WORKER_LIMIT concurrent flow runs (default 1: a retrain uses every core)
set -euo pipefail
export PREFECT_API_URL="${PREFECT_API_URL:-http://127.0.0.1:4200/api}"
POOL="${TAGGER_WORK_POOL:-tagger-process}"

echo "Prefect worker: pool=$POOL api=$PREFECT_API_URL"
exec prefect worker start --pool "$POOL" --type process --limit "${TAGGER_WORKER_LIMIT:-1}"
