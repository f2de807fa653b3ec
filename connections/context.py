"""The variables a CreateTicketJSON may use, declared once: name, meaning, sample value.

Validation (spec), the admin preview (services.sample_context), the README's list and
the tests derive from this declaration, and the tickets layer fills exactly this shape
for a real task, so a template that validates also renders for a real task.

A context is a nested dict: `${user.email}` is context["user"]["email"], and the value
of `${user}` itself is stored under "_" (see templating.lookup). Roots in OPEN_NAMESPACES
take further keys from data (an identity's custom properties, an endpoint's attributes),
so `${endpoint.queue}` validates whatever the endpoint holds. The variables of the other
scopes (`${access_token}`, `${connection.X}`, `${response.<call>.message.…}`, a status
call's `${ticketID}`) belong to spec.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Variable:
    name: str  # "user.firstname", or a root such as "user" (the value of ${user} itself)
    meaning: str  # one line for admins (README, admin help)
    sample: Any  # the preview's value


VARIABLES: tuple[Variable, ...] = (
    Variable("user", "the username of the person who gets the access", "jdoe"),
    Variable("user.username", "the same username", "jdoe"),
    Variable("user.firstname", "their first name", "Jane"),
    Variable("user.lastname", "their last name", "Doe"),
    Variable(
        "user.displayname", "first and last name, or the username when both are empty", "Jane Doe"
    ),
    Variable("user.email", "their email address", "jane.doe@example.com"),
    Variable("user.manager", "their manager's username, or empty", "msmith"),
    Variable(
        "requestor",
        "who filed the request: a console username, or api:NAME for an API client",
        "asmith",
    ),
    Variable(
        "requestor.email",
        "the requester's email address; empty for API clients",
        "a.smith@example.com",
    ),
    Variable("task", "the task's id, as text", "1042"),
    Variable("task.id", "the task's id, as a number", 1042),
    Variable("task.operation", "what the task does, as a code (e.g. add_access)", "add_access"),
    Variable("task.operationLabel", "what the task does, in words", "Add access"),
    Variable(
        "task.entitlement",
        "the entitlement the task grants or removes; empty for account tasks",
        "payroll-viewer",
    ),
    Variable("task.accountName", "the account on the endpoint", "jdoe"),
    Variable(
        "task.inventoryNote",
        "empty, or a warning that the account is not in the bridge's inventory (an endpoint "
        "that accepts requests for unknown accounts)",
        "(not in the bridge's inventory: check that it exists before changing it)",
    ),
    Variable("task.requestNumber", "the number of the access request", "REQ-000042"),
    Variable(
        "task.justification",
        "why the access is needed, as the requester wrote it",
        "Needs read access for the quarterly payroll audit.",
    ),
    Variable("endpoint", "the endpoint's name", "payroll"),
    Variable("endpoint.name", "the same name", "payroll"),
    Variable("endpoint.displayName", "the endpoint's display name, or its name", "Payroll"),
    Variable("securitySystem", "the application's name (its security system)", "sap-hr"),
    Variable("securitySystem.name", "the same name", "sap-hr"),
    Variable("securitySystem.displayName", "the application's display name, or its name", "SAP HR"),
    Variable(
        "entitlements",
        "every entitlement of the request, a list (JSON inside a longer text)",
        ["payroll-viewer"],
    ),
    Variable("entitlement", "the task's entitlement, or empty", "payroll-viewer"),
    Variable("account", "the account name (the same as task.accountName)", "jdoe"),
    Variable(
        "correlationKey",
        "the bridge's key for the task: put it in the title and the first article (and "
        "keyField sends it in a dynamic field) so searchCall finds the ticket again",
        "BR-SAMPLE0001",
    ),
)

# Roots whose further keys come from data, beside the declared ones (which win).
OPEN_NAMESPACES: dict[str, str] = {
    "user": "any custom property of the identity",
    "endpoint": "any attribute of the endpoint (e.g. queue)",
}

NAMES: tuple[str, ...] = tuple(v.name for v in VARIABLES)
_PARENTS = frozenset(name.partition(".")[0] for name in NAMES if "." in name)


def build(
    values: Mapping[str, Any], *, open_values: Mapping[str, Mapping[str, Any]] | None = None
) -> dict:
    """The nested context from a flat map {declared name: value}.

    Every declared name must be given, and only those: a missing one would fail a real
    task ("has no value"), an extra one would render in a preview and nowhere else.
    `open_values` (e.g. {"endpoint": endpoint.attributes}) adds keys under an open root.
    """
    missing = [name for name in NAMES if name not in values]
    undeclared = sorted(str(name) for name in values if name not in NAMES)
    closed = sorted(str(root) for root in open_values or {} if root not in OPEN_NAMESPACES)
    problems = []
    if missing:
        problems.append(f"missing: {', '.join(missing)}")
    if undeclared:
        problems.append(f"not declared: {', '.join(undeclared)}")
    if closed:
        problems.append(f"not an open namespace: {', '.join(closed)}")
    if problems:
        raise ValueError(f"task context: {'; '.join(problems)}")
    extra = {
        root: {str(k): v for k, v in keys.items()} for root, keys in (open_values or {}).items()
    }
    context: dict[str, Any] = {}
    for name in NAMES:
        root, _, key = name.partition(".")
        if key or root in _PARENTS or root in extra:
            context.setdefault(root, dict(extra.get(root, {})))[key or "_"] = values[name]
        else:
            context[root] = values[name]
    return context


def sample(
    *,
    values: Mapping[str, Any] | None = None,
    open_values: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict:
    """build() of every sample value; `values` replaces some of them (e.g. a real endpoint)."""
    return build(
        {**{v.name: v.sample for v in VARIABLES}, **(values or {})}, open_values=open_values
    )


def _shown(value: Any) -> str:
    return value if isinstance(value, str) and value else json.dumps(value, ensure_ascii=False)


def markdown_table() -> str:
    """The README's list of the variables (`manage.py template_variables --markdown`)."""
    rows = ["| variable | meaning | sample |", "|---|---|---|"]
    rows += [f"| `${{{v.name}}}` | {v.meaning} | `{_shown(v.sample)}` |" for v in VARIABLES]
    rows += [f"| `${{{root}.<key>}}` | {meaning} | |" for root, meaning in OPEN_NAMESPACES.items()]
    return "\n".join(rows) + "\n"
