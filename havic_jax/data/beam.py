"""The preparation's shard runner as an Apache Beam pipeline: ``prepare --runner=beam``
(``[beam]`` extra).

  list videos -> spread over workers -> process_video per video (decode, cut clips, crop
  faces, encode records) -> group by shard -> write_shard per shard

It calls the same per-video function (``prepare.process_video``) and shard writer
(``shard_writer.write_shard``) as the local runner, with the same videos in each shard in the same
order, so it writes the same files; ``prepare.prepare(..., run_shards=runner(beam_options))``
lists the videos, skips the shards a previous run finished and writes ``manifest.json`` from
the shards' descriptions once the pipeline is done. The pending videos travel to the workers
as a JSON-lines listing written under the output (``_beam_listing.jsonl``, deleted at the
end), not inside the job graph (about 300 bytes a video: 0.3 GB for VoxCeleb2's 1.09M); one
worker reads it and the ``Reshuffle`` spreads the videos over all of them. Each worker loads
MTCNN once.

Progress and totals are Beam counters (namespace ``prepare``): ``videos``, ``videos_rejected``,
``clips``, ``shards``; runners show them while the job runs (the Dataflow console, Flink's web
UI) and :func:`run` logs their totals.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shlex
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple

import apache_beam as beam
from absl import logging
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions
from etils import epath

from havic_jax.data.prepare import PrepareOptions, ShardRunner, process_video
from havic_jax.data.shard_writer import VideoOutcome, write_shard
from havic_jax import storage
from havic_jax.data.sources import VideoEntry

LISTING = "_beam_listing.jsonl"  # the pending videos, one JSON object a line
COUNTER_NAMESPACE = "prepare"
COUNTERS = ("videos", "videos_rejected", "clips", "shards")


def entry_fields(entry: VideoEntry) -> Dict[str, Any]:
  """A VideoEntry as JSON-ready fields (:func:`entry_from_fields` reads them back)."""
  return dataclasses.asdict(entry)


def entry_from_fields(fields: Dict[str, Any]) -> VideoEntry:
  """The VideoEntry of :func:`entry_fields`'s output (after a JSON round trip)."""
  return VideoEntry(**{**fields, "splits": tuple(fields["splits"])})


def listing_lines(pending: Mapping[int, Sequence[VideoEntry]]) -> List[str]:
  """One JSON line per pending video: its shard, its position in the shard, its entry."""
  return [json.dumps({"shard": shard, "position": position, "entry": entry_fields(entry)})
          for shard, entries in sorted(pending.items())
          for position, entry in enumerate(entries)]


def read_listing(location: str) -> List[str]:
  """The lines of a listing file, local or ``gs://`` (through ``havic_jax.storage``, so a
  bucket needs no Beam file-system plugin)."""
  return storage.path(location).read_text().splitlines()


class ProcessVideo(beam.DoFn):
  """(shard, (position, VideoOutcome)) of one listing line, counting videos and clips."""

  def __init__(self, options: PrepareOptions):
    super().__init__()
    self._options = options
    self._videos = Metrics.counter(COUNTER_NAMESPACE, "videos")
    self._rejected = Metrics.counter(COUNTER_NAMESPACE, "videos_rejected")
    self._clips = Metrics.counter(COUNTER_NAMESPACE, "clips")

  def process(self, line: str) -> Iterable[Tuple[int, Tuple[int, VideoOutcome]]]:
    item = json.loads(line)
    outcome = process_video(entry_from_fields(item["entry"]), self._options)
    self._videos.inc()
    self._rejected.inc(outcome.rejection is not None)
    self._clips.inc(len(outcome.records))
    yield item["shard"], (item["position"], outcome)


class WriteShard(beam.DoFn):
  """Writes one shard from its videos' outcomes, in listing order; yields the shard index."""

  def __init__(self, output: str, count: int):
    super().__init__()
    self._output = output
    self._count = count
    self._shards = Metrics.counter(COUNTER_NAMESPACE, "shards")

  def process(self, element: Tuple[int, Iterable[Tuple[int, VideoOutcome]]]) -> Iterable[int]:
    shard, outcomes = element
    description = write_shard(self._output, shard, self._count,
                              (outcome for _, outcome in sorted(outcomes, key=lambda o: o[0])))
    self._shards.inc()
    logging.info("wrote %s: %d clips", description["file"], description["records"])
    yield shard


def run(output: epath.Path, count: int, pending: Mapping[int, Sequence[VideoEntry]],
        options: PrepareOptions, beam_options: str) -> None:
  """Prepares the ``pending`` shards (index -> its videos, of ``count`` shards) into
  ``output`` with a Beam pipeline built from the command-line ``beam_options``; logs the
  totals of the ``prepare`` counters."""
  listing = output / LISTING
  listing.write_text("".join(line + "\n" for line in listing_lines(pending)))
  pipeline = beam.Pipeline(options=PipelineOptions(shlex.split(beam_options)))
  _ = (pipeline
       | "Listing" >> beam.Create([os.fspath(listing)])
       | "ListVideos" >> beam.FlatMap(read_listing)
       | "Spread" >> beam.Reshuffle()
       | "ProcessVideo" >> beam.ParDo(ProcessVideo(options))
       | "ByShard" >> beam.GroupByKey()
       | "WriteShard" >> beam.ParDo(WriteShard(os.fspath(output), count)))
  result = pipeline.run()
  result.wait_until_finish()
  listing.unlink()
  totals = {name: 0 for name in COUNTERS}
  for counter in result.metrics().query()["counters"]:
    if counter.key.metric.namespace == COUNTER_NAMESPACE:
      value = counter.committed if counter.committed is not None else counter.attempted
      totals[counter.key.metric.name] += value or 0
  logging.info("Beam preparation: %s", ", ".join(f"{n} {k}" for k, n in totals.items()))


def runner(beam_options: str) -> ShardRunner:
  """The shard runner of ``prepare.prepare`` that runs :func:`run` with the command-line
  ``beam_options`` (e.g. ``"--runner=DirectRunner --direct_num_workers=2"``)."""
  return functools.partial(run, beam_options=beam_options)
