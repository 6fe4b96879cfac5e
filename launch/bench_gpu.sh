#!/usr/bin/env bash
# The pretraining benchmark sweep for one accelerator, budgeted to fit a short accelerator
# window: `pretrain_base` in bfloat16 with cuDNN and XLA attention, the largest batches (one with
# rematerialisation), the end-to-end rate through the real input pipeline, scanned layers and
# float32. Each case
# is one `python -m havic_jax.bench` run writing OUT/<case>.json and OUT/<case>.log, all sharing
# one persistent compilation cache (OUT/xla_cache); the end prints one table of all cases (also
# OUT/table.md) and the total wall time. The cases are ordered most informative first: a case
# whose estimated cost (the longest case so far) exceeds the time left is skipped, and each case
# runs under a timeout of the time left, so the sweep ends within BUDGET_SECONDS. A case that
# fails (out of memory, out of time) is listed as failed and the sweep goes on.
# It runs from the repository root with that root on PYTHONPATH, so the project need not be
# installed (a prebuilt CUDA image with its own JAX).
#   bash launch/bench_gpu.sh OUT [BUDGET_SECONDS]          # budget: 480 s
#   CASES="bf16_cudnn_b64 f32_b32" bash launch/bench_gpu.sh /tmp/bench     # a subset
#   CONFIG=configs/pretrain_tiny.py STEPS=2 bash launch/bench_gpu.sh /tmp/bench 120
# Environment: CONFIG (from the repository root; configs/pretrain_base.py), STEPS (timed steps;
# 10), CASES (space-separated; all), PYTHON (the interpreter; python), FIRST_ESTIMATE (a case's
# estimated seconds before any has run; 150).
set -uo pipefail
usage="usage: bash launch/bench_gpu.sh OUT [BUDGET_SECONDS]  (env: CONFIG STEPS CASES PYTHON)"
case ${1:-} in -h | --help) echo "$usage"; exit 0 ;; esac
[[ $# -ge 1 ]] || { echo "$usage" >&2; exit 2; }
mkdir -p "$1" && out=$(cd "$1" && pwd) || exit 2
budget=${2:-480}
python=${PYTHON:-python}
reserve=10  # seconds kept for the table
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 2
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

bf16="--config.model.dtype=bfloat16"
remat="--config.model.remat=True --config.model.remat_policy=dots_with_no_batch_dims_saveable"
declare -A case_flags=(
  [bf16_cudnn_b64]="--batch=64 $bf16 --config.model.attention_impl=cudnn"
  [bf16_xla_b64]="--batch=64 $bf16 --config.model.attention_impl=xla"
  [bf16_auto_b128]="--batch=128 $bf16"
  [bf16_auto_b192_remat]="--batch=192 $bf16 $remat"
  [bf16_auto_pipeline_b64]="--batch=64 $bf16 --data=pipeline --config.data.source=synthetic_corpus"
  [bf16_auto_scan_b64]="--batch=64 $bf16 --config.model.scan_layers=True"
  [f32_b32]="--batch=32 --config.model.dtype=float32"
)
order=(bf16_cudnn_b64 bf16_xla_b64 bf16_auto_b128 bf16_auto_b192_remat bf16_auto_pipeline_b64
       bf16_auto_scan_b64 f32_b32)
cases=(${CASES:-${order[@]}})
for case in "${cases[@]}"; do
  [[ -v case_flags[$case] ]] || { echo "unknown case $case (one of: ${order[*]})" >&2; exit 2; }
done

estimate=${FIRST_ESTIMATE:-150}  # a case's cost: the longest case so far
ran=0  # cases run so far
results=()  # case:status, in run order
for case in "${cases[@]}"; do
  rm -f "$out/$case.json"
  left=$((budget - SECONDS - reserve))
  if ((left < estimate || left <= 0)); then
    echo "== $case: skipped (${left}s left, estimate ${estimate}s)"
    results+=("$case:skipped")
    continue
  fi
  echo "== $case: ${case_flags[$case]}"
  start=$SECONDS
  # shellcheck disable=SC2086
  timeout -k 5 "$left" "$python" -m havic_jax.bench --config="${CONFIG:-configs/pretrain_base.py}" \
    --steps="${STEPS:-10}" --warmup=2 ${case_flags[$case]} \
    --compilation_cache="$out/xla_cache" --output="$out/$case.json" >"$out/$case.log" 2>&1
  code=$?
  took=$((SECONDS - start))
  if ((ran++ == 0 || took > estimate)); then estimate=$took; fi
  if ((code == 0)); then status=ok; else status="failed (exit $code)"; fi
  echo "   $status after ${took}s: see $out/$case.log"
  results+=("$case:$status")
done

"$python" - "$out" "${results[@]}" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])

def get(record, *keys):
  for key in keys:
    record = record.get(key) if isinstance(record, dict) else None
  return record

def fmt(value, spec):
  return "" if value is None else format(value, spec)

rows = [["case", "status", "batch", "attention", "compile s", "step s", "samples/s", "MFU",
         "e2e samples/s", "data wait", "peak GiB"]]
for result in sys.argv[2:]:
  case, status = result.split(":", 1)
  try:
    r = json.loads((out / f"{case}.json").read_text())
  except (OSError, ValueError):
    r = {}
  peak = get(r, "peak_memory_bytes")
  rows.append([case, status, fmt(get(r, "config", "batch_size"), ""),
               fmt(get(r, "attention"), ""), fmt(get(r, "compile_seconds"), ".1f"),
               fmt(get(r, "step_seconds", "median"), ".3f"),
               fmt(get(r, "samples_per_second"), ".1f"), fmt(get(r, "mfu"), ".1%"),
               fmt(get(r, "end_to_end", "samples_per_second"), ".1f"),
               fmt(get(r, "end_to_end", "data_wait_fraction"), ".1%"),
               fmt(peak and peak / 2**30, ".1f")])
widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |"
         for row in rows]
lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
table = "\n".join(lines)
print(table)
(out / "table.md").write_text(table + "\n")
EOF
echo "total wall time: ${SECONDS}s (budget ${budget}s)"
