"""What SCIM clients (Entra ID, Okta, any RFC 7643/7644 client) pushed to an endpoint: the
desired state of its Users and Groups, and the requests each change became.

A ScimUser is an account the client wants on the endpoint; a ScimGroup is an entitlement of
the endpoint; a ScimMember says the client wants that user to hold that entitlement. Each
request submitted to bring the inventory (Account, AccountEntitlement) to that state is
linked by a ScimChange, so a SCIM read can say where each change stands. The state changes
themselves happen in tickets/services/scim.py.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower

from connections.models import Endpoint

from . import limits


class ScimUser(models.Model):
    """An account a SCIM client wants on an endpoint, as it pushed it."""

    scim_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    endpoint = models.ForeignKey(Endpoint, on_delete=models.PROTECT, related_name="scim_users")
    identity = models.ForeignKey(
        "tickets.Identity", on_delete=models.PROTECT, related_name="scim_users"
    )
    user_name = models.CharField(max_length=limits.ACCOUNT_NAME)
    external_id = models.CharField(max_length=limits.SCIM_EXTERNAL_ID, blank=True)
    display_name = models.CharField(max_length=limits.PERSON_NAME, blank=True)
    active = models.BooleanField(default=True)
    # The resource as the client last pushed it (without id and meta), returned on reads.
    document = models.JSONField(default=dict)
    justification = models.TextField(max_length=limits.JUSTIFICATION, blank=True)
    version = models.PositiveIntegerField(default=1)
    client = models.ForeignKey(
        "tickets.ApiClient", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                Lower("user_name"),
                "endpoint",
                condition=Q(deleted_at__isnull=True),
                name="one_scim_user_per_name",
            )
        ]

    def __str__(self) -> str:
        return f"{self.user_name}@{self.endpoint.name}"


class ScimGroup(models.Model):
    """An entitlement of an endpoint, as a SCIM Group."""

    scim_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    endpoint = models.ForeignKey(Endpoint, on_delete=models.PROTECT, related_name="scim_groups")
    display_name = models.CharField(max_length=limits.ENTITLEMENT)
    # The entitlements this group named before a rename: its members are to lose them.
    former_names = models.JSONField(default=list, blank=True)
    external_id = models.CharField(max_length=limits.SCIM_EXTERNAL_ID, blank=True)
    document = models.JSONField(default=dict)
    justification = models.TextField(max_length=limits.JUSTIFICATION, blank=True)
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    members = models.ManyToManyField(ScimUser, through="ScimMember", related_name="scim_groups")

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                "endpoint",
                "display_name",
                condition=Q(deleted_at__isnull=True),
                name="one_scim_group_per_entitlement",
            )
        ]

    def __str__(self) -> str:
        return f"{self.display_name}@{self.endpoint.name}"


class ScimMember(models.Model):
    """A SCIM client wants this user to hold this group's entitlement (`wanted`), or it
    removed the user from the group (not `wanted`: the entitlement is to be removed).

    An entitlement granted elsewhere (the console, the API) has no row here, so SCIM never
    removes what it never managed.
    """

    group = models.ForeignKey(ScimGroup, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(ScimUser, on_delete=models.CASCADE, related_name="memberships")
    wanted = models.BooleanField(default=True)
    display = models.CharField(max_length=limits.PERSON_NAME, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["group", "user"], name="one_scim_membership")
        ]


class ScimChange(models.Model):
    """A request submitted for a SCIM user: its account (group empty) or one entitlement."""

    user = models.ForeignKey(ScimUser, on_delete=models.CASCADE, related_name="changes")
    group = models.ForeignKey(
        ScimGroup, on_delete=models.CASCADE, null=True, blank=True, related_name="changes"
    )
    request = models.OneToOneField(
        "tickets.AccessRequest", on_delete=models.CASCADE, related_name="scim_change"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
