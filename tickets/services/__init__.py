"""Every state change of requests and tasks, and the event it records.

Views, the API, admin actions, management commands and django-q2 jobs all call these
functions; none of them changes a status itself. Rules that hold everywhere here:

- A transition is a conditional UPDATE (`filter(id=…, status=<from>)`) plus its TaskEvent,
  in one transaction. When the row has moved on, nothing is written and TransitionError
  says what state it is in now.
- No HTTP call happens inside a transaction. A ticket system can be slow; a row lock or
  SQLite's write lock must never wait for it.
- A claimed task is marked `outcome_unknown` in the claim's transaction, before any
  create call is sent. A worker killed mid-call, a timeout or a reset therefore leave a
  mark, and the next attempt searches OTRS for the task's correlation key before it
  creates anything (reconcile-before-create).

One module per subject: transitions (Actor, the guarded move, events), requests (submit,
decide, cancel, retry), context (a task's template values), provisioning and
provisioning_store (claims, attempts, storing their outcome), polling, completion,
conversation (notes the bridge adds to tickets, the agent's closing article), reopening
(tickets reopened after their task finished), callbacks (signed deliveries to API clients),
retention (old call log rows). This
package never imports tickets.jobs (the jobs import it); instant provisioning reaches the
queue through the provisioning_wanted signal.
"""

from . import accounts, governance, notifications
from .callbacks import (
    client_clear_callback,
    client_set_callback,
    deliveries_send_due,
    deliveries_wanted,
    delivery_redeliver,
    requests_changed,
)
from .context import task_context
from .conversation import note_retry, note_send, note_ticket, notes_send_due, notes_wanted
from .polling import PollResult, ticket_apply_status, ticket_refresh, tickets_poll
from .provisioning import (
    ProvisionResult,
    due_tasks,
    provision_due,
    provisioning_wanted,
    task_claim_next,
    task_claim_next_specific,
    task_provision,
)
from .reopening import watched as watched_tickets
from .requests import (
    request_approve,
    request_cancel,
    request_reject,
    request_submit,
    task_cancel,
    task_retry,
    tasks_retry,
)
from .retention import PruneResult, api_calls_prune
from .transitions import (
    Actor,
    RequestInvalid,
    TransitionError,
    request_moved,
    worker_name,
    worker_parts,
)

# What the rest of the project uses (views, API, admin, commands, jobs, bench, tests).
__all__ = [
    "Actor",
    "accounts",
    "governance",
    "notifications",
    "api_calls_prune",
    "PollResult",
    "ProvisionResult",
    "PruneResult",
    "RequestInvalid",
    "TransitionError",
    "client_clear_callback",
    "client_set_callback",
    "deliveries_send_due",
    "deliveries_wanted",
    "delivery_redeliver",
    "note_retry",
    "note_send",
    "note_ticket",
    "notes_send_due",
    "notes_wanted",
    "request_moved",
    "requests_changed",
    "watched_tickets",
    "due_tasks",
    "provision_due",
    "provisioning_wanted",
    "request_approve",
    "request_cancel",
    "request_reject",
    "request_submit",
    "task_cancel",
    "task_claim_next",
    "task_claim_next_specific",
    "task_context",
    "task_provision",
    "task_retry",
    "tasks_retry",
    "ticket_apply_status",
    "ticket_refresh",
    "tickets_poll",
    "worker_name",
    "worker_parts",
]
