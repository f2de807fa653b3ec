"""An OTRS-correct set of documents and a Connection built from them, for the engine tests.

The documents follow the rules of shared/reference/saviynt-ticketing-json.md §8: SessionID
auth in POST bodies, Article at top level, GET parameters in the query string (OTRS ignores
GET bodies), batch TicketGet with comma-separated ids, exact state names, every default
state mapped, and the correlation key in the ticket title, a hit proven by a TicketGet.
"""

from __future__ import annotations

import copy
from typing import Any

import requests

from connections import context
from connections.models import Connection

DEFAULT_STATES_MAP = {
    "new": "open",
    "open": "open",
    "closed successful": "completed",
    "closed unsuccessful": "discontinued",
    "removed": "discontinued",
    "pending reminder": "pending",
    "pending auto close+": "pending",
    "pending auto close-": "pending",
    "merged": "open",
}


def connection_json(
    base_url: str, *, user: str = "bridge", password: str = "bridge-demo-password"
) -> dict:
    return {
        "authentications": {
            "otrs": {
                "authType": "oauth2",
                "url": f"{base_url}/Session",
                "httpMethod": "POST",
                "httpParams": {
                    "UserLogin": "${connection.userName}",
                    "Password": "${connection.password}",
                },
                "httpContentType": "application/json",
                "tokenResponsePath": "SessionID",
                "tokenType": "",
                "properties": {"userName": user, "password": password},
                "maxRefreshTryCount": 3,
                "tokenLifetimeSeconds": 3000,
                "maskInLogs": ["password", "SessionID"],
            }
        }
    }


def create_ticket_json(base_url: str) -> dict:
    return {
        "call": [
            {
                "name": "TicketCreate",
                "connection": "otrs",
                "url": f"{base_url}/Ticket",
                "httpMethod": "POST",
                "httpParams": {
                    "SessionID": "${access_token}",
                    "Ticket": {
                        "Title": "[${correlationKey}] ${task.operation} for ${user.username} on ${endpoint}",
                        "Queue": "${endpoint.queue}",
                        "State": "new",
                        "Priority": "3 normal",
                        "CustomerUser": "${user.email}",
                    },
                    "Article": {
                        "CommunicationChannel": "Internal",
                        "Subject": "Access request ${task}",
                        "Body": "User: ${user.firstname} ${user.lastname}\nEntitlements: ${entitlements}",
                        "ContentType": "text/plain; charset=utf8",
                    },
                },
                "httpContentType": "application/json",
                "ticketidPath": "TicketID",
                "ticketNumberPath": "TicketNumber",
                "successResponses": {"statusCode": [200]},
            }
        ],
        "searchCall": {
            "name": "TicketSearch",
            "connection": "otrs",
            "url": f"{base_url}/Ticket?Title=*${{correlationKey}}*&SessionID=${{access_token}}",
            "httpMethod": "GET",
            "ticketidPath": "TicketID[0]",
        },
        "keyCheckCall": {
            "name": "TicketGetKeys",
            "connection": "otrs",
            "url": f"{base_url}/Ticket/${{ticketIDs}}?AllArticles=1&ArticleLimit=1&SessionID=${{access_token}}",
            "httpMethod": "GET",
            "ticketListPath": "Ticket",
            "ticketIdPath": "TicketID",
            "ticketNumberPath": "TicketNumber",
            "keyPaths": ["Title", "Article[0].Body"],
        },
    }


def ticket_status_json(base_url: str) -> dict:
    return {
        "call": [
            {
                "name": "TicketGet",
                "connection": "otrs",
                "url": f"{base_url}/Ticket/${{ticketIDs}}?SessionID=${{access_token}}",
                "httpMethod": "GET",
                "batch": {"size": 50, "ticketListPath": "Ticket", "ticketIdPath": "TicketID"},
                "ticketStatusPath": "State",
                "stateTypePath": "StateType",
                "ticketNumberPath": "TicketNumber",
                "changedPath": "Changed",
                "ticketStatusValue": ["closed successful"],
                "disContinueStatusValue": ["closed unsuccessful", "removed"],
                "statusMap": dict(DEFAULT_STATES_MAP),
            }
        ],
        "mergeTargetCall": {
            "name": "TicketHistoryGet",
            "connection": "otrs",
            "url": f"{base_url}/TicketHistory/${{ticketID}}?SessionID=${{access_token}}",
            "httpMethod": "GET",
            "entryListPath": "TicketHistory[0].History",
            "entryMatch": {"HistoryType": "Merged"},
            "targetPath": "Name",
            "targetPattern": r"%%[^%]*%%\d+%%[^%]*%%(\d+)",
        },
    }


def documents(base_url: str, **credentials: str) -> dict[str, Any]:
    """The four documents as keyword arguments for validate_documents."""
    return {
        "connection_json": connection_json(base_url, **credentials),
        "create_ticket_json": create_ticket_json(base_url),
        "ticket_status_json": ticket_status_json(base_url),
        "config_json": {"connectTimeout": 2, "readTimeout": 5, "retryCount": 1, "retryWait": 0.05},
    }


def make_connection(base_url: str, *, name: str = "otrs", **credentials: str) -> Connection:
    """A saved Connection pointing at `base_url`, secrets encrypted as the admin would store them."""
    docs = documents(base_url, **credentials)
    connection = Connection(
        name=name,
        create_ticket_json=docs["create_ticket_json"],
        ticket_status_json=docs["ticket_status_json"],
        config_json=docs["config_json"],
    )
    connection.set_connection_json(copy.deepcopy(docs["connection_json"]))
    connection.save()
    return connection


def sample_task_context(correlation_key: str = "BR-TEST0001") -> dict[str, Any]:
    """The declared sample context, with the values the engine tests assert on spelled here."""
    return context.sample(
        values={
            "user.username": "jdoe",
            "user.firstname": "Jane",
            "user.lastname": "Doe",
            "user.email": "jane.doe@example.com",
            "task": 42,
            "task.operation": "Add access",
            "endpoint": "payroll",
            "entitlements": ["payroll-viewer"],
            "correlationKey": correlation_key,
        },
        open_values={"endpoint": {"queue": "Raw"}},
    )


def sim_config(sim: Any, **knobs: Any) -> None:
    """Turn the simulator's fault knobs (latency_ms, fail_rate, html_errors, session_ttl…)."""
    requests.post(f"{sim.url}/_sim/config", json=knobs, timeout=5).raise_for_status()


def sim_calls(sim: Any) -> dict[str, int]:
    """How often each operation was called on the simulator."""
    return requests.get(f"{sim.url}/_sim/stats", timeout=5).json()["calls"]
