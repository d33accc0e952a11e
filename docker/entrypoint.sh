#!/bin/sh
# The image's entry point (under dumb-init): an Airflow sub-command as the first word runs `airflow <it>`,
# as in Airflow's own image (docker-compose.yaml's `command: scheduler`); anything else runs as given.
set -eu
case "${1:-}" in
  api-server|scheduler|dag-processor|triggerer|celery|db|dags|tasks|jobs|config|connections|variables|pools|\
  users|roles|backfill|assets|providers|plugins|info|version|cheat-sheet|rotate-fernet-key|standalone)
    exec airflow "$@" ;;
esac
exec "$@"
