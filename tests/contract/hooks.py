"""What the contract run must know that no JSON Schema can say.

Two rules of the API compare a request with something outside the field being generated, so the
document cannot state them; their refusals (422, each with its own `code`) are the right answer and
are dropped from the "schema-valid request rejected" check, and only they:

- a stay ends after it starts (`ends_at` after `starts_at`: 422 `invalid_value`, field `ends_at`);
- an `Idempotency-Key` already used with another body (422 `idempotency_key_reused`): the generator
  reuses keys freely.

Both are covered by tests of their own in tests/command_api.rs.
"""
import json
from datetime import datetime

import schemathesis


def _problem(response):
    try:
        return json.loads(response.content)
    except (TypeError, ValueError):
        return {}


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if response is None or response.status_code != 422 or getattr(failure, "code", "") != "ST202":
        return True
    problem = _problem(response)
    if problem.get("code") == "idempotency_key_reused":
        return False
    body = case.body if isinstance(case.body, dict) else {}
    if (
        case.operation.label == "POST /v1/bookings"
        and problem.get("code") == "invalid_value"
        and problem.get("field") == "ends_at"
        and _instant(body.get("ends_at")) is not None
        and _instant(body.get("starts_at")) is not None
        and _instant(body["ends_at"]) <= _instant(body["starts_at"])
    ):
        return False
    return True


def _instant(value):
    try:
        return datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
