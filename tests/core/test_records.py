"""``models.copied``: the copy of a stored record that storage keeps, hands out and gives to
each lifecycle hook is what ``attrs.evolve`` would make, as long as no record runs code in
its ``__init__`` (which ``copied`` skips)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs
import pytest

from triograph.core.infra.models import Assistant, AssistantVersion, Cron, Run, Thread, copied

RECORDS: list[Any] = [
    Assistant(assistant_id="a", graph_id="g", metadata={"k": [1]}),
    AssistantVersion(assistant_id="a", graph_id="g", version=2),
    Thread(thread_id="t", metadata={"k": "v"}, status="busy"),
    Run(run_id="r", thread_id="t", assistant_id="a", kwargs={"input": {"x": 1}}, attempt=3),
    Cron(cron_id="c", assistant_id="a", schedule="* * * * *", end_time=dt.datetime.now(dt.UTC)),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_a_copy_is_what_evolve_makes(record: Any) -> None:
    copy = copied(record)
    assert copy is not record
    assert type(copy) is type(record)
    assert copy == attrs.evolve(record)
    for field in attrs.fields(type(record)):  # shallow: each field the same object
        assert getattr(copy, field.name) is getattr(record, field.name)
    copy.metadata = {"changed": True}  # the copy is its own record
    assert record.metadata != {"changed": True}


@pytest.mark.parametrize("cls", [type(r) for r in RECORDS], ids=lambda c: c.__name__)
def test_records_run_no_code_when_made(cls: type) -> None:
    """``copied`` does not call ``__init__``: a record that gains a validator, a converter,
    a field left out of ``__init__`` or a post-init step needs ``attrs.evolve`` instead."""
    assert not hasattr(cls, "__attrs_post_init__")
    assert not hasattr(cls, "__attrs_pre_init__")
    for field in attrs.fields(cls):
        assert field.validator is None, field.name
        assert field.converter is None, field.name
        assert field.init, field.name
        assert field.on_setattr in (None, attrs.setters.NO_OP), field.name
