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
        if params["n_layers"]:
            assert 16 <= params["units"] <= 512 and isinstance(params["units"], int)
        else:  # depth 0: width and dropout are inactive, never suggested
            assert "units" not in params and "dropout" not in params
        assert params["batch_size"] in (32, 64, 128)


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({}, "empty"),
        ({"l2": {"type": "gaussian", "low": 0, "high": 1}}, "unknown type 'gaussian'"),
        ({"units": {"typ": "int", "low": 8, "high": 16}}, "its table has no 'type' (keys: typ, low, high); add type = one of"),
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


def test_the_builtin_space_reaches_depth_zero_without_width_or_dropout():
    space = load_space("mlp")
    assert space.params["n_layers"].low == 0
    linear = space.sample(optuna.trial.FixedTrial({"l2": 1e-3, "n_layers": 0, "learning_rate": 1e-2, "epochs": 10, "batch_size": 32}))
    assert linear == {"l2": 1e-3, "n_layers": 0, "learning_rate": 1e-2, "epochs": 10, "batch_size": 32}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    draws = [space.sample(study.ask()) for _ in range(40)]
    assert any(d["n_layers"] == 0 for d in draws) and any(d["n_layers"] > 0 for d in draws)
    for draw in draws:
        assert ("units" in draw) == ("dropout" in draw) == (draw["n_layers"] > 0)


def test_conditions_round_trip_and_compare_values():
    space = SearchSpace.from_dict(
        {
            "optimizer": ["sgd", "adam"],
            "momentum": {"type": "float", "low": 0.0, "high": 0.9, "when": "optimizer == 'sgd'"},
            "depth": {"type": "int", "low": 0, "high": 3},
            "width": {"type": "int", "low": 8, "high": 16, "when": "depth >= 2"},
            "tag": {"type": "fixed", "value": "x", "when": "momentum > 0.5"},  # absent parent: inactive
        }
    )
    assert SearchSpace.from_dict(space.to_dict()) == space
    assert space.to_dict()["width"]["when"] == "depth >= 2"
    fixed = {"optimizer": "adam", "momentum": 0.8, "depth": 1, "width": 9}
    assert space.sample(optuna.trial.FixedTrial(fixed)) == {"optimizer": "adam", "depth": 1}
    fixed = {"optimizer": "sgd", "momentum": 0.8, "depth": 2, "width": 9}
    trial = optuna.trial.FixedTrial(fixed)
    assert space.sample(trial) == {**fixed, "tag": "x"}


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({"a": {"type": "int", "low": 0, "high": 2, "when": "b > 0"}, "b": [1, 2]}, "must be declared before it"),
        ({"b": [1, 2], "a": {"type": "int", "low": 0, "high": 2, "when": "n_b > 0"}}, "'when' refers to 'n_b', which is no parameter of this space \\(a typo\\?\\); parameters: b, a"),
        ({"b": [1, 2], "a": {"type": "int", "low": 0, "high": 2, "when": "b ~ 0"}}, "NAME OP VALUE"),
        ({"b": [1, 2], "a": {"type": "int", "low": 0, "high": 2, "when": "b > x"}}, "needs a number"),
        ({"b": [1, 2], "a": {"type": "int", "low": 0, "high": 2, "when": {"b": 1}}}, "NAME OP VALUE"),
        # a condition no value of its parent meets: a typo that would leave the parameter unsearched
        ({"opt": ["adam", "sgd"], "m": {"type": "float", "low": 0, "high": 1, "when": "opt == 'sdg'"}}, "'when' \\(opt == 'sdg'\\) never holds"),
        ({"opt": ["adam", "sgd"], "m": {"type": "float", "low": 0, "high": 1, "when": "opt == 3"}}, "never holds for the values 'opt' can take"),
        ({"b": {"type": "int", "low": 0, "high": 3}, "a": {"type": "int", "low": 0, "high": 2, "when": "b == 'x'"}}, "never holds"),
    ],
)
def test_bad_conditions_are_refused_in_one_line(raw, fragment):
    with pytest.raises(SpaceError, match=fragment) as caught:
        SearchSpace.from_dict(raw)
    assert "\n" not in str(caught.value)


def test_a_range_narrowed_so_its_children_are_off_is_allowed():
    """A depth-0 ("linear only") space keeps its conditional width: deliberate, not a typo."""
    space = SearchSpace.from_dict({"n_layers": {"type": "int", "low": 0, "high": 0}, "units": {"type": "int", "low": 8, "high": 16, "when": "n_layers > 0"}})
    assert space.sample(optuna.trial.FixedTrial({"n_layers": 0})) == {"n_layers": 0}


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({"units": {"type": "float", "low": 8, "high": 16}}, "parameter 'units': the mlp builder takes a whole number, but the range is of floats"),
        ({"learning_rate": {"type": "fixed", "value": "0.01"}}, "fixed value '0.01' is not accepted by the mlp builder (learning_rate must be a number > 0"),
        ({"batch_size": [32, "64"]}, "choice '64' is not accepted by the mlp builder (batch_size must be a whole number >= 1"),
    ],
)
def test_values_of_the_wrong_kind_for_the_builder_are_refused(raw, fragment):
    from gapsweep.search_spaces.hypermodel import SpaceHypermodel

    with pytest.raises(SpaceError) as caught:
        SpaceHypermodel(SearchSpace.from_dict(raw))
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_a_yaml_space_reads_1e_5_as_a_number(tmp_path):
    """YAML 1.1 reads 1e-5 (no dot) as text; sweep files mean the number, as TOML and JSON do."""
    (tmp_path / "s.yaml").write_text("l2: {type: float, low: 1e-5, high: 1e-1, log: true}\nunits: {type: int, low: 8, high: 16}\n")
    space = load_space(str(tmp_path / "s.yaml"))
    assert space.params["l2"].low == 1e-5 and space.params["units"].high == 16


def test_a_json_space_file_reads_as_the_yaml_it_is(tmp_path):
    path = tmp_path / "space.json"
    path.write_text('{"units": {"type": "int", "low": 8, "high": 16}, "dropout": [0.0, 0.2]}')
    assert set(load_space(str(path)).params) == {"units", "dropout"}
