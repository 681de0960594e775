"""What the subcommands print: rich tables, progress bars, JSON and warnings as notes."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from .errors import hide_passwords


def console():
    """A rich console on stdout (no automatic highlighting)."""
    from rich.console import Console

    return Console(highlight=False)


def progress(iterable: Iterable, total: Optional[int], desc: str, unit: str = "structure"):
    """A tqdm progress bar on stderr (hidden when stderr is not a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True, disable=None, leave=False)


def human_size(path: Path) -> str:
    size = (
        sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    )
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"  # pragma: no cover


def fmt_value(value, spec: str = ".6g") -> str:
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
            f"{fmt_value(stats.get('natoms_min'), 'd')} – {fmt_value(stats.get('natoms_max'), 'd')} "
            f"(mean {fmt_value(stats.get('natoms_mean'), '.1f')})",
        ),
        (
            "labels",
            f"energy {stats.get('num_with_energy', 0)}, forces {stats.get('num_with_forces', 0)}, "
            f"stress {stats.get('num_with_stress', 0)}",
        ),
        (
            "energy (eV)",
            f"{fmt_value(stats.get('energy_mean'))} ± {fmt_value(stats.get('energy_std'), '.4g')} "
            f"[{fmt_value(stats.get('energy_min'), '.5g')}, {fmt_value(stats.get('energy_max'), '.5g')}]",
        ),
        (
            "energy per atom (eV)",
            f"{fmt_value(stats.get('energy_per_atom_mean'))} ± {fmt_value(stats.get('energy_per_atom_std'), '.4g')}",
        ),
        ("  after E0 fit, std (eV/atom)", fmt_value(stats.get("energy_per_atom_residual_std"), ".4g")),
        ("forces RMS (eV/Å)", fmt_value(stats.get("forces_rms"), ".4g")),
        ("largest |force| (eV/Å)", fmt_value(stats.get("forces_max_norm"), ".4g")),
        ("stress RMS (eV/Å³)", fmt_value(stats.get("stress_rms"), ".4g")),
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
            fmt_value(e0.get(z, e0.get(str(z))), ".6f"),
        )
    return summary, elements


def json_default(value):
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


def print_problems(problems: Sequence, n: int, path: str, max_show: int) -> None:
    from collections import Counter

    from rich.table import Table

    out = console()
    if not problems:
        out.print(f"[green]✓[/] {path}: {n} structures, no problems found")
        return
    table = Table(title=f"{path}: {len(problems)} problem(s) in {n} structures", title_justify="left")
    files = any(getattr(p, "file", None) for p in problems)  # several input files: name each one's
    for col in ("index", *(("file", "index in file") if files else ()), "kind", "key", "message"):
        table.add_column(col, justify="right" if "index" in col else "left", overflow="fold")
    for p in problems[:max_show]:
        where = (hide_passwords(p.file or "—"), "—" if p.file_index is None else str(p.file_index)) if files else ()
        table.add_row("—" if p.index is None else str(p.index), *where, p.kind, p.key or "", hide_passwords(p.message))
    out.print(table)
    if len(problems) > max_show:
        out.print(f"... {len(problems) - max_show} more (use --max-show or --json)")
    counts = ", ".join(f"{k}: {v}" for k, v in Counter(p.kind for p in problems).most_common())
    out.print(f"[red]✗[/] {counts}")
