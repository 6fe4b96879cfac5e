#!/usr/bin/env bash
# TPU pod slice: run the same command on every worker; jax.distributed finds its peers.
#   bash launch/tpu_pod.sh TPU_NAME ZONE WORKDIR [CONFIG] [extra --config.x=y flags]
# WORKDIR must be shared storage (e.g. a gs:// bucket path) visible to all workers. A
# preempted or stopped run resumes from WORKDIR when the same command is run again.
# pretrain_base at the paper's batch 112 on a v5p-8 (compiled and sized in BENCHMARKS.md):
#   bash launch/tpu_pod.sh NAME ZONE gs://BUCKET/runs/pretrain_base configs/pretrain_base.py \
#     --config.data.path=/mnt/BUCKET/lrs2_prepared --config.model.dtype=bfloat16 \
#     --config.model.scan_layers=True --config.model.remat=True \
#     --config.model.remat_policy=nothing_saveable
# v5p-128 / v6e-256 at global batch 4096: the same plus --config.batch_size=4096. The run
#   length stays 200 epochs with 20 of warm-up, converted to steps from the data's clip count,
#   and the peak learning rate follows the batch (optimizer.lr_scaling, sqrt by default: 1.5e-4
#   × sqrt(4096 / 112) ≈ 9.1e-4); the run logs both at start-up. Check the step first:
#   python -m havic_jax.aot --config=configs/pretrain_base.py --topology=v5p:4x4x4 --batch=4096
set -euo pipefail
tpu=$1 zone=$2 workdir=$3
config=${4:-configs/pretrain_base.py}
shift 4 || shift $#
# The [tpu] extra brings libtpu: without it JAX on a TPU VM sees only the host's CPUs (main
# then stops: --multihost refuses CPUs unless --allow_cpu). Process 0 prints the platform,
# device count and process count it found.
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command="
  cd ~/havic_jax && pip install -q -e '.[tpu]' &&
  python -m havic_jax.main --multihost --config=$config --workdir=$workdir $*"
