"""Console pages for connections: detail, test connection and template preview."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, render

from .models import Connection


@login_required
def connection_detail(request, name):
    connection = get_object_or_404(Connection, name=name)
    return render(request, "connections/detail.html", {"connection": connection})
