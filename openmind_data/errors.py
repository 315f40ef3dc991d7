"""The project's one exception hierarchy.

Every error the toolkit raises on purpose derives from :class:`OpenMindError`. Messages name the
file involved and say what to do. Each class keeps its constructor arguments in ``args`` and
rebuilds itself from them, so instances pickle and cross process and Dask boundaries intact.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ConfigError",
    "DownloadError",
    "InvalidInputError",
    "OpenMindError",
    "SchemaError",
    "SynthError",
]


class OpenMindError(Exception):
    """Base class of every error raised by ``openmind_data`` and ``openmind_ssl``."""


class ConfigError(OpenMindError, ValueError):
    """An option or configuration value is invalid; the message names it and the valid choices."""


class SchemaError(OpenMindError, ValueError):
    """A table does not match the schema it claims; the message names the table and the column."""


class SynthError(OpenMindError):
    """The synthetic collection generator cannot do what it was asked."""


class DownloadError(OpenMindError):
    """A file could not be downloaded (network, server); the message names it. Running the
    same command again resumes where it stopped."""


class InvalidInputError(OpenMindError):
    """An input file cannot be used.

    ``reason`` is an :class:`~openmind_data.exclusions.ExclusionReason` value, so a caller can
    turn the error into a row of the exclusion table without parsing the message.
    """

    def __init__(self, path: str | Path, reason: str, detail: str) -> None:
        super().__init__(str(path), str(reason), detail)
        self.path = str(path)
        self.reason = str(reason)
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.path}: {self.detail} [{self.reason}]"
