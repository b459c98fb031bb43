"""Argument checks for constructors and entry points: a wrong type raises ``TypeError``
and a value out of range raises ``ValueError``, each naming the argument.

The choices made here, shared by every caller:

- An integer argument takes Python and numpy integers; ``bool`` is refused (``True``
  is an ``int`` to Python, but ``n=True`` is a mistake), and so are floats, even
  integral ones (``2.0``), and strings (``'8'``).
- A real-valued argument takes integers and floats that are finite (no NaN, no
  infinity); ``bool`` and strings are refused.
- A boolean argument takes ``True``/``False`` only; text (CLI values, config files) is
  parsed by :func:`parse_bool`, which knows exactly ``true/false/1/0/yes/no``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

TRUE_WORDS = ("true", "1", "yes")
FALSE_WORDS = ("false", "0", "no")


def _kind(value: Any) -> str:
    return type(value).__name__


def check_int(name: str, value: Any, *, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an ``int`` if it is an integer in ``[lo, hi]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, got {value!r} ({_kind(value)})")
    v = int(value)
    if lo is not None and v < lo:
        raise ValueError(f"{name}: must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise ValueError(f"{name}: must be <= {hi}, got {v}")
    return v


def check_optional_int(name: str, value: Any, *, lo: int | None = None, hi: int | None = None) -> int | None:
    return None if value is None else check_int(name, value, lo=lo, hi=hi)


def check_number(
    name: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """``value`` as a ``float`` if it is a finite real number in the interval (``lo_open``
    / ``hi_open`` exclude the end points)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {value!r} ({_kind(value)})")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name}: must be a finite number, got {v}")
    low_bad = lo is not None and (v <= lo if lo_open else v < lo)
    high_bad = hi is not None and (v >= hi if hi_open else v > hi)
    if low_bad or high_bad:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        raise ValueError(f"{name}: must be in {left}{lo_s}, {hi_s}{right}, got {v:g}")
    return v


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False`` (numpy booleans too)."""
    if isinstance(value, bool):
        return value
    if type(value).__name__ == "bool_":  # numpy.bool_ without importing numpy
        return bool(value)
    raise TypeError(f"{name}: expected True or False, got {value!r} ({_kind(value)})")


def parse_bool(name: str, text: str) -> bool:
    """``true/1/yes`` -> True, ``false/0/no`` -> False (any case); anything else is a
    ``ValueError`` naming ``name``."""
    low = text.strip().lower()
    if low in TRUE_WORDS:
        return True
    if low in FALSE_WORDS:
        return False
    raise ValueError(f"{name}: expected true/false/1/0/yes/no, got {text!r}")


def check_choice(name: str, value: Any, choices: tuple[str, ...] | list[str]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected a string, one of {list(choices)}, got {value!r} ({_kind(value)})")
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")
    return value


def check_instance(name: str, value: Any, cls: type | tuple[type, ...], *, optional: bool = True) -> Any:
    """``value`` if it is an instance of ``cls`` (or None when ``optional``)."""
    if value is None and optional:
        return value
    if not isinstance(value, cls):
        names = " or ".join(c.__name__ for c in (cls if isinstance(cls, tuple) else (cls,)))
        raise TypeError(f"{name}: expected {names}{' or None' if optional else ''}, got {_kind(value)}")
    return value
