"""jaxadv's folder in the user's cache: decoded datasets and compiled XLA programs.

`cache_dir()` is $JAXADV_CACHE_DIR, else $XDG_CACHE_HOME/jaxadv, else ~/.cache/jaxadv.
`enable_compilation_cache()` points JAX's persistent compilation cache (JAX's own
`jax_compilation_cache_dir`) at `cache_dir() / "xla"`, which the `jaxadv` commands do by default
(`--no-compilation-cache` turns it off): a later process that compiles the same program (an
evaluation of each run of a sweep, a resumed run, the next notebook session) reads the compiled
executable from disk instead of compiling it again; the executable, and so every result, is the
same. A cache directory the user chose (`JAX_COMPILATION_CACHE_DIR`, or
`jax.config.update("jax_compilation_cache_dir", ...)` before the command) is left as it is.
"""

from __future__ import annotations

import os
import pathlib


def cache_dir() -> pathlib.Path:
  """$JAXADV_CACHE_DIR, else $XDG_CACHE_HOME/jaxadv, else ~/.cache/jaxadv."""
  if os.environ.get("JAXADV_CACHE_DIR"):
    return pathlib.Path(os.environ["JAXADV_CACHE_DIR"])
  xdg = os.environ.get("XDG_CACHE_HOME")
  return (pathlib.Path(xdg) if xdg else pathlib.Path.home() / ".cache") / "jaxadv"


def enable_compilation_cache() -> pathlib.Path | None:
  """Sets JAX's persistent compilation cache to `cache_dir() / "xla"` unless one is set already;
  returns the cache directory in use, None when it cannot be created (read-only home: the
  command then compiles as without a cache)."""
  import jax  # pylint: disable=import-outside-toplevel
  chosen = jax.config.jax_compilation_cache_dir
  if chosen:
    return pathlib.Path(chosen)
  directory = cache_dir() / "xla"
  try:
    directory.mkdir(parents=True, exist_ok=True)
  except OSError:
    return None
  jax.config.update("jax_compilation_cache_dir", str(directory))
  return directory
