"""MetricWriter: JSONL, progress line, TensorBoard events (read back), PNG and TXT files, the
key prefix, process 0 only; clu window averages; the parameter overview."""

import json
import pathlib
import re
import struct
import tempfile

import cv2
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec
from tensorboardX.proto import event_pb2

from havic_jax.training import metric_writer
from havic_jax.training.metric_writer import MetricWriter


def read_events(workdir):
  """Every event in ``workdir/tensorboard`` (TFRecord framing: u64 length, u32 CRC, payload,
  u32 CRC)."""
  events = []
  for path in sorted((workdir / "tensorboard").glob("events.out.tfevents.*")):
    data, offset = path.read_bytes(), 0
    while offset < len(data):
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      events.append(event_pb2.Event.FromString(data[offset + 12:offset + 12 + length]))
      offset += 12 + length + 4
  return events


def summary_values(events, kind):
  """{(step, tag): value} of the summary values holding ``kind`` (a field of the oneof)."""
  return {(e.step, v.tag): getattr(v, kind) for e in events for v in e.summary.value
          if v.WhichOneof("value") == kind}


def test_scalars_go_to_jsonl_stdout_and_tensorboard(tmp_path, capsys):
  writer = MetricWriter(str(tmp_path), total_steps=10)
  writer.write(2, {"total": 1.5, "nce_acc": np.float32(0.25)})
  writer.write(4, {"total": jnp.float32(0.5), "nce_acc": 0.75})
  writer.write(4, {"auc": 0.875}, prefix="eval")
  writer.close()

  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert records == [{"step": 2, "total": 1.5, "nce_acc": 0.25},
                     {"step": 4, "total": 0.5, "nce_acc": 0.75},
                     {"step": 4, "eval/auc": 0.875}]
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 3
  assert re.fullmatch(r"step 2/10 \| total 1\.5 nce_acc 0\.25 \| ETA \d+:\d\d:\d\d", lines[0])
  assert re.fullmatch(r"step 4/10 \| eval/auc 0\.875 \| ETA \d+:\d\d:\d\d", lines[2])

  assert summary_values(read_events(tmp_path), "simple_value") == {
      (2, "total"): 1.5, (2, "nce_acc"): 0.25, (4, "total"): 0.5, (4, "nce_acc"): 0.75,
      (4, "eval/auc"): 0.875}


def test_images_go_to_png_files_and_tensorboard(tmp_path):
  rng = np.random.default_rng(0)
  colour = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
  grey = rng.integers(0, 256, (6, 10), dtype=np.uint8)
  writer = MetricWriter(str(tmp_path), total_steps=10)
  writer.write_images(7, {"video": colour, "mask": grey})
  writer.write_images(7, {"video": colour[::2]}, prefix="eval")
  writer.close()

  step_dir = tmp_path / "images/step_00000007"
  np.testing.assert_array_equal(
      cv2.imread(str(step_dir / "video.png"), cv2.IMREAD_UNCHANGED)[..., ::-1], colour)
  np.testing.assert_array_equal(cv2.imread(str(step_dir / "mask.png"), cv2.IMREAD_UNCHANGED),
                                grey)
  np.testing.assert_array_equal(
      cv2.imread(str(step_dir / "eval/video.png"), cv2.IMREAD_UNCHANGED)[..., ::-1], colour[::2])

  images = summary_values(read_events(tmp_path), "image")
  assert set(images) == {(7, "video"), (7, "mask"), (7, "eval/video")}
  decode = lambda image: cv2.imdecode(np.frombuffer(image.encoded_image_string, np.uint8),
                                      cv2.IMREAD_UNCHANGED)
  assert (images[7, "video"].height, images[7, "video"].width) == (12, 20)
  np.testing.assert_array_equal(decode(images[7, "video"])[..., ::-1], colour)
  np.testing.assert_array_equal(decode(images[7, "mask"])[..., 0], grey)


def test_images_must_be_uint8(tmp_path):
  writer = MetricWriter(str(tmp_path), total_steps=10)
  with pytest.raises(ValueError, match="uint8"):
    writer.write_images(1, {"video": np.zeros((4, 4, 3), np.float32)})
  writer.close()


def test_text_goes_to_a_file_and_tensorboard(tmp_path):
  table = "+------+\n| Name |\n+------+"
  writer = MetricWriter(str(tmp_path), total_steps=10)
  writer.write_text("parameters", table)
  writer.flush()
  assert (tmp_path / "parameters.txt").read_text() == table
  texts = summary_values(read_events(tmp_path), "tensor")
  assert [tag for _, tag in texts] == ["parameters/text_summary"]
  assert table in next(iter(texts.values())).string_val[0].decode()
  writer.close()


def test_processes_other_than_0_write_nothing(tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  workdir = tmp_path / "run"
  writer = MetricWriter(str(workdir), total_steps=10)
  writer.write(1, {"total": 1.0})
  writer.write_images(1, {"video": np.zeros((4, 4, 3), np.uint8)})
  writer.write_text("parameters", "table")
  writer.flush()
  writer.close()
  assert not workdir.exists()
  assert capsys.readouterr().out == ""


def test_train_metrics_average_the_merged_steps():
  rng = np.random.default_rng(0)
  values = {"total": rng.normal(size=6).astype(np.float32),
            "nce_acc": rng.random(6).astype(np.float32)}
  step = jax.jit(metric_writer.train_metrics_from)
  window = None
  for i in range(6):
    metrics = step({name: jnp.asarray(v[i]) for name, v in values.items()})
    window = metrics if window is None else window.merge(metrics)
    if i == 2:  # a logging window of 3 steps, then a new one
      computed, window = window.compute(), None
      for name, v in values.items():
        np.testing.assert_allclose(computed[name], v[:3].mean(), rtol=1e-6)
  computed = window.compute()
  assert set(computed) == set(values)
  for name, v in values.items():
    np.testing.assert_allclose(computed[name], v[3:].mean(), rtol=1e-6)


def test_window_means_average_each_scalar_over_the_window_in_one_call():
  rng = np.random.default_rng(1)
  values = {"total": rng.normal(size=(5, 4)).astype(np.float32),  # [B] per step
            "grad_norm": rng.random(5).astype(np.float32)}
  steps = [{name: jnp.asarray(v[i]) for name, v in values.items()} for i in range(5)]
  means = jax.jit(metric_writer.window_means)(steps)
  assert set(means) == set(values)
  for name, v in values.items():
    np.testing.assert_allclose(means[name], v.mean(), rtol=1e-6)


def test_train_metrics_classes_are_cached_per_name_set():
  pretrain = metric_writer.train_metrics_from({"total": 1.0, "nce_acc": 0.5})
  again = metric_writer.train_metrics_from({"nce_acc": 0.5, "total": 2.0})
  finetune = metric_writer.train_metrics_from({"total": 1.0, "accuracy": 0.5})
  assert type(pretrain) is type(again)
  assert type(pretrain) is not type(finetune)
  np.testing.assert_allclose(pretrain.merge(again).compute()["total"], 1.5)


def test_parameter_overview_of_sharded_boxed_params():
  mesh = jax.make_mesh((8,), ("data",))
  kernel = jax.device_put(np.ones((8, 4), np.float32),
                          NamedSharding(mesh, PartitionSpec("data", None)))
  params = {"encoder": {"kernel": nn.Partitioned(kernel, ("embed", "mlp")),
                        "bias": np.zeros(4, np.float32)}}
  table = metric_writer.parameter_overview(params)
  lines = table.splitlines()
  assert "Sharding" in lines[1] and "Mean" not in lines[1]
  kernel_row = next(line for line in lines if "encoder/kernel" in line)
  assert "(8, 4)" in kernel_row and "32" in kernel_row and "'data'" in kernel_row
  assert lines[-1] == "Total: 36 -- 144 bytes"
  with_stats = metric_writer.parameter_overview(params, include_stats=True)
  kernel_row = next(line for line in with_stats.splitlines() if "encoder/kernel" in line)
  assert "| 1.0 " in kernel_row


def test_a_cloud_storage_log_is_written_in_parts_and_resumes_in_order(gcs_bucket, monkeypatch):
  """On gs:// each flush appends the buffered lines to metrics.jsonl (a compose) and uploads
  the new events as one more event file, so no flush re-sends what an earlier one sent; a
  run resumed at step 3 drops the lines its predecessor wrote after step 3 and marks the
  restart for TensorBoard."""
  from havic_jax import storage
  workdir = f"{gcs_bucket}/writer_parts"
  uploads = []
  append = storage.append_text
  monkeypatch.setattr(metric_writer.storage, "append_text",
                      lambda file, text: uploads.append(len(text)) or append(file, text))
  writer = MetricWriter(workdir, total_steps=10)
  for step in range(1, 7):
    writer.write(step, {"total": float(step)})
    if step % 2 == 0:
      writer.flush()
  writer.close()
  root = storage.path(workdir)
  lines = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in lines] == [1, 2, 3, 4, 5, 6]
  line_bytes = len(json.dumps({"step": 1, "total": 1.0})) + 1
  assert uploads[1:] == [2 * line_bytes] * 2  # each flush sends its own two lines only
  parts = sorted(p.name for p in (root / "tensorboard").iterdir())
  assert len(parts) == 4  # one per flush (3) and the close
  resumed = MetricWriter(workdir, total_steps=10, start_step=3)
  resumed.write(4, {"total": 40.0})
  resumed.close()
  lines = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
  assert [(r["step"], r["total"]) for r in lines] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]
  local = pathlib.Path(tempfile.mkdtemp()) / "copy"
  (local / "tensorboard").mkdir(parents=True)
  for part in (root / "tensorboard").iterdir():
    (local / "tensorboard" / part.name).write_bytes(part.read_bytes())
  events = read_events(local)
  restarts = [e.step for e in events if e.HasField("session_log")]
  assert restarts == [3]
  values = summary_values(events, "simple_value")
  assert values[(4, "total")] == 40.0 and values[(6, "total")] == 6.0  # TensorBoard purges 6
