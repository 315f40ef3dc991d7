"""The BIDS inheritance principle for sidecars and gradient files.

A JSON sidecar applies to a data file when it sits in the file's folder or any folder above it
(up to the dataset root), has the same suffix, and each of its entities appears in the file's
name with the same label. Applicable sidecars are merged from the farthest to the nearest, so the
nearest wins; at one level, less specific names (fewer entities) come first. ``.bval``/``.bvec``
files follow the same rule, and the nearest one is used.
"""

from __future__ import annotations

import os
import posixpath
from collections import defaultdict
from typing import Any

from openmind_data.crawl.bidsname import BidsName, parse_bids_name
from openmind_data.crawl.textfiles import read_json
from openmind_data.errors import InvalidInputError

__all__ = ["SidecarIndex"]


class SidecarIndex:
    """Files of one extension (``.json``, ``.bval``, ...) indexed by suffix and folder."""

    def __init__(self, root: str, relpaths: list[str]) -> None:
        self.root = root
        self._by_key: dict[tuple[str, str], list[tuple[int, str, BidsName]]] = defaultdict(list)
        for rel in relpaths:
            name = parse_bids_name(rel)
            if name is not None:
                folder = posixpath.dirname(rel)
                self._by_key[(name.suffix, folder)].append((len(name.entities), rel, name))
        for entries in self._by_key.values():
            entries.sort(key=lambda e: (e[0], e[1]))
        self._loaded: dict[str, dict[str, Any]] = {}
        self.broken: dict[str, InvalidInputError] = {}
        self.used: set[str] = set()

    def applicable(self, rel: str, name: BidsName) -> list[str]:
        """Applicable files for ``rel``, farthest first."""
        found: list[list[str]] = []
        folder = posixpath.dirname(rel)
        while True:
            level = [
                path
                for _, path, candidate in self._by_key.get((name.suffix, folder), ())
                if candidate.matches(name)
            ]
            found.append(level)
            if not folder:
                break
            folder = posixpath.dirname(folder)
        return [path for level in reversed(found) for path in level]

    def nearest(self, rel: str, name: BidsName) -> str | None:
        paths = self.applicable(rel, name)
        if paths:
            self.used.add(paths[-1])
        return paths[-1] if paths else None

    def resolve(self, rel: str, name: BidsName) -> tuple[dict[str, Any], list[str]]:
        """Merged metadata for ``rel`` and the sidecars it came from (unreadable ones skipped;
        they are listed in ``broken``)."""
        merged: dict[str, Any] = {}
        sources = []
        for path in self.applicable(rel, name):
            content = self._load(path)
            if content is not None:
                merged.update(content)
                sources.append(path)
        return merged, sources

    def _load(self, rel: str) -> dict[str, Any] | None:
        if rel in self._loaded:
            return self._loaded[rel]
        if rel in self.broken:
            return None
        try:
            content = read_json(os.path.join(self.root, rel))
        except InvalidInputError as error:
            self.broken[rel] = error
            return None
        self._loaded[rel] = content
        self.used.add(rel)
        return content
