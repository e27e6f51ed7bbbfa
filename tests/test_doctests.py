"""The examples in `jaxadv`'s docstrings run and print what they show.

Modules are discovered by walking the package, so a module that is added, renamed or moved is
picked up without editing this file; each module whose docstrings hold examples is one test, as
is each module that fails to import. No example may be skipped with `doctest: +SKIP`: an
example that cannot run is not an example.
"""

import doctest
import importlib
import pathlib
import pkgutil
import re

import pytest

import jaxadv

OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
SKIP = re.compile(r"doctest:[^\n]*\+SKIP")
PACKAGE_DIRS = [pathlib.Path(p) for p in jaxadv.__path__]


def _module_names() -> list[str]:
  """Every module and package under `jaxadv`, sorted; `__main__` modules are left out, since
  importing one runs the program. A subpackage that fails to import is still listed (its test
  then fails with the error); only its own submodules cannot be found."""
  names = {jaxadv.__name__}
  for info in pkgutil.walk_packages(jaxadv.__path__, prefix=jaxadv.__name__ + ".",
                                    onerror=lambda name: None):
    if info.name.rsplit(".", 1)[-1] != "__main__":
      names.add(info.name)
  return sorted(names)


def _doctests(module) -> list[doctest.DocTest]:
  """The docstring tests defined in `module` (not those of names it imports) with examples."""
  finder = doctest.DocTestFinder(exclude_empty=True)
  return [test for test in finder.find(module) if test.examples]


def _modules_to_test() -> list[str]:
  """The modules with examples, and those that fail to import (so that the failure shows)."""
  names = []
  for name in _module_names():
    try:
      module = importlib.import_module(name)
    except Exception:  # pylint: disable=broad-except
      names.append(name)
      continue
    if _doctests(module):
      names.append(name)
  return names


@pytest.mark.parametrize("module_name", _modules_to_test())
def test_docstring_examples_run(module_name):
  module = importlib.import_module(module_name)
  output = []
  runner = doctest.DocTestRunner(optionflags=OPTIONS)
  for test in _doctests(module):
    runner.run(test, out=output.append, clear_globs=True)
  assert runner.tries, f"{module_name}: every example is skipped, none ran"
  assert not runner.failures, (f"{runner.failures} of {runner.tries} examples in "
                               f"{module_name} failed:\n" + "".join(output))


def test_module_discovery_walks_the_subpackages():
  names = _module_names()
  assert len(names) > 10 and all(n.split(".")[0] == "jaxadv" for n in names), names
  assert any(n.count(".") >= 2 for n in names), names  # modules inside subpackages


def test_no_example_is_skipped():
  """No file under jaxadv/ marks an example `doctest: +SKIP`."""
  found = []
  for root in PACKAGE_DIRS:
    for path in sorted(root.rglob("*")):
      if not path.is_file() or "__pycache__" in path.parts or path.suffix in (".pyc", ".so"):
        continue
      try:
        text = path.read_text(encoding="utf-8")
      except (UnicodeDecodeError, OSError):
        continue
      for number, line in enumerate(text.splitlines(), 1):
        if SKIP.search(line):
          found.append(f"{path.relative_to(root.parent)}:{number}: {line.strip()}")
  assert not found, ("examples must run, not be skipped with doctest: +SKIP:\n" +
                     "\n".join(found))
