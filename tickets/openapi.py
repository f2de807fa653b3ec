"""The OpenAPI 3.0 document of /api/v1, served at /api/v1/openapi.json.

Written by hand as Python data rather than generated from the views: the response shapes
are a contract with upstream scripts, so they are stated here once, on purpose, and the
tests hold the views to them (tests/test_api.py validates real responses against these
schemas, tests/test_api_schema.py fuzzes every operation with schemathesis). The enums
come from the models, so a new status cannot be forgotten here.
"""

from __future__ import annotations

from functools import lru_cache

from .models import AccessRequest, Operation, ProvisioningTask


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _text(max_length: int, *, nullable: bool = False, min_length: int = 0, **extra) -> dict:
    schema: dict = {"type": "string", "maxLength": max_length, **extra}
    if min_length:
        schema["minLength"] = min_length
    if nullable:
        schema["nullable"] = True
    return schema


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
    "Beneficiary": {
        "type": "object",
        "description": "The person whose access changes. Created on first use; the names "
        "and e-mail address are taken only then.",
        "required": ["username"],
        "additionalProperties": False,
        "properties": {
            "username": _text(150, min_length=1),
            "first_name": _text(150, nullable=True),
            "last_name": _text(150, nullable=True),
            "email": _text(254, nullable=True, description="An e-mail address."),
        },
    },
    "SubmitRequest": {
        "type": "object",
        "required": ["beneficiary", "endpoint", "operation"],
        "example": {
            "beneficiary": {
                "username": "ada",
                "first_name": "Ada",
                "last_name": "Lovelace",
                "email": "ada@example.com",
            },
            "endpoint": "crm",
            "operation": "create_account",
            "account_name": "ada",
            "entitlements": [],
            "justification": "New hire in the analytics team.",
        },
        "additionalProperties": False,
        "properties": {
            "beneficiary": _ref("Beneficiary"),
            "endpoint": _text(100, min_length=1, description="The name of an endpoint."),
            "operation": {"type": "string", "enum": list(Operation.values)},
            "account_name": _text(
                200, nullable=True, description="Defaults to the beneficiary's username."
            ),
            "entitlements": {
                "type": "array",
                "nullable": True,
                "maxItems": 100,
                "items": _text(200),
                "description": "Required for add_access and remove_access: one task each.",
            },
            "justification": _text(5000, nullable=True),
            "upstream_approver": _text(
                200,
                nullable=True,
                description="Who approved upstream; accepted only from a trusted client.",
            ),
        },
    },
    "CancelRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"reason": _text(2000, nullable=True)},
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
    "OtrsInvokerEvent": {
        "type": "object",
        "description": "What Znuny's Ticket::Generic invoker sends. Only the TicketID is read; "
        "the state in it is never trusted.",
        "properties": {
            "Event": {
                "type": "object",
                "properties": {"TicketID": {"oneOf": [{"type": "string"}, {"type": "integer"}]}},
            },
            "Ticket": {"type": "object"},
        },
    },
    "Empty": {"type": "object", "additionalProperties": False},
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["ok"]}},
    },
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
        "schema": _text(200, min_length=1),
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
    def query(name: str, schema: dict, description: str) -> dict:
        return {
            "name": name,
            "in": "query",
            "required": False,
            "schema": schema,
            "description": description,
        }

    return [
        query("status", {"type": "string", "enum": list(AccessRequest.Status.values)}, "Filter."),
        query("endpoint", _text(100, min_length=1), "Filter by endpoint name."),
        query("operation", {"type": "string", "enum": list(Operation.values)}, "Filter."),
        query("cursor", {"type": "string", "minLength": 1}, "`next` of the previous page."),
        query("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 50}, "Page."),
    ]


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
            "summary": "Cancel a request and its unfinished tasks. Open OTRS tickets stay "
            "open for the agents to close. Cancelling a cancelled request answers it unchanged.",
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
                "403": _error("The token is wrong, or the connection has no webhook secret."),
                "404": _error("No such connection."),
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
