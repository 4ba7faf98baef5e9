"""Checks of the values a user passes, from Python or the command line, made where they enter.

Each refuses a value of the wrong type or out of range with one ``GapsweepError`` line naming
the argument (``name``: what the caller calls it, e.g. ``"jobs"`` or ``"k (--top)"``), so a
``"2"`` from a script never surfaces later as a ``TypeError`` deep inside a sweep.
"""

from __future__ import annotations

import math
import os
from typing import Any

from gapsweep.errors import ConfigError, GapsweepError


def whole(name: str, value: Any, minimum: int, *, error: type[GapsweepError] = ConfigError) -> int:
    """``value`` as a whole number >= ``minimum`` (``True`` is no number here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise error(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return value


def number(
    name: str, value: Any, *, minimum: float = 0.0, maximum: float = math.inf, error: type[GapsweepError] = ConfigError
) -> float:
    """``value`` as a finite number within [``minimum``, ``maximum``] (NaN and ``True`` are not)."""
    if (
        isinstance(value, bool) or not isinstance(value, (int, float))
        or not math.isfinite(value) or not minimum <= value <= maximum
    ):
        within = f">= {minimum:g}" if maximum == math.inf else f"in [{minimum:g}, {maximum:g}]"
        raise error(f"{name} must be a number {within}, got {value!r}")
    return value


def path(name: str, value: Any, *, error: type[GapsweepError] = ConfigError) -> str:
    """``value`` (text or a ``pathlib.Path``) as the text of a file path."""
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise error(f"{name} must be a file path (text or a pathlib.Path), got {value!r}")
    return os.fspath(value)
