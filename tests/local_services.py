"""Servers the tests start on 127.0.0.1: a free port, and a Cloud Storage API
(gcp-storage-emulator) that gcsfs, google-cloud-storage and tensorstore are pointed at.

``python tests/local_services.py PORT`` runs the emulator (what :func:`gcs_emulator` starts).
"""

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time

BUCKET = "test-bucket"


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _accepts(port: int) -> bool:
  with socket.socket() as s:
    return s.connect_ex(("127.0.0.1", port)) == 0


def serve_gcs(port: int) -> None:
  """Serves ``test-bucket`` from memory on 127.0.0.1:``port`` with gcp-storage-emulator until
  terminated.

  Its media downloads lack the ``x-goog-generation`` header that Cloud Storage sends with
  every object it serves; tensorstore (Orbax's OCDBT manifests) reads an object's generation
  from it for its conditional reads and writes, so the header is added here."""
  from gcp_storage_emulator import server
  from gcp_storage_emulator.handlers import objects
  download = objects.download

  def download_with_generation(request, response, storage, *args, **kwargs):
    download(request, response, storage, *args, **kwargs)
    if response.status.value < 300:
      resource = storage.get_file_obj(request.params["bucket_name"],
                                      request.params["object_id"])
      response["x-goog-generation"] = resource["generation"]
      response["x-goog-metageneration"] = resource["metageneration"]

  objects.download = download_with_generation  # objects.get (?alt=media) calls it by name
  for _, methods in server.HANDLERS:
    for method, handler in methods.items():
      if handler is download:
        methods[method] = download_with_generation
  server.create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET).run()


@contextlib.contextmanager
def gcs_emulator():
  """Yields ``gs://test-bucket`` served by :func:`serve_gcs` in a subprocess, with this
  process's environment (inherited by its subprocesses) pointing the clients at it:
  ``STORAGE_EMULATOR_HOST`` (gcsfs, google-cloud-storage), ``TENSORSTORE_GCS_HTTP_URL`` and
  ``GOOGLE_AUTH_TOKEN_FOR_TESTING`` (tensorstore's gcs driver, which Orbax writes through:
  its endpoint, and a fixed token instead of credentials), and gcsfs's bucket-type lookup
  through the Storage Control API, which the emulator does not serve, off."""
  port = free_port()
  log = tempfile.TemporaryFile("w+")
  server = subprocess.Popen([sys.executable, __file__, str(port)], stdout=log, stderr=log)
  url = f"http://127.0.0.1:{port}"
  environment = {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
                 "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
                 "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
  previous = {key: os.environ.get(key) for key in environment}
  try:
    while not _accepts(port):
      if server.poll() is not None:
        log.seek(0)
        raise RuntimeError(f"gcp-storage-emulator exited: {log.read()[-2000:]}")
      time.sleep(0.1)
    os.environ.update(environment)
    yield f"gs://{BUCKET}"
  finally:
    for key, value in previous.items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value
    server.terminate()
    server.wait()
    log.close()


if __name__ == "__main__":
  serve_gcs(int(sys.argv[1]))
