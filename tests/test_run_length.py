"""Run length in epochs and learning rates that follow the batch (training.run_length): steps
derived from manifests in the layout ``data_pipelines.prepare`` writes, the scaled peaks in
the optimiser's own schedules, and a resumed epoch-based run that keeps its schedule."""

import json
import math

import jax
import numpy as np
import optax
import pytest

from configs import finetune_base, pretrain_base, pretrain_tiny
from havic_jax.data import records
from havic_jax.training import builder, hooks, loop, run_length
from havic_jax.training.optimizer import make_optimizer


def write_prepared(directory, clips_per_video, train_videos, labels=None):
  """A prepared directory: ``manifest.json`` in the format ``prepare`` writes, one (empty)
  shard, videos ``v0..`` of ``clips_per_video`` clips; ``train_videos`` of them in the train
  split, the rest in test; ``labels``: each video's overall label (default real)."""
  directory.mkdir(parents=True)
  shard = records.shard_name(0, 1)
  (directory / shard).write_bytes(b"")
  labels = labels or [0] * len(clips_per_video)
  videos, first = [], 0
  for index, (clips, label) in enumerate(zip(clips_per_video, labels)):
    videos.append({"video_id": f"v{index}", "first_record": first, "clips": clips,
                   "overall_label": label, "audio_label": label, "visual_label": label,
                   "identity": f"id{index}", "category": "real" if label == 0 else "FVFA"})
    first += clips
  ids = [v["video_id"] for v in videos]
  manifest = {"format_version": records.FORMAT_VERSION, "dataset": "folder",
              "shards": [{"file": shard, "records": first}], "videos": videos,
              "splits": {"train": ids[:train_videos], "test": ids[train_videos:]},
              "rejected": []}
  (directory / records.MANIFEST).write_text(json.dumps(manifest))
  return directory


def test_steps_derive_from_the_clips_of_every_mixture_component(tmp_path):
  """The train split of the run's data (real clips only where the run asks) plus every clip of
  two mixture components, at a batch that does not divide them, with and without gradient
  accumulation (the batch is the optimiser step's)."""
  # 5 videos, train = the first 4 (7 + 9 + 11 + 10 = 37 clips; the test video's 13 do not count).
  data = write_prepared(tmp_path / "main", [7, 9, 11, 10, 13], train_videos=4,
                        labels=[0, 1, 0, 1, 0])
  first = write_prepared(tmp_path / "a", [12, 8], train_videos=1)    # 20 clips, all mixed in
  second = write_prepared(tmp_path / "b", [13], train_videos=1)      # 13 clips
  config = pretrain_base.get_config()
  config.data.split = "train"
  config.data.mixture = f"{first}:0.2,{second}:0.1"
  config.batch_size = 16
  config.num_epochs, config.optimizer.warmup_epochs = 3.0, 1.0
  prepared = records.open_prepared(str(data))
  assert run_length.training_clips(prepared, config, real_only=False) == 37 + 20 + 13
  for accumulation in (1, 4):
    config.grad_accumulation_steps = accumulation
    resolved = builder.with_run_length(config, prepared)
    assert resolved.schedule.clips_per_epoch == 70
    assert resolved.schedule.steps_per_epoch == 70 / 16  # 4.375
    assert resolved.num_steps == 14                      # ceil(3 × 4.375) = ceil(13.125)
    assert resolved.optimizer.warmup_steps == 5          # ceil(4.375)
  # Real clips only (videos 0 and 2 of the train split: 18 clips) plus the mixture's 33.
  config.data.real_only = True
  assert builder.with_run_length(config, prepared).schedule.clips_per_epoch == 51
  # A step count overrides its epochs; without warm-up epochs or steps, warmup_fraction.
  config.num_steps, config.optimizer.warmup_epochs = 100, None
  resolved = builder.with_run_length(config, prepared)
  assert (resolved.num_steps, resolved.optimizer.warmup_steps) == (100, 10)


def test_fine_tuning_restarts_derive_from_epochs(tmp_path):
  data = records.open_prepared(str(write_prepared(tmp_path / "d", [30, 30, 40], 2)))
  config = finetune_base.get_config()  # 50 epochs, restarts every 10, batch 32
  resolved = builder.with_run_length(config, data)  # train: 60 clips = 1.875 steps per epoch
  assert (resolved.num_steps, resolved.optimizer.restart_every_steps) == (94, 19)
  config.optimizer.restart_every_steps = 7
  assert builder.with_run_length(config, data).optimizer.restart_every_steps == 7


def test_neither_epochs_nor_steps_is_an_error():
  config = pretrain_base.get_config()
  config.num_epochs = None
  with pytest.raises(run_length.RunLengthError, match="neither num_epochs nor num_steps"):
    run_length.resolve(config, 100)


@pytest.mark.parametrize("scaling, factor", [("linear", 4.0), ("sqrt", 2.0), ("none", 1.0)])
def test_the_peak_follows_the_batch(scaling, factor):
  """At 4× the reference batch: linear 4×, sqrt 2×, none 1×, in the schedules the optimiser
  runs (pretraining's peak at the end of warm-up; both fine-tuning groups at a restart)."""
  config = pretrain_base.get_config()
  config.batch_size = 4 * config.optimizer.reference_batch_size
  config.optimizer.lr_scaling = scaling
  resolved = run_length.resolve(config, 44800)
  assert resolved.schedule.learning_rate_scale == pytest.approx(factor)
  _, schedules = make_optimizer(resolved)
  peak = float(schedules["learning_rate"](resolved.optimizer.warmup_steps))
  assert peak == pytest.approx(1.5e-4 * factor, rel=1e-5)
  config = finetune_base.get_config()
  config.batch_size = 4 * 32
  config.optimizer.lr_scaling = scaling
  _, schedules = make_optimizer(run_length.resolve(config, 44800))
  assert float(schedules["learning_rate_pretrained"](0)) == pytest.approx(1e-5 * factor)
  assert float(schedules["learning_rate_new"](0)) == pytest.approx(1e-4 * factor)
  config.optimizer.lr_scaling = "cube"
  with pytest.raises(run_length.RunLengthError, match="lr_scaling must be one of"):
    run_length.resolve(config, 100)


def test_changes_name_what_a_resumed_run_derives_differently():
  before = run_length.resolve(pretrain_base.get_config(), 44800)
  config = pretrain_base.get_config()
  config.batch_size = 224
  after = run_length.resolve(config, 44800)
  changed = run_length.changes(before.to_dict(), after.to_dict())
  assert changed["num_steps"] == (80000, 40000)
  assert changed["schedule.learning_rate_scale"] == (1.0, pytest.approx(math.sqrt(2)))
  assert run_length.changes(before.to_dict(), before.to_dict()) == {}


def epoch_config(prepared_corpus):
  """(the tiny pretraining config on the prepared corpus, logging every step, no images;
  the corpus's clip count)."""
  clips = len(records.open_prepared(str(prepared_corpus)).split_indices(None))
  config = pretrain_tiny.get_config()
  config.unlock()
  config.log_every, config.image_every = 1, 0
  config.data.source, config.data.path = "prepared", str(prepared_corpus)
  return config, clips


def run_until(config, workdir, stop, monkeypatch):
  """``loop.run`` stopped after step ``stop`` by a preemption notice, in this process without
  the persistent compilation cache (see test_prefetch); returns its state."""
  jax.config.update("jax_enable_compilation_cache", False)
  try:
    with monkeypatch.context() as patch:
      patch.setattr(hooks.Preemption, "reached", lambda self, step: step == stop)
      state, _ = loop.run(config, str(workdir))
  finally:
    jax.config.update("jax_enable_compilation_cache", True)
  return state


def test_a_resumed_epoch_based_run_keeps_its_schedule(tmp_path, prepared_corpus, monkeypatch):
  """An epoch-based run stopped after step 2 and resumed: the same derived schedule in
  config.json, no change reported, and every step's learning rate the one-cycle schedule of
  the steps derived independently here."""
  config, clips = epoch_config(prepared_corpus)
  config.num_steps, config.num_epochs = None, 40.0 / clips  # 40 clips: 5 steps of 8
  config.optimizer.warmup_epochs = 12.0 / clips             # ceil(1.5) = 2 steps
  config.optimizer.lr_scaling, config.optimizer.reference_batch_size = "linear", 2
  workdir = tmp_path / "run"
  warnings = []
  monkeypatch.setattr(run_length.logging, "warning", lambda *args: warnings.append(args))
  assert int(run_until(config, workdir, 2, monkeypatch).step) == 2
  first = json.loads((workdir / "config.json").read_text())
  assert int(run_until(config, workdir, None, monkeypatch).step) == 5
  assert not [w for w in warnings if "schedule" in w[0]]
  second = json.loads((workdir / "config.json").read_text())
  assert second == first
  assert (second["num_steps"], second["optimizer"]["warmup_steps"]) == (5, 2)
  assert second["schedule"]["learning_rates"]["peak_learning_rate"] == pytest.approx(4e-3)
  expected = optax.cosine_onecycle_schedule(5, 1e-3 * 8 / 2, pct_start=2 / 5, div_factor=25.0,
                                            final_div_factor=1e4)
  lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  logged = {line["step"]: line["learning_rate"] for line in lines if "learning_rate" in line}
  assert sorted(logged) == [1, 2, 3, 4, 5]
  np.testing.assert_allclose([logged[s] for s in range(1, 6)],
                             [float(expected(s - 1)) for s in range(1, 6)], rtol=1e-6)


@pytest.mark.parametrize("reschedule", [False, True])
def test_a_resumed_run_with_another_batch_keeps_its_schedule_unless_rescheduled(
    tmp_path, prepared_corpus, monkeypatch, reschedule):
  """A run of 4 epochs at batch 16 stopped after step 1, resumed at batch 8: it keeps the
  saved steps, warm-up and learning rates (the new batch alone would give twice the steps and
  half the rate), logging each value that differs; ``reschedule`` derives them anew, logged too."""
  config, clips = epoch_config(prepared_corpus)
  config.num_steps, config.num_epochs = None, 4.0
  config.optimizer.warmup_steps = None
  config.optimizer.lr_scaling, config.optimizer.reference_batch_size = "linear", 16
  config.batch_size = 16
  workdir = tmp_path / "run"
  warnings = []
  monkeypatch.setattr(run_length.logging, "warning", lambda *args: warnings.append(args))
  run_until(config, workdir, 1, monkeypatch)
  first = json.loads((workdir / "config.json").read_text())
  config.batch_size, config.reschedule = 8, reschedule
  run_until(config, workdir, 2, monkeypatch)
  assert first["num_steps"] == 4 * clips // 16
  second = json.loads((workdir / "config.json").read_text())
  warnings = [w for w in warnings if "schedule" in w[0]]
  named = {w[1]: (w[2], w[3]) for w in warnings}
  assert named["num_steps"] == (first["num_steps"], 4 * clips // 8)
  assert named["schedule.learning_rate_scale"] == (1.0, 0.5)
  if reschedule:
    assert all("reschedule" in w[0] for w in warnings)
    assert second["num_steps"] == 4 * clips // 8
    assert second["schedule"]["learning_rates"]["peak_learning_rate"] == pytest.approx(5e-4)
  else:
    assert all("saved schedule" in w[0] for w in warnings)
    for key in ("num_steps", "schedule"):
      assert second[key] == first[key], key
    assert second["optimizer"]["warmup_steps"] == first["optimizer"]["warmup_steps"]
