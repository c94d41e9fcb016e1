#!/usr/bin/env bash
# The whole test suite against real services: installs and starts PostgreSQL, Docker,
# Slurm and a single-node Kubernetes cluster (idempotently; Kubernetes is built from
# Debian's source once, ~10 minutes, into /var/cache/execbroker/kubernetes, outside the
# work tree), installs execbroker, checks style, then runs pytest.
# Arguments go to pytest (e.g. scripts/test.sh tests/planner -x).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh up postgres docker slurm chromium kubernetes
scripts/bootstrap.sh
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
exec .venv/bin/pytest "$@"
