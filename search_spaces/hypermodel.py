"""The hypermodel: what a trial builds. One small interface for every way to define a model.

A hypermodel turns an Optuna trial into a compiled Keras model and the settings to fit it with.
The built-in one samples a declarative ``SearchSpace`` and hands the values to the MLP builder;
``gapsweep.search_spaces.keras_tuner`` adapts a KerasTuner ``build_model(hp)`` or ``HyperModel`` to the
same interface, so the trainer, the objective and the workers see one type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import optuna

from gapsweep.errors import SpaceError
from gapsweep.search_spaces.builder import (
    DEFAULTS, WHOLE, TaskSpec, build_model, check_conv, check_params, check_value, resolve,
)
from gapsweep.search_spaces.space import Categorical, Fixed, Float, Int, SearchSpace

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class FitSettings:
    """How a built model is fitted: the epoch budget, batch size and any extra ``fit`` kwargs."""

    epochs: int
    batch_size: int
    extra: dict[str, Any] = field(default_factory=dict)
    #: The values the space fixes rather than searches, which the trial records as ``fixed.NAME``
    #: user attributes (Optuna's params stay the searched ones).
    fixed: dict[str, Any] = field(default_factory=dict)


class Hypermodel(Protocol):
    """Builds one trial's model. ``max_epochs`` bounds every trial (Hyperband's resource)."""

    max_epochs: int

    def build(self, trial: optuna.Trial, task: TaskSpec) -> tuple["keras.Model", FitSettings]:
        """Sample the trial's values and return the compiled model and how to fit it."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the study stores to recognise (and refuse to mix) its search space."""
        ...


class SpaceHypermodel:
    """A declarative ``SearchSpace`` sampled into the built-in MLP builder."""

    def __init__(self, space: SearchSpace) -> None:
        check_params(set(space.params))
        check_ranges(space)
        self.space = space
        self.max_epochs = _max_epochs(space)

    def build(self, trial: optuna.Trial, task: TaskSpec) -> tuple["keras.Model", FitSettings]:
        values, fixed = self.draw(trial)
        return build_model(values, task), FitSettings(int(values["epochs"]), int(values["batch_size"]), fixed=fixed)

    def draw(self, trial: optuna.Trial) -> tuple[dict[str, Any], dict[str, Any]]:
        """The trial's values (the builder's defaults filled in) and the fixed ones among them."""
        sampled = self.space.sample(trial)
        return resolve(sampled), {name: v for name, v in sampled.items() if isinstance(self.space.params[name], Fixed)}

    def check(self, task: TaskSpec) -> None:
        """Refuse, before any trial, a space the data cannot feed (convolutions on a table)."""
        check_conv({"conv_blocks": _highest(self.space, "conv_blocks")}, task)

    def describe(self) -> dict[str, Any]:
        return {"space": self.space.to_dict()}


def check_ranges(space: SearchSpace) -> None:
    """Refuse a space that can sample a value the builder rejects, before any study exists:
    both ends of a range (every rule is a bound), every choice, the fixed value."""
    for name, dist in space.params.items():
        if isinstance(dist, Float) and name in WHOLE:
            raise SpaceError(
                f"parameter '{name}': the mlp builder takes a whole number, but the range is of floats "
                "(a trial would record a fraction and build its whole part); declare type = 'int'"
            )
        if isinstance(dist, (Float, Int)):
            candidates: tuple[Any, ...] = (dist.low, dist.high)
        elif isinstance(dist, Categorical):
            candidates = dist.choices
        else:
            candidates = (dist.value,)
        what = "choice" if isinstance(dist, Categorical) else "fixed value" if isinstance(dist, Fixed) else "range end"
        for value in candidates:
            if name in WHOLE and isinstance(value, float) and not value.is_integer():
                raise SpaceError(
                    f"parameter '{name}': {what} {value!r} is not a whole number, which the mlp builder takes "
                    f"(a trial would record {value!r} and build {int(value)}); change the space"
                )
            try:
                check_value(name, value)
            except SpaceError as exc:
                raise SpaceError(f"parameter '{name}': {what} {value!r} is not accepted by the mlp builder ({exc}); change the space") from None


def _max_epochs(space: SearchSpace) -> int:
    return _highest(space, "epochs")


def _highest(space: SearchSpace, name: str) -> int:
    """The largest value the space can give parameter ``name`` (the builder's default if absent)."""
    dist = space.params.get(name)
    if isinstance(dist, (Int, Float)):
        return int(dist.high)
    if isinstance(dist, Categorical):
        return int(max(float(choice) for choice in dist.choices))
    if isinstance(dist, Fixed):
        return int(dist.value)
    return int(DEFAULTS[name])
