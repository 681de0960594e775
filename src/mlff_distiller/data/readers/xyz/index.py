"""The index pass over an (extended) XYZ file: byte range, atom count and first line of every frame.

One pass in binary: newlines are found block by block with numpy and each frame costs a short
Python step, so a multi-GB file is indexed without being held in memory. The result is a few
read-only int64 arrays; ``XyzReader.read(i)`` then reads only frame ``i``'s bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ...errors import format_error


class _Lines:
    """Newline positions of a byte buffer, found block by block with numpy.

    ``end(k)`` is the position of the newline that ends line ``k`` (0-based; the file's
    end for a last line without one), or -1 past the last line. Lines are asked for in
    (nearly) increasing order, so only one block of positions is held at a time.
    """

    def __init__(self, buf: np.ndarray, block: int = 1 << 24) -> None:
        self.buf, self.size, self.block = buf, len(buf), block
        self.nl = np.empty(0, dtype=np.int64)
        self.first = 0  # line number of self.nl[0]
        self.hi = 0  # bytes [0, hi) are scanned

    def end(self, k: int) -> int:
        """Position of the newline ending line ``k``, or -1 when the file has no line ``k``."""
        if k < self.first:
            raise RuntimeError(f"line {k} was already dropped from the scan window")
        while k - self.first >= len(self.nl):
            if self.hi >= self.size:
                return -1
            keep = min(max(0, k - 1 - self.first), len(self.nl))  # keep line k-1
            lo, hi = self.hi, min(self.size, self.hi + self.block)
            found = np.flatnonzero(self.buf[lo:hi] == 10).astype(np.int64) + lo
            if hi == self.size and self.buf[self.size - 1] != 10:
                found = np.append(found, np.int64(self.size))
            self.nl = np.concatenate([self.nl[keep:], found])
            self.first += keep
            self.hi = hi
        return int(self.nl[k - self.first])

    def count_from(self, k: int) -> int:
        """Number of lines from line ``k`` to the end of the file (scans to the end; ``k``
        must not have been dropped from the window)."""
        while self.hi < self.size:
            self.end(self.first + len(self.nl))
        return max(0, self.first + len(self.nl) - k)


@dataclass(frozen=True)
class FrameIndex:
    """Where every frame of the file is; all arrays [S], read-only."""

    start: np.ndarray  # [S] int64 byte offset of the atom-count line
    stop: np.ndarray  # [S] int64 byte offset just past the frame
    natoms: np.ndarray  # [S] int64
    line: np.ndarray  # [S] int64 1-based line number of the atom-count line
    nvec: np.ndarray  # [S] int8 number of ``VECn`` cell lines after the atoms


def index_frames(path: str, block: int = 1 << 24) -> FrameIndex:
    """One pass over ``path``: byte range, atom count and first line of every frame.

    Blank lines and ``#`` lines between frames are skipped. ``block``: bytes scanned for
    newlines at a time (memory use is a few times this). A frame whose atom-count line is not
    an integer, or that the file ends inside, is a ``DataFormatError`` naming its line.
    """
    cols: list[list[int]] = [[], [], [], [], []]
    if os.path.getsize(path) > 0:
        buf = np.memmap(path, dtype=np.uint8, mode="r").view(np.ndarray)
        lines = _Lines(buf, block)
        k, begin = 0, 0  # current line and its first byte
        while (end := lines.end(k)) >= 0:
            raw = bytes(buf[begin:end]).strip()
            if not raw or raw.startswith(b"#"):  # blank or comment line between frames
                k, begin = k + 1, end + 1
                continue
            frame = len(cols[0])
            try:
                natoms = int(raw)
            except ValueError:
                raise format_error(
                    path, frame, None, f"line {k + 1}: expected the atom count of a frame, got {raw[:60]!r}"
                ) from None
            if natoms < 0:
                raise format_error(path, frame, None, f"line {k + 1}: negative atom count {natoms}")
            last = k + 1 + natoms  # comment line k+1, atom lines k+2 .. k+1+natoms
            last_end = lines.end(last)
            if last_end < 0:  # counted from the lines that exist: work bounded by the file's size
                have = lines.count_from(k + 2)
                raise format_error(
                    path, frame, None,
                    f"truncated frame: line {k + 1} declares {natoms} atoms but the file ends after {have} atom lines",
                )
            nvec = 0
            while (next_end := lines.end(last + 1)) >= 0 and bytes(buf[last_end + 1 : next_end]).lstrip().startswith(
                b"VEC"
            ):
                nvec, last, last_end = nvec + 1, last + 1, next_end
            if nvec > 3:
                raise format_error(path, frame, None, f"line {k + 1}: more than 3 VEC cell lines")
            for col, value in zip(cols, (begin, last_end + 1, natoms, k + 1, nvec)):
                col.append(value)
            k, begin = last + 1, last_end + 1
        del lines, buf
    arrays = [np.asarray(c, dtype=np.int64) for c in cols]
    arrays[4] = arrays[4].astype(np.int8)
    for a in arrays:
        a.flags.writeable = False
    return FrameIndex(*arrays)


__all__ = ["FrameIndex", "index_frames"]
