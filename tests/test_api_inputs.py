"""Bad arguments to the Python API: each is refused where it enters, with one gapsweep error line
that names the argument as the caller wrote it, never a TypeError or AttributeError from deep
inside. None of these trains a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pytest

from gapsweep import DataSpec, ObjectiveSettings
from gapsweep.errors import ConfigError, DataError, GapsweepError


@dataclass(frozen=True)
class Bad:
    name: str
    call: Callable[[], Any]
    error: type[GapsweepError]
    says: str  #: a fragment the message must hold


CONSTRUCTORS = [
    Bad("data-fraction-text", lambda: DataSpec("digits", train_fraction="0.3"), DataError,
        "train_fraction must be a number in [0, 1], got '0.3'"),
    Bad("data-fraction-none", lambda: DataSpec("digits", val_fraction=None), DataError,
        "val_fraction must be a number in [0, 1], got None"),
    Bad("data-fraction-bool", lambda: DataSpec("digits", test_fraction=True), DataError,
        "test_fraction must be a number in [0, 1], got True"),
    Bad("data-ignore-number", lambda: DataSpec("rows.csv", target="y", ignore=1), DataError,
        "ignore must be a column name or a list of them, got 1"),
    Bad("data-ignore-numbers", lambda: DataSpec("rows.csv", target="y", ignore=[0, 1]), DataError,
        "ignore must be a column name or a list of them, got [0, 1]"),
    Bad("data-target-number", lambda: DataSpec("rows.csv", target=3), DataError, "target must be a column name, got 3"),
    Bad("objective-penalty-text", lambda: ObjectiveSettings(gap_penalty="1"), ConfigError,
        "gap_penalty must be a number >= 0, got '1'"),
    Bad("objective-kappa-inf", lambda: ObjectiveSettings(kappa=float("inf")), ConfigError,
        "kappa must be a number >= 0, got inf"),
    Bad("objective-cv-text", lambda: ObjectiveSettings(cv="5"), ConfigError, "cv must be a whole number >= 2, got '5'"),
    Bad("objective-patience-float", lambda: ObjectiveSettings(patience=2.5), ConfigError,
        "patience must be a whole number >= 1, got 2.5"),
    Bad("objective-score-unknown", lambda: ObjectiveSettings(score="ladder"), ConfigError, "unknown score 'ladder'"),
]


def _refused(case: Bad) -> None:
    with pytest.raises(case.error) as caught:
        case.call()
    assert case.says in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("case", CONSTRUCTORS, ids=lambda case: case.name)
def test_a_bad_setting_is_refused_when_the_settings_are_made(case: Bad) -> None:
    _refused(case)
