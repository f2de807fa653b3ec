from django.urls import path

from . import views

app_name = "tickets"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("requests/<int:pk>/", views.request_detail, name="request_detail"),
    path("identities/<str:username>/", views.identity_detail, name="identity"),
]
