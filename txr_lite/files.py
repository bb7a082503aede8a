"""Finding and reading the files to classify: what txr-predict and txr-predict-lite share.

No TensorFlow: local files are read with `os`; a predictor that reads gs://
(txr-predict) passes `tf.io.gfile` as `remote`.
"""

import os
import stat
import struct

from txr_lite import image_rules

EXTENSIONS = (".png", ".jpg", ".jpeg", ".dcm")
# A 100 Mpx 16-bit PNG stored uncompressed is 200 MB; anything larger is not a radiograph.
MAX_BYTES = 256 * 2**20
HEADER_BYTES = 4096


def find_images(paths: list[str], remote=None) -> tuple[list[str], list[dict]]:
  """Files as given, and the PNG/JPEG/DICOM files under folders, sorted.

  Each real folder is walked once, so symlinks back up the tree (a self-link,
  two links to one folder) neither loop nor list an image twice. A folder that
  cannot be listed is reported, not fatal; names that are not UTF-8 are kept
  (as Python's `os` keeps them) and read by their bytes.

  Args:
    paths: files and folders.
    remote: for paths with '://', a module with `isdir` and `walk` (`tf.io.gfile`);
      None: such paths are taken as files (and fail to read, by name).

  Returns:
    (the files to classify, in order; {'file', 'error'} per unreadable folder).
  """
  found, unreadable = [], []
  for path in paths:
    is_remote = "://" in path
    if not (remote.isdir(path) if is_remote and remote else os.path.isdir(os.fsencode(path))):
      found.append(path)
      continue

    def report(error, folder=path):
      where = getattr(error, "filename", None) or folder
      unreadable.append({"file": where, "error": reason(error)})

    if is_remote:  # Object stores have neither symlinks nor undecodable names.
      walk = remote.walk(path, onerror=report)
    else:
      walk = _walk_real_folders_once(path, report)
    for folder, _, files in walk:
      found += sorted(os.path.join(folder, f) for f in files if f.lower().endswith(EXTENSIONS))
  return found, unreadable


def no_images(paths: list[str]) -> str:
  """Both predictors' usage error when the paths hold no image."""
  return f"No PNG, JPEG or DICOM files in {' '.join(str(p) for p in paths)}."


def _walk_real_folders_once(top: str, onerror):
  """`os.walk` following symlinks, but into each real folder once."""
  seen = {os.path.realpath(top)}
  for folder, folders, files in os.walk(top, onerror=onerror, followlinks=True):
    real = [(d, os.path.realpath(os.path.join(folder, d))) for d in sorted(folders)]
    folders[:] = [d for d, r in real if r not in seen and not seen.add(r)]
    yield folder, folders, files


def reason(error: Exception) -> str:
  """An OSError's reason without the file name (the row names it), one line."""
  text = getattr(error, "strerror", None) or getattr(error, "message", None) or str(error)
  return f"cannot read: {text.splitlines()[0]}"


def display_name(path: str) -> str:
  """`path` printable as UTF-8: bytes that are not UTF-8 are shown as backslash escapes."""
  return os.fsencode(path).decode("utf-8", "backslashreplace")


def is_dicom(path: str, header: bytes) -> bool:
  """Whether a file is DICOM: its 'DICM' preamble, or a .dcm name."""
  return header[128:132] == b"DICM" or path.lower().endswith(".dcm")


def check_header(header: bytes) -> None:
  """Refuses what is not a PNG or JPEG, and PNGs without or with too many pixels, early."""
  if header.startswith(image_rules.PNG_SIGNATURE):
    if len(header) < 24 or header[12:16] != b"IHDR":
      raise ValueError("truncated or corrupt PNG: no complete IHDR header")
    width, height = struct.unpack(">II", header[16:24])
    if not width * height:
      raise ValueError(f"{width} x {height} pixels: the PNG header declares an empty image")
    if width * height > image_rules.MAX_PIXELS:
      raise ValueError(f"{width} x {height} pixels is too large for a radiograph")
  elif not header.startswith(image_rules.JPEG_SIGNATURE):
    raise ValueError("not a PNG, JPEG or DICOM file")


def read_file(path: str, remote=None) -> tuple[bytes, bool]:
  """A file's bytes and whether it is DICOM; a PNG/JPEG's header checked before the rest is read.

  Only regular files are read (a FIFO or device would block forever), and the
  size is capped.

  Args:
    path: a local file, or with `remote` a gs:// one.
    remote: for paths with '://', a module with `stat` and `GFile` (`tf.io.gfile`).

  Returns:
    (the bytes, whether they are a DICOM file's).

  Raises:
    ValueError, OSError: saying why the file cannot be used.
  """
  name = os.fsencode(path)  # Bytes: a name that is not UTF-8 is opened only so.
  if "://" in path:
    if remote is None:
      raise ValueError("reads local files only: copy it here, or use txr-predict")
    size, opener = remote.stat(name).length, remote.GFile
  else:
    info = os.stat(name)
    if not stat.S_ISREG(info.st_mode):
      raise ValueError("not a regular file")
    size, opener = info.st_size, open
  if size == 0:
    raise ValueError("empty file")
  if size > MAX_BYTES:
    raise ValueError(f"{size} bytes is too large for a radiograph (limit {MAX_BYTES})")
  with opener(name, "rb") as f:
    header = f.read(HEADER_BYTES)
    dicom = is_dicom(path, header)
    if not dicom:
      check_header(header)
    return header + f.read(), dicom
