"""The comment line of an (extended) XYZ frame, read as ASE reads it into ``atoms.info``.

Values are converted by ASE's own parser (``ase.io.extxyz.key_val_str_to_dict``), so they are
exactly what ``ase.io.read`` gives. When the line's syntax is plain, only the ``key=value``
pairs a sample needs are cut out and handed to it (the rest is never parsed). Repairs for files
ASE refuses: a ``stress=``/``virial=`` of 6 Voigt values, and a plain-XYZ comment that is one
real number (the energy in eV).
"""

from __future__ import annotations

import re
from typing import Any, Optional

import numpy as np
from ase.io.extxyz import SPECIAL_3_3_KEYS, key_val_str_to_dict

from ...errors import format_error

_VOIGT_KEYS = re.compile(r"(?<!\S)(stress|virial)(?=\s*=)")
_VOIGT_PREFIX = "__mlffd_voigt_"

#: one ``key`` or ``key=value`` of a comment line in the plain syntax (no escapes, no spaces
#: around ``=``, quotes only around a whole value); anything else goes to ASE's full parser
_PAIR = re.compile(
    r"""([^\s="'{}\[\]\\]+)"""  # key
    r"""(?:=("[^"]*"|'[^']*'|\{[^}]*\}|\[[^\]]*\]|[^\s"'{}\[\]=\\]+))?"""  # =value, quoted or bare
    r"""(?:\s+|$)"""
)


def bare_energy(comment: str) -> Optional[float]:
    """The energy of a plain-XYZ comment that is one real number (a bare integer is not)."""
    token = comment.strip()
    if not token or len(token.split()) != 1:
        return None
    try:
        int(token)
        return None
    except ValueError:
        pass
    try:
        return float(token)
    except ValueError:
        return None


def split_comment(line: str) -> Optional[list[tuple[str, str]]]:
    """``[(key, 'key=value' text), ...]`` of a stripped comment line, or None for syntax outside ``_PAIR``."""
    pos, pairs = 0, []
    while pos < len(line):
        m = _PAIR.match(line, pos)
        if m is None:
            return None
        pairs.append((m.group(1), line[m.start() : m.end(2) if m.group(2) is not None else m.end(1)]))
        pos = m.end()
    return pairs


def parse_comment(
    comment: str, *, path: str, index: int, only: Optional[frozenset[str]] = None
) -> dict[str, Any]:
    """The comment line as ``atoms.info`` would hold it before ASE moves labels to its calculator.

    only: the keys wanted (None for all). Their ``key=value`` texts are cut out of the line
    and handed to ASE's parser alone, which converts them exactly as it would in the whole
    line but skips the work on other keys; lines in unusual syntax are parsed whole.
    """
    line = comment.strip()
    if not line:
        return {}
    energy = bare_energy(line)
    if energy is not None:
        return {"energy": energy}
    if only is not None and "_JSON" not in line:  # a _JSON value is parsed (and may fail) in ASE
        pairs = split_comment(line)
        if pairs is not None:
            line = " ".join(text for key, text in pairs if key in only)
    try:
        info = key_val_str_to_dict(line)
    except ValueError as exc:
        info = _parse_voigt_comment(line)
        if info is None:
            key = re.search(r"info item (\w+)", str(exc))
            raise format_error(
                path, index, key.group(1) if key else None, f"cannot parse the comment line: {exc}"
            ) from None
    return info if only is None else {k: v for k, v in info.items() if k in only}


def _parse_voigt_comment(line: str) -> Optional[dict[str, Any]]:
    """Parse a comment whose ``stress``/``virial`` holds 6 Voigt values (ASE insists on 9)."""
    renamed = _VOIGT_KEYS.sub(lambda m: _VOIGT_PREFIX + m.group(1), line)
    if renamed == line:
        return None
    try:
        info = key_val_str_to_dict(renamed)
    except ValueError:
        return None
    for key in [k for k in info if k.startswith(_VOIGT_PREFIX)]:
        value = info.pop(key)
        if not (isinstance(value, np.ndarray) and value.shape in ((6,), (9,)) and value.dtype.kind in "iuf"):
            return None
        info[key[len(_VOIGT_PREFIX) :]] = value.reshape(3, 3, order="F") if value.size == 9 else value
    return info


def stress_value(key: str, value: Any) -> Any:
    """A stress/virial as stored: ``stress`` as ASE's calculator keeps it, 9-vectors column-major."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "iuf":
        if key == "stress" and value.shape == (3, 3):
            # ASE's extxyz reader stores this Voigt vector in atoms.calc.results['stress']
            return np.array([value[0, 0], value[1, 1], value[2, 2], value[1, 2], value[0, 2], value[0, 1]])
        if value.shape == (9,):
            return value.reshape(3, 3, order="F")
    return value


def is_numeric(value: Any) -> bool:
    """True for a number or numeric array (a bool is not): a comment value that may be a label."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, float, np.integer, np.floating)):
        return True
    return isinstance(value, np.ndarray) and value.dtype.kind in "iuf"


__all__ = ["SPECIAL_3_3_KEYS", "bare_energy", "split_comment", "parse_comment", "stress_value", "is_numeric"]
