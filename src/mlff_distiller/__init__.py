"""mlff_distiller: the data layer for training and distilling machine-learning force fields."""

__version__ = "0.1.0"
