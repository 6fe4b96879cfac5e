"""The framing shared by the project's binary records: the clip records of prepared data
(``havic_jax.data.records``, magic ``HAVC``) and the eval's window records
(``havic_jax.evaluation.window_shards``, magic ``HAVW``).

A record is the 4-byte magic of its kind, a little-endian uint32 header length, a UTF-8 JSON
header and the payload chunks, back to back; the header says where each array lies in the
payload. :func:`encode` records the format version in the header as ``"version"``
(:data:`FORMAT_VERSION`), :func:`decode` checks the magic and the version and returns the header
and the payload's offset. Every record written so far is version 1 (they carry
``"version": 1``); a header without a version is read as version 1 too.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Dict, Mapping, Sequence, Tuple, Type

FORMAT_VERSION = 1
VERSION_KEY = "version"
MAGIC_BYTES = 4
_LENGTH = struct.Struct("<I")
PREFIX_BYTES = MAGIC_BYTES + _LENGTH.size


class FormatError(ValueError):
  """Bytes that are not a record of the expected kind and version."""


def encode(magic: bytes, header: Mapping[str, Any], chunks: Sequence[bytes]) -> bytes:
  """``magic``, the header length, ``header`` (with the format version) as compact JSON and
  ``chunks``, concatenated. ``header`` must be JSON-able and not hold ``"version"``."""
  if len(magic) != MAGIC_BYTES:
    raise ValueError(f"a record magic is {MAGIC_BYTES} bytes, got {magic!r}")
  if VERSION_KEY in header:
    raise ValueError(f"{VERSION_KEY!r} is the codec's header key; leave it out of the header")
  header_bytes = json.dumps({VERSION_KEY: FORMAT_VERSION, **header},
                            separators=(",", ":")).encode()
  return b"".join([magic, _LENGTH.pack(len(header_bytes)), header_bytes, *chunks])


def decode(data: bytes, magic: bytes, what: str = "record",
           remedy: str = "write it again with this havic_jax",
           error: Type[Exception] = FormatError) -> Tuple[Dict[str, Any], int]:
  """(header, payload offset) of a record :func:`encode` wrote with ``magic``.

  Raises ``error`` (one line, naming ``what`` and, for a version this code does not read, the
  version and ``remedy``) for another magic, a truncated or unreadable header or another
  format version."""
  if bytes(data[:MAGIC_BYTES]) != magic:
    raise error(f"not a havic_jax {what} (bad magic)")
  if len(data) < PREFIX_BYTES:
    raise error(f"truncated havic_jax {what}: {len(data)} bytes")
  (length,) = _LENGTH.unpack_from(data, MAGIC_BYTES)
  end = PREFIX_BYTES + length
  if len(data) < end:
    raise error(f"truncated havic_jax {what}: a {length}-byte header in {len(data)} bytes")
  try:
    header = json.loads(bytes(data[PREFIX_BYTES:end]))
  except ValueError as exception:  # UnicodeDecodeError and JSONDecodeError
    raise error(f"havic_jax {what} with an unreadable header ({exception})") from None
  if not isinstance(header, dict):
    raise error(f"havic_jax {what} with a header that is not a JSON object")
  version = header.get(VERSION_KEY, 1)
  if version != FORMAT_VERSION:
    raise error(f"{what} format version {version!r}; this havic_jax reads version "
                f"{FORMAT_VERSION}: {remedy}")
  return header, end
