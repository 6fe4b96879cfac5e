"""The input bench's table (``data_pipelines.bench``): one line per figure it timed, by stage."""

from __future__ import annotations

from typing import Any, Dict, Sequence


def format_table(results: Sequence[Dict[str, Any]]) -> str:
  lines = [f"{'stage':<9} {'workers':>7} {'per second':>12} {'per worker':>12}"]
  for r in results:
    if r["stage"] == "stages":
      lines.append("ms per clip: " + ", ".join(f"{k} {v:.1f}" for k, v in
                                               r["ms_per_clip"].items())
                   + f" (preparation total {r['ms_per_clip_total']:.1f}; {r['clips']} clips)")
      continue
    if r["stage"] == "agreement":
      lines.append(f"crops {r['variant']:>6} vs every frame: IoU mean {r['iou_mean']:.4f}, "
                   f"p5 {r['iou_p5']:.4f}, min {r['iou_min']:.4f}; pixel MAD "
                   f"{r['pixel_mad']:.2f}; {r['clips_changed']} of {r['clips']} clips changed")
      continue
    if r["stage"] == "eval_windows":
      lines.append(f"eval windows (detect_every={r['detect_every']}): {r['windows']} windows of "
                   f"{r['videos']} videos in {r['seconds']:.1f} s, "
                   f"{r['windows_per_second']:.2f} windows/s, "
                   f"{r['windows_per_cpu_second']:.2f} per CPU second; " +
                   ", ".join(f"{n} {s}" for s, n in r["statuses"].items()))
      continue
    if r["stage"] == "window_shards":
      lines.append(f"window shards ({r['run']}): {r['windows']} windows of {r['videos']} "
                   f"videos in {r['seconds']:.1f} s, {r['windows_per_second']:.2f} windows/s, "
                   f"{r['windows_per_cpu_second']:.2f} per CPU second ({r['cores_used']:.2f} "
                   f"cores used); {r['bytes_per_window'] / 2**20:.2f} MiB per window; " +
                   ", ".join(f"{n} {s}" for s, n in r["statuses"].items()))
      continue
    if r["stage"] == "shard_read":
      lines.append(f"window shards read back: {r['windows']} windows in {r['seconds']:.1f} s, "
                   f"{r['windows_per_second']:.1f} windows/s, "
                   f"{r['windows_per_cpu_second']:.1f} per CPU second")
      continue
    if r["stage"] == "scoring":
      lines.append(f"scoring ({r['model']}, batch {r['batch_size']} on {r['devices']} × "
                   f"{r['device_kind']}): {r['windows']} windows in {r['seconds']:.1f} s, "
                   f"{r['windows_per_second_per_device']:.3f} windows/s per device, "
                   f"{r['windows_per_cpu_second']:.3f} per CPU second; "
                   f"{r['gflop_per_window']:.2f} GFLOP per window, "
                   f"{r['tflop_per_second']:.4f} TFLOP/s, batch fill {r['batch_fill']:.2f}, "
                   f"compile {r['compile_seconds']:.1f} s")
      continue
    unit = "clips" if r["stage"] == "prepare" else "samples"
    total, per_worker = r[f"{unit}_per_second"], r[f"{unit}_per_second_per_worker"]
    name = (f"{r['stage']} ({r['runner']}, detect_every={r['detect_every']})"
            if r["stage"] == "prepare" else r["stage"])
    lines.append(f"{name:<9} {r['workers']:>7} {total:>8.2f} {unit[:4]:<3} "
                 f"{per_worker:>8.2f}")
  return "\n".join(lines)
