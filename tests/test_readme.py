"""README's runnable examples run as written and print what README says they print."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks(section: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end >= 0 else len(text)]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def test_properties_and_units_example_runs_and_prints_what_readme_says(tmp_path):
    (code,) = _python_blocks("Properties and units")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    # the keys found by MACE's REF_ convention, the unit conversions, and the batch README shows
    assert out[0].startswith("{'energy': 'REF_energy', 'forces': 'REF_forces', 'charges': 'charges'")
    assert out[1].startswith("{'energy': 'hartree -> eV (x27.2113860244) [energy_unit=]'")
    expected = [line[2:] for line in code.splitlines() if line.startswith("# tensor(")]
    assert out[2] == expected[0]
