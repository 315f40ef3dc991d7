"""openmind_data: curate many BIDS datasets into one OpenMind-style pretraining dataset.

Public names are imported lazily, so ``import openmind_data`` (and the ``openmind`` command's
``--help``) stays instant while numpy, nibabel and pyarrow load only when used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "OpenMindError": "openmind_data.errors",
    "ConfigError": "openmind_data.errors",
    "InvalidInputError": "openmind_data.errors",
    "SchemaError": "openmind_data.errors",
    "SynthError": "openmind_data.errors",
    "ExclusionReason": "openmind_data.exclusions",
    "MODALITIES": "openmind_data.modalities",
    "Modality": "openmind_data.modalities",
    "modality_for": "openmind_data.modalities",
    "IMAGE_SCHEMA": "openmind_data.schema",
    "EXCLUDED_SCHEMA": "openmind_data.schema",
    "SOURCES_SCHEMA": "openmind_data.schema",
    "SHARD_SCHEMA": "openmind_data.schema",
    "SCHEMA_VERSION": "openmind_data.schema",
    "SynthConfig": "openmind_data.synth",
    "synthesize": "openmind_data.synth",
    "read_index": "openmind_data.crawl",
    "DwiOptions": "openmind_data.dwi",
    "run_dwi": "openmind_data.dwi",
    "MaskOptions": "openmind_data.masks",
    "run_masks": "openmind_data.masks",
    "build": "openmind_data.curate",
    "BuildOptions": "openmind_data.curate",
    "load": "openmind_data.loading",
    "write_card": "openmind_data.card",
    "publish": "openmind_data.publishing",
    "import_release": "openmind_data.release.importer",
    "export_nnssl": "openmind_data.release.nnssl",
}

__all__ = [
    "EXCLUDED_SCHEMA",
    "IMAGE_SCHEMA",
    "MODALITIES",
    "SCHEMA_VERSION",
    "SHARD_SCHEMA",
    "SOURCES_SCHEMA",
    "BuildOptions",
    "ConfigError",
    "DwiOptions",
    "ExclusionReason",
    "InvalidInputError",
    "MaskOptions",
    "Modality",
    "OpenMindError",
    "SchemaError",
    "SynthConfig",
    "SynthError",
    "__version__",
    "build",
    "export_nnssl",
    "import_release",
    "load",
    "modality_for",
    "publish",
    "read_index",
    "run_dwi",
    "run_masks",
    "synthesize",
    "write_card",
]

if TYPE_CHECKING:
    from openmind_data.card import write_card
    from openmind_data.crawl import read_index
    from openmind_data.curate import BuildOptions, build
    from openmind_data.dwi import DwiOptions, run_dwi
    from openmind_data.errors import (
        ConfigError,
        InvalidInputError,
        OpenMindError,
        SchemaError,
        SynthError,
    )
    from openmind_data.exclusions import ExclusionReason
    from openmind_data.loading import load
    from openmind_data.masks import MaskOptions, run_masks
    from openmind_data.modalities import MODALITIES, Modality, modality_for
    from openmind_data.publishing import publish
    from openmind_data.release.importer import import_release
    from openmind_data.release.nnssl import export_nnssl
    from openmind_data.schema import (
        EXCLUDED_SCHEMA,
        IMAGE_SCHEMA,
        SCHEMA_VERSION,
        SHARD_SCHEMA,
        SOURCES_SCHEMA,
    )
    from openmind_data.synth import SynthConfig, synthesize


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'openmind_data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
