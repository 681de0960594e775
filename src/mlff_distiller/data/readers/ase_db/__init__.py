"""ASE database reader (SQLite files and database URLs): connection, row decoding, units."""

from .connection import is_url, mask_password
from .reader import AseDbReader

__all__ = ["AseDbReader", "is_url", "mask_password"]
