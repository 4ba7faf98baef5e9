"""Bring your KerasTuner hypermodel: a ``build_model(hp)`` function or ``HyperModel``, unchanged.

``hp`` is a ``TrialHyperParameters``: KerasTuner's ``HyperParameters`` API answered by an Optuna
trial, define-by-run. Every ``hp.Int``/``Float``/``Choice``/``Boolean`` is an Optuna suggestion
under KerasTuner's own name (with ``name_scope`` prefixes), so Optuna's samplers, pruners,
storage and dashboard see ordinary parameters. A parameter inside a ``conditional_scope`` whose
condition is false is not suggested at all and returns ``None``, as in KerasTuner.

KerasTuner → Optuna:
- ``Int``/``Float``, linear, with or without ``step`` → ``suggest_int``/``suggest_float`` with
  that step (``max_value`` rounded down onto the step grid, as KerasTuner's values end);
- ``sampling="log"`` → ``log=True``; log *with* a step (KerasTuner multiplies by it) → a
  categorical over exactly KerasTuner's values ``min_value * step**i``;
- ``Choice``, ``Boolean`` → ``suggest_categorical``; ``Fixed`` → the ``fixed.NAME`` user
  attribute, like a fixed value in a gapsweep space.

Arguments are checked by KerasTuner's own parameter classes, so a build function that runs under
KerasTuner is read the same way here. ``default=`` values are KerasTuner's too; they are what the
one check build (``KerasTunerHypermodel.check``) uses, as a KerasTuner tuner builds once to
declare its space. Trials sample every tunable value, as RandomSearch and Hyperband do.

A ``HyperModel`` whose ``fit`` is overridden is called once per trial with a stand-in model that
records what it passes to ``model.fit``; its ``batch_size`` and ``epochs`` (and any ``hp`` it
samples on the way) become the trial's fit settings, and gapsweep's trainer runs the real fit on
its own split with its callbacks. Anything else fails with a one-line ``SpaceError`` naming it.
"""

from __future__ import annotations

import contextlib
import inspect
import numbers
import re
import sys
import traceback
import dataclasses
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from gapsweep.errors import ConfigError, DataError, GapsweepError, SpaceError, one_line
from gapsweep.search_spaces import code_refs
from gapsweep.search_spaces.builder import TaskSpec
from gapsweep.search_spaces.hypermodel import FitSettings
from gapsweep.search_spaces.loader import python_object

if TYPE_CHECKING:
    import keras
    import numpy as np

#: Keras' own default, for a hypermodel whose fit does not choose a batch size.
DEFAULT_BATCH_SIZE = 32

SUPPORTED = (
    "hp.Int, hp.Float, hp.Choice, hp.Boolean, hp.Fixed, hp.conditional_scope, hp.name_scope, hp.get, hp.values"
)
FIT_SUPPORT = (
    "gapsweep runs HyperModel.fit overrides that call model.fit(*args, **kwargs) once, "
    "changing only batch_size or epochs"
)

#: Parent kinds a condition can compare against; a Float parent is never equal to a listed value.
_DISCRETE_PARENTS = ("Choice", "Boolean", "Int", "Fixed")


@dataclass(frozen=True)
class _Declared:
    """A parameter declared in this trial: its kind and Optuna distribution (a Fixed one: value)."""

    kind: str
    distribution: BaseDistribution | None
    value: Any = None

    def describe(self) -> str:
        """What a resumed study compares: the kind and range (or fixed value), not the default."""
        if self.distribution is None:
            return f"{self.kind} {self.value!r}"
        return f"{self.kind} {optuna.distributions.distribution_to_json(self.distribution)}"

    def possible(self) -> tuple[Any, ...] | None:
        """Every value the parameter can take, where that is a short list (Choice, Boolean, Fixed)."""
        if self.kind == "Fixed":
            return (self.value,)
        if self.kind in ("Choice", "Boolean") and isinstance(self.distribution, CategoricalDistribution):
            return tuple(self.distribution.choices)
        return None


class TrialHyperParameters:
    """KerasTuner's ``HyperParameters`` for ``build(hp)``, drawing every value from an Optuna trial.

    With ``trial=None`` it answers KerasTuner's default values instead: the check build that runs
    before any study exists.
    """

    def __init__(self, trial: optuna.trial.BaseTrial | None) -> None:
        self.trial = trial
        #: The active values, as KerasTuner's ``hp.values``: inactive parameters are absent.
        self.values: dict[str, Any] = {}
        #: The ``Fixed`` values drawn, which the trial records as ``fixed.NAME`` user attributes.
        self.fixed: dict[str, Any] = {}
        self._declared: dict[str, _Declared] = {}
        self._conditions: list[tuple[str, tuple[Any, ...]]] = []
        self._scopes: list[str] = []

    def Int(
        self,
        name: str,
        min_value: int,
        max_value: int,
        step: int | None = None,
        sampling: str = "linear",
        default: int | None = None,
        parent_name: str | None = None,
        parent_values: Any = None,
    ) -> int | None:
        """An integer in ``[min_value, max_value]`` (both included)."""
        from keras_tuner.engine.hyperparameters import Int

        spec = _keras_tuner_spec(
            Int, self._name(name), min_value=min_value, max_value=max_value, step=step, sampling=sampling, default=default
        )
        return self._retrieve(spec.name, "Int", _numeric(spec, "Int"), spec.default, parent_name, parent_values)

    def Float(
        self,
        name: str,
        min_value: float,
        max_value: float,
        step: float | None = None,
        sampling: str = "linear",
        default: float | None = None,
        parent_name: str | None = None,
        parent_values: Any = None,
    ) -> float | None:
        """A real number in ``[min_value, max_value]``."""
        from keras_tuner.engine.hyperparameters import Float

        spec = _keras_tuner_spec(
            Float, self._name(name), min_value=min_value, max_value=max_value, step=step, sampling=sampling, default=default
        )
        return self._retrieve(spec.name, "Float", _numeric(spec, "Float"), spec.default, parent_name, parent_values)

    def Choice(
        self,
        name: str,
        values: list[Any],
        ordered: bool | None = None,
        default: Any = None,
        parent_name: str | None = None,
        parent_values: Any = None,
    ) -> Any:
        """One of ``values``; Optuna's categorical treats them as unordered whatever ``ordered`` says."""
        from keras_tuner.engine.hyperparameters import Choice

        spec = _keras_tuner_spec(Choice, self._name(name), values=values, ordered=ordered, default=default)
        distribution = CategoricalDistribution(tuple(spec.values))
        return self._retrieve(spec.name, "Choice", distribution, spec.default, parent_name, parent_values)

    def Boolean(
        self, name: str, default: bool = False, parent_name: str | None = None, parent_values: Any = None
    ) -> bool | None:
        """True or False."""
        from keras_tuner.engine.hyperparameters import Boolean

        spec = _keras_tuner_spec(Boolean, self._name(name), default=default)
        distribution = CategoricalDistribution((False, True))
        return self._retrieve(spec.name, "Boolean", distribution, spec.default, parent_name, parent_values)

    def Fixed(self, name: str, value: Any, parent_name: str | None = None, parent_values: Any = None) -> Any:
        """A value that is not searched; recorded as the trial's ``fixed.NAME`` user attribute."""
        from keras_tuner.engine.hyperparameters import Fixed

        spec = _keras_tuner_spec(Fixed, self._name(name), value=value)
        return self._retrieve(spec.name, "Fixed", None, spec.value, parent_name, parent_values)

    @contextlib.contextmanager
    def conditional_scope(self, parent_name: str, parent_values: Any) -> Iterator[None]:
        """Parameters declared inside exist only in trials where the parent takes one of
        ``parent_values``; elsewhere Optuna never sees them and they return ``None``."""
        parent = self._name(parent_name)
        allowed = tuple(parent_values) if isinstance(parent_values, (list, tuple, set, range)) else (parent_values,)
        declared = self._declared.get(parent)
        if declared is None:
            raise SpaceError(
                f"hp.conditional_scope('{parent}', ...): no hyperparameter named '{parent}' is declared "
                "before the scope; declare the parent first"
            )
        if declared.kind not in _DISCRETE_PARENTS:
            raise SpaceError(
                f"hp.conditional_scope('{parent}', ...) on a {declared.kind} parent is not supported: "
                "a condition compares values, so the parent must be a Choice, Boolean, Int or Fixed"
            )
        possible = declared.possible()
        never = [value for value in allowed if possible is not None and value not in possible]
        if never:
            raise SpaceError(
                f"hp.conditional_scope('{parent}', {list(allowed)}): {never} can never be a value of "
                f"'{parent}' (its values: {list(possible or ())}); fix the parent_values"
            )
        self._conditions.append((parent, allowed))
        try:
            yield
        finally:
            self._conditions.pop()

    @contextlib.contextmanager
    def name_scope(self, name: str) -> Iterator[None]:
        """Prefix the names declared inside with ``name/``, as KerasTuner does."""
        self._scopes.append(str(name))
        try:
            yield
        finally:
            self._scopes.pop()

    def get(self, name: str) -> Any:
        """The value of an active parameter declared earlier in this trial."""
        full = self._name(name)
        if full in self.values:
            return self.values[full]
        if full in self._declared:
            raise SpaceError(
                f"hp.get('{full}'): '{full}' is inactive in this trial (its conditional_scope does not hold)"
            )
        raise SpaceError(
            f"hp.get('{full}'): no hyperparameter named '{full}' is declared in this trial; "
            "declare it with hp.Int/Float/Choice/Boolean/Fixed before reading it"
        )

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def __contains__(self, name: str) -> bool:
        return self._name(name) in self.values

    def __getattr__(self, name: str) -> Any:
        # Only reached for names this class lacks: KerasTuner's hp.merge, hp.copy, hp.space, ...
        if name.startswith("_"):
            raise AttributeError(name)
        raise SpaceError(
            f"hp.{name} is a KerasTuner feature gapsweep does not support; build(hp) may use {SUPPORTED}"
        )

    def _name(self, name: str) -> str:
        return "/".join([*self._scopes, str(name)])

    def _active(self) -> bool:
        return all(parent in self.values and self.values[parent] in allowed for parent, allowed in self._conditions)

    def _retrieve(
        self,
        name: str,
        kind: str,
        distribution: BaseDistribution | None,
        default: Any,
        parent_name: str | None,
        parent_values: Any,
    ) -> Any:
        """KerasTuner's get-or-create: the same declaration twice in a trial (a loop) gives one value."""
        scope = self.conditional_scope(parent_name, parent_values) if parent_name else contextlib.nullcontext()
        with scope:
            if any(parent == name for parent, _ in self._conditions):
                raise SpaceError(f"hp '{name}' has the same name as the parent of its conditional_scope; rename one")
            declared = _Declared(kind, distribution, default if distribution is None else None)
            active = self._active()
            if active and name in self.values:
                if self._declared[name] != declared:
                    raise SpaceError(
                        f"hp '{name}' is declared twice in one trial with different settings; "
                        "give the second one its own name"
                    )
                return self.values[name]
            if active or name not in self._declared:
                self._declared[name] = declared
            if not active:
                return None
            value = self._draw(name, distribution, default)
            self.values[name] = value
            return value

    def _draw(self, name: str, distribution: BaseDistribution | None, default: Any) -> Any:
        if self.trial is None:
            return default
        if distribution is None:
            self.fixed[name] = default
            return default
        try:
            if isinstance(distribution, CategoricalDistribution):
                return self.trial.suggest_categorical(name, distribution.choices)
            low, high, step, log = distribution.low, distribution.high, distribution.step, distribution.log
            if isinstance(distribution, IntDistribution):
                return self.trial.suggest_int(name, low, high, step=step, log=log)
            return self.trial.suggest_float(name, low, high, step=step, log=log)
        except ValueError as exc:
            # Optuna refuses one name with two kinds of distribution across a study's trials.
            raise SpaceError(f"hp '{name}': {exc}") from None


def _keras_tuner_spec(cls: type, name: str, **arguments: Any) -> Any:
    """KerasTuner's own parameter object: its checks and normalisation, its error as one line."""
    try:
        return cls(name=name, **arguments)
    except (TypeError, ValueError) as exc:
        raise SpaceError(f"hp.{cls.__name__}('{name}'): {exc}") from None


def _numeric(spec: Any, kind: str) -> BaseDistribution:
    """The Optuna distribution that samples what KerasTuner's ``Int``/``Float`` would."""
    if spec.sampling == "reverse_log":
        raise SpaceError(
            f"hp.{kind}('{spec.name}', sampling='reverse_log') is not supported: Optuna samples "
            "linear or log scales; use sampling='log'"
        )
    log = spec.sampling == "log"
    try:
        if log and spec.step is not None:
            # KerasTuner multiplies by the step: min_value * step**i, the same values here.
            values = tuple(int(v) if kind == "Int" else float(v) for v in spec.values)
            return CategoricalDistribution(values)
        if kind == "Int":
            step = 1 if log else int(spec.step)
            top = spec.min_value + (spec.max_value - spec.min_value) // step * step
            return IntDistribution(spec.min_value, top, log=log, step=step)
        if spec.step is None:
            return FloatDistribution(spec.min_value, spec.max_value, log=log)
        low, step = Decimal(str(spec.min_value)), Decimal(str(spec.step))
        top = low + (Decimal(str(spec.max_value)) - low) // step * step
        return FloatDistribution(spec.min_value, float(top), step=float(spec.step))
    except ValueError as exc:
        raise SpaceError(f"hp.{kind}('{spec.name}'): {exc}") from None


class _Data:
    """What gapsweep hands ``HyperModel.fit`` for the data: the real split is the trainer's."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __repr__(self) -> str:
        return f"<gapsweep's {self.label}>"


_X, _Y = _Data("training x"), _Data("training y")
_VALIDATION = (_Data("validation x"), _Data("validation y"))
_PASSED: dict[str, Any] = {"x": _X, "y": _Y, "validation_data": _VALIDATION}


def _same(value: Any, passed: Any) -> bool:
    if isinstance(passed, tuple):
        same_length = isinstance(value, (tuple, list)) and len(value) == len(passed)
        return same_length and all(_same(v, p) for v, p in zip(value, passed))
    return value is passed


class _History:
    """What the stand-in's ``fit`` returns: returning it is fine, reading it is not."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise SpaceError(
            f"HyperModel.fit reads the History that model.fit returns (.{name}): gapsweep scores every "
            "trial itself (val loss plus the gap penalty), so fit cannot compute its own objective"
        )


class _RecordingModel:
    """Stands in for the model in ``HyperModel.fit``: remembers each ``fit`` call, allows nothing else."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def fit(self, *args: Any, **kwargs: Any) -> _History:
        self.calls.append((args, kwargs))
        return _History()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise SpaceError(f"HyperModel.fit uses model.{name}; {FIT_SUPPORT}")


class KerasTunerHypermodel:
    """A KerasTuner build function or ``HyperModel`` as a gapsweep ``Hypermodel``.

    ``ref`` is where another process finds it again (``path/module.py:NAME`` relative to the
    project folder): a worker re-creates the study's hypermodel from it inside its ``--code-dir``.
    """

    def __init__(self, hypermodel: Any, ref: str, *, max_epochs: int) -> None:
        import keras_tuner as kt

        if isinstance(hypermodel, type) and issubclass(hypermodel, kt.HyperModel):
            try:
                hypermodel = hypermodel()
            except TypeError as exc:
                raise SpaceError(
                    f"{ref}: the HyperModel class needs arguments ({exc}); create the instance in the "
                    "module and point at that name"
                ) from None
        if isinstance(hypermodel, (kt.engine.base_tuner.BaseTuner, kt.Oracle)):
            raise SpaceError(
                f"{ref} is a KerasTuner {type(hypermodel).__name__}: gapsweep runs an Optuna study instead "
                "of KerasTuner's tuners and oracles; point it at the build function or HyperModel you gave the tuner"
            )
        if isinstance(hypermodel, kt.HyperParameters):
            raise SpaceError(
                f"{ref} is a predefined KerasTuner HyperParameters space, which gapsweep does not support; "
                "declare the parameters inside build(hp)"
            )
        self.is_hypermodel = isinstance(hypermodel, kt.HyperModel)
        if self.is_hypermodel and not hypermodel.tunable:
            raise SpaceError(
                f"{ref}: HyperModel(tunable=False) is not supported; gapsweep tunes what build(hp) declares"
            )
        if not self.is_hypermodel and not callable(hypermodel):
            raise SpaceError(
                f"{ref} must be a build function build(hp) returning a compiled keras.Model, or a "
                f"KerasTuner HyperModel; got {type(hypermodel).__name__}"
            )
        self.hypermodel = hypermodel
        self.custom_fit = self.is_hypermodel and type(hypermodel).fit is not kt.HyperModel.fit
        self.ref = ref
        self.max_epochs = max_epochs
        #: The parameters build(hp) declares at the default values, once ``check`` has built it.
        self.declared: dict[str, str] | None = None

    def build(self, trial: optuna.trial.BaseTrial, task: TaskSpec) -> tuple["keras.Model", FitSettings]:
        """Build with ``hp`` drawn from ``trial``, its output width checked against ``task``.

        The default values passed ``check``; what build(hp) returns for other values (None, a
        model of another width) fails this trial alone, as an error raised in build(hp) does.
        """
        try:
            model, settings = self._build(TrialHyperParameters(trial))
            _check_outputs(model, None, task)
        except (ModelCheckError, DataError) as exc:  # DataError: the output width
            raise BuildFailed(f"{exc} (for this trial's values)") from None
        return model, settings

    def check(self, x: "np.ndarray", y: "np.ndarray", task: TaskSpec) -> None:
        """Build once with KerasTuner's default values, as a KerasTuner tuner does to declare its
        space, check its output width against ``task`` and evaluate it on a few training rows
        (``x``, ``y``), so an unsupported feature or a model written for other data fails before
        a study is created (a few rows may lack the classes a too narrow output misses)."""
        hp = TrialHyperParameters(None)
        try:
            model, _ = self._build(hp)
        except GapsweepError:
            raise
        except Exception as exc:  # the user's code: any error it raises is named in one line
            raise SpaceError(
                f"{self.ref}: build(hp) raised {one_line(exc)}{_where(exc, self.ref)} "
                "with KerasTuner's default values; fix the build function"
            ) from None
        _check_outputs(model, x, task)
        self.declared = {name: declared.describe() for name, declared in sorted(hp._declared.items())}
        try:
            model.evaluate(x, y, verbose=0)
        except Exception as exc:  # Keras raises many kinds; each means the same thing here
            raise DataError(
                f"the hypermodel's model does not fit the data ({x.shape[1]} features per row): {_keras_reason(exc)}; "
                "match keras.Input(shape=...), the output layer and the loss to the data"
            ) from None

    def describe(self) -> dict[str, Any]:
        """The reference, and the parameters build(hp) declared at its default values (after
        ``check``): a study resumed with an edited build function is refused, as one resumed
        with an edited search space is."""
        return {"hypermodel": self.ref, **({"hypermodel_params": self.declared} if self.declared is not None else {})}

    def _build(self, hp: TrialHyperParameters) -> tuple["keras.Model", FitSettings]:
        import keras

        if self.is_hypermodel:
            self.hypermodel.declare_hyperparameters(hp)
            model = self.hypermodel.build(hp)
        else:
            model = self.hypermodel(hp)
        if not isinstance(model, keras.Model):
            raise ModelCheckError(f"build(hp) must return a keras.Model, got {type(model).__name__}")
        if not getattr(model, "compiled", False):
            raise ModelCheckError(
                "build(hp) returned a model that is not compiled; call model.compile(optimizer=..., loss=...) "
                "in build(hp), as KerasTuner requires"
            )
        return model, dataclasses.replace(self._fit_settings(hp), fixed=dict(hp.fixed))

    def _fit_settings(self, hp: TrialHyperParameters) -> FitSettings:
        """The fit settings of this trial: the ones a ``fit`` override passes to ``model.fit``.

        Epochs are a budget: early stopping may end sooner, and ``max_epochs`` caps them
        (it is Hyperband's resource).
        """
        if not self.custom_fit:
            return FitSettings(self.max_epochs, DEFAULT_BATCH_SIZE)
        stand_in = _RecordingModel()
        try:
            self.hypermodel.fit(hp, stand_in, _X, _Y, validation_data=_VALIDATION)
        except GapsweepError:
            raise
        except Exception as exc:  # whatever else the override does, it fails on the stand-ins
            reason = (str(exc).splitlines() or [""])[0]
            raise SpaceError(
                f"HyperModel.fit failed on gapsweep's stand-in model ({type(exc).__name__}: {reason}); {FIT_SUPPORT}"
            ) from exc
        if len(stand_in.calls) != 1:
            raise SpaceError(f"HyperModel.fit called model.fit {len(stand_in.calls)} times; {FIT_SUPPORT}")
        return self._settings_from(*stand_in.calls[0])

    def _settings_from(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> FitSettings:
        import keras

        try:
            passed = inspect.signature(keras.Model.fit).bind(None, *args, **kwargs).arguments
        except TypeError as exc:
            raise SpaceError(f"HyperModel.fit calls model.fit with arguments Keras does not take ({exc})") from None
        passed.pop("self")
        if "x" not in passed:
            raise SpaceError(f"HyperModel.fit calls model.fit without the data it was given; {FIT_SUPPORT}")
        settings = {"epochs": self.max_epochs, "batch_size": DEFAULT_BATCH_SIZE}
        for name, value in passed.items():
            if name in _PASSED:
                if not _same(value, _PASSED[name]):
                    raise SpaceError(
                        f"HyperModel.fit changes the {name} it passes to model.fit; gapsweep trains on its own "
                        "split, so fit may change only batch_size or epochs"
                    )
            elif name in settings:
                if value is None and name == "batch_size":
                    continue
                if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                    raise SpaceError(
                        f"HyperModel.fit passes model.fit({name}={value!r}); it must be a whole number >= 1"
                    )
                settings[name] = int(value)
            elif name == "verbose" or (name == "callbacks" and not value) or (name == "shuffle" and value is True):
                continue  # gapsweep logs, monitors and reshuffles every epoch itself
            else:
                raise SpaceError(
                    f"HyperModel.fit passes model.fit({name}=...), which gapsweep does not support; {FIT_SUPPORT}"
                )
        return FitSettings(min(settings["epochs"], self.max_epochs), settings["batch_size"])


def load(hypermodel: Any, *, max_epochs: int) -> KerasTunerHypermodel:
    """The adapter for a located ``CodeRef``, a ``path/to/module.py:NAME`` inside the current
    folder, or a build function or HyperModel given as is."""
    if isinstance(hypermodel, str):
        hypermodel = code_refs.locate(hypermodel, None)
    if isinstance(hypermodel, code_refs.CodeRef):
        built = python_object(hypermodel.importable, "hypermodel")
        return KerasTunerHypermodel(built, hypermodel.stored, max_epochs=max_epochs)
    return KerasTunerHypermodel(hypermodel, importable_ref(hypermodel), max_epochs=max_epochs)


def importable_ref(obj: Any) -> str:
    """Where a worker finds ``obj``: ``path/module.py:NAME`` relative to the current folder when a
    module-level name of a ``.py`` file inside it holds it, otherwise a note (stored with the
    study) that workers cannot."""
    label = getattr(obj, "__qualname__", type(obj).__name__)
    for module in (inspect.getmodule(obj), sys.modules.get("__main__")):
        file = getattr(module, "__file__", None)
        if module is None or not file or not Path(file).is_file():
            continue
        name = next((key for key, value in vars(module).items() if value is obj), None)
        if name is None:
            continue
        if module.__name__ == "__main__":
            return (
                f"<{label} is defined in the script being run ({Path(file).name}), and a worker importing it would "
                f"run the whole script again; to run workers, move {label} into a module (e.g. models.py) and "
                "import it from the script>"
            )
        try:
            return code_refs.locate(f"{file}:{name}", None).stored
        except ConfigError:
            return (
                f"<{label} is defined in {Path(file).resolve()}, outside the project folder {Path.cwd()}, so workers "
                "cannot import it; to run workers, launch from the project folder that holds it>"
            )
    return (
        f"<{label} is not a module-level name of a .py file, so workers cannot import it; "
        "to run workers, launch with hypermodel set to the file and name>"
    )


def unimportable(ref: str) -> str | None:
    """Why workers cannot import a hypermodel stored as ``ref``: the reason of ``importable_ref``'s
    note, without its advice on workers; None for a ``path/module.py:NAME`` reference."""
    if not (ref.startswith("<") and ref.endswith(">")):
        return None
    return re.split(", (?:and a worker|so workers)", ref[1:-1])[0]


#: Lines of a Keras or TensorFlow error that frame the reason rather than state it.
_FRAMING = ("File ", "[[", "•", "Exception encountered", "Arguments received", "Graph execution error", "Detected at node")


class ModelCheckError(SpaceError):
    """What build(hp) returned is no model gapsweep can train: not a model, or not compiled."""


class BuildFailed(RuntimeError):
    """A trial's build(hp) returned no trainable model for that trial's values: the trial fails,
    the sweep goes on (a user mistake for every value is caught by ``check`` before the study)."""


def _where(exc: BaseException, ref: str) -> str:
    """`` (FILE line N)``: the last line of the hypermodel's own file the error passed through."""
    file = Path(ref.rpartition(":")[0]).resolve()
    lines = [line for frame, line in traceback.walk_tb(exc.__traceback__) if Path(frame.f_code.co_filename).resolve() == file]
    return f" ({file.name} line {lines[-1]})" if lines else ""


def _check_outputs(model: "keras.Model", x: "np.ndarray | None", task: TaskSpec) -> None:
    """One output per class (one for two classes, with a sigmoid), or per regression target.
    A model whose output shape is not known yet (a Sequential without an Input) predicts a row of
    ``x`` to tell; one that fails to (or without ``x``) is left to the training that follows."""
    try:
        shape = model.output_shape
    except (AttributeError, ValueError):
        if x is None:
            return
        try:
            shape = getattr(model.predict(x[:1], verbose=0), "shape", None)
        except Exception:  # Keras raises many kinds; the evaluation names the reason
            return
    if not isinstance(shape, tuple) or not shape or not shape[-1]:
        return  # several outputs: the loss check refuses them
    width = int(shape[-1])
    if task.task == "classification":
        fits, want = width == task.n_classes or (task.n_classes == 2 and width == 1), f"{task.n_classes} (one per class)"
        if task.n_classes == 2:
            want += " or 1 (a sigmoid)"
    else:
        fits, want = width == task.n_outputs, f"{task.n_outputs} (one per target)"
    if not fits:
        raise DataError(
            f"the hypermodel's model has {width} output unit(s), but the data is a {task.task}"
            + (f" with {task.n_classes} classes" if task.task == "classification" else "")
            + f" that needs {want}; change the last layer's units"
        )


def _keras_reason(exc: Exception) -> str:
    """The one line of a Keras/TensorFlow error that says what is wrong, without its traceback."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # Keras bolds the reason with terminal codes
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = next((line for line in lines if not line.startswith(_FRAMING)), type(exc).__name__)
    return reason.split("  Label values:")[0]
