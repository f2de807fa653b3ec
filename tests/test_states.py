"""The facts about each state are declared once, beside its enum, and declared completely.

Adding a state means one row per declaration in tickets/models.py; these tests say which row
is missing. Everything else (badges, board, overview, services) derives from them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings

from connections.documents import OUTCOMES
from connections.models import ApiCall
from otrsbridge.templatetags.console import LABELS, TONES, badge
from tickets.models import AccessRequest, JobRun, ProvisioningTask, TaskDisplay
from tickets.selectors import BOARD_COLUMNS, OVERVIEW_GROUPS

Task = ProvisioningTask

# Every (enum, tones) pair a badge may show.
BADGED = [
    (Task.Status, Task.TONES),
    (AccessRequest.Status, AccessRequest.TONES),
    (JobRun.Status, JobRun.TONES),
    (ApiCall.Outcome, ApiCall.TONES),
]
IDS = ["task", "request", "job run", "api call"]


def stylesheet_tones() -> set[str]:
    css = (Path(settings.BASE_DIR) / "static" / "css" / "app.css").read_text()
    return set(re.findall(r"\.tone-([a-z]+)\s*\{", css))


@pytest.mark.parametrize(("enum", "tones"), BADGED, ids=IDS)
def test_every_state_has_a_label_and_a_tone_the_stylesheet_colours(enum, tones):
    assert set(tones) == set(enum.values)
    assert all(label.strip() for label in enum.labels)
    assert set(tones.values()) <= stylesheet_tones()


def test_states_that_share_a_name_share_its_label_and_tone():
    """A badge sees only the string ("failed" of a task, a request or a job run): the enums
    must not disagree on what it looks like."""
    for enum, tones in BADGED:
        for value, label in enum.choices:
            assert LABELS[value] == label, value
            assert TONES[value] == tones[value], value


def test_every_task_state_has_a_board_column_and_an_overview_group():
    assert set(Task.DISPLAY) == set(Task.Status.values)
    for shown in Task.DISPLAY.values():
        assert isinstance(shown, TaskDisplay)
        assert shown.column in Task.Column.values
        assert shown.group in Task.Group.values
    assert Task.TONES == {status: shown.tone for status, shown in Task.DISPLAY.items()}


def test_board_and_overview_show_every_task_state_exactly_once():
    on_board = [s for column in BOARD_COLUMNS for s in column.statuses]
    in_overview = [s for _, _, statuses in OVERVIEW_GROUPS for s in statuses]
    assert sorted(on_board) == sorted(Task.Status.values)
    assert sorted(in_overview) == sorted(Task.Status.values)
    assert [c.key for c in BOARD_COLUMNS] == Task.Column.values
    assert [key for key, _, _ in OVERVIEW_GROUPS] == Task.Group.values
    # No empty column or group: each was declared for some state.
    assert all(column.statuses for column in BOARD_COLUMNS)
    assert all(statuses for _, _, statuses in OVERVIEW_GROUPS)


@pytest.mark.parametrize("model", [Task, AccessRequest], ids=["task", "request"])
def test_transitions_name_every_state_and_lead_only_to_states(model):
    statuses = set(model.Status.values)
    assert set(model.TRANSITIONS) == statuses
    for frm, targets in model.TRANSITIONS.items():
        assert targets <= statuses, frm
    assert set(model.TERMINAL) <= statuses
    # Every state but the first is reachable: a state nothing leads to is a forgotten row.
    reached = {to for targets in model.TRANSITIONS.values() for to in targets}
    first = model._meta.get_field("status").default
    assert statuses - reached <= {first}


def test_task_sets_and_outcome_map_name_task_states():
    statuses = set(Task.Status.values)
    assert set(Task.DUE) <= statuses - set(Task.TERMINAL)
    assert set(Task.RETRYABLE) <= statuses
    # Every outcome a connection's status mapping may name moves the task somewhere.
    assert set(Task.OUTCOME_STATUS) == set(OUTCOMES)
    assert set(Task.OUTCOME_STATUS.values()) <= statuses


def test_badge_uses_the_declared_label_and_tone():
    html = str(badge(Task.Status.RETRY_WAIT))
    assert 'class="badge tone-warn"' in html and "Waiting to retry" in html
    assert "tone-neutral" in str(badge("no_such_state"))


def test_templates_ask_the_models_not_raw_status_strings():
    """`status == 'failed'` in a template restates a fact the models declare."""
    raw = re.compile(r"status\s*==\s*['\"]")
    found = [
        f"{path.relative_to(settings.BASE_DIR)}: {line.strip()[:80]}"
        for path in (Path(settings.BASE_DIR) / "templates").rglob("*.html")
        for line in path.read_text().splitlines()
        if raw.search(line)
    ]
    assert found == []
