"""oracle.errors.invalid: a validation error (read through `.errors()` alone) as one line."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from oracle.errors import OracleError, invalid


class Problems:
    """Not pydantic: `invalid` reads only `.errors()`."""

    def __init__(self, *errors: dict[str, Any]) -> None:
        self._errors = list(errors)

    def errors(self) -> list[dict[str, Any]]:
        return self._errors


def test_the_first_problem_names_its_dotted_field_and_the_value_if_asked():
    exc = Problems({"loc": ("arms", 1, "name"), "msg": "bad", "input": "x"}, {"loc": ("z",), "msg": "later"})
    error = invalid("the thing", exc, whole="thing", note="got {input!r}")
    assert isinstance(error, OracleError) and error.message == "the thing: arms.1.name: bad (got 'x')"


def test_a_problem_with_the_whole_object_names_it_and_a_fixed_note_stays_as_written():
    error = invalid("trial config", Problems({"loc": (), "msg": "not a dict"}), whole="config", note="rerun? yes")
    assert error.message == "trial config: config: not a dict (rerun? yes)"


def test_a_pydantic_validation_error_reads_the_same():
    class Model(BaseModel):
        seeds: list[int]

    with pytest.raises(ValidationError) as caught:
        Model.model_validate({"seeds": [1, "two"]})
    error = invalid("model", caught.value, whole="model", note="got {input!r}")
    assert error.message.startswith("model: seeds.1: Input should be a valid integer") and error.message.endswith(
        "(got 'two')")
