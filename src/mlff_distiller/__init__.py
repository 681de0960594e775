"""mlff_distiller: distill slow machine-learning force fields (and any ASE calculator) into small, fast
students — teachers and labeling (``teachers``), students (``models``), training (``training``), the
drop-in ASE calculator (``calculator``), evaluation and the end-to-end pipeline (``evaluation``,
``distill``), on a data layer that reads what real files carry (``data``)."""

__version__ = "0.1.0"
