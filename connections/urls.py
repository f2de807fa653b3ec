"""Console pages for connections (mounted at /connections/)."""

from django.urls import path

from . import views

app_name = "connections"

urlpatterns = [
    path("", views.connection_list, name="list"),
    path("<slug:name>/", views.connection_detail, name="detail"),
    path("<slug:name>/test/", views.connection_test, name="test"),
]
