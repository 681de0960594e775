"""The ``mlff-distiller`` command line: one module per subcommand, registered on one click group.

``mlff_distiller.cli.main`` is the console-script entry point; ``python -m mlff_distiller.cli`` runs it too.
"""

from __future__ import annotations

from .app import cli, main
from .bench import bench
from .convert import convert
from .demo import demo
from .distill import distill
from .evaluate import evaluate
from .generate import generate
from .label import label
from .sample import sample
from .stats import stats
from .train import train
from .validate import validate

for _command in (generate, stats, convert, validate, bench, demo, train, distill, evaluate):
    cli.add_command(_command)
for _command in (sample, label):  # teachers: sampling and labeling
    cli.add_command(_command)

__all__ = ["cli", "main"]
