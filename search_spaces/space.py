"""A search space: parameter name → distribution, written in Python or in a file.

The space is plain data so that it can be validated before any study is created, stored with the
study as JSON, and compared when a study is resumed. ``sample`` is the only place that talks to
Optuna's trial API.

A parameter may be conditional: ``when = "n_layers > 0"`` samples it only when an earlier
parameter's value satisfies the comparison (``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=`` against a
number, ``true``/``false`` or a string). Otherwise it is never suggested, Optuna's define-by-run
way: a depth-0 network records no width and no dropout, and the builder's default stands in.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Union

import optuna

from gapsweep.errors import SpaceError

Scalar = Union[int, float, str, bool]


@dataclass(frozen=True)
class Float:
    """A real number in ``[low, high]``; ``log`` samples evenly in log space."""

    low: float
    high: float
    log: bool = False
    step: float | None = None
    when: str | None = None

    def check(self, name: str) -> None:
        _check_bounds(name, self.low, self.high, self.log)
        if self.step is not None and self.log:
            raise SpaceError(f"parameter '{name}': 'step' and 'log' cannot be combined; drop one")
        if self.step is not None and self.step <= 0:
            raise SpaceError(f"parameter '{name}': 'step' must be > 0, got {self.step}")
        if self.step is not None:
            steps = (self.high - self.low) / self.step
            if abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
                _off_grid(name, self.low, self.high, self.step, self.low + math.floor(steps) * self.step)

    def sample(self, trial: optuna.Trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)

    def allows(self, value: Scalar) -> bool:
        """Whether the range holds ``value``."""
        return self.low <= value <= self.high

    def nearest(self, value: float) -> float | None:
        """``value`` clipped into the range; None on a stepped range that does not hold it."""
        if self.step is None:
            return float(min(max(value, self.low), self.high))
        return value if self.allows(value) else None


@dataclass(frozen=True)
class Int:
    """An integer in ``[low, high]``; ``log`` favours small values (layer widths, epochs)."""

    low: int
    high: int
    log: bool = False
    step: int = 1
    when: str | None = None

    def check(self, name: str) -> None:
        for bound in (self.low, self.high, self.step):
            if isinstance(bound, bool) or not isinstance(bound, int):
                raise SpaceError(
                    f"parameter '{name}': int bounds and step must be integers, got {bound!r}"
                )
        _check_bounds(name, self.low, self.high, self.log)
        if self.step < 1:
            raise SpaceError(f"parameter '{name}': 'step' must be >= 1, got {self.step}")
        if self.log and self.step != 1:
            raise SpaceError(f"parameter '{name}': 'log' needs step = 1, got step {self.step}")
        if (self.high - self.low) % self.step:
            _off_grid(name, self.low, self.high, self.step, self.low + (self.high - self.low) // self.step * self.step)

    def sample(self, trial: optuna.Trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log, step=self.step)

    def allows(self, value: Scalar) -> bool:
        """Whether the range, on its steps, holds ``value``."""
        return self.low <= value <= self.high and (value - self.low) % self.step == 0

    def nearest(self, value: float) -> float | int | None:
        """``value`` rounded and clipped into the range; None on a stepped range that does not hold it."""
        if self.step == 1:
            return int(min(max(round(value), self.low), self.high))
        return value if self.allows(value) else None


@dataclass(frozen=True)
class Categorical:
    """One of a fixed list of choices (activations, optimizers, batch sizes)."""

    choices: tuple[Scalar, ...]
    when: str | None = None

    def check(self, name: str) -> None:
        if not self.choices:
            raise SpaceError(f"parameter '{name}': 'choices' must list at least one value")
        for choice in self.choices:
            if not isinstance(choice, (int, float, str, bool)):
                raise SpaceError(
                    f"parameter '{name}': choices must be numbers, strings or booleans, "
                    f"got {choice!r}"
                )
        if len(set(self.choices)) != len(self.choices):
            raise SpaceError(f"parameter '{name}': 'choices' has duplicates: {list(self.choices)}")

    def sample(self, trial: optuna.Trial, name: str) -> Scalar:
        return trial.suggest_categorical(name, list(self.choices))

    def allows(self, value: Scalar) -> bool:
        return value in self.choices

    def nearest(self, value: Scalar) -> Scalar | None:
        """``value`` where it is a choice; None otherwise (no choice is "near" another)."""
        return value if self.allows(value) else None


@dataclass(frozen=True)
class Fixed:
    """A value that is not searched but still recorded with every trial."""

    value: Scalar
    when: str | None = None

    def check(self, name: str) -> None:
        if not isinstance(self.value, (int, float, str, bool)):
            raise SpaceError(
                f"parameter '{name}': a fixed value must be a number, string or boolean, "
                f"got {self.value!r}"
            )

    def sample(self, trial: optuna.Trial, name: str) -> Scalar:
        # Not an Optuna param: the hypermodel reports it in ``FitSettings.fixed`` for the trial to record.
        return self.value

    def allows(self, value: Scalar) -> bool:
        return self.value == value

    def nearest(self, value: Scalar) -> Scalar | None:
        return value if self.allows(value) else None


Distribution = Union[Float, Int, Categorical, Fixed]

_COMPARISONS = {
    "==": operator.eq, "!=": operator.ne, "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt,
}
_CONDITION = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(==|!=|<=|>=|<|>)\s*(\S.*?)\s*$")


@dataclass(frozen=True)
class Condition:
    """``NAME OP VALUE`` from a parameter's ``when``: it is sampled only if this holds."""

    name: str
    op: str
    value: Scalar

    @classmethod
    def parse(cls, param: str, text: Any) -> "Condition":
        match = _CONDITION.match(text) if isinstance(text, str) else None
        if match is None:
            raise SpaceError(
                f"parameter '{param}': 'when' must read NAME OP VALUE with OP one of "
                f"{' '.join(_COMPARISONS)}, e.g. \"n_layers > 0\"; got {text!r}"
            )
        name, op, raw = match.groups()
        value = _literal(raw)
        if op not in ("==", "!=") and (isinstance(value, (bool, str))):
            raise SpaceError(f"parameter '{param}': '{op}' in 'when' needs a number, got {raw!r}")
        return cls(name, op, value)

    def holds(self, values: Mapping[str, Scalar]) -> bool:
        """False also when the parameter it names was itself inactive (absent)."""
        if self.name not in values:
            return False
        value = values[self.name]
        if self.op not in ("==", "!=") and (isinstance(value, (bool, str))):
            return False
        return bool(_COMPARISONS[self.op](value, self.value))


def _can_hold(condition: Condition, parent: Distribution) -> bool:
    """Whether ``condition`` holds for some value of ``parent``: for some choice; for a range or
    a fixed number, whenever it compares numbers with numbers (a range narrowed so that its
    children are off, as in a depth-0 "linear only" space, is deliberate; a string compared with
    numbers is a typo). A fixed string or boolean is a choice of one: it is held to its value."""
    if isinstance(parent, Categorical):
        return any(condition.holds({condition.name: choice}) for choice in parent.choices)
    if isinstance(parent, Fixed) and isinstance(parent.value, (str, bool)):
        return condition.holds({condition.name: parent.value})
    if condition.op == "!=":
        return True
    kinds = (parent.value,) if isinstance(parent, Fixed) else (parent.low,)
    return all(isinstance(condition.value, str) == isinstance(kind, str) for kind in kinds)


def _literal(raw: str) -> Scalar:
    """A condition's value: a number, true/false, or a string (quoted or bare)."""
    if raw in ("true", "false"):
        return raw == "true"
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            continue
    return raw


def _off_grid(name: str, low: float, high: float, step: float, last: float) -> None:
    """Refuse a range whose high end is not a whole number of steps from its low end: Optuna
    would quietly move the end (to the low end itself when the step exceeds the range)."""
    raise SpaceError(
        f"parameter '{name}': high ({high}) is not a whole number of steps ({step}) from low ({low}); "
        f"the last value on the grid is {last:g}: set high = {last:g} or a step that divides the range"
    )


def _check_bounds(name: str, low: float, high: float, log: bool) -> None:
    for bound in (low, high):
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound):
            raise SpaceError(f"parameter '{name}': bounds must be finite numbers, got {bound!r}")
    if low > high:
        raise SpaceError(f"parameter '{name}': low ({low}) is greater than high ({high}); swap them")
    if log and low <= 0:
        raise SpaceError(f"parameter '{name}': a log-scale range needs low > 0, got low = {low}")


@dataclass(frozen=True)
class SearchSpace:
    """Named distributions plus the parameter names the model builder requires."""

    params: Mapping[str, Distribution] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.params:
            raise SpaceError("the search space is empty: declare at least one parameter")
        for name, dist in self.params.items():
            if not isinstance(name, str) or not name:
                raise SpaceError(f"parameter names must be non-empty strings, got {name!r}")
            if not isinstance(dist, (Float, Int, Categorical, Fixed)):
                raise SpaceError(
                    f"parameter '{name}': expected Float, Int, Categorical or Fixed, got {dist!r}"
                )
            dist.check(name)
            if dist.when is not None:
                condition = Condition.parse(name, dist.when)
                earlier = list(self.params)[: list(self.params).index(name)]
                if condition.name not in self.params:
                    raise SpaceError(
                        f"parameter '{name}': 'when' refers to '{condition.name}', which is no parameter of this "
                        f"space (a typo?); parameters: {', '.join(self.params)}"
                    )
                if condition.name not in earlier:
                    raise SpaceError(
                        f"parameter '{name}': 'when' refers to '{condition.name}', which must be declared "
                        "before it (parameters are sampled in order)"
                    )
                if not _can_hold(condition, self.params[condition.name]):
                    raise SpaceError(
                        f"parameter '{name}': 'when' ({dist.when}) never holds for the values '{condition.name}' "
                        "can take, so it would never be searched; fix the condition (a typo?) or that parameter's choices"
                    )

    def sample(self, trial: optuna.Trial) -> dict[str, Scalar]:
        """Draw one configuration; the order is the declaration order, so seeds reproduce.
        A parameter whose ``when`` does not hold is not suggested and not returned."""
        values: dict[str, Scalar] = {}
        for name, dist in self.params.items():
            if dist.when is None or Condition.parse(name, dist.when).holds(values):
                values[name] = dist.sample(trial, name)
        return values

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The declarative form, the same one ``from_dict`` reads and sweep files hold."""
        out: dict[str, dict[str, Any]] = {}
        for name, dist in self.params.items():
            if isinstance(dist, Float):
                entry: dict[str, Any] = {"type": "float", "low": dist.low, "high": dist.high}
                if dist.log:
                    entry["log"] = True
                if dist.step is not None:
                    entry["step"] = dist.step
            elif isinstance(dist, Int):
                entry = {"type": "int", "low": dist.low, "high": dist.high}
                if dist.log:
                    entry["log"] = True
                if dist.step != 1:
                    entry["step"] = dist.step
            elif isinstance(dist, Categorical):
                entry = {"type": "categorical", "choices": list(dist.choices)}
            else:
                entry = {"type": "fixed", "value": dist.value}
            if dist.when is not None:
                entry["when"] = dist.when
            out[name] = entry
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "SearchSpace":
        """Read the declarative form: ``{name: {type: float|int|categorical|fixed, ...}}``.

        A bare scalar is shorthand for a fixed value and a bare list for a categorical.
        """
        if not isinstance(raw, Mapping):
            raise SpaceError(
                f"a search space must be a table of parameters, got {type(raw).__name__}"
            )
        return cls({str(name): _parse_param(str(name), spec) for name, spec in raw.items()})


_KEYS = {
    "float": {"type", "low", "high", "log", "step", "when"},
    "int": {"type", "low", "high", "log", "step", "when"},
    "categorical": {"type", "choices", "when"},
    "fixed": {"type", "value", "when"},
}


def _parse_param(name: str, spec: Any) -> Distribution:
    if isinstance(spec, (int, float, str, bool)):
        return Fixed(spec)
    if isinstance(spec, list):
        return Categorical(tuple(spec))
    if not isinstance(spec, Mapping):
        raise SpaceError(f"parameter '{name}': expected a table with a 'type', got {spec!r}")
    kind = spec.get("type")
    if "type" not in spec:
        raise SpaceError(
            f"parameter '{name}': its table has no 'type' (keys: {', '.join(map(str, spec)) or 'none'}); "
            f"add type = one of {', '.join(sorted(_KEYS))}"
        )
    if kind not in _KEYS:
        raise SpaceError(
            f"parameter '{name}': unknown type {kind!r}; use one of {', '.join(sorted(_KEYS))}"
        )
    unknown = set(spec) - _KEYS[kind]
    if unknown:
        raise SpaceError(
            f"parameter '{name}': unknown key(s) {', '.join(sorted(unknown))} for type '{kind}'; "
            f"allowed: {', '.join(sorted(_KEYS[kind] - {'type'}))}"
        )
    when = spec.get("when")
    try:
        if kind == "float":
            return Float(
                low=_number(name, spec, "low"),
                high=_number(name, spec, "high"),
                log=_flag(name, spec, "log"),
                step=_number(name, spec, "step") if "step" in spec else None,
                when=when,
            )
        if kind == "int":
            return Int(
                low=spec["low"],
                high=spec["high"],
                log=_flag(name, spec, "log"),
                step=spec.get("step", 1),
                when=when,
            )
        if kind == "categorical":
            choices = spec["choices"]
            if not isinstance(choices, list):
                raise SpaceError(f"parameter '{name}': 'choices' must be a list, got {choices!r}")
            return Categorical(tuple(choices), when=when)
        return Fixed(spec["value"], when=when)
    except KeyError as missing:
        raise SpaceError(f"parameter '{name}': missing key {missing} for type '{kind}'") from None


def _number(name: str, spec: Mapping[str, Any], key: str) -> float:
    value = spec.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpaceError(f"parameter '{name}': '{key}' must be a number, got {value!r}")
    return float(value)


def _flag(name: str, spec: Mapping[str, Any], key: str) -> bool:
    value = spec.get(key, False)
    if not isinstance(value, bool):
        raise SpaceError(f"parameter '{name}': '{key}' must be true or false, got {value!r}")
    return value
