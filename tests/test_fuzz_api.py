"""Schemathesis against /api/v1/openapi.json with authenticated clients of every role: never a 5xx, on SQLite
and on PostgreSQL (which refuses text that SQLite stores, such as NUL characters).

`make test` runs a bounded budget per backend (ITEMGATE_FUZZ_EXAMPLES, default 2,000 requests, spread over the
operations); `make fuzz` runs 20,000. Each backend is one test that walks every operation and counts its own
requests, so the budget is checked where the requests were made, also when pytest-xdist spreads the suite over
several workers."""
from __future__ import annotations

import itertools
import math
import os
import warnings
from typing import Any

from hypothesis import HealthCheck, given, settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import schemathesis

from api.extensions import db

TOTAL_REQUESTS = int(os.environ.get("ITEMGATE_FUZZ_EXAMPLES", "2000"))
ROLES = ["impl", "rev_a", "pm", "auditor", "buyer", "admin"]


def _operations(app: Any) -> list[Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        schema = schemathesis.from_wsgi("/api/v1/openapi.json", app)
        return [result.ok() for result in schema.get_all_operations()]


def test_api_never_answers_5xx(world, backend):
    for i in range(3):  # some rows for ids 1..3 to land on
        item = world.new_item(f"FUZZ-{i}")
        assert world.upload("impl", item["id"], "requirement_letter").status_code == 201
    tokens = itertools.cycle([world.headers(u)["Authorization"] for u in ROLES])
    db.session.remove()
    operations = _operations(world.app)
    assert len(operations) > 30
    # Operations with few distinct inputs stop early (Hypothesis exhausts them), so each aims a quarter above
    # its share; the total is checked below.
    per_operation = max(5, math.ceil(TOTAL_REQUESTS * 1.25 / len(operations)))
    by_status: dict[int, int] = {}

    for operation in operations:
        @settings(max_examples=per_operation, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def one_request(case: Any) -> None:
            try:
                token = next(tokens)
                if case.path == "/api/v1/auth/logout":
                    # Ending a token is fuzzed like any operation, with a token of its own: the shared ones must
                    # live on.
                    world.tokens.pop("admin", None)
                    token = world.headers("admin")["Authorization"]
                    world.tokens.pop("admin")
                response = case.call(headers={"Authorization": token})
                # A streamed body (CSV, ZIP) runs its queries only now.
                response.get_data()
            except Exception as exc:
                exc.add_note(f"request: {case.method} {case.formatted_path} query={case.query} body={case.body!r}")
                raise
            finally:
                db.session.remove()
            by_status[response.status_code] = by_status.get(response.status_code, 0) + 1
            assert response.status_code < 500, (case.method, case.formatted_path, case.query, case.body,
                                                response.get_data(as_text=True)[:500])

        one_request()

    sent = sum(by_status.values())
    print(f"\nfuzz [{backend}]: {sent} requests over {len(operations)} operations, "
          f"statuses {sorted(by_status.items())}")
    assert sent >= TOTAL_REQUESTS, f"only {sent} requests were generated; the budget is {TOTAL_REQUESTS}"
