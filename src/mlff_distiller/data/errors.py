"""The project's error for unreadable input: names the file, the structure index and the key."""

from __future__ import annotations

from typing import Optional


class DataFormatError(ValueError):
    """A file that cannot be read as its format says: names the file, structure index and key."""


def format_error(path: str, index: Optional[int], key: Optional[str], problem: str) -> DataFormatError:
    """Build the standard error: ``<file>, structure <i>, key '<k>': <problem>``."""
    parts = [str(path)]
    if index is not None:
        parts.append(f"structure {index}")
    if key is not None:
        parts.append(f"key {key!r}")
    return DataFormatError(", ".join(parts) + f": {problem}")
