"""Extended XYZ reader: byte-offset index, comment-line and frame parsing, header units."""

from .comment import parse_comment
from .index import index_frames
from .reader import XyzReader

__all__ = ["XyzReader", "index_frames", "parse_comment"]
