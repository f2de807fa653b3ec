"""Root URLs: the console, the JSON API, the Django admin and the login pages."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

admin.site.site_header = "OTRS Bridge setup"
admin.site.site_title = "OTRS Bridge setup"
admin.site.index_title = "Connections, applications and jobs"
admin.site.site_url = "/"

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("connections/", include("connections.urls")),
    path("api/v1/", include("tickets.api_urls")),
    path("", include("tickets.urls")),
]
