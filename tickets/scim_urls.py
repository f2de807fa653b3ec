"""/scim/v2/<endpoint>/…: the SCIM 2.0 service of each endpoint (tickets/scim.py)."""

from django.urls import path, re_path

from . import scim

app_name = "scim"

urlpatterns = [
    path("<str:endpoint>/ServiceProviderConfig", scim.service_provider_config, name="config"),
    path("<str:endpoint>/ResourceTypes", scim.resource_types, name="resource_types"),
    path("<str:endpoint>/ResourceTypes/<str:key>", scim.resource_types, name="resource_type"),
    path("<str:endpoint>/Schemas", scim.schemas, name="schemas"),
    path("<str:endpoint>/Schemas/<str:key>", scim.schemas, name="schema"),
    path("<str:endpoint>/.search", scim.root_search, name="search"),
    path("<str:endpoint>/Users/.search", scim.users_search, name="users_search"),
    path("<str:endpoint>/Groups/.search", scim.groups_search, name="groups_search"),
    path("<str:endpoint>/Users", scim.users, name="users"),
    path("<str:endpoint>/Users/<str:scim_id>", scim.user, name="user"),
    path("<str:endpoint>/Groups", scim.groups, name="groups"),
    path("<str:endpoint>/Groups/<str:scim_id>", scim.group, name="group"),
    re_path(r"^(?P<path>.*)$", scim.not_found, name="not_found"),
]
