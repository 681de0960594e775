"""The error for ``layout=X`` forced on a file that is not in layout X.

Every layout checks at construction that the file looks like it (``Layout.accepts``), so a forced
layout can never read a foreign file as an empty data set or fail with a bare h5py KeyError. The
message is the reader's unknown-layout message (file, what it holds, the supported layouts) plus
which layout was forced, what that layout needs, and which layout, if any, detection finds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import h5py

from ....errors import DataFormatError
from ._h5 import list_tree

if TYPE_CHECKING:  # pragma: no cover
    from .base import Layout


def not_this_layout(path: str, f: h5py.File, layout: "type[Layout]", policy=None) -> DataFormatError:
    """DataFormatError: ``path`` (open as ``f``) does not look like ``layout`` (``policy``: the
    links detection may follow, see ``detect_layout``)."""
    from . import detect_layout, supported_layouts  # the registry imports every layout module

    detected = detect_layout(f, policy)
    if detected is not None and detected != layout.name:
        verdict = f"it looks like layout {detected!r} (leave layout= out to detect it)"
    else:
        verdict = "no supported layout recognises it (unknown HDF5 layout)"
    found = list_tree(f, limit=20)
    return DataFormatError(
        f"{path}: file does not look like layout {layout.name!r}, which needs {layout.signature}; {verdict}. "
        f"Found: {found or '(empty file)'}. Supported layouts: {', '.join(supported_layouts())}"
    )
