"""sha256 checks of data files, each file hashed at most once per process.

A file's digest is remembered per (path, size, mtime), so loading a dataset again in the same
process does not read its files twice, while a file replaced on disk is hashed again. A wrong
size or digest is a ValueError that names the file and says how to get a good copy.
"""

from __future__ import annotations

import hashlib
import os
import pathlib

_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256


def file_sha256(path: str | os.PathLike) -> str:
  """The sha256 hex digest of the file at `path` (remembered per path, size and mtime)."""
  path = pathlib.Path(path).resolve()
  stat = path.stat()
  key = (str(path), stat.st_size, stat.st_mtime_ns)
  if key not in _DIGESTS:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
    _DIGESTS[key] = digest.hexdigest()
  return _DIGESTS[key]


def verify_file(path: str | os.PathLike, *, size: int, sha256: str, how_to_get: str) -> str:
  """Checks the size, then the sha256, of the file at `path`; returns its digest."""
  actual_size = os.path.getsize(path)
  if actual_size != size:
    raise ValueError(f"{path} has {actual_size:,} bytes, expected {size:,}: it is truncated or "
                     f"not the expected file. {how_to_get}")
  return _check(file_sha256(path), sha256, str(path), how_to_get)


def verify_bytes(content: bytes, *, sha256: str, name: str, how_to_get: str) -> None:
  """Checks the sha256 of `content`, read from the file `name`."""
  _check(hashlib.sha256(content).hexdigest(), sha256, name, how_to_get)


def _check(actual: str, expected: str, name: str, how_to_get: str) -> str:
  if actual != expected:
    raise ValueError(f"{name}: sha256 {actual[:16]}… does not match the expected "
                     f"{expected[:16]}…: the file is damaged or a different version. "
                     f"{how_to_get}")
  return actual
