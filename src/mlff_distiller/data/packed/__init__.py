"""The packed format: every structure's arrays concatenated into a few contiguous arrays.

One module per role: ``layout`` (names, version, header check), ``store`` (``PackedStore``:
arrays in RAM or memory-mapped, batched gathers), ``opener`` (``open_packed``, ``is_packed_file``),
``builder`` (``PackedBuilder``: structures appended chunk by chunk) and ``writer``
(``write_packed``, ``pack``, ``build_store``). ``layout``'s docstring describes the file.
"""

from .builder import PackedBuilder
from .layout import FORMAT_VERSION, read_header
from .opener import is_packed_file, open_packed
from .store import PackedStore
from .writer import DEFAULT_CHUNK, build_store, pack, write_packed

__all__ = ["PackedStore", "PackedBuilder", "open_packed", "is_packed_file", "write_packed", "pack", "build_store",
           "read_header", "FORMAT_VERSION", "DEFAULT_CHUNK"]
