import pytest

from components.errors import SpecError
from components.spec import all_specs, apply_overrides, load_spec, parse_spec


def test_every_shipped_spec_parses_round_trips_and_keeps_the_missions_gate():
    """What holds of any spec Relay ships, whatever its values: it parses (its architecture fits its input), it
    survives the JSON a run stores, and its gate is no looser than the mission's 0.5 pp."""
    shipped = all_specs()
    assert shipped
    for path in shipped:
        spec = load_spec(path.stem)
        assert spec.name == path.stem
        assert parse_spec(spec.model_dump(mode="json")) == spec
        assert spec.gate.max_accuracy_drop_pp <= 0.5
        assert len(set(spec.dataset.classes)) == len(spec.dataset.classes) >= 2


def test_bad_enum_names_field_and_allowed_values(digits_spec):
    data = digits_spec.model_dump()
    data["framework"] = "jax"
    with pytest.raises(SpecError) as caught:
        parse_spec(data, "digits.yaml")
    message = str(caught.value)
    assert "\n" not in message
    assert "framework" in message and "'jax'" in message and "'pytorch'" in message and "'tensorflow'" in message


def test_unknown_and_out_of_range_fields_are_named(digits_spec):
    data = digits_spec.model_dump()
    data["training"]["epochs"] = 0
    data["training"]["epoch"] = 3
    with pytest.raises(SpecError) as caught:
        parse_spec(data)
    assert "training.epochs" in str(caught.value)
    assert "training.epoch: unknown field" in str(caught.value)


def test_bad_schedule_is_rejected(digits_spec):
    data = digits_spec.model_dump()
    data["schedule"] = "every tuesday"
    with pytest.raises(SpecError, match="schedule"):
        parse_spec(data)


def test_overrides_apply_field_by_field_and_are_validated(digits_spec):
    spec = apply_overrides(digits_spec, {"epochs": 3, "framework": "tensorflow", "min_accuracy": 0.5})
    assert (spec.training.epochs, spec.framework, spec.gate.min_accuracy) == (3, "tensorflow", 0.5)
    assert spec.training.batch_size == digits_spec.training.batch_size
    with pytest.raises(SpecError, match="run parameters: invalid spec: gate.min_accuracy"):
        apply_overrides(digits_spec, {"min_accuracy": 1.5})
    with pytest.raises(SpecError, match="unknown run parameter"):
        apply_overrides(digits_spec, {"learning_rate": 1})


def test_unknown_task_lists_known_ones():
    with pytest.raises(SpecError, match="known tasks: digits"):
        load_spec("cifar")


@pytest.mark.parametrize("change,message", [
    ({"input": {"size": [8, 8], "channels": 3, "normalization": {"mean": [0.5], "std": [0.2]}}},
     "normalization has 1 value(s) per statistic; input.channels is 3"),
    ({"input": {"size": [8, 8], "channels": 1, "normalization": {"mean": [0.5], "std": [0]}}},
     "every std must be > 0"),
    ({"input": {"size": [8, 8], "channels": 2}}, "input.channels: got 2; allowed: 1 or 3"),
    ({"input": {"size": [8, 8], "channels": 1, "resize": "squash"}}, "input.resize: got 'squash'"),
    ({"dataset": {"val_fraction": 0.5, "test_fraction": 0.4}}, "nothing is left to train on"),
    ({"dataset": {"on_bad_file": "ignore"}}, "dataset.on_bad_file: got 'ignore'"),
    ({"model": {"init": "checkpoint"}}, "init: checkpoint needs model.checkpoint"),
    ({"model": {"name": "resnet", "widths": [8, 16, 32, 64, 128]}}, "must be at least 16"),
])
def test_input_data_and_model_fields_are_validated_with_their_names(digits_spec, change, message):
    data = digits_spec.model_dump()
    for section, values in change.items():
        data[section] = {**data[section], **values} if section != "input" else values
    with pytest.raises(SpecError) as caught:
        parse_spec(data)
    assert message in str(caught.value)


def test_the_exporter_is_the_frameworks_own_and_follows_a_framework_override(digits_spec):
    """A TensorFlow run's effective spec once read `optimize.exporter: torchscript`, a PyTorch exporter."""
    from components.spec import parse_spec

    assert digits_spec.optimize.exporter == "torchscript"
    assert apply_overrides(digits_spec, {"framework": "tensorflow"}).optimize.exporter == "tf2onnx"
    assert apply_overrides(digits_spec, {"framework": "pytorch"}).optimize.exporter == "torchscript"
    data = digits_spec.model_dump(mode="json")
    data["optimize"]["exporter"] = None
    data["framework"] = "tensorflow"
    assert parse_spec(data).optimize.exporter == "tf2onnx"
    data["optimize"]["exporter"] = "dynamo"
    with pytest.raises(SpecError, match=r"^x.yaml: invalid spec: \(root\): Value error, optimize.exporter 'dynamo' "
                                        r"does not export tensorflow models; allowed: tf2onnx \(or leave it unset\)$"):
        parse_spec(data, "x.yaml")
