from django.urls import path

from . import views

app_name = "connections"

urlpatterns = [
    path("<slug:name>/", views.connection_detail, name="detail"),
]
