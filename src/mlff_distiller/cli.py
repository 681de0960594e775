"""The ``mlff-distiller`` command: generate, inspect, check, convert and benchmark MLFF data.

Every subcommand has ``--help``. Exit codes: 0 success; 1 ``validate`` found problems;
2 bad input or usage (a missing file, an unknown format, an unreadable structure, a bad
option...), reported as one line ``Error: <message>`` on stderr without a traceback. Inputs may be
one file, a database URL (shown everywhere with its password replaced by ``***``), several files
or a quoted glob pattern such as ``'shards/*.xyz'`` (one dataset, files in sorted order).
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import sys
import time
import warnings
from pathlib import Path
from typing import Iterable, Optional, Sequence

import click
import numpy as np

from . import __version__

#: exceptions caused by the user's input, reported as one line (anything else is a bug: traceback)
USER_ERRORS = (OSError, ValueError, KeyError, IndexError, sqlite3.Error)
FORMAT_HELP = (
    "ase, xyz, hdf5 or packed (default: from the suffix; a packed file is an .h5 file, "
    "so name packed explicitly when writing one)"
)


#: ``scheme://user:password@`` in free text (a database URL quoted by some message)
_URL_PASSWORD = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'\"]*:)[^\s@/'\"]*@")
_QUERY_PASSWORD = re.compile(r"(?i)(password=)[^&;\s'\"]*")


def hide_passwords(text: str) -> str:
    """``text`` with the password of every database URL in it replaced by ``***``."""
    return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))


class InputError(click.ClickException):
    """A user error: printed as ``Error: <message>`` (one line), exit code 2."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(hide_passwords(message))


class UsageLineError(click.UsageError):
    """A command-line usage error shown as one line on stderr, exit code 2:
    ``Error: <message> (see 'mlff-distiller <cmd> --help')``."""

    def show(self, file=None) -> None:
        message = hide_passwords(" ".join(self.format_message().split()))
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        click.echo(f"Error: {message}{hint}", file=file, err=True)


def _usage_line(exc: click.UsageError) -> UsageLineError:
    error = UsageLineError(exc.format_message(), ctx=exc.ctx)
    error.exit_code = exc.exit_code
    return error


def one_line(exc: BaseException) -> str:
    """A one-line message for ``exc`` (file name first for OS errors), passwords hidden."""
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    elif isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    else:
        text = str(exc) or type(exc).__name__
    return hide_passwords(" ".join(text.split()))


class _Group(click.Group):
    """Turns user errors raised by any subcommand into a one-line ``Error:`` (no traceback;
    set ``MLFF_DISTILLER_DEBUG=1`` to see it), and click's usage errors (missing argument,
    value out of range...) into one line too, instead of click's usage block."""

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise  # `mlff-distiller` alone prints the help
        except click.UsageError as exc:
            raise _usage_line(exc) from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (UsageLineError, click.exceptions.NoArgsIsHelpError):
            raise
        except click.UsageError as exc:
            raise _usage_line(exc) from None
        except USER_ERRORS as exc:
            if os.environ.get("MLFF_DISTILLER_DEBUG"):
                raise  # developers: the full traceback
            raise InputError(one_line(exc)) from None


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses NaN and ±inf (which pass any range comparison)."""

    name = "finite float range"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def _console():
    from rich.console import Console

    return Console(highlight=False)


def progress(iterable: Iterable, total: Optional[int], desc: str, unit: str = "structure"):
    """A tqdm progress bar on stderr (hidden when stderr is not a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True, disable=None, leave=False)


def _label_options(f):
    """``--energy-key``/``--forces-key``/``--stress-key`` (where the file keeps its labels)."""
    for name, default in (("stress", "stress"), ("forces", "forces"), ("energy", "energy")):
        f = click.option(
            f"--{name}-key", default=default, show_default=True, help=f"Key holding the {name} label."
        )(f)
    return f


def _require_input(paths: Sequence[str]) -> None:
    """FileNotFoundError for a missing local input (before any slow import); URLs and glob
    patterns pass (a pattern matching nothing is reported when it is expanded)."""
    from .data.readers.db_connection import is_url
    from .data.readers.multi import is_glob

    for path in paths:
        if not is_url(path) and not is_glob(path) and not os.path.exists(path):
            raise FileNotFoundError(2, "no such file or directory", path)


def _data_path(paths: Sequence[str]):
    """What ``open_many``/``MolecularDataset`` take: one path (file, URL or glob) or a list."""
    return paths[0] if len(paths) == 1 else list(paths)


def open_input(paths: Sequence[str], fmt: Optional[str], keys: dict):
    """One reader over ``paths`` (one file or URL; a glob pattern or several files as one dataset)."""
    from .data.readers import open_reader
    from .data.readers.multi import is_many, open_many

    data_path = _data_path(paths)
    if is_many(data_path):
        return open_many(data_path, fmt, **keys)
    return open_reader(data_path, fmt, **keys)


def shown_path(paths: Sequence[str]) -> str:
    """The input as given on the command line, database passwords replaced by ``***``."""
    from .data.readers.db_connection import mask_password

    return " ".join(mask_password(p) for p in paths)


def member_files(reader) -> list[str]:
    """The files a reader reads (several for a glob or list), passwords hidden."""
    return list(getattr(reader, "paths", None) or [reader.display_path])


def _refuse_url_output(path: str) -> None:
    """The writers write local files only: a database URL as output is an error (password hidden)."""
    from .data.readers.db_connection import is_url, mask_password

    if is_url(path):
        raise InputError(f"{mask_password(path)}: writing to a database URL is not supported; write a local file")


def describe_format(reader) -> str:
    """The reader's format, with the HDF5 layout it detected: ``hdf5 (packed)``, ``xyz``..."""
    layout = getattr(reader, "layout_name", None)
    return f"{reader.format_name} ({layout})" if layout else reader.format_name


def _keys(energy_key: str, forces_key: str, stress_key: str) -> dict:
    return {"energy_key": energy_key, "forces_key": forces_key, "stress_key": stress_key}


def human_size(path: Path) -> str:
    size = (
        sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    )
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"  # pragma: no cover


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="mlff-distiller")
def cli() -> None:
    """Generate, inspect, check, convert and benchmark datasets for training machine-learning
    force fields (ASE database, extended XYZ, HDF5, packed).

    Start with `mlff-distiller demo`. Exit codes: 0 success, 1 `validate` found problems,
    2 bad input (one line `Error: ...` on stderr).
    """


# -- generate ------------------------------------------------------------------------------
def _parse_kwargs(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--teacher-kwargs: not valid JSON ({exc.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise InputError(f"--teacher-kwargs: must be a JSON object such as '{{\"rc\": 5.0}}', got {text!r}")
    return value


def _parse_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


@cli.command()
@click.argument("out")
@click.option("-n", "--num-structures", default=300, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, identical arrays.")
@click.option(
    "--teacher",
    default="emt",
    show_default=True,
    help="ASE calculator labeling the structures: emt, lj, morse or an import path 'module:Class'.",
)
@click.option("--teacher-kwargs", default="{}", show_default=True, help="JSON object of keyword options.")
@click.option(
    "--kinds", default="bulk,cluster,molecule", show_default=True, help="Comma-separated structure kinds."
)
@click.option("--max-atoms", default=64, show_default=True, type=click.IntRange(min=2))
@click.option("--snapshots-per-run", default=5, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--md-interval", default=4, show_default=True, type=click.IntRange(min=1), help="MD steps between snapshots."
)
@click.option(
    "--temperature",
    default=300.0,
    show_default=True,
    type=FiniteFloatRange(min=0),
    help="Langevin temperature (K), >= 0.",
)
@click.option("-f", "--format", "fmt", default=None, help=f"Output format: {FORMAT_HELP}.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def generate(
    out: str,
    num_structures: int,
    seed: int,
    teacher: str,
    teacher_kwargs: str,
    kinds: str,
    max_atoms: int,
    snapshots_per_run: int,
    md_interval: int,
    temperature: float,
    fmt: Optional[str],
    overwrite: bool,
) -> None:
    """Build a teacher-labeled dataset and write it to OUT.

    Samples rattled bulk supercells, metal clusters and H/C/N/O molecules, runs a short Langevin MD
    from each and labels every snapshot with the teacher (energy, forces and, for periodic
    structures, stress).
    """
    from .data.writers import write_structures
    from .generate import iter_dataset

    _refuse_url_output(out)
    out = Path(out)
    kwargs = _parse_kwargs(teacher_kwargs)
    start = time.perf_counter()
    structures = iter_dataset(
        num_structures,
        seed,
        teacher=teacher,
        teacher_kwargs=kwargs,
        kinds=_parse_list(kinds),
        max_atoms=max_atoms,
        snapshots_per_run=snapshots_per_run,
        md_interval=md_interval,
        temperature_K=temperature,
    )
    count = write_structures(
        out, progress(structures, num_structures, "generate"), fmt, overwrite=overwrite
    )
    seconds = time.perf_counter() - start
    click.echo(f"Wrote {count} structures to {out} ({_format_of(out, fmt)}) in {seconds:.1f} s")


def _format_of(path: Path, fmt: Optional[str]) -> str:
    from .data.readers import guess_format, normalize_format

    return normalize_format(fmt) if fmt else guess_format(path)


# -- stats ---------------------------------------------------------------------------------
def _fmt(value, spec: str = ".6g") -> str:
    return "—" if value is None else format(value, spec)


def render_statistics(stats: dict, title: str):
    """Two rich tables: the dataset summary and the per-element table (counts, E0s)."""
    from ase.data import chemical_symbols
    from rich.table import Table

    summary = Table(title=title, show_header=False, title_justify="left", box=None, pad_edge=False)
    summary.add_column(style="bold")
    summary.add_column()
    rows = [
        ("structures", f"{stats['num_samples']}"),
        ("atoms", f"{stats['num_atoms']}"),
        (
            "atoms per structure",
            f"{_fmt(stats.get('natoms_min'), 'd')} – {_fmt(stats.get('natoms_max'), 'd')} "
            f"(mean {_fmt(stats.get('natoms_mean'), '.1f')})",
        ),
        (
            "labels",
            f"energy {stats.get('num_with_energy', 0)}, forces {stats.get('num_with_forces', 0)}, "
            f"stress {stats.get('num_with_stress', 0)}",
        ),
        (
            "energy (eV)",
            f"{_fmt(stats.get('energy_mean'))} ± {_fmt(stats.get('energy_std'), '.4g')} "
            f"[{_fmt(stats.get('energy_min'), '.5g')}, {_fmt(stats.get('energy_max'), '.5g')}]",
        ),
        (
            "energy per atom (eV)",
            f"{_fmt(stats.get('energy_per_atom_mean'))} ± {_fmt(stats.get('energy_per_atom_std'), '.4g')}",
        ),
        ("  after E0 fit, std (eV/atom)", _fmt(stats.get("energy_per_atom_residual_std"), ".4g")),
        ("forces RMS (eV/Å)", _fmt(stats.get("forces_rms"), ".4g")),
        ("largest |force| (eV/Å)", _fmt(stats.get("forces_max_norm"), ".4g")),
        ("stress RMS (eV/Å³)", _fmt(stats.get("stress_rms"), ".4g")),
    ]
    for k, v in rows:
        summary.add_row(k, v)
    for label, text in (stats.get("units") or {}).items():
        summary.add_row(f"{label} units", str(text))

    elements = Table(title="Elements", title_justify="left")
    elements.add_column("Z", justify="right")
    elements.add_column("element")
    elements.add_column("atoms", justify="right")
    elements.add_column("structures", justify="right")
    elements.add_column("E0 (eV)", justify="right")
    e0 = stats.get("reference_energies") or {}
    per_structure = stats.get("element_structure_counts") or {}
    for z, count in sorted((stats.get("element_counts") or {}).items(), key=lambda kv: int(kv[0])):
        z = int(z)
        elements.add_row(
            str(z),
            chemical_symbols[z] if 0 < z < len(chemical_symbols) else "?",
            str(count),
            str(per_structure.get(z, per_structure.get(str(z), "—"))),
            _fmt(e0.get(z, e0.get(str(z))), ".6f"),
        )
    return summary, elements


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def collect_warnings(fn, *args, **kwargs) -> tuple:
    """``(fn(*args, **kwargs), [warning texts])``: warnings become notes printed beside the result."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args, **kwargs)
    return result, [str(w.message) for w in caught if not issubclass(w.category, DeprecationWarning)]


def _scan(reader, chunk: int = 256):
    """Every structure of ``reader`` in order, read ``chunk`` at a time."""
    n = len(reader)
    for start in range(0, n, chunk):
        yield from reader.read_many(range(start, min(start + chunk, n)))


def _statistics(paths: Sequence[str], fmt: Optional[str], keys: dict) -> tuple[dict, list[str]]:
    """What ``MolecularDataset.get_statistics`` returns (without importing torch) and the text of
    any statistics warnings. ``file``: the input as given (passwords hidden); ``files``: the
    files read (several for a glob); ``display``: how tables name the data."""
    from .data.readers.base import check_configured_keys
    from .data.stats import compute_statistics

    def compute():
        reader = open_input(paths, fmt, keys)
        check_configured_keys(reader)
        stats = compute_statistics(progress(_scan(reader), len(reader), "stats"))
        return {
            "file": shown_path(paths),
            "files": member_files(reader),
            "format": reader.format_name,
            "layout": getattr(reader, "layout_name", None),
            **stats,
            "units": dict(reader.units),
        }, reader.display_path

    (result, display), notes = collect_warnings(compute)
    return dict(result, display=display), [hide_passwords(n) for n in notes]


_PATHS_HELP = "PATH: a file, a database URL, several files or a quoted glob pattern ('shards/*.xyz')."


@cli.command(epilog=_PATHS_HELP)
@click.argument("paths", metavar="PATH...", nargs=-1, required=True)
@click.option("-f", "--format", "fmt", default=None, help=f"Input format: {FORMAT_HELP}.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@_label_options
def stats(
    paths: tuple[str, ...], fmt: Optional[str], as_json: bool, energy_key: str, forces_key: str, stress_key: str
) -> None:
    """Statistics of the dataset at PATH: sizes, labels, per-element counts and reference energies."""
    _require_input(paths)
    result, notes = _statistics(paths, fmt, _keys(energy_key, forces_key, stress_key))
    display = result.pop("display")
    if as_json:
        result["warnings"] = notes
        click.echo(json.dumps(result, indent=2, default=_json_default))
        return
    console = _console()
    fmt_text = f"{result['format']} ({result['layout']})" if result.get("layout") else result["format"]
    for table in render_statistics(result, f"{display} ({fmt_text})"):
        console.print(table)
    for note in notes:
        console.print(f"[yellow]note:[/] {note}")


# -- convert -------------------------------------------------------------------------------
_CUTOFF = FiniteFloatRange(min=0, min_open=True)


@cli.command(epilog=_PATHS_HELP.replace("PATH", "IN"))
@click.argument("srcs", metavar="IN...", nargs=-1, required=True)
@click.argument("dst", metavar="OUT")
@click.option("--from", "from_fmt", default=None, help=f"Input format: {FORMAT_HELP}.")
@click.option("--to", "to_fmt", default=None, help=f"Output format: {FORMAT_HELP}.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option(
    "--cutoff", default=None, type=_CUTOFF, help="Å (> 0); packed output only: also store neighbor lists."
)
@_label_options
def convert(
    srcs: tuple[str, ...],
    dst: str,
    from_fmt: Optional[str],
    to_fmt: Optional[str],
    overwrite: bool,
    cutoff: Optional[float],
    energy_key: str,
    forces_key: str,
    stress_key: str,
) -> None:
    """Convert IN to OUT (any supported format to any other), losslessly.

    Positions, atomic numbers, cell, pbc, energy, forces and stress are copied exactly (float64
    bit for bit). Several inputs (or a glob) are written one after the other into OUT.
    """
    from .data.readers.base import check_configured_keys
    from .data.writers import write_structures

    _require_input(srcs)
    _refuse_url_output(dst)
    dst = Path(dst)
    start = time.perf_counter()
    reader = open_input(srcs, from_fmt, _keys(energy_key, forces_key, stress_key))
    if dst.exists() and any(
        "://" not in f and Path(f).resolve() == dst.resolve() for f in getattr(reader, "paths", [reader.path])
    ):
        raise ValueError(f"{dst}: input and output are the same file")
    check_configured_keys(reader)
    out_fmt = _format_of(dst, to_fmt)
    if cutoff is not None and out_fmt != "packed":
        raise ValueError(f"--cutoff stores neighbor lists in the packed format only, not in {out_fmt!r}")
    if out_fmt == "packed":  # the packed writer reads the reader itself (keeps its units and source)
        from .data.packed import write_packed

        count = write_packed(dst, reader, overwrite=overwrite, cutoff=cutoff)
    else:
        structures = progress(_scan(reader), len(reader), "convert")
        count = write_structures(dst, structures, out_fmt, overwrite=overwrite)
    click.echo(
        f"Converted {count} structures: {reader.display_path} ({describe_format(reader)}) -> {dst} ({out_fmt}) "
        f"in {time.perf_counter() - start:.1f} s"
    )
    for label, text in reader.units.items():
        click.echo(hide_passwords(f"note: {label} converted on reading: {text}"), err=True)


# -- validate ------------------------------------------------------------------------------
@cli.command(epilog=_PATHS_HELP)
@click.argument("paths", metavar="PATH...", nargs=-1, required=True)
@click.option("-f", "--format", "fmt", default=None, help=f"Input format: {FORMAT_HELP}.")
@click.option(
    "--overlap-threshold", default=0.5, show_default=True, type=FiniteFloatRange(min=0), help="Å; 0 disables."
)
@click.option(
    "--decimals",
    default=6,
    show_default=True,
    type=click.IntRange(min=0),
    help="Decimals (Å) positions are rounded to for duplicate detection.",
)
@click.option(
    "--max-show", default=50, show_default=True, type=click.IntRange(min=0), help="Problems listed in the table."
)
@click.option("--json", "as_json", is_flag=True, help="Print the problems as JSON.")
@_label_options
def validate(
    paths: tuple[str, ...],
    fmt: Optional[str],
    overlap_threshold: float,
    decimals: int,
    max_show: int,
    as_json: bool,
    energy_key: str,
    forces_key: str,
    stress_key: str,
) -> None:
    """Check every structure of PATH; exit code 1 when problems are found.

    Reports unreadable structures, NaN/inf, shape mismatches, invalid atomic numbers, overlapping
    atoms, duplicate structures and labels some structures carry and others lack — with indices.
    """
    from .validate import validate_reader

    _require_input(paths)
    reader = open_input(paths, fmt, _keys(energy_key, forces_key, stress_key))
    problems = validate_reader(
        reader,
        overlap_threshold,
        decimals=decimals,
        progress=lambda it: progress(it, len(reader), "validate"),
    )
    if as_json:
        report = {
            "file": shown_path(paths),
            "files": member_files(reader),
            "num_structures": len(reader),
            "problems": [dict(p.as_dict(), message=hide_passwords(p.message)) for p in problems],
        }
        click.echo(json.dumps(report, indent=2))
    else:
        _print_problems(problems, len(reader), reader.display_path, max_show)
    if problems:
        sys.exit(1)


def _print_problems(problems: Sequence, n: int, path: str, max_show: int) -> None:
    from collections import Counter

    from rich.table import Table

    console = _console()
    if not problems:
        console.print(f"[green]✓[/] {path}: {n} structures, no problems found")
        return
    table = Table(title=f"{path}: {len(problems)} problem(s) in {n} structures", title_justify="left")
    for col in ("index", "kind", "key", "message"):
        table.add_column(col, justify="right" if col == "index" else "left", overflow="fold")
    for p in problems[:max_show]:
        table.add_row("—" if p.index is None else str(p.index), p.kind, p.key or "", hide_passwords(p.message))
    console.print(table)
    if len(problems) > max_show:
        console.print(f"... {len(problems) - max_show} more (use --max-show or --json)")
    counts = ", ".join(f"{k}: {v}" for k, v in Counter(p.kind for p in problems).most_common())
    console.print(f"[red]✗[/] {counts}")


# -- bench ---------------------------------------------------------------------------------
@cli.command(epilog=_PATHS_HELP)
@click.argument("paths", metavar="PATH...", nargs=-1, required=True)
@click.option("-f", "--format", "fmt", default=None, help=f"Input format: {FORMAT_HELP}.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--workers", default="0,2", show_default=True, help="Comma-separated DataLoader worker counts.")
@click.option("--modes", default="padded,graph", show_default=True, help="Batching modes to time.")
@click.option(
    "--epochs", default=2, show_default=True, type=click.IntRange(min=1), help="Timed epochs (after a warm-up)."
)
@click.option("--cutoff", default=None, type=_CUTOFF, help="Å (> 0); graph mode also builds neighbor lists.")
@click.option("--cache", is_flag=True, help="Keep the dataset in memory (MolecularDataset(cache=True)).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench(
    paths: tuple[str, ...],
    fmt: Optional[str],
    batch_size: int,
    workers: str,
    modes: str,
    epochs: int,
    cutoff: Optional[float],
    cache: bool,
    as_json: bool,
) -> None:
    """Loader throughput (samples/s, atoms/s) on PATH for padded and graph batching and worker counts."""
    _require_input(paths)
    from .data.dataset import MolecularDataset
    from .throughput import throughput_table, time_loader, time_reader

    try:
        worker_counts = [int(w) for w in _parse_list(workers)]
    except ValueError:
        raise InputError(f"--workers: expected comma-separated integers, got {workers!r}") from None
    if not worker_counts or min(worker_counts) < 0:
        raise InputError(f"--workers: expected integers >= 0, got {workers!r}")
    mode_list = _parse_list(modes)
    if not mode_list or any(m not in ("padded", "graph") for m in mode_list):
        raise InputError(f"--modes: choose from padded, graph; got {modes!r}")
    dataset = MolecularDataset(_data_path(paths), format=fmt, cache=cache, return_atoms=False)
    display = dataset.reader.display_path
    if len(dataset) == 0:
        raise InputError(f"{display}: no structures")
    fmt_name = describe_format(dataset.reader)
    rows = [dict(time_reader(dataset.reader, epochs), format=fmt_name)]
    for mode in mode_list:
        for w in worker_counts:
            rows.append(
                dict(
                    time_loader(
                        dataset,
                        padded=mode == "padded",
                        workers=w,
                        batch_size=batch_size,
                        epochs=epochs,
                        cutoff=cutoff if mode == "graph" else None,
                    ),
                    format=fmt_name,
                )
            )
    if as_json:
        report = {
            "file": shown_path(paths),
            "files": member_files(dataset.reader),
            "num_structures": len(dataset),
            "batch_size": batch_size,
            "results": rows,
        }
        click.echo(json.dumps(report, indent=2))
        return
    table = throughput_table(f"{display}: loader throughput", rows)
    table.caption = (
        f"{len(dataset)} structures, batch size {batch_size}, {epochs} timed epoch(s), {os.cpu_count()} CPU(s)"
    )
    _console().print(table)


# -- demo ----------------------------------------------------------------------------------
@cli.command()
@click.option("--out", default="demo_output", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("-n", "--num-structures", default=300, show_default=True, type=click.IntRange(min=3))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--overwrite", is_flag=True, help="Replace the files of an earlier demo in --out.")
def demo(out: Path, num_structures: int, seed: int, batch_size: int, overwrite: bool) -> None:
    """The whole job in under a minute: generate an EMT-labeled dataset, write every format,
    check the round trip, print statistics, validate and time the padded and graph loaders."""
    from .demo import run_demo

    run_demo(
        out, num_structures=num_structures, seed=seed, batch_size=batch_size, overwrite=overwrite, console=_console()
    )


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Console-script entry point."""
    warnings.formatwarning = _format_warning  # one line per warning, no source excerpt
    cli.main(args=list(argv) if argv is not None else None, prog_name="mlff-distiller")


if __name__ == "__main__":
    main()
