"""A search space written in Python: ``gapsweep launch --space examples/python_space.py:SPACE``."""

from gapsweep import Categorical, Fixed, Float, Int, SearchSpace

SPACE = SearchSpace(
    {
        "l2": Float(1e-6, 1e-2, log=True),
        "dropout": Float(0.0, 0.5),
        "units": Int(16, 256, log=True),
        "n_layers": Int(1, 3),
        "learning_rate": Float(1e-4, 1e-2, log=True),
        "activation": Categorical(("relu", "gelu")),
        "epochs": Fixed(25),
        "batch_size": Categorical((32, 64)),
    }
)
