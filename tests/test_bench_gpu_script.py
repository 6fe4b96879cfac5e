"""launch/bench_gpu.sh, the budgeted accelerator sweep, run with a fake interpreter in place of
the bench: every case's flags, its status (ok, failed, skipped for the budget), the table read
from the cases' JSON, and the run from the repository root with that root on PYTHONPATH."""

import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "launch" / "bench_gpu.sh"
CASES = ["bf16_cudnn_b64", "bf16_xla_b64", "bf16_auto_b128", "bf16_auto_b192_remat",
         "bf16_auto_pipeline_b64", "bf16_auto_scan_b64", "f32_b32"]

# The fake interpreter: `FAKE - ...` (the table) runs the real Python; `FAKE -m havic_jax.bench
# ...` logs its call to $FAKE_CALLS, sleeps $FAKE_SLEEP seconds, fails (exit 3) for XLA
# attention and otherwise writes a bench result to --output.
FAKE = f"""#!{sys.executable}
import json, os, sys, time
if sys.argv[1] == "-":
  os.execv({sys.executable!r}, [{sys.executable!r}] + sys.argv[1:])
flags = dict(arg[2:].split("=", 1) for arg in sys.argv[3:])
with open(os.environ["FAKE_CALLS"], "a") as calls:
  calls.write(json.dumps({{"cwd": os.getcwd(), "pythonpath": os.environ["PYTHONPATH"],
                          "module": sys.argv[2], "flags": flags}}) + "\\n")
time.sleep(float(os.environ["FAKE_SLEEP"]))
if flags.get("config.model.attention_impl") == "xla":
  sys.exit(3)
result = {{"config": {{"batch_size": int(flags["batch"])}}, "attention": "cudnn",
          "compile_seconds": 12.34, "step_seconds": {{"median": 0.25}},
          "samples_per_second": 256.0, "mfu": 0.415, "peak_memory_bytes": 3 * 2**30}}
if flags.get("data") == "pipeline":
  result["end_to_end"] = {{"samples_per_second": 200.0, "data_wait_fraction": 0.05}}
open(flags["output"], "w").write(json.dumps(result))
"""


def run_sweep(tmp_path, budget, sleep, first_estimate):
  """Runs the sweep into tmp_path/out (given relative to tmp_path); returns its stdout, the
  fake's calls and the wall time."""
  fake = tmp_path / "fake_python"
  fake.write_text(FAKE)
  fake.chmod(0o755)
  env = dict(os.environ, PYTHON=str(fake), FAKE_CALLS=str(tmp_path / "calls.jsonl"),
             FAKE_SLEEP=str(sleep), FIRST_ESTIMATE=str(first_estimate), PYTHONPATH="/elsewhere")
  env.pop("CASES", None)
  start = time.monotonic()
  process = subprocess.run(["bash", str(SCRIPT), "out", str(budget)], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
  wall = time.monotonic() - start
  assert process.returncode == 0, process.stderr
  calls_file = tmp_path / "calls.jsonl"
  calls = [json.loads(line) for line in calls_file.read_text().splitlines()] \
      if calls_file.exists() else []
  return process.stdout, calls, wall


def table_rows(tmp_path):
  """The rows of out/table.md below its header, as {case: cells}, in order."""
  lines = (tmp_path / "out" / "table.md").read_text().splitlines()
  assert lines[0].split("|")[1].strip() == "case"
  return {cells[0]: cells for cells in
          ([cell.strip() for cell in line.split("|")[1:-1]] for line in lines[2:])}


def test_help():
  process = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True)
  assert process.returncode == 0 and process.stdout.startswith("usage:")


def test_all_cases_in_order(tmp_path):
  stdout, calls, _ = run_sweep(tmp_path, budget=480, sleep=0.2, first_estimate=150)
  out = tmp_path / "out"
  assert [call["flags"]["output"] for call in calls] == [f"{out}/{c}.json" for c in CASES]
  for call in calls:
    assert call["module"] == "havic_jax.bench" and call["cwd"] == str(ROOT)
    assert call["pythonpath"] == f"{ROOT}:/elsewhere"
    assert call["flags"]["compilation_cache"] == f"{out}/xla_cache"
  assert calls[4]["flags"]["data"] == "pipeline"
  rows = table_rows(tmp_path)
  assert list(rows) == CASES
  assert rows["bf16_xla_b64"][1:3] == ["failed (exit 3)", ""]
  #          case  status  batch  attention  compile  step  samples/s  MFU  e2e  wait  peak
  assert rows["bf16_auto_pipeline_b64"][1:] == [
      "ok", "64", "cudnn", "12.3", "0.250", "256.0", "41.5%", "200.0", "5.0%", "3.0"]
  assert rows["bf16_auto_b192_remat"][1:3] == ["ok", "192"]
  assert rows["f32_b32"][8:10] == ["", ""]
  assert "| bf16_auto_b128" in stdout and "total wall time" in stdout


def test_budget_skips_later_cases(tmp_path):
  # The first case runs (5 s left over the 10 s kept for the table, estimate 2 s) and takes
  # 3 s, so no later case fits.
  _, calls, wall = run_sweep(tmp_path, budget=15, sleep=3, first_estimate=2)
  assert len(calls) == 1
  rows = table_rows(tmp_path)
  assert [row[1] for row in rows.values()] == ["ok"] + ["skipped"] * (len(CASES) - 1)
  assert wall < 15 + 5
