"""Root URLs: the console, the JSON API, the Django admin, the login pages and the probes
(/healthz, /readyz, /metrics)."""

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.utils.functional import lazy
from django.views.generic import RedirectView
from mozilla_django_oidc.views import OIDCLogoutView

from otrsbridge import monitoring
from tickets.api import error_handler

admin.site.site_header = "OTRS Bridge setup"
admin.site.site_title = "OTRS Bridge setup"
admin.site.index_title = "Connections, applications and jobs"
admin.site.site_url = "/"

logout_view = OIDCLogoutView.as_view() if settings.OIDC_ENABLED else auth_views.LogoutView.as_view()

urlpatterns = [
    path("healthz", monitoring.healthz, name="healthz"),
    path("readyz", monitoring.readyz, name="readyz"),
    path("metrics", monitoring.metrics, name="metrics"),
    # Browsers ask for /favicon.ico on their own (pages link the SVG); no 404 for that. The
    # URL is looked up at the first request: at import, the manifest of hashed static names
    # may not exist yet (`manage.py check` before `collectstatic`).
    path("favicon.ico", RedirectView.as_view(url=lazy(static, str)("favicon.svg"))),
    path(
        "login/",
        auth_views.LoginView.as_view(
            extra_context={"sso_name": settings.OIDC_PROVIDER_NAME if settings.OIDC_ENABLED else ""}
        ),
        name="login",
    ),
    # With single sign-on, logout also ends the IdP session (otrsbridge/sso.py); Setup's own
    # "Log out" goes the same way.
    path("logout/", logout_view, name="logout"),
    path("admin/logout/", logout_view),
    path("admin/", admin.site.urls),
    path("connections/", include("connections.urls")),
    path("api/v1/", include("tickets.api_urls")),
    path("scim/v2/", include("tickets.scim_urls")),
    path("", include("tickets.urls")),
]
if settings.OIDC_ENABLED:
    # /oidc/authenticate/ (the sign-in button) and /oidc/callback/ (where the IdP returns).
    urlpatterns.insert(0, path("oidc/", include("mozilla_django_oidc.urls")))

# Django's own error answers: JSON under /api/v1/, its usual pages elsewhere.
handler400 = error_handler(400)
handler403 = error_handler(403)
handler404 = error_handler(404)
handler500 = error_handler(500)
