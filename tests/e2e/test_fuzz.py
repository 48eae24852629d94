"""The standing fuzz check (issue 15): requests generated from ``/openapi.json`` by
schemathesis, seeded (``derandomize``) and bounded in count, against a real server on the
test backend. It fails on any 5xx, any request not answered within ``HUNG`` seconds, and
any response the document does not describe (its status, content type or body schema).

``TRIOGRAPH_FUZZ_EXAMPLES`` (per operation; default 8) and ``TRIOGRAPH_FUZZ_SECONDS`` (a
deadline for the whole run; default none) make it a long run outside CI:

    TRIOGRAPH_FUZZ_EXAMPLES=100000 TRIOGRAPH_FUZZ_SECONDS=600 pytest -s tests/e2e/test_fuzz.py

Whether the server accepts everything the document allows (schemathesis'
``positive_data_acceptance``) is counted and printed by operation, not asserted: the
document states the rules across fields and formats (a cancel's two shapes, cron schedules
and time zones, the shape of a webhook URL, ``select`` names, no NUL character in any string
or key), but some are semantic (a cron field's range, a resume without a thread, the
configured webhook policy) and stay the server's to refuse: ~0.2% of generated requests.
"""

from __future__ import annotations

import collections
import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import requests
import schemathesis
import trio
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import example_settings, start_server
from tests.sdk import Server

# schemathesis' strategies draw with ``random`` inside; Hypothesis warns about that
pytestmark = pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
HUNG = 30
EXAMPLES = int(os.environ.get("TRIOGRAPH_FUZZ_EXAMPLES", "8"))
SECONDS = float(os.environ.get("TRIOGRAPH_FUZZ_SECONDS", "inf"))
#: graphs that finish at once (``slow`` sleeps as long as its input says)
GRAPHS = {"agent", "test_agent", "interrupter", "erroring", "custom", "subgraph"}
#: operations that never end by design: the thread stream is open until the client leaves
ENDLESS = {"GET /threads/{thread_id}/stream", "POST /threads/{thread_id}/stream/events"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


class _TimeUp(Exception):
    """The operation's share of ``SECONDS`` is spent."""


@attrs.define
class Tally:
    requests: int = 0
    server_errors: int = 0
    hung: int = 0
    rejected_valid: int = 0
    failures: collections.Counter[str] = attrs.Factory(collections.Counter)
    examples: dict[str, str] = attrs.Factory(dict)
    #: schema-valid requests refused, by operation, with the first refusal of each
    refused: collections.Counter[str] = attrs.Factory(collections.Counter)
    refusals: dict[str, str] = attrs.Factory(dict)

    def fail(self, key: str, example: str) -> None:
        self.failures[key] += 1
        self.examples.setdefault(key, example)


@pytest.fixture
async def fuzzed(nursery: trio.Nursery) -> AsyncIterator[Server]:
    base = example_settings(heartbeat_interval=1.0, shutdown_grace=0.5)
    settings_ = attrs.evolve(
        base,
        graphs=tuple(g for g in base.graphs if g.graph_id in GRAPHS),
        http={"disable_webhooks": True},
    )
    async for s in start_server(nursery, settings_):
        yield s


def fuzz(url: str, tally: Tally) -> None:
    """Every operation of the document, ``EXAMPLES`` generated requests each, or as many as
    its share of ``SECONDS`` allows (sync: the schemathesis client is ``requests``; run in a
    worker thread)."""
    end = time.monotonic() + SECONDS
    schema = schemathesis.openapi.from_dict(
        requests.get(f"{url}/openapi.json", timeout=HUNG).json()
    )
    session = requests.Session()
    operations = [r.ok() for r in schema.get_all_operations()]
    operations = [op for op in operations if op.label not in ENDLESS]
    deadline = [end]  # of the operation being fuzzed
    for index, operation in enumerate(operations):
        # a time-bounded run shares what is left evenly among the operations still to go
        deadline[0] = time.monotonic() + (end - time.monotonic()) / (len(operations) - index)

        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
        def call(case: Any) -> None:
            if time.monotonic() > deadline[0]:
                raise _TimeUp  # Hypothesis would otherwise go on drawing up to max_examples
            if isinstance(case.body, dict) and case.body.get("after_seconds"):
                case.body["after_seconds"] = 0.01  # a run waiting a week is the contract
            label = case.operation.label
            try:
                response = case.call(base_url=url, session=session, timeout=HUNG)
            except requests.Timeout:
                tally.hung += 1
                tally.fail(f"{label}: no answer in {HUNG} s", repr(case.body)[:300])
                return
            tally.requests += 1
            tally.server_errors += response.status_code >= 500
            for check in CHECKS:
                try:
                    case.validate_response(response, checks=[check])
                except BaseException as exc:  # schemathesis' failure groups
                    detail = f"{response.status_code} {response.text[:200]!r} for {case.body!r}"
                    tally.fail(f"{label}: {check.__name__}: {type(exc).__name__}", detail[:400])
            try:
                case.validate_response(response, checks=[positive_data_acceptance])
            except BaseException:  # counted only (see the module docstring)
                tally.rejected_valid += 1
                tally.refused[label] += 1
                refusal = f"{response.status_code} {response.text[:160]!r} for {case.body!r}"
                tally.refusals.setdefault(label, refusal[:300])

        with contextlib.suppress(_TimeUp):
            call()


async def test_requests_the_document_allows_get_answers_it_describes(fuzzed: Server) -> None:
    tally = Tally()
    await trio.to_thread.run_sync(fuzz, fuzzed.url, tally)
    print(
        f"\nfuzz: {tally.requests} requests, {tally.server_errors} 5xx, {tally.hung} hung, "
        f"{tally.rejected_valid} valid requests refused"
    )
    for label, n in tally.refused.most_common():
        print(f"  refused {n}x {label}: {tally.refusals[label]}")
    report = "\n".join(f"{n}x {k}\n    {tally.examples[k]}" for k, n in tally.failures.items())
    assert not tally.failures, report
    assert tally.requests > 0
