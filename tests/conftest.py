"""Test set-up: 8 simulated CPU devices (set before JAX touches a device), one persistent
compilation cache for the run, absl flags at their defaults, the synthetic corpus, its prepared
shards and unusable video files shared by the data and eval tests, and a Cloud Storage
emulator."""

import atexit
import fcntl
import gc
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# JAX's persistent compilation cache, shared by this run's processes: the pytest-xdist workers
# (started after this module runs in the controlling process, they inherit its environment)
# and every training, export or eval process a test starts (but the two-process runs of
# tests/test_multihost.py). The many tests that build the same tiny program compile it once.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="havic_jax_test_jit_")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()  # library code (Grain's workers) reads absl flags' defaults

import pytest  # noqa: E402

SYNTHETIC_VIDEOS = 8
SYNTHETIC_SECONDS = 3.5  # one 3.2 s clip per video


def shared_directory(tmp_path_factory, name, build):
  """``name``, a directory of this test run that ``build(directory)`` fills once, shared by
  every pytest-xdist worker (``-n``): the first worker to ask builds it under a file lock, the
  others wait for it and read the same files."""
  base = tmp_path_factory.getbasetemp()
  if "PYTEST_XDIST_WORKER" in os.environ:
    base = base.parent  # the run's directory above the workers' own
  directory, done = base / name, base / f"{name}.done"
  with open(base / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not done.exists():
      shutil.rmtree(directory, ignore_errors=True)
      directory.mkdir()
      build(directory)
      done.touch()
  return directory


@pytest.fixture(scope="module", autouse=True)
def compiled_programs_freed_after_each_module():
  """Drops JAX's in-process caches of traced and compiled programs after each test module:
  a pytest-xdist worker runs hundreds of tests that each compile their own programs, and
  kept, those grow a worker to several GB by the end of the run (the persistent compilation
  cache still serves the next module's compiles)."""
  yield
  jax.clear_caches()
  gc.collect()


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory):
  """Directory holding a synthetic FakeAVCeleb/ tree of 8 videos (two of each type)."""
  from havic_jax.data import synthetic
  return shared_directory(tmp_path_factory, "synthetic_corpus", lambda root: (
      synthetic.generate_corpus(root, SYNTHETIC_VIDEOS, seed=3, duration=SYNTHETIC_SECONDS)))


@pytest.fixture(scope="session")
def prepared_corpus(synthetic_corpus, tmp_path_factory):
  """The synthetic corpus prepared into ArrayRecord shards (3 shards, 2 worker processes)."""
  from havic_jax.data import prepare
  return shared_directory(tmp_path_factory, "prepared", lambda output: prepare.prepare(
      "fakeavceleb", str(synthetic_corpus), str(output), workers=2, videos_per_shard=3))


@pytest.fixture(scope="session")
def gcs_bucket():
  """``gs://test-bucket`` on a Cloud Storage emulator (``local_services.gcs_emulator``)."""
  from local_services import gcs_emulator
  with gcs_emulator() as bucket:
    yield bucket


@pytest.fixture(scope="session")
def faceless_videos(tmp_path_factory):
  """A folder (two sub-folders) of two 3.6 s videos without faces: 320×160 frames of a moving
  colour gradient, with noise for audio (out-of-domain clips)."""
  import numpy as np
  from havic_jax.data import synthetic
  root = tmp_path_factory.mktemp("faceless")
  rng = np.random.default_rng(5)
  x = np.linspace(0, 255, 320)[None, :, None]
  y = np.linspace(0, 255, 160)[:, None, None]
  seconds = 3.6
  for k in range(2):
    frames = np.stack([np.broadcast_to((x * np.array([1, 0.5, 0]) + y * np.array([0, 0.5, 1])
                                        + 20 * t + 40 * k) % 256, (160, 320, 3))
                       for t in range(int(25 * seconds))]).astype(np.uint8)
    audio = (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
    (root / f"sub{k}").mkdir()
    synthetic.write_mp4(root / f"sub{k}" / f"clip{k}.mp4", frames, 25, audio, 16000)
  return root


@pytest.fixture(scope="session")
def bad_videos(synthetic_corpus, tmp_path_factory):
  """{name: path} of files in one folder that preparation rejects and the eval binary gives a
  status: ``corrupt.mp4`` (a real synthetic video cut to its first 3 kB), ``notes.mp4`` (text),
  ``silent.mp4`` (a face for 3.6 s, no audio track), ``faceless.mp4`` (3.6 s of grey frames,
  noise for audio) and ``short.mp4`` (a face for 2 s, shorter than one clip)."""
  import numpy as np
  from havic_jax.data import synthetic
  root = tmp_path_factory.mktemp("bad_videos")
  good = sorted(synthetic_corpus.glob("FakeAVCeleb/RealVideo-RealAudio/**/*.mp4"))[0]
  (root / "corrupt.mp4").write_bytes(good.read_bytes()[:3000])
  (root / "notes.mp4").write_text("this is not a video\n")
  identity = synthetic.make_identities(1, seed=1)
  recipe = {"source_index": 0, "face": 0, "swap": "", "lipsync": False, "voice": 0,
            "audio_shift_s": 0.0, "vocoder": False}
  frames, _ = synthetic.synthesize_video({**recipe, "path": "a.mp4"}, identity, 0, 3.6)
  synthetic.write_mp4(root / "silent.mp4", frames, 25, None, 16000)
  noise = (0.1 * np.random.default_rng(0).standard_normal(int(3.6 * 16000))).astype(np.float32)
  synthetic.write_mp4(root / "faceless.mp4", np.full_like(frames, 128), 25, noise, 16000)
  short_frames, short_audio = synthetic.synthesize_video({**recipe, "path": "b.mp4"}, identity,
                                                         0, 2.0)
  synthetic.write_mp4(root / "short.mp4", short_frames, 25, short_audio, 16000)
  return {path.name: path for path in sorted(root.iterdir())}
