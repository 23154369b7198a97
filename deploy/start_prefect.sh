#!/usr/bin/env bash
# Start the Prefect server (API + UI) on 127.0.0.1 with a SQLite database, analytics off.
#   TAGGER_SERVER_DIR                     state folder (default <repo>/work/server)
#   PREFECT_HOME                          Prefect's home (default $TAGGER_SERVER_DIR/prefect)
#   PREFECT_SERVER_API_HOST/_PORT         bind address (default 127.0.0.1:4200)
#   PREFECT_API_DATABASE_CONNECTION_URL   database (default SQLite in $PREFECT_HOME;
#                                         postgresql+asyncpg://... for a team server)
# Clients (worker, deploy.sh, `prefect deployment run`) then use
#   PREFECT_API_URL=http://127.0.0.1:4200/api
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PREFECT_HOME="${PREFECT_HOME:-${TAGGER_SERVER_DIR:-$REPO/work/server}/prefect}"
export PREFECT_SERVER_API_HOST="${PREFECT_SERVER_API_HOST:-127.0.0.1}"
export PREFECT_SERVER_API_PORT="${PREFECT_SERVER_API_PORT:-4200}"
export PREFECT_API_DATABASE_CONNECTION_URL="${PREFECT_API_DATABASE_CONNECTION_URL:-sqlite+aiosqlite:///$PREFECT_HOME/prefect.db}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
mkdir -p "$PREFECT_HOME"

echo "Prefect: http://$PREFECT_SERVER_API_HOST:$PREFECT_SERVER_API_PORT  home=$PREFECT_HOME"
exec prefect server start --host "$PREFECT_SERVER_API_HOST" --port "$PREFECT_SERVER_API_PORT"
