import pytest

from components.errors import SpecError
from components.spec import all_specs, apply_overrides, load_spec, parse_spec


def test_shipped_specs_are_valid():
    assert [p.stem for p in all_specs()] == ["digits"]
    spec = load_spec("digits")
    assert spec.framework == "pytorch"
    assert spec.dataset.classes == [str(i) for i in range(10)]
    assert spec.gate.max_accuracy_drop_pp == 0.5


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
