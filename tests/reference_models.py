"""The reference implementations the model tests compare with, imported on demand.

``dynamic_network_architectures`` (dna) is not a dependency of the project: its Primus imports
timm, and timm imports torchvision. PyPI's torchvision is a CUDA build that cannot be installed
beside the CPU torch used here, yet timm needs only *names* from it at import time (for data
transforms and feature extraction that Primus never calls). So, when no working torchvision is
present, a stub importer answers every ``torchvision...`` import with placeholder modules whose
attributes are placeholder classes, for the duration of the import only.

The default environment has no timm: the tests that need it are marked ``reference`` and skip
with the reason. Run them with the pure-Python sources of dna, timm and einops on PYTHONPATH,
e.g. ``PYTHONPATH=/tmp/dnasite python -m pytest tests/test_primus.py -m reference``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest
from torch import nn

__all__ = ["import_dna_primus"]

_STUBBED = "torchvision"


class _Placeholder(type):
    """A class whose every public attribute is another placeholder class."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(name, (), {})


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(name, (), {})


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``torchvision`` and all its submodules, as empty packages of placeholders."""

    def find_spec(
        self, fullname: str, path: Any = None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == _STUBBED or fullname.startswith(_STUBBED + "."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def _forget_torchvision() -> None:
    for name in [n for n in sys.modules if n == _STUBBED or n.startswith(_STUBBED + ".")]:
        del sys.modules[name]


def _real_torchvision_imports() -> bool:
    if _STUBBED in sys.modules:
        return True
    if importlib.util.find_spec(_STUBBED) is None:
        return False
    try:
        importlib.import_module(_STUBBED)
    except (ImportError, OSError, RuntimeError, AttributeError):
        _forget_torchvision()  # a CUDA build beside CPU torch: fails half-way, leaves debris
        return False
    return True


@contextlib.contextmanager
def _torchvision_stub_if_needed() -> Iterator[None]:
    if _real_torchvision_imports():
        yield
        return
    finder = _StubFinder()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        # timm has bound the names it imported; later imports must not see the stub.
        _forget_torchvision()


def import_dna_primus() -> tuple[type[nn.Module], type[nn.Module]]:
    """dna's ``(Primus, PrimusM)`` classes, or ``pytest.skip`` when dna or timm is missing."""
    missing = [
        name
        for name in ("dynamic_network_architectures", "timm", "einops")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        pytest.skip(
            f"{', '.join(missing)} not importable: the reference tests need the pure-Python "
            "sources of dynamic_network_architectures 0.4.4, timm and einops on PYTHONPATH"
        )
    with _torchvision_stub_if_needed():
        module = importlib.import_module("dynamic_network_architectures.architectures.primus")
    primus: type[nn.Module] = module.Primus
    primus_m: type[nn.Module] = module.PrimusM
    return primus, primus_m
