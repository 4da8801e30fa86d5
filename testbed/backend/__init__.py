"""A SmartEM-compatible backend good enough to test against (FastAPI + one SQLite file).

Run it with ``em-agent testbed backend --port N [--db PATH] [--compat strict|smartem] [auth options]`` or
``python -m testbed.backend``; in tests use :class:`BackendServer` (uvicorn in a thread on 127.0.0.1) or
:func:`create_app`. Two modes:

``strict`` (default)
    SmartEM's paths and shapes, but stricter (unknown fields and wrong types -> 422, duplicate create -> 409,
    unknown parent -> 404, a body that contradicts its path where SmartEM would act on the body -> 422, a
    nameless acquisition -> 422; it refuses every request of the differential corpus the real backend refuses,
    docs/testbed-fidelity.md) and with the compatible improvements of design.md:
    ``id:`` on each SSE instruction event (a delivery id), ``Last-Event-ID`` resume, re-sending of
    sent-but-unacknowledged instructions on reconnect, a ``retry:`` hint, numeric priority ordering
    (critical > high > normal > low, then ``sequence_number``, then creation time), idempotent repeated acks
    (``received`` then a final status allowed; a different final status after a final one -> 409), acks
    accepted without a live stream, prompt redelivery after an expiry reset, and
    ``POST /foilholes/micrographs/batch`` (body ``MicrographBatchCreateRequest``).
``smartem``
    The observed behaviour of the real backend, quirks included, measured against it by
    ``tests/smartem/test_differential.py`` (docs/testbed-fidelity.md): unknown entity fields ignored; duplicate
    create and unknown parent -> 500 ``text/plain`` and the keep-alive connection closed (the grid-square batch:
    404 / 409); partial PUTs; every ack error -> 500; one-shot acks that need a live connection; no ``id:`` and
    no re-send on reconnect; redelivery only through the expiry sweep (not pushed on an open stream); text
    priority ordering; ``GET /debug/session/{id}/instructions`` -> 500 once the session has an instruction; no
    micrograph batch.

Both modes refuse status values outside SmartEM's vocabularies (422) and datetimes with a UTC offset.

Both modes send ``: ping`` comments every ``ping_interval`` (15 s) and a ``heartbeat`` event after
``heartbeat_interval`` (30 s) without notifications; an unknown or foreign session gets one ``error`` event
``session_validation_failed`` and the end of the stream. Every interval is configurable (see
:class:`BackendOptions`).

Authentication (off by default; both modes). ``BackendServer(..., auth=AuthOptions(static_tokens=["t"],
client_id="agent", client_secret="s", token_lifetime_s=300.0, leeway_s=0.0, end_streams_on_expiry=True))``, or
on the command line ``--token T`` (repeatable) and ``--client-id ID --client-secret S [--token-lifetime SECONDS]
[--token-leeway SECONDS] [--keep-streams-on-expiry]``. When on:

* ``POST /auth/token``: OAuth2 client credentials (form ``grant_type=client_credentials&client_id=..&
  client_secret=..``, or the client in HTTP Basic) -> ``{access_token, token_type: "Bearer", expires_in}``;
  wrong credentials -> 401 ``{"error": "invalid_client"}``; a missing or other grant type -> 400. Point
  ``backend_client.ClientCredentialsAuth`` at ``{url}/auth/token``.
* Every route needs ``Authorization: Bearer <token>`` except ``/health``, ``/status``, ``/openapi.json``,
  ``/docs``, ``/auth/token`` and ``/testbed/...``. A refusal is 401 with ``WWW-Authenticate: Bearer`` and
  SmartEM's ``detail``: "Missing or malformed Authorization header", "Invalid token" or "Token expired"
  (after ``leeway_s``). Static tokens never expire; issued ones are signed and stay valid across a restart.
* An open SSE stream ends when the token that opened it expires (``close_reason`` ``token_expired`` in
  ``/testbed/connections``) unless ``end_streams_on_expiry`` is off (SmartEM itself checks at connect only).
* ``BackendServer.issue_token(lifetime_s)`` mints a token without HTTP; its convenience methods authenticate
  themselves. ``GET /status`` reports ``configuration.auth``: ``bearer`` or ``none``.

Testbed endpoints (never affected by fault injection or authentication):

* ``GET /testbed/counts[?acquisition_uuid=]``: entities per kind (all seven kinds, zeros included) plus
  ``atlas_tile_position``.
* ``GET /testbed/acquisitions/{uuid}/entities``: ``{acquisition_uuid, entities: {kind: [entity]},
  tile_positions}``; each entity is ``{kind, uuid, parent_uuid, acquisition_uuid, data (every request field),
  created_at, updated_at, update_count, registered, registered_count}``.
* ``GET /testbed/entities/{kind}/{uuid}``: one entity in that form.
* ``GET /testbed/sessions``: all sessions, any status.
* ``GET /testbed/connections[?session_id=]``: SSE connection rows (status, close_reason, last_heartbeat_at).
* ``GET /testbed/streams[?session_id=]``: ``{open: n}``, the streams open right now.
* ``GET /testbed/instructions[?session_id=]``: instruction history, oldest first: the row (status,
  ack_status, sent_at, acknowledged_at, expires_at, retry_count, ...) plus ``deliveries``
  ``[{event_id, connection_id, sent_at}]``, ``acknowledgements`` (every attempt, with ``outcome``
  accepted|repeated|rejected and ``http_status``) and ``history`` ``[{at, event, ...}]`` where event is one
  of created, sent, resent, received, acknowledged, reset_to_pending, expired.
* ``GET /testbed/instructions/{instruction_id}``: one of those.
* ``GET /testbed/logs[?agent_id=&session_id=&limit=]``: shipped log records.
* ``GET /testbed/heartbeats[?session_id=]``: agent heartbeats received.
* ``POST /testbed/sweep``: run housekeeping now (expiry retry, stale connections, idle sessions).
* ``GET /testbed/faults``: current fault settings and the number of injected failures.
* ``POST /testbed/faults/fail`` ``{count, status: 503|429|5xx, retry_after: s|null, path_prefix}``: fail the
  next ``count`` matching requests (``Retry-After`` in whole seconds, rounded up).
* ``POST /testbed/faults/latency`` ``{seconds, path_prefix}``: delay matching requests.
* ``POST /testbed/faults/drop-streams[?session_id=]``: end open SSE streams now; ``{dropped: n}``.
* ``DELETE /testbed/faults``: clear failures and latency.
* ``POST /testbed/reset``: empty the backend as if its database were new (open streams end, faults cleared,
  id counters restart); ``{ended_streams, deleted_rows}``. ``BackendServer.reset()`` does the same, so tests can
  share one server.

SmartEM's debug endpoints create sessions and instructions: ``POST /debug/sessions/create``
(``{session_id?, agent_id, acquisition_uuid?, name, description, experimental_parameters}``),
``POST /debug/sessions/create-managed``, ``DELETE /debug/sessions/{id}/close``, ``GET /debug/sessions``,
``GET /debug/agent-connections``, ``GET /debug/connection-stats``,
``POST /debug/session/{id}/create-instruction`` (``{instruction_type, payload, priority, sequence_number,
expires_in_minutes (fractional allowed; null/0 = never), metadata, instruction_id?}``) and
``GET /debug/session/{id}/instructions``.
"""

from testbed.backend.app import create_app
from testbed.backend.auth import TokenIssuer
from testbed.backend.faults import FaultInjector
from testbed.backend.options import AuthOptions, BackendOptions, Compat
from testbed.backend.server import BackendServer, serve

__all__ = [
    "AuthOptions",
    "BackendOptions",
    "BackendServer",
    "Compat",
    "FaultInjector",
    "TokenIssuer",
    "create_app",
    "serve",
]
