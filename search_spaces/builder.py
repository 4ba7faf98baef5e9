"""Turn sampled values into a compiled Keras model.

Every Dense layer carries the sampled L2 penalty, every hidden layer is followed by Dropout, and
the optimizer runs at the sampled learning rate. With ``n_layers = 0`` the inputs go straight to
the output layer: logistic (softmax) or linear regression with weight decay, the simplest model a
sweep should never lose to; width and dropout then play no part. The model is compiled with a *pure* loss metric
(``pure_loss``) beside the training loss: Keras' ``loss``/``val_loss`` include the L2 term, so
scores and gaps are computed from the metric instead.

TensorFlow is imported inside ``build_model`` only, so that spaces can be loaded, validated and
stored without paying its import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Mapping

from gapsweep.errors import SpaceError

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
}
TRAINING_KEYS = frozenset({"epochs", "batch_size"})
_OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")


@dataclass(frozen=True)
class TaskSpec:
    """What the data asks of the model: input width, and classes or a regression target."""

    n_features: int
    task: Task
    n_classes: int = 0
    n_outputs: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_features": self.n_features,
            "task": self.task,
            "n_classes": self.n_classes,
            "n_outputs": self.n_outputs,
        }


def check_params(names: set[str] | frozenset[str]) -> None:
    """Reject parameter names the builder would silently ignore (a typo in a space file)."""
    unknown = sorted(set(names) - set(DEFAULTS))
    if unknown:
        raise SpaceError(
            f"the mlp builder does not use parameter(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(DEFAULTS))}"
        )


def resolve(params: Mapping[str, Any]) -> dict[str, Any]:
    """Sampled values over the defaults, validated the way the builder will use them."""
    check_params(set(params))
    values = {**DEFAULTS, **params}
    if not 0.0 <= float(values["dropout"]) < 1.0:
        raise SpaceError(f"dropout must be in [0, 1), got {values['dropout']}")
    if float(values["l2"]) < 0:
        raise SpaceError(f"l2 must be >= 0, got {values['l2']}")
    for key in ("units", "n_layers", "epochs", "batch_size"):
        low = 0 if key == "n_layers" else 1
        if int(values[key]) < low:
            raise SpaceError(f"{key} must be >= {low}, got {values[key]}")
    if float(values["learning_rate"]) <= 0:
        raise SpaceError(f"learning_rate must be > 0, got {values['learning_rate']}")
    if values["optimizer"] not in _OPTIMIZERS:
        raise SpaceError(
            f"optimizer must be one of {', '.join(_OPTIMIZERS)}, got {values['optimizer']!r}"
        )
    return values


def build_model(params: Mapping[str, Any], task: TaskSpec) -> "keras.Model":
    """A compiled MLP for ``task`` from sampled ``params`` (missing ones take ``DEFAULTS``)."""
    import keras

    values = resolve(params)
    l2 = float(values["l2"])

    def regularizer() -> "keras.regularizers.Regularizer | None":
        return keras.regularizers.L2(l2) if l2 > 0 else None

    inputs = keras.Input(shape=(task.n_features,), name="features")
    x = inputs
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
    model = keras.Model(inputs, outputs, name="gapsweep_mlp")
    model.compile(
        optimizer=_optimizer(str(values["optimizer"]), float(values["learning_rate"])),
        loss=loss,
        metrics=metrics,
    )
    return model


def _optimizer(name: str, learning_rate: float) -> "keras.optimizers.Optimizer":
    import keras

    classes = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    return classes[name](learning_rate=learning_rate)
