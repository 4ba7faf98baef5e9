"""gapsweep's numeric environment variables (``$GAPSWEEP_HEARTBEAT_S`` and the rest), read one way.

Each is read where it is used, through ``number``, so a malformed value is one line naming the
variable and what it takes, never a traceback; ``launch`` and ``worker`` read them all before
they write anything (``check``).
"""

from __future__ import annotations

import math
import os
from typing import Callable

from gapsweep.errors import ConfigError


def number(name: str, default: float, *, minimum: float, whole: bool = False, meaning: str = "") -> float:
    """``$name`` as a number (a whole one if ``whole``) of at least ``minimum``; ``default`` when
    unset or empty. ``inf`` is a number here (e.g. "never checkpoint"); NaN is not."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value: float | None = int(text) if whole else float(text)
    except ValueError:
        value = None
    if value is None or math.isnan(value) or value < minimum:
        kind = "a whole number" if whole else "a number"
        note = f" ({meaning})" if meaning else ""
        raise ConfigError(f"{name} must be {kind} >= {minimum:g}{note}, got '{text}'; fix or unset it")
    return value


def check(readers: list[Callable[[], object]]) -> None:
    """Read every setting in ``readers`` now, so a bad one stops a command before it writes."""
    for read in readers:
        read()
