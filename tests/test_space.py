"""Search spaces: declarative and Python forms, validation of every malformed input."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from gapsweep.errors import SpaceError
from gapsweep.search_spaces.builder import DEFAULTS, check_params
from gapsweep.search_spaces.loader import builtin_names, load_space
from gapsweep.search_spaces.space import Categorical, Fixed, Float, Int, SearchSpace


def test_builtin_mlp_covers_every_cure():
    space = load_space("mlp")
    assert "mlp" in builtin_names()
    assert {"l2", "dropout", "units", "n_layers", "learning_rate", "epochs", "batch_size"} <= set(space.params)
    assert space.params["l2"].log and space.params["learning_rate"].log and space.params["units"].log
    check_params(set(space.params))


def test_round_trip_between_python_and_declarative_forms():
    space = SearchSpace(
        {
            "l2": Float(1e-5, 1e-1, log=True),
            "dropout": Float(0.0, 0.5, step=0.1),
            "units": Int(16, 128, step=16),
            "activation": Categorical(("relu", "tanh")),
            "epochs": Fixed(7),
        }
    )
    assert SearchSpace.from_dict(space.to_dict()) == space


def test_shorthand_scalars_and_lists():
    space = SearchSpace.from_dict({"epochs": 5, "batch_size": [32, 64]})
    assert space.params["epochs"] == Fixed(5)
    assert space.params["batch_size"] == Categorical((32, 64))


def test_sampling_respects_bounds_and_is_seeded():
    space = load_space("mlp")

    def draw(seed: int) -> list[dict]:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        return [space.sample(study.ask()) for _ in range(5)]

    first, again = draw(3), draw(3)
    assert first == again
    for params in first:
        assert 1e-6 <= params["l2"] <= 1e-1
        assert 16 <= params["units"] <= 512 and isinstance(params["units"], int)
        assert params["batch_size"] in (32, 64, 128)


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({}, "empty"),
        ({"l2": {"type": "gaussian", "low": 0, "high": 1}}, "unknown type 'gaussian'"),
        ({"l2": {"type": "float", "low": 1.0, "high": 0.1}}, "greater than high"),
        ({"l2": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}, "needs low > 0"),
        ({"l2": {"type": "float", "low": "a", "high": 0.1}}, "must be a number"),
        ({"l2": {"type": "float", "low": 0.1, "high": 1, "lo": 3}}, "unknown key(s) lo"),
        ({"units": {"type": "int", "low": 1.5, "high": 4}}, "must be integers"),
        ({"units": {"type": "int", "low": 1, "high": 64, "log": True, "step": 2}}, "needs step = 1"),
        ({"units": {"type": "int", "low": 1}}, "missing key 'high'"),
        ({"act": {"type": "categorical", "choices": []}}, "at least one"),
        ({"act": {"type": "categorical", "choices": "relu"}}, "must be a list"),
        ({"act": {"type": "categorical", "choices": ["a", "a"]}}, "duplicates"),
        ({"l2": {"type": "float", "low": 0.0, "high": 1.0, "log": "yes"}}, "true or false"),
        ({"l2": None}, "expected a table"),
    ],
)
def test_malformed_spaces_name_the_problem(raw, fragment):
    with pytest.raises(SpaceError) as info:
        SearchSpace.from_dict(raw)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_builder_rejects_unknown_parameter_names():
    with pytest.raises(SpaceError, match="does not use parameter.*dropuot"):
        check_params({"dropuot", "l2"})
    assert set(DEFAULTS) >= {"l2", "dropout"}


def test_space_files_toml_yaml_and_python(tmp_path: Path):
    toml_file = tmp_path / "s.toml"
    toml_file.write_text('[l2]\ntype = "float"\nlow = 1e-5\nhigh = 1e-2\nlog = true\n')
    yaml_file = tmp_path / "s.yaml"
    yaml_file.write_text("l2: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}\n")
    py_file = tmp_path / "s.py"
    py_file.write_text(
        "from gapsweep.search_spaces.space import Float, SearchSpace\n"
        "SPACE = SearchSpace({'l2': Float(1e-5, 1e-2, log=True)})\n"
        "def make():\n    return {'l2': {'type': 'float', 'low': 1e-5, 'high': 1e-2, 'log': True}}\n"
    )
    expected = SearchSpace({"l2": Float(1e-5, 1e-2, log=True)})
    assert load_space(str(toml_file)) == expected
    assert load_space(str(yaml_file)) == expected
    assert load_space(f"{py_file}:SPACE") == expected
    assert load_space(f"{py_file}:make") == expected


def test_unreadable_space_files(tmp_path: Path):
    broken = tmp_path / "broken.toml"
    broken.write_text("[l2\ntype=")
    with pytest.raises(SpaceError, match="is not valid TOML"):
        load_space(str(broken))
    bad_value = tmp_path / "bad.yaml"
    bad_value.write_text("dropout: {type: float, low: 0.9, high: 0.1}\n")
    with pytest.raises(SpaceError, match=r"bad.yaml: parameter 'dropout'"):
        load_space(str(bad_value))
    with pytest.raises(SpaceError, match="file not found"):
        load_space(str(tmp_path / "missing.toml"))
    with pytest.raises(SpaceError, match="unknown search space 'resnet'"):
        load_space("resnet")
    with pytest.raises(SpaceError, match="has no attribute 'NOPE'"):
        py_file = tmp_path / "m.py"
        py_file.write_text("X = 1\n")
        load_space(f"{py_file}:NOPE")
