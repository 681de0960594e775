"""Writing packed files: ``write_packed`` streams any source, ``pack`` converts a file, ``build_store``
builds the in-memory cache."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

from ..indices import subset_root
from ..keys import DEFAULT_KEYS, STRUCTURE_LABELS, KeyRegistry, registry_of
from ..publish import SpaceGuard, check_target, publish, spill_directory
from ..readers.base import SCAN_CHUNK, Reader, scan
from ..structure import Structure
from .builder import PackedBuilder
from .store import PackedStore

PathLike = Union[str, os.PathLike]

#: structures converted per chunk by ``write_packed``
DEFAULT_CHUNK = 1024


def source_chunks(source, chunk: int) -> tuple[Iterator[list[Structure]], dict, KeyRegistry, dict]:
    """Chunks of structures from a Reader, a dataset/subset or an iterable of ``Structure``, with
    the file attributes to record (source, format, units), the key registry and file metadata."""
    if isinstance(source, Reader):
        attrs = {"source": source.display_path, "source_format": source.format_name, "units": json.dumps(source.units)}
        return scan(source.read_many, range(len(source)), chunk), attrs, registry_of(source), dict(source.metadata)
    root, indices = subset_root(source)
    if hasattr(root, "get_structures") and hasattr(root, "reader"):
        attrs = {"source": root.reader.display_path, "source_format": root.format, "units": json.dumps(root.units)}
        idx = range(len(root)) if indices is None else indices.tolist()
        return scan(root.get_structures, idx, chunk), attrs, registry_of(root), dict(root.metadata)

    def batches() -> Iterator[list[Structure]]:
        buffer: list[Structure] = []
        for item in source:
            buffer.append(item)
            if len(buffer) == chunk:
                yield buffer
                buffer = []
        if buffer:
            yield buffer

    return batches(), {}, DEFAULT_KEYS, {}


def write_packed(
    path: PathLike,
    source,
    *,
    overwrite: bool = False,
    cutoff: Optional[float] = None,
    chunk: int = DEFAULT_CHUNK,
    metadata: Optional[dict] = None,
    keys=None,
    name: Optional[str] = None,
    progress: Optional[Callable[[int], object]] = None,
) -> int:
    """Write ``source`` to the packed file ``path``; return the number of structures written.

    source: a ``Reader``, a ``MolecularDataset``/``MolecularSubset`` (raw arrays, no transform)
    or an iterable of ``Structure``. Structures are streamed ``chunk`` at a time through raw
    spill files beside ``path``, so memory stays bounded; the file is written under a temporary
    name and moved into place when complete. ``cutoff`` (Å) also stores neighbor lists.
    ``metadata`` (JSON-able dict, e.g. ``{"teacher": {...}}``) is stored as the file's
    ``metadata`` attribute, over the source's own metadata. ``keys`` declares extras the
    structures carry beyond the built-in keys. ``name``: how the structures are named in error
    messages (default: the source file, else ``path``). ``progress(n)`` is called after each chunk
    of ``n`` structures (e.g. a tqdm bar's ``update``). The file records the units its values are
    in (attribute ``stored_units``: eV, Å, eV/Å, eV/Å³ and each extra key's declared unit) beside
    ``units``, the conversions applied when the source was read (provenance).
    Raises FileExistsError when ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    check_target(path, overwrite)
    chunks, attrs, registry, file_metadata = source_chunks(source, int(chunk))
    registry = registry.extend(keys)
    file_metadata.update(metadata or {})
    attrs["metadata"] = json.dumps(file_metadata)
    # temporary file and spill directory created exclusively beside path (publish.py): removed on
    # failure, a killed writer's ones on the next write of path; published without replacing a
    # file that appeared meanwhile unless overwrite
    with publish(path, overwrite=overwrite) as tmp, spill_directory(path) as spill:
        shown = str(attrs.get("source", name or path))
        builder = PackedBuilder(spill_dir=str(spill), cutoff=cutoff, source=shown, keys=registry)
        for structures in chunks:
            builder.add(structures)
            if progress is not None:
                progress(len(structures))
        stored = [registry[n] for n in ("positions", "cell") + STRUCTURE_LABELS] + list(builder.declared_keys)
        attrs["stored_units"] = json.dumps({k.name: k.unit for k in stored if k.unit and k.numeric})
        # h5py cannot close a file after a failed write: room for the spilled data first
        SpaceGuard(tmp, shown=str(path)).check(sum(f.stat().st_size for f in spill.iterdir()))
        builder.write(tmp, attrs)
    return builder.num_structures


def pack(
    input_path: PathLike,
    output_path: PathLike,
    format: Optional[str] = None,
    *,
    overwrite: bool = False,
    cutoff: Optional[float] = None,
    chunk: int = DEFAULT_CHUNK,
    metadata: Optional[dict] = None,
    **reader_options,
) -> int:
    """Convert ``input_path`` (any supported format, guessed from the suffix when None) to a
    packed file at ``output_path``. ``reader_options`` (``energy_key=``, ``layout=``...) go to the
    reader. Returns the number of structures written."""
    from ..readers import open_reader

    input_path = os.fspath(input_path)
    if "://" not in input_path and not os.path.exists(input_path):
        raise FileNotFoundError(f"{input_path}: no such file")
    reader = open_reader(input_path, format, **reader_options)
    try:
        return write_packed(output_path, reader, overwrite=overwrite, cutoff=cutoff, chunk=chunk, metadata=metadata)
    finally:
        reader.close()


def build_store(reader: Reader, chunk: int = SCAN_CHUNK) -> PackedStore:
    """An in-memory ``PackedStore`` of every structure of ``reader`` (one pass, ``chunk`` at a time)."""
    store = getattr(reader, "store", None)
    if isinstance(store, PackedStore):
        return store.to_memory()
    from ..stats import progress_bar

    builder = PackedBuilder(source=reader.display_path, keys=registry_of(reader))
    bar = progress_bar(len(reader), "cache")  # a long scan in a terminal shows progress
    try:
        for structures in scan(reader.read_many, range(len(reader)), chunk):
            builder.add(structures)
            if bar is not None:
                bar.update(len(structures))
    finally:
        if bar is not None:
            bar.close()
    return builder.to_store(units=reader.units, metadata=reader.metadata)


__all__ = ["write_packed", "pack", "build_store", "source_chunks", "DEFAULT_CHUNK"]
