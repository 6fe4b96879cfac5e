#!/usr/bin/env bash
# Single host: pretrain the tiny model on the synthetic corpus, on all local devices or on
# CPU_DEVICES simulated CPU devices (to try meshes without accelerators). Re-running with the
# same WORKDIR resumes from its latest checkpoint.
#   bash launch/local.sh [WORKDIR] [extra --config.x=y flags]
#   CPU_DEVICES=8 bash launch/local.sh /tmp/havic_local --config.mesh.fsdp=4
set -euo pipefail
workdir=${1:-/tmp/havic_local}
shift || true
devices=()
if [[ -n "${CPU_DEVICES:-}" ]]; then
  export JAX_PLATFORMS=cpu
  devices=(--cpu_devices="$CPU_DEVICES")
fi
exec python -m havic_jax.main --config=configs/pretrain_tiny.py --workdir="$workdir" \
  "${devices[@]}" "$@"
