"""The node's parameter schema and the pipeline options, without a running Node."""
from __future__ import annotations

import argparse

import pytest

from bisenet_ros.errors import ConfigError
from bisenet_ros.options import AUTO32, CHECKPOINT, PipelineOptions, parse_input_size
from bisenet_ros.ros.parameters import (CHOICES, PARAMETERS, RELOAD, as_parameter, default_values,
                                        pipeline_options, reload_changes, validate_changes)
from bisenet_ros.tools.common import add_model_arguments


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_model_arguments(parser, weights_required=False)
    return parser.parse_args(argv)


def test_schema_descriptors_and_defaults():
    values = default_values()
    assert set(values) == set(PARAMETERS) and values["mean"] == [] and values["cameras"] == []
    for name, spec in PARAMETERS.items():
        d = spec.descriptor(name)
        assert d.name == name and d.description
        if name in CHOICES:
            assert spec.default in CHOICES[name] and d.additional_constraints.startswith("one of:")
    assert PARAMETERS["input_width"].descriptor("input_width").integer_range[0].step == 32
    assert set(RELOAD) <= set(PARAMETERS)
    assert as_parameter("mean", []).type_.name == "DOUBLE_ARRAY"


def test_validation_is_per_change_and_across_parameters(tiny_checkpoints):
    values = {**default_values(), "weights": str(tiny_checkpoints["bisenetv2"])}
    assert validate_changes(values, {}) is None
    assert "required" in validate_changes(default_values(), {"weights": ""})
    assert "one of" in validate_changes(values, {"precision": "fp8"})
    assert "both be 0" in validate_changes(values, {"input_width": 64})
    assert validate_changes(values, {"input_width": 64, "input_height": 32}) is None
    assert "three values" in validate_changes(values, {"std": [1.0]})
    assert reload_changes(values, {"input_width": 64, "input_height": 32, "publish_color": False}) == \
        {"input_width": 64, "input_height": 32}
    assert reload_changes(values, {"device": values["device"]}) == {}


def test_backend_and_dataset_are_refused_at_set_time(tiny_checkpoints):
    """A misspelt backend lists the allowed values; a preset of another class count than the running
    model's is refused at once (unless the checkpoint changes with it)."""
    from bisenet_ros.inference.backends import BACKENDS

    values = {**default_values(), "weights": str(tiny_checkpoints["bisenetv2"])}
    reason = validate_changes(values, {"backend": "torhc"})
    assert reason == f"backend must be one of {', '.join(BACKENDS)}, got 'torhc'"
    assert PARAMETERS["backend"].descriptor("backend").additional_constraints == "one of: " + ", ".join(BACKENDS)
    assert validate_changes(values, {"backend": "onnxruntime"}) is None
    reason = validate_changes(values, {"dataset": "cocostuff"}, model_classes=7)
    assert reason and "171 classes but the model has 7" in reason
    assert validate_changes(values, {"dataset": "synthetic_street"}, model_classes=7) is None
    assert "19 classes but the model has 171" in validate_changes(
        values, {"dataset": "cityscapes", "num_classes": 171}, model_classes=7)
    assert validate_changes(values, {"dataset": "cocostuff", "weights": values["weights"]}, model_classes=7) is None


def test_class_remap_and_confidence_threshold_parameters(tiny_checkpoints):
    """class_remap reloads the model (new classes for every output), confidence_threshold is live;
    both are refused at set time when they cannot work."""
    from bisenet_ros.data.datasets import load_preset
    from bisenet_ros.ros.parameters import check_remap

    values = {**default_values(), "weights": str(tiny_checkpoints["bisenetv2"])}
    assert "class_remap" in RELOAD and "confidence_threshold" not in RELOAD
    assert "unknown class remap 'nope'" in validate_changes(values, {"class_remap": "nope"})
    assert validate_changes(values, {"class_remap": "cityscapes_driving"}) is None
    assert "[0, 1)" in validate_changes(values, {"confidence_threshold": 1.0})
    assert validate_changes(values, {"confidence_threshold": 0.5}) is None
    assert "not a class of the model" in check_remap({"class_remap": "cityscapes_driving"}, load_preset("camvid"))
    assert check_remap({"class_remap": "cityscapes_driving"}, load_preset("cityscapes")) is None
    opts = pipeline_options({**values, "class_remap": "cityscapes_driving", "confidence_threshold": 0.5})
    assert opts.class_remap == "cityscapes_driving" and opts.confidence_threshold == 0.5
    assert pipeline_options(values).class_remap is None


def test_input_size_has_one_meaning():
    assert parse_input_size(None) == CHECKPOINT
    assert parse_input_size("auto32") == parse_input_size((0, 0)) == parse_input_size("") == AUTO32
    assert parse_input_size("512x1024") == parse_input_size((512, 1024)) == (512, 1024)
    for bad in ("big", "500x1000", (16, 32)):
        with pytest.raises(ConfigError):
            parse_input_size(bad)
    assert parse_input_size("2048x4096") == (2048, 4096)  # the largest model input: 8.4 MP
    for huge in ("16384x16384", "100032x100032", "4096x4096"):  # refused before any allocation
        with pytest.raises(ConfigError, match="more than a model input may have"):
            parse_input_size(huge)
    assert PipelineOptions.from_args(parse([])).input_size == CHECKPOINT
    assert PipelineOptions.from_args(parse(["--input-size", "auto32"])).input_size == AUTO32
    assert PipelineOptions.from_parameters(default_values()).input_size == CHECKPOINT
    assert pipeline_options({**default_values(), "input_height": 64, "input_width": 96}).input_size == (64, 96)


def test_cli_options_round_trip_through_node_parameters(tmp_path):
    weights = tmp_path / "w.pth"
    args = parse(["--weights", str(weights), "--model", "bisenetv1", "--dataset", "camvid",
                  "--mean", "0.1,0.2,0.3", "--input-size", "64x96", "--device", "cpu", "--backend", "torch"])
    opts = PipelineOptions.from_args(args)
    params = opts.to_parameters()
    assert params == {"weights": str(weights.resolve()), "model": "bisenetv1", "dataset": "camvid",
                      "mean": [0.1, 0.2, 0.3], "input_height": 64, "input_width": 96, "device": "cpu",
                      "precision": "auto", "backend": "torch"}
    assert PipelineOptions.from_parameters({**default_values(), **params}) == opts.replace(weights=params["weights"])
    assert PipelineOptions.from_parameters({**default_values(), **PipelineOptions().to_parameters(defaults=True)}) \
        == PipelineOptions()
    with pytest.raises(ConfigError, match="mean needs 3 values"):
        PipelineOptions.of(mean=[1, 2])
    with pytest.raises(TypeError, match="unknown pipeline options"):
        PipelineOptions.of(colour=True)
    with pytest.raises(AttributeError):
        opts.device = "cuda"  # frozen
