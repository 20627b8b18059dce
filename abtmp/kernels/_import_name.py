"""The package's import name, and the repository folder's own name kept working from a checkout.

Installed, the repository's ``kernels/`` folder is the package ``reduce_scatterv`` (``package-dir``
in pyproject.toml), so that this project installs beside Hugging Face's ``kernels`` (another
project with the top-level name ``kernels``, which transformers looks for): each ``import`` gets its
own code. From a checkout's root (the current directory comes first on ``sys.path``) the folder
still imports as ``kernels``, and then, in this order:

1. where another installed distribution owns ``kernels`` (Hugging Face's), ``import kernels`` gets
   that package, as it would anywhere else: transformers keeps working when run from a checkout;
2. where this folder is also the installed ``reduce_scatterv`` (an editable install), ``kernels``
   and every ``kernels.x`` are the installed package's modules themselves: one copy of the code, one
   custom op registration, one workspace per group, whichever name a caller uses;
3. otherwise the folder runs as ``kernels`` (a checkout with nothing installed).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.metadata
import importlib.util
import os
import sys
from types import ModuleType

INSTALLED_NAME = "reduce_scatterv"


def defer_to_namesake(name: str, folder: str) -> bool:
    """Where an installed distribution named like ``name`` (Hugging Face's ``kernels``) provides a
    package ``name`` from another folder, load that package as ``name`` instead; return whether it
    did. Called by ``__init__`` before it imports anything."""
    try:
        init = importlib.metadata.distribution(name).locate_file(f"{name}/__init__.py")
    except importlib.metadata.PackageNotFoundError:
        return False
    if not os.path.isfile(init) or os.path.samefile(os.path.dirname(init), folder):
        return False
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[os.path.dirname(init)])
    namesake = importlib.util.module_from_spec(spec)
    sys.modules.pop(f"{name}.{__name__.rpartition('.')[2]}", None)  # this module's copy under `name`
    sys.modules[name] = namesake  # the import statement returns what sys.modules holds after __init__
    spec.loader.exec_module(namesake)
    return True


def alias_to_installed(name: str, folder: str) -> bool:
    """Make the package being imported as ``name`` from ``folder`` the installed package, when that
    is the same folder; return whether it did. Called by ``__init__`` before it imports anything."""
    try:
        spec = importlib.util.find_spec(INSTALLED_NAME)
    except (ImportError, ValueError):
        return False
    places = list(spec.submodule_search_locations or []) if spec is not None else []
    if not any(os.path.isdir(p) and os.path.samefile(p, folder) for p in places):
        return False
    installed = importlib.import_module(INSTALLED_NAME)
    installed.__class__ = _KeepsItsExports
    sys.modules.pop(f"{name}.{__name__.rpartition('.')[2]}", None)  # this module's copy under `name`
    sys.modules[name] = installed  # the import statement returns what sys.modules holds after __init__
    sys.meta_path.insert(0, _SubmoduleAlias(name))
    return True


class _KeepsItsExports(ModuleType):
    """The installed package once a second name aliases it. The first import of ``kernels.x`` binds
    module ``x`` on its parent, which is this package, and would hide an export of the same name (the
    function ``workspace`` over the module ``workspace``): keep the export."""

    def __setattr__(self, name: str, value: object) -> None:
        if isinstance(value, ModuleType) and not isinstance(self.__dict__.get(name, value), ModuleType):
            return
        super().__setattr__(name, value)


class _SubmoduleAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``<name>.x`` as the installed package's module ``reduce_scatterv.x`` itself."""

    def __init__(self, name: str) -> None:
        self.prefix = name + "."
        self.specs: dict[str, object] = {}

    def find_spec(self, fullname: str, path=None, target=None):
        if not fullname.startswith(self.prefix):
            return None
        target_name = INSTALLED_NAME + "." + fullname[len(self.prefix):]
        if importlib.util.find_spec(target_name) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec) -> ModuleType:
        module = importlib.import_module(INSTALLED_NAME + "." + spec.name[len(self.prefix):])
        self.specs[spec.name] = module.__spec__  # the import system sets __spec__ on what we return
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self.specs.pop(module.__spec__.name)  # already executed: put its own spec back
