from django.urls import path

from . import api

app_name = "api"

urlpatterns = [
    path("health", api.health, name="health"),
]
