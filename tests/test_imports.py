"""Every module of the installed package imports: an import that pyproject.toml does not
declare fails here in seconds, with the module's name, instead of at a user's first run."""

import importlib
import pkgutil

import pytest

import unbroken

# __main__ runs the command line when imported
MODULES = sorted(info.name for info in pkgutil.walk_packages(unbroken.__path__, "unbroken.")
                 if info.name != "unbroken.__main__")


def test_the_walk_finds_the_package():
    assert {"unbroken.cli", "unbroken.node.server", "unbroken.client.network"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name):
    importlib.import_module(name)
