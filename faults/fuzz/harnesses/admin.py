"""Admin-socket requests: a request line as `edge.ops.admin` reads it (the JSON
envelope, its params, the payload size) and the parameters of a presentation
(door, card spec, PIN, instant) as `decide` and `present` check them. Bad input
is `BadRequest` (a `GatewayError` with code bad_request) and nothing else."""

from __future__ import annotations

from typing import Any, cast

from edge.ops.admin import BadRequest, Call, _presentation_params, parse_request, request_params
from edge.site.state import Actor
from faults.fuzz.harness import Harness

ACTOR = Actor("fuzz")


def run(data: bytes) -> None:
    request = parse_request(data)
    params, _ = request_params(request)
    if request.get("method") in ("decide", "present"):
        # The handlers check their parameters before they touch the gateway.
        call = Call(params, ACTOR, None, cast(Any, None), request.get("id"))
        _presentation_params(call, cast(Any, None))


HARNESS = Harness("admin", run, (BadRequest,))
