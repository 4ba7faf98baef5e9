"""KerasTuner hypermodels, written as KerasTuner's documentation writes them, for the digits data.

Run any of them as a gapsweep study, unchanged:

    gapsweep launch --hypermodel examples/keras_tuner_models.py:build_model --data digits --trials 5
    gapsweep launch --hypermodel examples/keras_tuner_models.py:build_conditional_model --data digits --trials 5
    gapsweep launch --hypermodel examples/keras_tuner_models.py:MyHyperModel --data digits --trials 5
    gapsweep launch --hypermodel examples/keras_tuner_models.py:build_image_model --data digits-images --trials 5

Digits has 64 features and 10 classes with integer labels, hence ``sparse_categorical_crossentropy``
where KerasTuner's MNIST examples use one-hot labels.
"""

import keras
import keras_tuner as kt
from keras import layers


def build_image_model(hp):
    """A convolutional build function for digits as 8×8×1 images (``--data digits-images``)."""
    model = keras.Sequential([keras.Input(shape=(8, 8, 1))])
    for block in range(hp.Int("conv_blocks", 1, 2)):
        model.add(layers.Conv2D(hp.Int(f"filters_{block}", 8, 32, step=8), 3, padding="same", activation="relu"))
        model.add(layers.MaxPooling2D(2))
    model.add(layers.Flatten())
    model.add(layers.Dense(hp.Int("units", 16, 64, step=16), activation="relu"))
    model.add(layers.Dense(10, activation="softmax"))
    model.compile(
        optimizer=keras.optimizers.Adam(hp.Float("lr", 1e-3, 1e-2, sampling="log")),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def build_model(hp):
    """A plain build function: width, activation, L2, optional dropout and learning rate."""
    model = keras.Sequential()
    model.add(layers.Flatten())
    model.add(
        layers.Dense(
            units=hp.Int("units", min_value=16, max_value=128, step=16),
            activation=hp.Choice("activation", ["relu", "tanh"]),
            kernel_regularizer=keras.regularizers.L2(
                hp.Float("l2", min_value=1e-6, max_value=1e-2, sampling="log")
            ),
        )
    )
    if hp.Boolean("dropout"):
        model.add(layers.Dropout(rate=0.25))
    model.add(layers.Dense(10, activation="softmax"))
    learning_rate = hp.Float("lr", min_value=1e-4, max_value=1e-2, sampling="log")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def build_conditional_model(hp):
    """Model selection: a deep MLP with one width per layer, or one wide layer with optional dropout.

    Parameters of the model type that was not chosen are never sampled in that trial.
    """
    model = keras.Sequential()
    model.add(layers.Flatten())
    model_type = hp.Choice("model_type", ["deep", "wide"])
    with hp.conditional_scope("model_type", ["deep"]):
        if model_type == "deep":
            for i in range(hp.Int("num_layers", 1, 3)):
                model.add(
                    layers.Dense(units=hp.Int(f"units_{i}", min_value=16, max_value=64, step=16), activation="relu")
                )
    with hp.conditional_scope("model_type", ["wide"]):
        if model_type == "wide":
            # With sampling="log" KerasTuner multiplies by the step: 32, 64, 128 or 256 units.
            model.add(
                layers.Dense(
                    units=hp.Int("wide_units", min_value=32, max_value=256, step=2, sampling="log"),
                    activation="relu",
                )
            )
            if hp.Boolean("dropout"):
                with hp.conditional_scope("dropout", [True]):
                    model.add(layers.Dropout(rate=hp.Float("dropout_rate", min_value=0.1, max_value=0.5, step=0.1)))
    model.add(layers.Dense(10, activation="softmax"))
    learning_rate = hp.Float("learning_rate", min_value=1e-4, max_value=1e-2, sampling="log")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


class MyHyperModel(kt.HyperModel):
    """A HyperModel that also tunes how it is trained: the batch size, chosen in ``fit``."""

    def build(self, hp):
        model = keras.Sequential()
        model.add(layers.Flatten())
        model.add(layers.Dense(units=hp.Int("units", min_value=16, max_value=64, step=16), activation="relu"))
        model.add(layers.Dense(10, activation="softmax"))
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    def fit(self, hp, model, *args, **kwargs):
        return model.fit(
            *args,
            batch_size=hp.Choice("batch_size", [16, 32, 64]),
            **kwargs,
        )
