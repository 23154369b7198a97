#!/usr/bin/env bash
# Register the deployments of deploy/prefect.yaml with the Prefect server.
#   ./deploy/deploy.sh                       all deployments
#   ./deploy/deploy.sh --name retrain-manual one of them
# The values below are substituted into prefect.yaml at deploy time ({{ $NAME }}):
#   PREFECT_API_URL          server API (default http://127.0.0.1:4200/api)
#   TAGGER_WORK_POOL         process work pool (default tagger-process)
#   TAGGER_RETRAIN_CONFIG    retrain config YAML, relative to the repo
#                            (default flows/configs/retrain_demo.yaml)
#   TAGGER_WORK_DIR          where retrain writes manifests, checkpoints, bundles
#                            (default <repo>/work/deployed)
#   TAGGER_MLFLOW_URI        MLflow tracking URI (default http://127.0.0.1:5000)
#   TAGGER_ALBUM_INPUT       default input of the tag-album deployment
#   TAGGER_ALBUM_OUTPUT      default output (JSONL) of the tag-album deployment
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export PREFECT_API_URL="${PREFECT_API_URL:-http://127.0.0.1:4200/api}"
export TAGGER_WORK_POOL="${TAGGER_WORK_POOL:-tagger-process}"
export TAGGER_RETRAIN_CONFIG="${TAGGER_RETRAIN_CONFIG:-flows/configs/retrain_demo.yaml}"
export TAGGER_WORK_DIR="${TAGGER_WORK_DIR:-$REPO/work/deployed}"
export TAGGER_MLFLOW_URI="${TAGGER_MLFLOW_URI:-http://127.0.0.1:5000}"
export TAGGER_ALBUM_INPUT="${TAGGER_ALBUM_INPUT:-$TAGGER_WORK_DIR/album}"
export TAGGER_ALBUM_OUTPUT="${TAGGER_ALBUM_OUTPUT:-$TAGGER_WORK_DIR/album_tags.jsonl}"

# The pool must exist before deploying into it (the worker would create it too, later).
if ! prefect work-pool inspect "$TAGGER_WORK_POOL" >/dev/null 2>&1; then
    prefect work-pool create "$TAGGER_WORK_POOL" --type process
fi
if [ "$#" -eq 0 ]; then set -- --all; fi
exec prefect --no-prompt deploy --prefect-file deploy/prefect.yaml "$@"
