"""Console pages."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, render

from .models import AccessRequest, Identity


@login_required
def overview(request):
    return render(request, "tickets/overview.html", {})


@login_required
def request_detail(request, pk):
    access_request = get_object_or_404(AccessRequest, pk=pk)
    return render(request, "tickets/request_detail.html", {"access_request": access_request})


@login_required
def identity_detail(request, username):
    identity = get_object_or_404(Identity, username=username)
    return render(request, "tickets/identity.html", {"identity": identity})
