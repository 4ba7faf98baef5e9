"""Turn sampled values into a compiled Keras model.

Every Dense layer carries the sampled L2 penalty, every hidden layer is followed by Dropout, and
the optimizer runs at the sampled learning rate. With ``n_layers = 0`` the inputs go straight to
the output layer: logistic (softmax) or linear regression with weight decay, the simplest model a
sweep should never lose to; width and dropout then play no part. With ``conv_blocks`` > 0 (the
``cnn`` space) the input, an image ``height × width × channels``, first passes through that many
convolution blocks (``filters`` doubling per block, ``kernel_size``, the same L2, max pooling while
the image is larger than 1×1, dropout); otherwise an input of more than one dimension is
flattened. The model is compiled with a *pure* loss metric
(``pure_loss``) beside the training loss, so ``evaluate`` of a kept or exported model reports the
loss without the L2 term that Keras' ``loss`` includes (trials compute their scores from
predictions, ``gapsweep.sweeps.trial.inference``). It runs ``STEPS_PER_EXECUTION`` batches per
call into TensorFlow: the same steps in the same order (identical weights), without Keras' Python
round trip after every batch, which on these small models cost more than the batch itself.

TensorFlow is imported inside ``build_model`` only, so that spaces can be loaded, validated and
stored without paying its import.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Mapping

import numpy as np

from gapsweep.errors import SpaceError
from gapsweep.quiet import without_import_noise

if TYPE_CHECKING:
    import keras

Task = Literal["classification", "regression"]

#: The values the builder understands, with the default used when a space leaves one out.
DEFAULTS: dict[str, Any] = {
    "l2": 0.0,
    "dropout": 0.0,
    "units": 64,
    "n_layers": 2,
    "learning_rate": 1e-3,
    "epochs": 20,
    "batch_size": 32,
    "activation": "relu",
    "optimizer": "adam",
    "conv_blocks": 0,
    "filters": 16,
    "kernel_size": 3,
}
TRAINING_KEYS = frozenset({"epochs", "batch_size"})
#: Batches per compiled training call: digits' epoch (34 batches of 32) ran in 10-14 ms instead of
#: 26-30, a 15,000-row epoch in 110-140 ms instead of 310-550; more per call gained nothing.
STEPS_PER_EXECUTION = 32
_OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")


@dataclass(frozen=True)
class TaskSpec:
    """What the data asks of the model: input width, and classes or a regression target."""

    n_features: int
    task: Task
    n_classes: int = 0
    n_outputs: int = 1
    #: The shape of one input row (``(n_features,)`` for a table, ``(h, w, c)`` for images).
    input_shape: tuple[int, ...] = ()

    @property
    def shape(self) -> tuple[int, ...]:
        return self.input_shape or (self.n_features,)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_features": self.n_features,
            "task": self.task,
            "n_classes": self.n_classes,
            "n_outputs": self.n_outputs,
            "input_shape": list(self.shape),
        }


def check_params(names: set[str] | frozenset[str]) -> None:
    """Reject parameter names the builder would silently ignore (a typo in a space file)."""
    unknown = sorted(set(names) - set(DEFAULTS))
    if unknown:
        raise SpaceError(
            f"the mlp builder does not use parameter(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(DEFAULTS))}"
        )


#: Activations every Keras 3 knows; another name is looked up in Keras itself before a sweep.
_ACTIVATIONS = frozenset({
    "relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu", "swish", "mish", "tanh", "sigmoid",
    "hard_sigmoid", "hard_silu", "hard_swish", "softplus", "softsign", "linear", "exponential",
})


def _real(value: Any) -> bool:
    """A finite number, not a bool and not a string that reads as one ("64" in a sweep file is a
    typo; ``l2 = inf`` reads as a number in TOML and YAML, but fails every trial it is given to)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)


def _whole_at_least(low: int) -> Any:
    def check(value: Any) -> bool:
        return _real(value) and int(float(value)) >= low  # the builder truncates

    return check


#: The parameters the builder takes as whole numbers: a float range for one is a mistake.
WHOLE = ("units", "n_layers", "epochs", "batch_size", "conv_blocks", "filters", "kernel_size")


#: What the builder accepts for each value: a test and the words for the error.
_RULES: dict[str, tuple[Any, str]] = {
    "l2": (lambda v: _real(v) and float(v) >= 0, "a number >= 0"),
    "dropout": (lambda v: _real(v) and 0.0 <= float(v) < 1.0, "a number in [0, 1)"),
    "units": (_whole_at_least(1), "a whole number >= 1"),
    "n_layers": (_whole_at_least(0), "a whole number >= 0"),
    "epochs": (_whole_at_least(1), "a whole number >= 1"),
    "batch_size": (_whole_at_least(1), "a whole number >= 1"),
    "learning_rate": (lambda v: _real(v) and float(v) > 0, "a number > 0"),
    "optimizer": (lambda v: v in _OPTIMIZERS, f"one of {', '.join(_OPTIMIZERS)}"),
    "activation": (lambda v: isinstance(v, str) and _known_activation(v), "a Keras activation such as relu or tanh"),
    "conv_blocks": (_whole_at_least(0), "a whole number >= 0"),
    "filters": (_whole_at_least(1), "a whole number >= 1"),
    "kernel_size": (_whole_at_least(1), "a whole number >= 1"),
}


def _known_activation(name: str) -> bool:
    if name in _ACTIVATIONS:
        return True
    with without_import_noise():
        import keras  # only for a name outside the common ones

    try:
        keras.activations.get(name)
    except (ValueError, TypeError):
        return False
    return True


def check_value(name: str, value: Any) -> None:
    """Raise ``SpaceError`` unless the builder accepts ``value`` for parameter ``name``."""
    test, words = _RULES[name]
    try:
        accepted = bool(test(value))
    except (TypeError, ValueError, OverflowError):
        accepted = False
    if not accepted:
        raise SpaceError(f"{name} must be {words}, got {value!r}")


def resolve(params: Mapping[str, Any]) -> dict[str, Any]:
    """Sampled values over the defaults, validated the way the builder will use them."""
    check_params(set(params))
    values = {**DEFAULTS, **params}
    for name, value in values.items():
        check_value(name, value)
    return values


def build_model(params: Mapping[str, Any], task: TaskSpec) -> "keras.Model":
    """A compiled MLP for ``task`` from sampled ``params`` (missing ones take ``DEFAULTS``)."""
    import keras

    values = resolve(params)
    l2 = float(values["l2"])

    def regularizer() -> "keras.regularizers.Regularizer | None":
        return keras.regularizers.L2(l2) if l2 > 0 else None

    inputs = keras.Input(shape=task.shape, name="features")
    x = inputs
    check_conv(values, task)
    size = min(task.shape[:2]) if len(task.shape) == 3 else 0
    for block in range(int(values["conv_blocks"])):
        x = keras.layers.Conv2D(
            int(values["filters"]) * 2**block, int(values["kernel_size"]), padding="same",
            activation=str(values["activation"]), kernel_regularizer=regularizer(), name=f"conv_{block}",
        )(x)
        if size >= 2:
            x = keras.layers.MaxPooling2D(2, name=f"pool_{block}")(x)
            size //= 2
        if float(values["dropout"]) > 0:
            x = keras.layers.Dropout(float(values["dropout"]), name=f"conv_dropout_{block}")(x)
    if len(task.shape) > 1:
        x = keras.layers.Flatten(name="flatten")(x)
    for index in range(int(values["n_layers"])):
        x = keras.layers.Dense(
            int(values["units"]),
            activation=str(values["activation"]),
            kernel_regularizer=regularizer(),
            name=f"hidden_{index}",
        )(x)
        if float(values["dropout"]) > 0:
            x = keras.layers.Dropout(float(values["dropout"]), name=f"dropout_{index}")(x)
    if task.task == "classification":
        outputs = keras.layers.Dense(
            task.n_classes, activation="softmax", kernel_regularizer=regularizer(), name="output"
        )(x)
        loss: Any = keras.losses.SparseCategoricalCrossentropy()
        metrics: list[Any] = [
            keras.metrics.SparseCategoricalCrossentropy(name="pure_loss"),
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
        ]
    else:
        outputs = keras.layers.Dense(
            task.n_outputs, kernel_regularizer=regularizer(), name="output"
        )(x)
        loss = keras.losses.MeanSquaredError()
        metrics = [keras.metrics.MeanSquaredError(name="pure_loss")]
    model = keras.Model(inputs, outputs, name="gapsweep_cnn" if int(values["conv_blocks"]) else "gapsweep_mlp")
    model.compile(
        optimizer=_optimizer(str(values["optimizer"]), float(values["learning_rate"])),
        loss=loss,
        metrics=metrics,
        steps_per_execution=STEPS_PER_EXECUTION,
    )
    return model


def check_conv(params: Mapping[str, Any], task: TaskSpec) -> None:
    """Convolution blocks need images: rows of height × width × channels."""
    if int(params.get("conv_blocks", 0)) > 0 and len(task.shape) != 3:
        raise SpaceError(
            f"conv_blocks needs image data (rows of height × width × channels), but the rows have shape {task.shape}; "
            "use --data digits-images or an .npz of N×H×W×C arrays, or the mlp space"
        )


def _optimizer(name: str, learning_rate: float) -> "keras.optimizers.Optimizer":
    import keras

    classes = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    return classes[name](learning_rate=learning_rate)
