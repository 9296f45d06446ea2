"""The OpenAPI 3.1 description of ``authtrail ingest-http`` (served at ``/openapi.json``).

Built from the same names the server routes by (:data:`authtrail.producers.http_ingest.PATHS`) and
the generated JSON Schema of the auth event, so it cannot drift from either.
"""

from __future__ import annotations

from typing import Any

from authtrail import __version__
from authtrail.producers.http_ingest import EVENTS_PATH, PATHS
from authtrail.schemas.json_schema import auth_event_json_schema

__all__ = ["openapi_document"]

_PROVIDER_BODIES = {
    "keycloak": "Keycloak events (Jackson Event/AdminEvent JSON, as HTTP event-listener "
    "plugins post them) or Quarkus JSON log records: one object, an array or JSON lines.",
    "okta": "An Okta event hook delivery (data.events) or System Log LogEvents.",
    "auth0": "An Auth0 log stream batch (array of {log_id, data}), EventBridge events, or "
    "Management API logs.",
    "cloudtrail": "A CloudTrail log file ({Records: [...]}) or records; records of services "
    "other than signin, sts, iam and sso are skipped.",
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _post(name: str) -> dict[str, Any]:
    if name == EVENTS_PATH:
        schema: dict[str, Any] = {
            "oneOf": [
                {"$ref": "#/components/schemas/AuthEvent"},
                {"type": "array", "items": {"$ref": "#/components/schemas/AuthEvent"}},
            ]
        }
        summary = "Auth events with the Avro schema's field names (or JSON lines of them)"
    else:
        schema = {"description": _PROVIDER_BODIES[name]}
        summary = f"{name} events in the provider's own JSON"
    return {
        "summary": summary,
        "operationId": f"ingest_{name}",
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
        "responses": {
            "202": {
                "description": "Every event acknowledged by Kafka (or held by the spool)",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}
                },
            },
            "400": _error("Bad input; nothing was sent; the reason names the first event"),
            "401": _error("Missing or unknown bearer token"),
            "403": _error("The token does not grant this path or the event's tenant"),
            "411": _error("Content-Length required"),
            "413": _error("Body or batch larger than the server's limits"),
            "429": _error("Rate limit, or the producer's queue is full; see Retry-After"),
            "503": _error("Kafka did not acknowledge in time; retry (ids repeat, stored once)"),
        },
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document as a JSON-compatible dict."""
    event_schema = auth_event_json_schema()
    event_schema.pop("$schema", None)
    event_schema.pop("$id", None)
    paths: dict[str, Any] = {f"/v1/ingest/{name}": {"post": _post(name)} for name in PATHS}
    paths["/v1/ingest/okta"]["get"] = {
        "summary": "Okta's one-time event hook verification",
        "operationId": "verify_okta_event_hook",
        "parameters": [
            {
                "name": "X-Okta-Verification-Challenge",
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
            }
        ],
        "responses": {
            "200": {
                "description": "The challenge, echoed",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["verification"],
                            "properties": {"verification": {"type": "string"}},
                        }
                    }
                },
            },
            "401": _error("Missing or unknown bearer token"),
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "authtrail ingest-http",
            "version": __version__,
            "description": "Auth events into authtrail's tamper-evident pipeline. 202 only "
            "after Kafka acknowledged; a request is accepted whole or refused whole.",
        },
        "servers": [{"url": "http://127.0.0.1:7381"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "AuthEvent": event_schema,
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                },
                "Accepted": {
                    "type": "object",
                    "required": ["accepted", "event_ids", "skipped", "held_by"],
                    "properties": {
                        "accepted": {"type": "integer"},
                        "event_ids": {"type": "array", "items": {"type": "string"}},
                        "skipped": {
                            "type": "object",
                            "additionalProperties": {"type": "integer"},
                        },
                        "held_by": {"enum": ["kafka", "spool"]},
                    },
                },
            },
        },
    }
