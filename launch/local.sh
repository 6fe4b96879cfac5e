#!/usr/bin/env bash
# Single host: pretrain the tiny model on synthetic batches (all local devices).
#   bash launch/local.sh [WORKDIR] [extra --config.x=y flags]
set -euo pipefail
workdir=${1:-/tmp/havic_local}
shift || true
exec python -m havic_jax.main --config=configs/pretrain_tiny.py --workdir="$workdir" "$@"
