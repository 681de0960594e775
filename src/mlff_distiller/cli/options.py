"""Options and parameter types shared by several subcommands."""

from __future__ import annotations

import math

import click

FORMAT_HELP = (
    "ase, xyz, hdf5 or packed (default: from the suffix; a packed file is an .h5 file, "
    "so name packed explicitly when writing one)"
)

PATHS_HELP = "PATH: a file, a database URL, several files or a quoted glob pattern ('shards/*.xyz')."


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses NaN and ±inf (which pass any range comparison)."""

    name = "finite float range"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


#: a cutoff radius in Å (> 0)
CUTOFF = FiniteFloatRange(min=0, min_open=True)


def label_options(f):
    """``--energy-key``/``--forces-key``/``--stress-key`` (where the file keeps its labels)."""
    for name, default in (("stress", "stress"), ("forces", "forces"), ("energy", "energy")):
        f = click.option(
            f"--{name}-key", default=default, show_default=True, help=f"Key holding the {name} label."
        )(f)
    return f


def parse_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def keys_from(energy_key: str, forces_key: str, stress_key: str) -> dict:
    """The label-key keyword arguments of a reader from the three options."""
    return {"energy_key": energy_key, "forces_key": forces_key, "stress_key": stress_key}
