#!/usr/bin/env bash
# The demo: several brokers (virtual platforms) and a client running tasks through them.
# Installs what it needs (idempotently), then runs `execbroker demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
# Docker brokers take part when a Docker engine can be had; the demo skips them otherwise.
scripts/services.sh up docker || echo "note: Docker is not available; the demo runs without it" >&2
exec .venv/bin/execbroker demo "$@"
