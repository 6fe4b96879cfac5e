"""Sharded jobs as Apache Beam pipelines (``[beam]`` extra): the preparation's shard runner
(``prepare --runner=beam``) and, through :func:`run_sharded`, the eval binary's window shards.

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
from typing import Any, Callable, Dict, Iterable, List, Mapping, Sequence, Tuple

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


def listing_lines(pending: Mapping[int, Sequence[Any]],
                  fields: Callable[[Any], Dict[str, Any]] = entry_fields) -> List[str]:
  """One JSON line per pending entry (a video): its shard, its position in the shard, and
  ``fields(entry)`` (JSON-ready)."""
  return [json.dumps({"shard": shard, "position": position, "entry": fields(entry)})
          for shard, entries in sorted(pending.items())
          for position, entry in enumerate(entries)]


def read_listing(location: str) -> List[str]:
  """The lines of a listing file, local or ``gs://`` (through ``havic_jax.storage``, so a
  bucket needs no Beam file-system plugin)."""
  return storage.path(location).read_text().splitlines()


class ProcessItem(beam.DoFn):
  """(shard, (position, outcome)) of one listing line: ``process(line["entry"])``, counted by
  ``count(outcome)`` ({counter name: increment}) in the ``namespace`` counters."""

  def __init__(self, process: Callable[[Any], Any], count: Callable[[Any], Dict[str, int]],
               namespace: str):
    super().__init__()
    self._process, self._count, self._namespace = process, count, namespace

  def process(self, line: str) -> Iterable[Tuple[int, Tuple[int, Any]]]:
    item = json.loads(line)
    outcome = self._process(item["entry"])
    for name, increment in self._count(outcome).items():
      Metrics.counter(self._namespace, name).inc(increment)
    yield item["shard"], (item["position"], outcome)


class WriteShard(beam.DoFn):
  """``write(shard, outcomes in listing order)`` for one shard; yields the shard index."""

  def __init__(self, write: Callable[[int, Iterable[Any]], None], namespace: str):
    super().__init__()
    self._write, self._namespace = write, namespace

  def process(self, element: Tuple[int, Iterable[Tuple[int, Any]]]) -> Iterable[int]:
    shard, outcomes = element
    self._write(shard, (outcome for _, outcome in sorted(outcomes, key=lambda o: o[0])))
    Metrics.counter(self._namespace, "shards").inc()
    yield shard


def run_sharded(listing: epath.Path, lines: Sequence[str], process: Callable[[Any], Any],
                count: Callable[[Any], Dict[str, int]], write: Callable[[int, Iterable[Any]], None],
                beam_options: str, namespace: str) -> Dict[str, int]:
  """The Beam pipeline of a sharded job: the listing ``lines`` (:func:`listing_lines`) are
  written to ``listing``, spread over the workers, each entry ``process``-ed, and each shard's
  outcomes ``write``-n in listing order; every callable must pickle (module functions,
  ``functools.partial``). Returns the totals of the ``namespace`` counters (``count``'s names
  and ``shards``)."""
  listing.write_text("".join(line + "\n" for line in lines))
  pipeline = beam.Pipeline(options=PipelineOptions(shlex.split(beam_options)))
  _ = (pipeline
       | "Listing" >> beam.Create([os.fspath(listing)])
       | "ListEntries" >> beam.FlatMap(read_listing)
       | "Spread" >> beam.Reshuffle()
       | "Process" >> beam.ParDo(ProcessItem(process, count, namespace))
       | "ByShard" >> beam.GroupByKey()
       | "WriteShard" >> beam.ParDo(WriteShard(write, namespace)))
  result = pipeline.run()
  result.wait_until_finish()
  listing.unlink()
  totals: Dict[str, int] = {}
  for counter in result.metrics().query()["counters"]:
    if counter.key.metric.namespace == namespace:
      value = counter.committed if counter.committed is not None else counter.attempted
      totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + (value or 0)
  return totals


def _prepare_video(fields: Dict[str, Any], options: PrepareOptions) -> VideoOutcome:
  return process_video(entry_from_fields(fields), options)


def _prepare_counts(outcome: VideoOutcome) -> Dict[str, int]:
  return {"videos": 1, "videos_rejected": int(outcome.rejection is not None),
          "clips": len(outcome.records)}


def _write_prepared_shard(shard: int, outcomes: Iterable[VideoOutcome], output: str,
                          count: int) -> None:
  description = write_shard(output, shard, count, outcomes)
  logging.info("wrote %s: %d clips", description["file"], description["records"])


def run(output: epath.Path, count: int, pending: Mapping[int, Sequence[VideoEntry]],
        options: PrepareOptions, beam_options: str) -> None:
  """Prepares the ``pending`` shards (index -> its videos, of ``count`` shards) into
  ``output`` with a Beam pipeline built from the command-line ``beam_options``; logs the
  totals of the ``prepare`` counters."""
  totals = run_sharded(
      output / LISTING, listing_lines(pending),
      functools.partial(_prepare_video, options=options), _prepare_counts,
      functools.partial(_write_prepared_shard, output=os.fspath(output), count=count),
      beam_options, COUNTER_NAMESPACE)
  logging.info("Beam preparation: %s",
               ", ".join(f"{totals.get(k, 0)} {k}" for k in COUNTERS))


def runner(beam_options: str) -> ShardRunner:
  """The shard runner of ``prepare.prepare`` that runs :func:`run` with the command-line
  ``beam_options`` (e.g. ``"--runner=DirectRunner --direct_num_workers=2"``)."""
  return functools.partial(run, beam_options=beam_options)
