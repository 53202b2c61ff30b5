"""Fuzzing specs and run params with hypothesis: any mutation of a valid spec, and any run parameters,
give either a valid spec or one clear line naming the field. Never a traceback."""

from __future__ import annotations

import copy
from typing import Annotated

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from components.errors import SpecError
from components.spec import OVERRIDABLE, SPECS_DIR, TaskSpec, apply_overrides, load_spec, parse_spec, spec_field

VALID = yaml.safe_load((SPECS_DIR / "digits.yaml").read_text())
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=8)


def _paths(node, prefix=()):
    """Every key path in a nested mapping."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))


PATHS = list(_paths(VALID))


@st.composite
def mutated_specs(draw):
    spec = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        node = spec
        for key in path[:-1]:
            if not isinstance(node, dict) or key not in node:
                break
            node = node[key]
        else:
            if not isinstance(node, dict):
                continue
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                node[path[-1]] = draw(values)
            elif action == "delete":
                node.pop(path[-1], None)
            else:
                node[draw(st.text(min_size=1, max_size=12))] = draw(values)
    return spec


def _one_clear_line(error: SpecError) -> None:
    message = str(error)
    assert "\n" not in message and "Traceback" not in message
    assert "invalid spec" in message or "run parameter" in message


@FUZZ
@given(mutated_specs())
def test_any_mutation_of_a_valid_spec_is_valid_or_one_clear_line(data):
    try:
        assert isinstance(parse_spec(data, "fuzzed.yaml"), TaskSpec)
    except SpecError as error:
        _one_clear_line(error)
        assert str(error).startswith("fuzzed.yaml: invalid spec: ")


run_params = st.dictionaries(st.sampled_from(sorted(OVERRIDABLE)) | st.text(max_size=12), values, max_size=4)


@FUZZ
@given(run_params)
def test_any_run_parameters_are_applied_or_refused_in_one_line(params):
    base = load_spec("digits")
    try:
        spec = apply_overrides(base, params)
    except SpecError as error:
        _one_clear_line(error)
        return
    for key, value in params.items():
        if value is not None:
            *parents, leaf = OVERRIDABLE[key]
            node = spec
            for part in parents:
                node = getattr(node, part)
            # The field holds the value as that field's own type reads it (pydantic's lax mode turns "3"
            # into 3 for an int), so the override landed on its own field and nowhere else.
            field = spec_field(OVERRIDABLE[key])
            assert getattr(node, leaf) == TypeAdapter(Annotated[field.annotation, field]).validate_python(value)
    untouched = [path for name, path in OVERRIDABLE.items() if params.get(name) is None]
    for path in untouched:
        assert _value_at(spec, path) == _value_at(base, path)


def _value_at(spec: TaskSpec, path: tuple[str, ...]):
    node = spec
    for part in path:
        node = getattr(node, part)
    return node


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_any_spec_file_bytes_load_or_fail_in_one_line(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("spec") / "fuzzed.yaml"
    path.write_bytes(content)
    try:
        load_spec(path)
    except SpecError as error:
        assert "\n" not in str(error) and str(path) in str(error)
