"""Options and parameter types shared by several subcommands."""

from __future__ import annotations

import json
import math
from typing import Optional

import click

from .errors import InputError

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


def json_object(text: Optional[str], option: str, example: str) -> dict:
    """The JSON object given to ``option`` ({} when empty); InputError naming the option and showing
    ``example`` when the text is not JSON or not an object."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{option}: not valid JSON ({exc.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise InputError(f"{option}: must be a JSON object such as '{example}', got {text!r}")
    return value


def parse_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def keys_from(energy_key: str, forces_key: str, stress_key: str) -> dict:
    """The label-key keyword arguments of a reader from the three options."""
    return {"energy_key": energy_key, "forces_key": forces_key, "stress_key": stress_key}


#: the reader options ``reader_options`` adds, in the order they are listed in ``--help``
READER_OPTION_NAMES = (
    "energy_key", "forces_key", "stress_key", "energy_unit", "forces_unit", "stress_unit", "length_unit",
    "layout", "nan_as_missing", "select", "properties",
)


def reader_options(f):
    """Every reader option a subcommand passes on: ``--energy-key/--forces-key/--stress-key``,
    ``--energy-unit/--forces-unit/--stress-unit/--length-unit``, ``--layout`` and
    ``--nan-as-missing`` (HDF5), ``--select`` (ASE database query) and ``--properties``. The
    command receives them as one dict ``reader`` holding only the options given (a format that
    does not take one says so, listing its options)."""
    import functools

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        given = {}
        for name in READER_OPTION_NAMES:
            value = kwargs.pop(name)
            if name.endswith("_key"):
                if value != name[: -len("_key")]:
                    given[name] = value
            elif value not in (None, False):
                given[name] = value
        return f(*args, reader=given, **kwargs)

    options = [
        click.option("--properties", default=None, metavar="NAMES",
                     help="Extra properties to read: comma-separated names (charges, magmoms, fixed, "
                          "total_charge, spin, dipole, virial, weight, config_type, head, any column or "
                          "info key) or name=key (dipole=dft_dipole)."),
        click.option("--select", default=None, metavar="QUERY",
                     help="ASE database: only rows matching this ASE query ('natoms<50,config_type=bulk')."),
        click.option("--nan-as-missing", is_flag=True, default=False,
                     help="HDF5: a label that is all NaN is missing (ANI-1ccx, SPICE), not an error."),
        click.option("--layout", default=None, help="HDF5 layout (default: detected): guide, ani, spice, modelforge, "
                                                     "schnetpack_md, deepmd, mace, packed."),
        click.option("--length-unit", default=None, metavar="UNIT", help="Unit of stored positions/cell (e.g. bohr, nm)."),
        click.option("--stress-unit", default=None, metavar="UNIT", help="Unit of the stored stress (e.g. GPa, kbar, hartree/bohr^3)."),
        click.option("--forces-unit", default=None, metavar="UNIT", help="Unit of the stored forces (e.g. kcal/mol/Å, hartree/bohr)."),
        click.option("--energy-unit", default=None, metavar="UNIT",
                     help="Unit of the stored energies, overriding the file (e.g. hartree, kcal/mol, kJ/mol)."),
    ]
    for option in options:
        wrapper = option(wrapper)
    return label_options(wrapper)
