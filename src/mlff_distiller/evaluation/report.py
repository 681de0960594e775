"""``report.json`` and ``report.md`` of an evaluation (or a whole distill run), and the side-by-side table.

The report is one JSON-able dict; sections that are absent are left out of the Markdown:
``student``, ``teacher``, ``data``, ``accuracy`` (metrics.compute_errors summary), ``speed``
(speed.compare_speed or the student alone), ``batched`` (speed.batched_throughput), ``md``
(md.nve_stability), ``plots`` ({name: png file}), ``pipeline`` (distill stages, sample counts,
training summary), ``environment``.
"""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Optional

__all__ = ["environment", "side_by_side", "render_markdown", "write_report", "render_table"]


def environment(device: str = "cpu") -> dict:
    """Versions and hardware the numbers were measured on."""
    import torch

    from .. import __version__

    return {
        "mlff_distiller": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }


def _f(value, spec: str, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return format(value * scale, spec)


def side_by_side(report: dict) -> list[tuple[str, str, str]]:
    """Rows (quantity, teacher, student) of the headline comparison."""
    speed = report.get("speed") or {}
    teacher_speed = speed.get("teacher") or {}
    student_speed = speed.get("student") or {}
    acc = report.get("accuracy") or {}
    md = report.get("md") or {}
    rows = [
        ("model", (report.get("teacher") or {}).get("name", "—"), (report.get("student") or {}).get("name", "—")),
        ("ms per single point (1 structure/call)", _f(teacher_speed.get("ms_per_call"), ".2f"),
         _f(student_speed.get("ms_per_call"), ".2f")),
        ("speed-up vs teacher", "1×", _f(speed.get("speedup"), ".1f") + "×" if speed.get("speedup") else "—"),
        ("force MAE vs teacher, held-out (meV/Å)", "0 (reference)", _f((acc.get("forces") or {}).get("mae"), ".1f", 1e3)),
        ("energy MAE, held-out (meV/atom)", "0 (reference)",
         _f((acc.get("energy_per_atom") or {}).get("mae"), ".2f", 1e3)),
    ]
    if (acc.get("stress") or {}).get("count"):
        rows.append(("stress MAE (meV/Å³)", "0 (reference)", _f(acc["stress"]["mae"], ".3f", 1e3)))
    if md:
        verdict = "stable" if md.get("stable") else f"UNSTABLE ({md.get('reason')})"
        rows.append((f"NVE drift, {md.get('time_ps', 0):.2g} ps (meV/atom/ps)", "not run",
                     f"{_f(md.get('drift_ev_per_atom_per_ps'), '.3g', 1e3)} — {verdict}"))
    batched = report.get("batched")
    if batched:
        rows.append((f"batched throughput (batch {batched['batch_size']}, separate)", "—",
                     f"{batched['ms_per_structure']:.2f} ms/structure"))
    return rows


def render_table(report: dict, title: str = "Teacher vs student"):
    """The side-by-side table as a rich Table."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("")
    table.add_column("teacher", justify="right")
    table.add_column("student", justify="right")
    for row in side_by_side(report):
        table.add_row(*row)
    return table


def _md_table(header: list[str], rows: list) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def render_markdown(report: dict, title: str = "Distillation report") -> str:
    """The report as Markdown (headline table first, then the details)."""
    lines = [f"# {title}", ""]
    teacher, student, data = report.get("teacher"), report.get("student"), report.get("data") or {}
    if teacher:
        lines.append(f"- Teacher: **{teacher.get('name')}** (version {teacher.get('version', '?')})")
    if student:
        desc = student.get("name", "?")
        if student.get("parameters"):
            desc += f", {student['parameters']:,} parameters"
        if student.get("path"):
            desc += f" — `{student['path']}`"
        lines.append(f"- Student: {desc}")
    if data:
        lines.append(f"- Held-out data: {data.get('structures')} structures ({data.get('atoms')} atoms)"
                     + (f" from `{data['path']}`" if data.get("path") else ""))
        if data.get("held_out"):
            lines.append(f"- How the held-out structures were made: {data['held_out']}")
    lines.append("")
    lines += _md_table(["", "teacher", "student"], side_by_side(report))

    acc = report.get("accuracy")
    if acc:
        lines += ["## Accuracy (student vs teacher labels, held-out structures)", ""]
        rows = [
            ("energy per atom", "meV/atom", _f(acc["energy_per_atom"]["mae"], ".3f", 1e3),
             _f(acc["energy_per_atom"]["rmse"], ".3f", 1e3), acc["energy_per_atom"]["count"]),
            ("forces (components)", "meV/Å", _f(acc["forces"]["mae"], ".2f", 1e3), _f(acc["forces"]["rmse"], ".2f", 1e3),
             acc["forces"]["count"]),
        ]
        if acc["stress"]["count"]:
            rows.append(("stress (components)", "meV/Å³", _f(acc["stress"]["mae"], ".4f", 1e3),
                         _f(acc["stress"]["rmse"], ".4f", 1e3), acc["stress"]["count"]))
        lines += _md_table(["quantity", "unit", "MAE", "RMSE", "values"], rows)
        lines.append(f"Teacher force RMS on these structures: {acc['forces_rms_reference'] * 1e3:.1f} meV/Å.")
        lines.append("")

    speed = report.get("speed")
    if speed:
        lines += ["## Speed (like for like)", "", speed.get("method", ""), ""]
        rows = []
        for who in ("teacher", "student"):
            s = speed.get(who)
            if s:
                rows.append((who, _f(s["ms_per_call"], ".2f"), _f(s["ms_p10"], ".2f"), _f(s["ms_p90"], ".2f"), s["calls"]))
        lines += _md_table(["model", "median ms/call", "p10", "p90", "timed calls"], rows)
        lines.append(f"Threads: {speed.get('threads')}; structures timed: {speed.get('structures')}; "
                     f"speed-up: {_f(speed.get('speedup'), '.2f')}×.")
        lines.append("")
    batched = report.get("batched")
    if batched:
        lines += ["Batched student throughput (not comparable with the per-call numbers above): "
                  f"{batched['ms_per_structure']:.3f} ms/structure, {batched['structures_per_s']:.0f} structures/s "
                  f"with {batched['batch_size']} structures per call, {batched['threads']} threads.", ""]

    md = report.get("md")
    if md:
        lines += ["## MD stability (student, NVE velocity Verlet)", ""]
        rows = [
            ("length", f"{md['steps_done']} of {md['steps']} steps × {md['timestep_fs']} fs = {md['time_ps']:.3g} ps"),
            ("initial temperature", f"{md['temperature_K']:.0f} K (Maxwell-Boltzmann)"),
            ("energy drift (linear fit)", f"{_f(md['drift_ev_per_atom_per_ps'], '.4g', 1e3)} meV/atom/ps"),
            ("largest deviation of E(t) from E(0)", f"{_f(md['max_abs_energy_change_ev_per_atom'], '.4g', 1e3)} meV/atom"),
            ("closest approach", f"{md['min_distance']:.3f} Å (threshold {md['min_distance_threshold']} Å)"),
            ("temperature", f"mean {md['mean_temperature']:.0f} K, max {md['max_temperature']:.0f} K "
                            f"(bound {md['max_temperature_allowed']:.0f} K)"),
            ("verdict", "stable" if md["stable"] else f"unstable: {md['reason']}"),
            ("ms per MD step", f"{md['ms_per_step']:.2f}"),
        ]
        lines += _md_table(["", ""], rows)

    pipeline = report.get("pipeline")
    if pipeline:
        lines += ["## Pipeline", ""]
        for key, value in pipeline.items():
            if isinstance(value, dict):
                text = ", ".join(f"{k}: {_short(v)}" for k, v in value.items())
            else:
                text = _short(value)
            lines.append(f"- **{key}**: {text}")
        lines.append("")

    plots = report.get("plots")
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{name}]({file})" for name, file in plots.items()]
        lines.append("")
    env = report.get("environment")
    if env:
        lines += ["## Environment", "", ", ".join(f"{k} {v}" for k, v in env.items()), ""]
    return "\n".join(lines)


def _short(value) -> str:
    if isinstance(value, float):
        return format(value, ".4g")
    return str(value)


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_report(report: dict, out_dir: Path, title: str = "Distillation report") -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``out_dir`` (atomically); return their paths."""
    from ..data.publish import write_atomic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in (("report.json", json.dumps(report, indent=2, default=_json_default, allow_nan=True)),
                       ("report.md", render_markdown(report, title))):
        paths.append(write_atomic(out_dir / name, text + "\n"))
    return paths[0], paths[1]


def load_report(path: Path) -> Optional[dict]:
    """A report.json as a dict."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
