#!/usr/bin/env bash
# Start the MLflow tracking server (UI + REST API): SQLite backend, local artifact store,
# listening on 127.0.0.1 only. Every path and port can be changed through the environment:
#   TAGGER_SERVER_DIR             state folder (default <repo>/work/server)
#   MLFLOW_HOST, MLFLOW_PORT      bind address (default 127.0.0.1:5000)
#   MLFLOW_BACKEND_STORE_URI      database (default sqlite:///$TAGGER_SERVER_DIR/mlflow/mlflow.db;
#                                 postgresql://... for a team server)
#   MLFLOW_ARTIFACTS_DESTINATION  artifact store (default $TAGGER_SERVER_DIR/mlflow/artifacts;
#                                 s3://bucket/prefix works the same way)
#   MLFLOW_WORKERS                server worker processes (default 1)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${TAGGER_SERVER_DIR:-$REPO/work/server}/mlflow"
HOST="${MLFLOW_HOST:-127.0.0.1}"
PORT="${MLFLOW_PORT:-5000}"
BACKEND="${MLFLOW_BACKEND_STORE_URI:-sqlite:///$STATE/mlflow.db}"
ARTIFACTS="${MLFLOW_ARTIFACTS_DESTINATION:-$STATE/artifacts}"
mkdir -p "$STATE"
case "$ARTIFACTS" in *://*) ;; *) mkdir -p "$ARTIFACTS" ;; esac

echo "MLflow: http://$HOST:$PORT  backend=$BACKEND  artifacts=$ARTIFACTS"
exec mlflow server \
    --backend-store-uri "$BACKEND" \
    --artifacts-destination "$ARTIFACTS" \
    --host "$HOST" --port "$PORT" \
    --workers "${MLFLOW_WORKERS:-1}"
