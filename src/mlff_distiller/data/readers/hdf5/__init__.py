"""HDF5 reader: the guide's layout and the community layouts in ``layouts``."""

from .reader import Hdf5Reader

__all__ = ["Hdf5Reader"]
