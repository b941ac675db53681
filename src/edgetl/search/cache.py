"""A small dict kept in one JSON file under the cache folder (latencies,
selection scores): read once, written back atomically."""

from __future__ import annotations

import json
import os

from .._files import cache_path, write_json


class JsonCache:
    """A dict kept in one JSON file under the cache folder, replaced
    atomically on :meth:`save` (and only when something was added)."""

    def __init__(self, name: str, cache_dir: str | None = None):
        self.path = cache_path(cache_dir, name)
        try:
            with open(self.path, encoding="utf-8") as fh:
                self.data = json.load(fh)
        except (OSError, ValueError):
            self.data = {}
        self._size = len(self.data)

    def save(self) -> None:
        if len(self.data) == self._size:
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        write_json(self.path, self.data, indent=None)
        self._size = len(self.data)
