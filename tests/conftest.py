"""Shared fixtures: the embedded sample and small PNG writers."""

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# Under pytest-xdist each worker, and each process a test starts, runs TensorFlow's ops
# with a thread per core: with as many workers as cores they oversubscribe the cores and
# spin against one another. Workers that fill the cores get one op thread each (the
# processes a test starts inherit it; the inter-op pool, which collectives need, is left
# alone); a run of its own keeps TensorFlow's default.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) >= (os.cpu_count() or 1) > 1:
  os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")

import txr_data  # noqa: E402  (registers the builders)

SAMPLE_ROOT = os.path.join(txr_data.SAMPLE_DIR, "ChinaSet_AllFiles")


# The real archive's 138 file names, MCUCXR_<id>_0.png (80) and MCUCXR_<id>_1.png (58), as
# listed in Idiap's bob.med.tb split files (bob/med/tb/data/montgomery/default.json).
REAL_MONTGOMERY_NORMAL_IDS = """
0001 0002 0003 0004 0005 0006 0008 0011 0013 0015 0016 0017 0019 0020 0021 0022 0023 0024 0026
0027 0028 0029 0030 0031 0035 0038 0040 0041 0042 0043 0044 0045 0046 0047 0048 0049 0051 0052
0053 0054 0055 0056 0057 0058 0059 0060 0061 0062 0063 0064 0068 0069 0070 0071 0072 0074 0075
0077 0079 0080 0081 0082 0083 0084 0085 0086 0087 0089 0090 0091 0092 0094 0095 0096 0097 0099
0100 0101 0102 0103
""".split()
REAL_MONTGOMERY_TB_IDS = """
0104 0108 0113 0117 0126 0140 0141 0142 0144 0150 0162 0166 0170 0173 0182 0188 0194 0195 0196
0203 0213 0218 0223 0228 0243 0251 0253 0254 0255 0258 0264 0266 0275 0282 0289 0294 0301 0309
0311 0313 0316 0331 0334 0338 0348 0350 0352 0354 0362 0367 0369 0372 0375 0383 0387 0390 0393
0399
""".split()


def real_montgomery_stems() -> list[str]:
  """The real Montgomery archive's 138 file stems: split counts and fold deals use them."""
  return [f"MCUCXR_{i}_0" for i in REAL_MONTGOMERY_NORMAL_IDS] + [
    f"MCUCXR_{i}_1" for i in REAL_MONTGOMERY_TB_IDS
  ]


def png_bytes(array, convert: str | None = None) -> bytes:
  """PNG bytes of `array` (uint16 gives a 16-bit PNG), converted to a Pillow mode."""
  import io

  from PIL import Image

  image = Image.fromarray(array)
  buf = io.BytesIO()
  (image.convert(convert) if convert else image).save(buf, format="PNG")
  return buf.getvalue()


def png_with_exif(png: bytes, orientation: int, order: str) -> bytes:
  """`png` with an eXIf chunk (before IDAT) holding one Orientation entry, byte order II or MM."""
  import struct
  import zlib

  fmt = "<" if order == "II" else ">"
  tiff = order.encode() + struct.pack(fmt + "HI", 42, 8) + struct.pack(fmt + "H", 1)
  tiff += struct.pack(fmt + "HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(fmt + "I", 0)
  body = b"eXIf" + tiff
  chunk = struct.pack(">I", len(tiff)) + body + struct.pack(">I", zlib.crc32(body))
  return png[:33] + chunk + png[33:]


def dicom_bytes(pixels, **attributes) -> bytes:
  """A single-frame grayscale DICOM file (Digital X-Ray) holding `pixels` (uint16)."""
  from txr_data.local_cxr import synthetic

  return synthetic.dicom_bytes(pixels, **attributes)


def metadata(**changes):
  """A valid `contract.Metadata` of a SavedModel (for exports made by hand), with `changes`."""
  import dataclasses

  from txr_lite import contract

  meta = contract.Metadata(
    variant=contract.SAVED_MODEL, image_size=75, max_side=512, operating_point=contract.TRIAGE,
    thresholds={contract.YOUDEN: 0.6, contract.TRIAGE: 0.5}, ood_threshold=40.0,
    max_colourfulness=10.0, aspect_range=(0.5, 2.0), min_polarity=-20.0,
    min_smoothness=0.3,
  )  # fmt: skip
  return dataclasses.replace(meta, **changes)


def saved_model_stub(export_dir):
  """An export folder with a graph file and valid metadata: enough for txr-predict's checks."""
  from txr_lite import contract

  (export_dir / "assets.extra").mkdir(parents=True)
  (export_dir / "saved_model.pb").write_bytes(b"")
  (export_dir / contract.SAVED_MODEL_METADATA).write_text(metadata().to_json())
  return export_dir


def zip_tree(root, zip_path, arc_root: str, junk: str) -> None:
  """Zips the tree `root` under `arc_root/`, plus a `__MACOSX/<junk>` entry, as macOS does."""
  import zipfile

  with zipfile.ZipFile(zip_path, "w") as z:
    for folder, _, files in os.walk(root):
      for f in files:
        path = os.path.join(folder, f)
        z.write(path, os.path.join(arc_root, os.path.relpath(path, root)))
    z.writestr(f"__MACOSX/{arc_root}/{junk}", b"junk")


def pytest_collection_modifyitems(items):
  """Runs the heavy files first: under `--dist loadfile` the worker that drew one last would
  finish minutes after the other (longest job first is the classic balance)."""
  items.sort(key=lambda item: item.get_closest_marker("heavy") is None)


@pytest.fixture
def sample_copy(tmp_path):
  """A writable copy of the sample's `ChinaSet_AllFiles` tree under tmp_path/manual."""
  dst = tmp_path / "manual" / "ChinaSet_AllFiles"
  shutil.copytree(SAMPLE_ROOT, dst)
  return dst


def shared_folder(tmp_path_factory, name, make):
  """A folder `make(folder)` fills once per test run, shared by every pytest-xdist worker.

  Session fixtures run once in each worker: a data_dir or weights file that tests on both
  workers need was built twice. The first worker to ask builds it under a lock; the others
  wait for it and read it. Tests only read these folders.
  """
  root = tmp_path_factory.getbasetemp()
  if "PYTEST_XDIST_WORKER" in os.environ:
    root = root.parent  # the run's folder, above each worker's own
  folder, done = root / name, root / f"{name}.done"
  with open(root / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    if not done.exists():
      shutil.rmtree(folder, ignore_errors=True)
      folder.mkdir()
      make(folder)
      done.touch()
  return folder


@pytest.fixture(scope="session")
def built_data_dir(tmp_path_factory):
  """A data_dir holding shenzhen_cxr/512 and montgomery_cxr/512 built from the embedded samples."""

  def build(data_dir):
    import tensorflow_datasets as tfds

    for name, manual_dir in (
      ("shenzhen_cxr/512", txr_data.SAMPLE_DIR),
      ("montgomery_cxr/512", txr_data.MONTGOMERY_SAMPLE_DIR),
    ):
      tfds.builder(name, data_dir=os.fspath(data_dir)).download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
      )

  return os.fspath(shared_folder(tmp_path_factory, "tfds", build))


@pytest.fixture(scope="session")
def base_weights(tmp_path_factory):
  """A no-top InceptionV3 weights file (random: no download), standing in for ImageNet's.

  --mode=two_phase refuses --weights=none, so its tests pass a file, as users
  without internet do.
  """
  name = "inception_v3_notop.weights.h5"

  def save(folder):
    import keras

    keras.utils.set_random_seed(0)
    base = keras.applications.InceptionV3(include_top=False, weights=None, input_shape=(75, 75, 3))
    base.save_weights(folder / name)

  return os.fspath(shared_folder(tmp_path_factory, "inception_v3_weights", save) / name)


@pytest.fixture(scope="session")
def tiny_base_weights(tmp_path_factory, built_data_dir):
  """No-top MobileNetV3Small weights at 32 px: the base of the mechanics tests' runs.

  Strategies, resuming, folds and exports do not depend on the network, so the tests that
  train through them use the smallest backbone at the smallest size it takes (TINY). Its
  weights are random, standing in for ImageNet's (no download here), with each
  BatchNorm's statistics set from the sample's training images: with the initial ones
  (mean 0, variance 1) the activations of a random MobileNetV3 fade to about 1e-11 by the
  last block, every image got the same features and every model the same score.
  """
  name = "mobilenet_v3_small_notop.weights.h5"

  def save(folder):
    import keras

    from txr_model import input_pipeline
    from txr_model import model as model_lib

    keras.utils.set_random_seed(0)
    model = model_lib.build_model(32, "none", mode="end_to_end", backbone="mobilenet_v3_small")
    (base,) = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    to_base = keras.Model(model.input, model.get_layer(model_lib.TO_RGB).output)
    split = input_pipeline.InputConfig("shenzhen_cxr/512", built_data_dir, 32, 64, split="train")
    images = to_base(next(iter(input_pipeline.make_dataset(split)))[0])
    for layer in base.layers:  # In order: each one's input already uses the statistics set before.
      if isinstance(layer, keras.layers.BatchNormalization):
        inputs = keras.Model(base.input, layer.input)(images)
        axes = tuple(range(len(inputs.shape) - 1))
        layer.moving_mean.assign(keras.ops.mean(inputs, axes))
        layer.moving_variance.assign(keras.ops.var(inputs, axes))
    base.save_weights(folder / name)

  return os.fspath(shared_folder(tmp_path_factory, "mobilenet_v3_small_weights", save) / name)


def train_flag_values():
  """txr-train's flags, copied into a FlagValues of their own.

  Parsing into it runs the flags' validators and leaves the process's flags
  as they were: a Flag object shared with absl's FLAGS would keep the parsed
  values for every later test on the same worker.
  """
  import copy

  from absl import flags

  from txr_model import train

  values = flags.FlagValues()
  for flag in flags.FLAGS.get_flags_for_module(train.__name__):
    values[flag.name] = copy.deepcopy(flag)
  return values


TRAIN = [sys.executable, "-m", "txr_model.train"]
# The mechanics tests' runs: the smallest backbone at its smallest size (tiny_base_weights).
TINY = [
  "--backbone=mobilenet_v3_small", "--image_size=32", "--global_batch_size=8",
  "--fine_tune_blocks=1",
]  # fmt: skip


def run_ok(args, env=None, timeout=600):
  """Runs a command from the repo root; fails the test with its output if it fails."""
  out = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
  assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
  return out


def _finished_epochs(metadata):
  """The epoch count in a backup's metadata, or None before Keras has written all of it."""
  try:
    return json.loads(metadata.read_text())["epoch"]
  except (OSError, ValueError):  # not there yet, or created and not yet written
    return None


@pytest.fixture(scope="session")
def resumed_run(built_data_dir, tiny_base_weights, tmp_path_factory):
  """Trains two_phase, is killed -9 after a phase-1 epoch, and is rerun with the same command."""
  model_dir = tmp_path_factory.mktemp("model")
  args = [*TRAIN, *TINY, f"--weights={tiny_base_weights}", f"--data_dir={built_data_dir}"]
  args += [f"--model_dir={model_dir}"]
  args += ["--epochs=4", "--fine_tune_epochs=1"]
  metadata = model_dir / "backup" / "head" / "training_metadata.json"
  first = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  done = None  # epochs finished before the kill, once Keras has written the whole record
  while done is None and first.poll() is None and time.time() < deadline:
    time.sleep(0.05)
    done = _finished_epochs(metadata)
  first.send_signal(signal.SIGKILL)
  first.wait()
  assert done is not None, "the first run never finished an epoch"
  assert 1 <= done < 4, "killed too late to test resuming"
  second = run_ok(args)
  return model_dir, done, second.stdout + second.stderr
