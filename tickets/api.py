"""JSON API for upstream systems, and the OTRS webhook receiver."""

from django.http import JsonResponse


def health(request):
    return JsonResponse({"status": "ok"})
