"""jaxadv.cache: the CLI's persistent compilation cache in the user's cache folder (the folder
itself: tests/test_data.py)."""

import jax
import pytest

from jaxadv import cache, cli


@pytest.fixture
def no_chosen_cache():
  """JAX's compilation cache directory unset for the test (tests/conftest.py sets one), then
  restored."""
  before = jax.config.jax_compilation_cache_dir
  jax.config.update("jax_compilation_cache_dir", None)
  yield
  jax.config.update("jax_compilation_cache_dir", before)


def test_the_compilation_cache_goes_to_the_user_cache_unless_one_is_chosen(
    tmp_path, monkeypatch, no_chosen_cache):
  monkeypatch.setenv("JAXADV_CACHE_DIR", str(tmp_path / "mine"))
  assert cache.enable_compilation_cache() == tmp_path / "mine" / "xla"
  assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine" / "xla")
  assert (tmp_path / "mine" / "xla").is_dir()
  jax.config.update("jax_compilation_cache_dir", str(tmp_path / "chosen"))
  assert cache.enable_compilation_cache() == tmp_path / "chosen"  # the user's choice stays
  assert jax.config.jax_compilation_cache_dir == str(tmp_path / "chosen")


def test_an_unwritable_cache_folder_means_no_cache(tmp_path, monkeypatch, no_chosen_cache):
  (tmp_path / "file").write_text("not a folder")
  monkeypatch.setenv("JAXADV_CACHE_DIR", str(tmp_path / "file"))
  assert cache.enable_compilation_cache() is None
  assert not jax.config.jax_compilation_cache_dir


@pytest.mark.parametrize("command", [["eval", "--workdir", "w"], ["train"],
                                     ["report", "mi", "--workdir", "w"],
                                     ["sweep", "--config", "c.py"]])
def test_the_commands_cache_compilations_unless_told_not_to(command, tmp_path, monkeypatch,
                                                            no_chosen_cache):
  monkeypatch.setenv("JAXADV_CACHE_DIR", str(tmp_path))
  args = cli._parser().parse_args([*command, "--no-compilation-cache"])
  cli._start_jax(args)
  assert not jax.config.jax_compilation_cache_dir
  cli._start_jax(cli._parser().parse_args(command))
  assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xla")


def test_cifar10_keeps_its_cache_under_the_same_folder():
  from jaxadv.data import cifar10  # pylint: disable=import-outside-toplevel
  assert cifar10.cache_dir is cache.cache_dir
