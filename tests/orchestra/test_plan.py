from __future__ import annotations

import json

import jsonschema
import pytest

from ganglion.orchestra.plan import PlanError, parse_plan, plan_schema


def plan(*items: object) -> str:
    return json.dumps({"subtasks": list(items)})


def test_a_good_plan_parses_and_sizes_are_clamped() -> None:
    text = plan({"task": " a ", "expected_tokens": 5}, {"task": "b", "expected_tokens": 99999})
    subtasks = parse_plan(text, 4)
    assert [(s.task, s.expected_tokens) for s in subtasks] == [("a", 16), ("b", 1024)]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("not json", "not valid JSON"),
        ('{"steps": []}', 'no "subtasks"'),
        (plan({"task": "a", "expected_tokens": 20}), "at least 2"),
        (plan(*({"task": str(i), "expected_tokens": 20} for i in range(5))), "at most 4"),
        (
            plan({"task": "", "expected_tokens": 20}, {"task": "b", "expected_tokens": 20}),
            "no task text",
        ),
        (plan({"task": "a"}, {"task": "b", "expected_tokens": 20}), "no expected_tokens"),
        (plan("x", {"task": "b", "expected_tokens": 20}), "not an object"),
        ('{"subtasks": [{"task": "a", "expected_tokens": Infinity}]}', "give a count"),
        ('{"subtasks": [{"task": "a", "expected_tokens": 1e999}, 5]}', "give a count"),
        ('{"subtasks": [{"task": "a", "expected_tokens": NaN}, 5]}', "give a count"),
        ('{"subtasks": [' + ",".join(["7"] * 10000) + "]}", "10000 subtasks: at most 4"),
        ('"subtasks"', 'no "subtasks"'),
        ("", "not valid JSON"),
    ],
)
def test_unusable_plans_say_why(text: str, why: str) -> None:
    with pytest.raises(PlanError, match=why):
        parse_plan(text, 4)


def test_the_schema_is_a_valid_json_schema_that_accepts_good_plans() -> None:
    schema = plan_schema(4)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(
        json.loads(
            plan({"task": "a", "expected_tokens": 20}, {"task": "b", "expected_tokens": 30})
        ),
        schema,
    )
