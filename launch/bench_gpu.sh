#!/usr/bin/env bash
# The pretraining benchmark sweep for one accelerator (GPU or TPU host): `pretrain_base` in
# float32 and bfloat16, with and without rematerialisation, scanned layers, and batches up to
# the largest that fits. Each case writes OUT/<case>.json (python -m havic_jax.bench) and its
# log; the last step prints one table of all cases. A case that runs out of memory or time is
# listed as failed and the sweep goes on.
#   bash launch/bench_gpu.sh OUT [STEPS] [CASE_TIMEOUT_SECONDS]
#   CASES="bf16_b64 bf16_remat_b128" bash launch/bench_gpu.sh /tmp/bench   # a subset
#   CONFIG=configs/pretrain_tiny.py bash launch/bench_gpu.sh /tmp/bench 2   # another config
set -uo pipefail
out=${1:?usage: bash launch/bench_gpu.sh OUT [STEPS] [CASE_TIMEOUT_SECONDS]}
steps=${2:-10}
limit=${3:-240}
mkdir -p "$out"
bf16=(--config.model.dtype=bfloat16)
remat=(--config.model.remat=True --config.model.remat_policy=dots_with_no_batch_dims_saveable)
declare -A case_flags=(
  [f32_b32]="--batch=32"
  [bf16_b32]="--batch=32 ${bf16[*]}"
  [bf16_b64]="--batch=64 ${bf16[*]}"
  [bf16_scan_b64]="--batch=64 ${bf16[*]} --config.model.scan_layers=True"
  [bf16_remat_b128]="--batch=128 ${bf16[*]} ${remat[*]}"
  [bf16_remat_b192]="--batch=192 ${bf16[*]} ${remat[*]}"
  [bf16_xla_attention_b64]="--batch=64 ${bf16[*]} --config.model.attention_impl=xla"
)
order=(bf16_b64 f32_b32 bf16_b32 bf16_scan_b64 bf16_xla_attention_b64 bf16_remat_b128
       bf16_remat_b192)
for case in ${CASES:-${order[@]}}; do
  echo "== $case: ${case_flags[$case]}"
  # shellcheck disable=SC2086
  timeout "$limit" python -m havic_jax.bench --config="${CONFIG:-configs/pretrain_base.py}" \
    --steps="$steps" --warmup=2 ${case_flags[$case]} --output="$out/$case.json" \
    >"$out/$case.log" 2>&1 || echo "   failed (exit $?): see $out/$case.log"
done
python - "$out" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
print(f"{'case':<26}{'batch':>6}{'compile s':>10}{'step s':>9}{'samples/s':>11}{'MFU':>7}"
      f"{'peak GiB':>10}")
for path in sorted(out.glob("*.json")):
  r = json.loads(path.read_text())
  mfu = r.get("mfu")
  peak = r.get("peak_memory_bytes")
  print(f"{path.stem:<26}{r['config']['batch_size']:>6}{r['compile_seconds']:>10.1f}"
        f"{r['step_seconds']['median']:>9.3f}{r['samples_per_second']:>11.1f}"
        f"{'' if mfu is None else format(mfu, '.1%'):>7}"
        f"{'' if peak is None else format(peak / 2**30, '.1f'):>10}")
EOF
