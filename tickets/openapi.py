"""The OpenAPI 3.0 document of /api/v1, served at /api/v1/openapi.json.

What the API accepts (the request bodies, the list's query parameters, the Idempotency-Key
header) is the JSON schema of the pydantic models in tickets/api_schemas.py, the models that
check those inputs, so a limit stated in tickets/limits.py cannot drift from the document.
The response shapes are written here by hand as Python data: they are a contract with
upstream scripts, so they are stated here once, on purpose, and the tests hold the views to
them (tests/test_api.py validates real responses against these schemas,
tests/test_api_schema.py fuzzes every operation with schemathesis). The enums come from the
models, so a new status cannot be forgotten here.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import BaseModel

from .api_schemas import (
    IDEMPOTENCY_KEY,
    Beneficiary,
    CallbackRegistration,
    CancelRequest,
    ListQuery,
    OtrsInvokerEvent,
    SubmitRequest,
)
from .models import AccessRequest, Operation, ProvisioningTask

REF_PREFIX = "#/components/schemas/"
# Keys whose value is data (or a map of names), not a schema to convert.
_DATA_KEYS = ("default", "enum", "example", "examples", "const")


def _ref(name: str) -> dict:
    return {"$ref": f"{REF_PREFIX}{name}"}


def openapi_schema(node: Any) -> Any:
    """A JSON schema from pydantic, said the OpenAPI 3.0 way: `anyOf [X, null]` becomes X
    with `nullable: true`; pydantic's generated titles and null defaults go."""
    if isinstance(node, list):
        return [openapi_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    options = node.get("anyOf")
    if options and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        merged = {k: v for k, v in node.items() if k != "anyOf"}
        if len(rest) == 1 and "$ref" in rest[0]:  # OpenAPI 3.0 ignores a $ref's siblings
            merged["allOf"] = rest
        else:
            merged.update(rest[0] if len(rest) == 1 else {"anyOf": rest})
        return {**openapi_schema(merged), "nullable": True}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" or (key == "default" and value is None):
            continue
        if key == "description":  # a docstring's line breaks are not paragraphs
            out[key] = " ".join(value.split())
        elif key == "properties":
            out[key] = {name: openapi_schema(s) for name, s in value.items()}
        elif key in _DATA_KEYS:
            out[key] = value
        else:
            out[key] = openapi_schema(value)
    return out


def model_schemas(*models: type[BaseModel]) -> dict[str, dict]:
    """The components for `models`, the models they nest included."""
    schemas: dict[str, dict] = {}
    for model in models:
        schema = model.model_json_schema(ref_template=REF_PREFIX + "{model}")
        for name, nested in schema.pop("$defs", {}).items():
            schemas[name] = openapi_schema(nested)
        schemas[model.__name__] = openapi_schema(schema)
    return schemas


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _error(description: str) -> dict:
    return {"description": description, "content": _json(_ref("Error"))}


SCHEMAS: dict[str, dict] = {
    "Error": {
        "type": "object",
        "description": "Every answer other than success has this shape.",
        "required": ["error", "detail", "fields"],
        "additionalProperties": False,
        "properties": {
            "error": {"type": "string", "description": "A stable code, e.g. `invalid`."},
            "detail": {"type": "string", "description": "A sentence for a person."},
            "fields": {
                "type": "object",
                "description": 'Messages per field path, e.g. `{"beneficiary.username": '
                '["is required."]}`; empty when no field is to blame.',
                "additionalProperties": {"type": "array", "items": {"type": "string"}},
            },
        },
    },
    "Ticket": {
        "type": "object",
        "nullable": True,
        "description": "The OTRS ticket that carries a task; null until it is created.",
        "required": ["id", "number", "state", "state_type", "url"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "integer", "format": "int64", "description": "OTRS TicketID."},
            "number": {"type": "string", "nullable": True, "description": "TicketNumber."},
            "state": {"type": "string", "nullable": True},
            "state_type": {"type": "string", "nullable": True},
            "url": {"type": "string", "nullable": True, "description": "Agent view."},
        },
    },
    "Task": {
        "type": "object",
        "required": [
            "id",
            "operation",
            "entitlement",
            "status",
            "attempts",
            "last_error",
            "reason",
            "ticket",
        ],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "integer"},
            "operation": {"type": "string", "enum": list(Operation.values)},
            "entitlement": {"type": "string", "nullable": True},
            "status": {"type": "string", "enum": list(ProvisioningTask.Status.values)},
            "attempts": {"type": "integer", "minimum": 0},
            "last_error": {"type": "string", "nullable": True},
            "reason": {
                "type": "object",
                "nullable": True,
                "description": "The OTRS agent's closing article: its subject and the start "
                "of its text (at most 1000 characters); null until the ticket closes.",
                "required": ["subject", "excerpt"],
                "additionalProperties": False,
                "properties": {
                    "subject": {"type": "string"},
                    "excerpt": {"type": "string"},
                },
            },
            "ticket": _ref("Ticket"),
        },
    },
    "Request": {
        "type": "object",
        "required": ["id", "number", "status", "tasks"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "integer"},
            "number": {"type": "string", "example": "REQ-000042"},
            "status": {"type": "string", "enum": list(AccessRequest.Status.values)},
            "tasks": {
                "type": "array",
                "items": _ref("Task"),
                "description": "Empty until the request is approved.",
            },
        },
    },
    "RequestPage": {
        "type": "object",
        "required": ["results", "next"],
        "additionalProperties": False,
        "properties": {
            "results": {"type": "array", "items": _ref("Request")},
            "next": {
                "type": "string",
                "nullable": True,
                "description": "Pass as `cursor` for the next page; null on the last page.",
            },
        },
    },
    "Empty": {"type": "object", "additionalProperties": False},
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["ok"]}},
    },
    "CallbackSecret": {
        "type": "object",
        "required": ["url", "secret"],
        "additionalProperties": False,
        "properties": {
            "url": {"type": "string", "nullable": True},
            "secret": {
                "type": "string",
                "nullable": True,
                "description": "The signing secret, shown only in this answer; null after DELETE.",
            },
        },
    },
    **model_schemas(
        Beneficiary, SubmitRequest, CancelRequest, CallbackRegistration, OtrsInvokerEvent
    ),
}

RESPONSES = {
    "BadRequest": _error("The body is not JSON, or not a JSON object."),
    "Unauthenticated": _error("The bearer token is missing, unknown or its client disabled."),
    "NotFound": _error("No such request for this client."),
    "Conflict": _error("The request is in a state that does not allow this."),
    "TooLarge": _error("The body is larger than 64 kB."),
    "UnsupportedMediaType": _error("The body is not sent as application/json."),
    "Invalid": _error("A field is wrong; `fields` names each one."),
}

PARAMETERS = {
    "RequestId": {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    },
    "IdempotencyKey": {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "Makes a retried submit return the first result instead of creating "
        "a second request. A key is per client; reusing it with another body is a 422.",
        "schema": openapi_schema(IDEMPOTENCY_KEY.json_schema()),
    },
}


def _errors(*names: str) -> dict:
    codes = {
        "BadRequest": "400",
        "Unauthenticated": "401",
        "NotFound": "404",
        "Conflict": "409",
        "TooLarge": "413",
        "UnsupportedMediaType": "415",
        "Invalid": "422",
    }
    return {codes[n]: {"$ref": f"#/components/responses/{n}"} for n in names}


def _request_answer(description: str) -> dict:
    return {"description": description, "content": _json(_ref("Request"))}


def _list_parameters() -> list[dict]:
    """One query parameter per field of ListQuery, the model that checks them."""
    parameters = []
    for name, schema in openapi_schema(ListQuery.model_json_schema())["properties"].items():
        # A parameter is left out, never null; its description belongs to the parameter.
        schema = {k: v for k, v in schema.items() if k not in ("nullable", "description")}
        description = ListQuery.model_fields[name].description
        parameters.append(
            {"name": name, "in": "query", "required": False, "schema": schema}
            | ({"description": description} if description else {})
        )
    return parameters


CALLBACK_DESCRIPTION = (
    "When one of this client's requests changes status, the bridge POSTs its request "
    "document (the Request schema) to the client's callback URL (PUT /callback), once per "
    "change, tried again with backoff for up to a day until the receiver answers 2xx. "
    "The header `X-Bridge-Signature: t=<unix time>,v1=<hex>` carries HMAC-SHA256 of "
    '"<unix time>.<raw body>" under the client\'s secret: recompute it, compare in '
    "constant time, and refuse a time more than five minutes off. `X-Bridge-Delivery` "
    "is the delivery's id: the same id again is a redelivery."
)

PATHS = {
    "/requests": {
        "post": {
            "operationId": "submitRequest",
            "summary": "Submit a request (a trusted client's request arrives approved).",
            "parameters": [{"$ref": "#/components/parameters/IdempotencyKey"}],
            "requestBody": {"required": True, "content": _json(_ref("SubmitRequest"))},
            "responses": {
                "201": _request_answer("Created."),
                "200": {
                    **_request_answer(
                        "A retry with an Idempotency-Key already used with the same body: "
                        "the first result, nothing created."
                    ),
                    "headers": {
                        "Idempotent-Replayed": {"schema": {"type": "string", "enum": ["true"]}}
                    },
                },
                **_errors(
                    "BadRequest", "Unauthenticated", "TooLarge", "UnsupportedMediaType", "Invalid"
                ),
            },
        },
        "get": {
            "operationId": "listRequests",
            "summary": "This client's requests, newest first, with cursor pagination. An "
            "unknown or empty parameter is refused (422), so a misspelt filter never lists all.",
            "parameters": _list_parameters(),
            "responses": {
                "200": {"description": "One page.", "content": _json(_ref("RequestPage"))},
                **_errors("Unauthenticated", "Invalid"),
            },
        },
    },
    "/requests/{id}": {
        "parameters": [{"$ref": "#/components/parameters/RequestId"}],
        "get": {
            "operationId": "getRequest",
            "summary": "One request with its tasks, tickets and states.",
            "responses": {
                "200": _request_answer("The request."),
                **_errors("Unauthenticated", "NotFound"),
            },
        },
    },
    "/requests/{id}/cancel": {
        "parameters": [{"$ref": "#/components/parameters/RequestId"}],
        "post": {
            "operationId": "cancelRequest",
            "summary": "Cancel a request and its unfinished tasks. Each open OTRS ticket gets a "
            "note saying who cancelled and why, and the connection's cancel state. Cancelling a "
            "cancelled request answers it unchanged.",
            "requestBody": {"required": False, "content": _json(_ref("CancelRequest"))},
            "responses": {
                "200": _request_answer("The cancelled request."),
                **_errors(
                    "BadRequest",
                    "Unauthenticated",
                    "NotFound",
                    "Conflict",
                    "TooLarge",
                    "UnsupportedMediaType",
                    "Invalid",
                ),
            },
        },
    },
    "/callback": {
        "put": {
            "operationId": "setCallback",
            "summary": "Register (or replace) this client's callback URL. The answer holds a new "
            "signing secret, shown only here; the old one stops working.",
            "description": CALLBACK_DESCRIPTION,
            "requestBody": {"required": True, "content": _json(_ref("CallbackRegistration"))},
            "callbacks": {
                "statusChanged": {
                    "{$request.body#/url}": {
                        "post": {
                            "summary": "The request's status changed.",
                            "description": CALLBACK_DESCRIPTION,
                            "parameters": [
                                {
                                    "name": "X-Bridge-Signature",
                                    "in": "header",
                                    "required": True,
                                    "schema": {"type": "string"},
                                    "example": "t=1796621604,v1=5f0c…",
                                },
                                {
                                    "name": "X-Bridge-Delivery",
                                    "in": "header",
                                    "required": True,
                                    "schema": {"type": "string"},
                                },
                            ],
                            "requestBody": {"required": True, "content": _json(_ref("Request"))},
                            "responses": {
                                "2XX": {"description": "Received; not sent again."},
                                "default": {"description": "Sent again later, with backoff."},
                            },
                        }
                    }
                }
            },
            "responses": {
                "200": {"description": "Registered.", "content": _json(_ref("CallbackSecret"))},
                **_errors(
                    "BadRequest", "Unauthenticated", "TooLarge", "UnsupportedMediaType", "Invalid"
                ),
            },
        },
        "delete": {
            "operationId": "clearCallback",
            "summary": "Stop the callbacks of this client.",
            "responses": {
                "200": {"description": "Removed.", "content": _json(_ref("CallbackSecret"))},
                **_errors("Unauthenticated"),
            },
        },
    },
    "/hooks/otrs/{connection}": {
        "parameters": [
            {"name": "connection", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "post": {
            "operationId": "otrsWebhook",
            "summary": "Receiver of Znuny's Ticket::Generic invoker: queues a refresh of the "
            "ticket, which is then read from OTRS with TicketGet.",
            "security": [{"webhookHeader": []}, {"webhookQuery": []}],
            "requestBody": {"required": False, "content": _json(_ref("OtrsInvokerEvent"))},
            "responses": {
                "200": {
                    "description": "Accepted, whatever the body: OTRS retries anything else, "
                    "and a bad body would not get better.",
                    "content": _json(_ref("Empty")),
                },
                "403": _error(
                    "The token is wrong, the connection has no webhook secret, or there is no "
                    "such connection (answered as a wrong token, so names cannot be probed)."
                ),
                "503": _error("The refresh could not be queued; OTRS should retry."),
            },
        },
    },
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document.",
            "security": [],
            "responses": {"200": {"description": "OpenAPI 3.0", "content": _json({})}},
        }
    },
    "/health": {
        "get": {
            "operationId": "health",
            "summary": "Liveness probe.",
            "security": [],
            "responses": {"200": {"description": "Up.", "content": _json(_ref("Health"))}},
        }
    },
}


@lru_cache(maxsize=1)
def document() -> dict:
    """The whole document, built once per process."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "OTRS Bridge API",
            "version": "1",
            "description": "Hand access requests to the bridge and follow them to their "
            "tickets. Authenticate with `Authorization: Bearer <token>` "
            "(`manage.py create_api_client NAME [--trusted]`).",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearerAuth": []}],
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "responses": RESPONSES,
            "parameters": PARAMETERS,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "webhookHeader": {"type": "apiKey", "in": "header", "name": "X-OTRS-Bridge-Token"},
                "webhookQuery": {"type": "apiKey", "in": "query", "name": "token"},
            },
        },
    }
