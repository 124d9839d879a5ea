"""compare_contracts: which differences between two versions' inputs break the clients."""

from __future__ import annotations

import pytest

from pipeline_tasks.core.schema import ModelContract, compare_contracts


def spec(type_: str = "double", required: bool = True) -> dict:
    return {"type": type_, "required": required}


CHAMPION = ModelContract(
    inputs={"carrier": spec("string"), "distance": spec("long"), "temp": spec("double", False)},
    target="is_late", task_type="classification", version="3")


def candidate(target="is_late", task_type="classification", **inputs) -> ModelContract:
    return ModelContract(inputs=inputs, target=target, task_type=task_type)


@pytest.mark.parametrize("new, breaking, field, expected", [
    # the same inputs
    (candidate(carrier=spec("string"), distance=spec("long"), temp=spec("double", False)),
     False, "added", []),
    # an int column that came back as float (nulls) is the same kind of value for a client
    (candidate(carrier=spec("string"), distance=spec("double"), temp=spec("double", False)),
     False, "retyped", {}),
    # a new optional input: clients that do not send it still get answers
    (candidate(carrier=spec("string"), distance=spec("long"), temp=spec("double", False),
               wind=spec("double", False)), False, "added", ["wind"]),
    # a required input that became optional
    (candidate(carrier=spec("string", False), distance=spec("long"), temp=spec("double", False)),
     False, "now_required", []),
    # a new required input: today's clients do not send it
    (candidate(carrier=spec("string"), distance=spec("long"), temp=spec("double", False),
               wind=spec("double")), True, "added_required", ["wind"]),
    # a removed input
    (candidate(carrier=spec("string"), temp=spec("double", False)), True, "removed",
     ["distance"]),
    # a renamed input: removed plus added
    (candidate(carrier=spec("string"), miles=spec("long"), temp=spec("double", False)), True,
     "removed", ["distance"]),
    # a retyped input
    (candidate(carrier=spec("long"), distance=spec("long"), temp=spec("double", False)), True,
     "retyped", {"carrier": "string -> long"}),
    # an optional input that became required
    (candidate(carrier=spec("string"), distance=spec("long"), temp=spec("double")), True,
     "now_required", ["temp"]),
    # another target, another task type
    (candidate(target="arr_delay", carrier=spec("string"), distance=spec("long"),
               temp=spec("double", False)), True, "target_change", "is_late -> arr_delay"),
    (candidate(task_type="regression", carrier=spec("string"), distance=spec("long"),
               temp=spec("double", False)), True, "task_type_change",
     "classification -> regression"),
])
def test_what_breaks_the_clients(new, breaking, field, expected):
    diff = compare_contracts(CHAMPION, new)
    assert diff.breaking is breaking
    assert getattr(diff, field) == expected
    assert diff.against_version == "3"
    data = diff.to_dict()
    assert data["breaking"] is breaking and data["summary"] == diff.summary()


def test_the_summary_and_tags_name_the_columns():
    diff = compare_contracts(CHAMPION, candidate(carrier=spec("long"), miles=spec("long"),
                                                 temp=spec("double", False)))
    assert diff.summary() == ("breaking change against champion v3: removed input(s) distance; "
                              "new required input(s) miles; retyped carrier (string -> long)")
    tags = diff.tags()
    assert tags["breaking_change"] == "true"
    assert tags["schema_change.removed"] == "distance" and tags["schema_change.added"] == "miles"
    assert tags["schema_change.retyped"] == '{"carrier": "string -> long"}'
    same = compare_contracts(CHAMPION, CHAMPION)
    assert not same.changed and same.summary() == "same inputs as champion v3"
