#!/usr/bin/env bash
# TPU pod slice: run the same command on every worker; jax.distributed finds its peers.
#   bash launch/tpu_pod.sh TPU_NAME ZONE WORKDIR [CONFIG] [extra --config.x=y flags]
# WORKDIR must be shared storage (e.g. a gs:// bucket path) visible to all workers. A
# preempted or stopped run resumes from WORKDIR when the same command is run again.
set -euo pipefail
tpu=$1 zone=$2 workdir=$3
config=${4:-configs/pretrain_base.py}
shift 4 || shift $#
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command="
  cd ~/havic_jax && pip install -q -e . &&
  python -m havic_jax.main --multihost --config=$config --workdir=$workdir $*"
