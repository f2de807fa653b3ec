"""Console pages for connections: the list, one connection, and the "Test connection" button.

These pages show states (token valid until …, last test, recent calls), never a secret:
token values are not read at all, and stored texts are masked again before rendering.
Changing a connection happens in the admin; the pages link there for people who may.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from . import selectors
from .models import Connection
from .services import connection_check

VIEW = "connections.view_connection"
TEST = "connections.change_connection"


@login_required
@require_GET
@permission_required(VIEW, raise_exception=True)
def connection_list(request: HttpRequest) -> HttpResponse:
    return render(request, "connections/list.html", {"rows": selectors.connection_list()})


@login_required
@require_GET
@permission_required(VIEW, raise_exception=True)
def connection_detail(request: HttpRequest, name: str) -> HttpResponse:
    connection = get_object_or_404(Connection, name=name)
    return render(
        request, "connections/detail.html", {"page": selectors.connection_page(connection)}
    )


@login_required
@require_POST
@permission_required(TEST, raise_exception=True)
def connection_test(request: HttpRequest, name: str) -> HttpResponse:
    """Log in to the ticket system and run the connection's test call; say how it went."""
    connection = get_object_or_404(Connection, name=name)
    result = connection_check(connection=connection)
    secrets = connection.secret_values()
    message = selectors.mask(result.message, secrets)
    if result.ok:
        messages.success(request, f"Connection test passed: {message}")
    else:
        messages.error(request, f"Connection test failed: {message}")
    return redirect(connection)
