"""Single sign-on with OpenID Connect (mozilla-django-oidc), the IdP's groups giving the
console's roles.

- A person who signs in through the IdP gets a console user named by OIDC_USERNAME_CLAIM
  (then email, then sub), with no password: they cannot use the local login.
- Their roles are set at every sign-in from the groups claim, through OIDC_ROLE_GROUPS
  (role → IdP group names); roles they no longer have in the IdP are taken away. Someone in
  none of those groups is refused, with a message on the login page.
- A local account (one with a password: the break-glass admins) is never taken over by an
  IdP account of the same name, and SSO never makes a superuser.
- The claims are the ID token's with the userinfo endpoint's over them, when one is set
  (Entra ID sends groups and app roles only in the ID token). The ID token must name this
  client in `aud` and, with OIDC_ISSUER, the provider in `iss`.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.models import Group, User
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.http import HttpRequest
from django.shortcuts import resolve_url
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from tickets.services.governance import ADMINS_GROUP

log = logging.getLogger("otrsbridge.logins")

USERNAME_MAX = User._meta.get_field("username").max_length or 150


def provider_logout_url(request: HttpRequest) -> str:
    """Where "Log out" sends the browser (OIDC_OP_LOGOUT_URL_METHOD): for a person who signed
    in through the IdP, when its end-session endpoint is set, that endpoint (RP-initiated
    logout), which ends their session there too and sends them back to the login page;
    otherwise the login page at once. The login page's address must be registered at the
    IdP as a post-logout redirect URI."""
    back = request.build_absolute_uri(resolve_url(settings.LOGOUT_REDIRECT_URL))
    id_token = request.session.get("oidc_id_token")
    endpoint = settings.OIDC_OP_LOGOUT_ENDPOINT
    if not (endpoint and id_token):
        return back
    query = urlencode(
        {
            "id_token_hint": id_token,
            "client_id": settings.OIDC_RP_CLIENT_ID,
            "post_logout_redirect_uri": back,
        }
    )
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"


class SSORefused(SuspiciousOperation):
    """A sign-in the IdP allowed and the bridge does not; the message says why."""


def roles_from_claims(claims: dict[str, Any]) -> list[str]:
    """The console roles the groups claim gives, in the order of OIDC_ROLE_GROUPS."""
    groups = claims.get(settings.OIDC_GROUPS_CLAIM) or []
    if isinstance(groups, str):
        groups = [groups]
    held = {str(g) for g in groups}
    return [role for role, names in settings.OIDC_ROLE_GROUPS.items() if held & set(names)]


class RoleMappingBackend(OIDCAuthenticationBackend):
    """mozilla-django-oidc's code flow, with our user matching and role mapping."""

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict) -> Any:
        # Checked here rather than in verify_token, which the library calls outside its
        # handling of refusals: a wrong aud or iss then answered a bare 400 page.
        audience = payload.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if settings.OIDC_RP_CLIENT_ID not in audiences:
            self._refuse(payload, "the ID token was issued to another client (aud)")
        if settings.OIDC_ISSUER and payload.get("iss") != settings.OIDC_ISSUER:
            self._refuse(payload, "the ID token comes from another issuer (iss)")
        return super().get_or_create_user(access_token, id_token, payload)

    def get_userinfo(self, access_token: str, id_token: str, payload: dict) -> dict:
        claims = dict(payload)
        if settings.OIDC_OP_USER_ENDPOINT:
            claims.update(super().get_userinfo(access_token, id_token, payload))
        return claims

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        if not self.get_username(claims):
            self._refuse(claims, "the identity provider sent no user name, email or subject")
        if not roles_from_claims(claims):
            self._refuse(
                claims,
                "your account at the identity provider is in none of the groups that give a "
                "role in OTRS Bridge; ask an administrator to add you to one",
            )
        return True

    def get_username(self, claims: dict[str, Any]) -> str:
        for name in (settings.OIDC_USERNAME_CLAIM, "email", "sub"):
            value = claims.get(name)
            if isinstance(value, str) and value.strip():
                return value.strip()[:USERNAME_MAX]
        return ""

    def filter_users_by_claims(self, claims: dict[str, Any]):
        return self.UserModel.objects.filter(username=self.get_username(claims))

    def create_user(self, claims: dict[str, Any]) -> User:
        with transaction.atomic():
            user = self.UserModel.objects.create_user(self.get_username(claims))
            return self._apply(user, claims)

    def update_user(self, user: User, claims: dict[str, Any]) -> User:
        if user.has_usable_password():
            self._refuse(
                claims,
                f"{user.get_username()} is a local account; sign in with its password below",
            )
        with transaction.atomic():
            return self._apply(user, claims)

    def _apply(self, user: User, claims: dict[str, Any]) -> User:
        """Names, email and roles as the IdP says now; never a password, never superuser."""
        roles = roles_from_claims(claims)
        user.set_unusable_password()
        user.first_name = str(claims.get("given_name", user.first_name))[:150]
        user.last_name = str(claims.get("family_name", user.last_name))[:150]
        if not (user.first_name or user.last_name) and isinstance(claims.get("name"), str):
            first, _, last = claims["name"].partition(" ")
            user.first_name, user.last_name = first[:150], last[:150]
        user.email = str(claims.get("email", user.email))[:254]
        user.is_staff = ADMINS_GROUP in roles
        user.is_superuser = False
        user.save()
        keep = user.groups.exclude(name__in=settings.OIDC_ROLE_GROUPS)
        user.groups.set([*keep, *Group.objects.filter(name__in=roles)])
        log.info(
            "signed in through %s: %r with roles %s",
            settings.OIDC_PROVIDER_NAME,
            user.get_username(),
            ", ".join(roles),
        )
        return user

    def _refuse(self, claims: dict[str, Any], why: str) -> None:
        who = self.get_username(claims) or "(no name)"
        log.warning("single sign-on refused for %r: %s", who[:100], why)
        request = getattr(self, "request", None)
        if request is not None:
            messages.error(request, f"Single sign-on refused: {why}.")
        raise SSORefused(why)
