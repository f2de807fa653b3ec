"""The SCIM 2.0 service of each endpoint (RFC 7643/7644), under /scim/v2/<endpoint>/.

Entra ID, Okta or any SCIM client pushes Users and Groups here; tickets/services/scim.py
turns each change into access requests, and the resources read back show where each one
stands. The protocol is scim2-models': it reads and checks every body, applies PATCH
operations, evaluates filters and writes the answers. This module authenticates, maps
resources to the service's states and back, and answers every error in SCIM's shape
(`schemas`, `status`, `scimType`, `detail`), never as an HTML page.

Authentication: an API client's bearer token (tickets/api.py), allowed only on the
endpoints listed in its `scim_endpoints`. The token is never logged or stored in clear.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any, Union

from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from pydantic import ValidationError
from scim2_models import (
    URN,
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    ComplexAttribute,
    Context,
    EnterpriseUser,
    Error,
    ETag,
    Extension,
    Filter,
    Group,
    ListResponse,
    Meta,
    Mutability,
    Patch,
    PatchOp,
    ResourceType,
    ResponseParameters,
    Returned,
    SCIMException,
    ScimPolicy,
    SearchRequest,
    ServiceProviderConfig,
    Sort,
    User,
)
from scim2_models.path import AttrPath, CompareOperator, Comparison

from connections.models import Endpoint
from connections.paths import loads_strict

from .api import authenticate
from .api_schemas import ApiError, read_body
from .models import (
    MAX_DB_INT,
    AccessRequest,
    Account,
    AccountEntitlement,
    ApiClient,
    Operation,
    ProvisioningTask,
    ScimChange,
    ScimGroup,
    ScimUser,
)
from .services import scim as service

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/scim+json"
MAX_BODY_BYTES = 256 * 1024
MAX_RESULTS = 200  # one page of a list, at most
# What the service tolerates, as Entra ID and Okta send it: attributes no schema declares
# are dropped, a PATCH `remove` may select by value, and a path filter that matches no
# entry (emails[type eq "work"].value) creates it.
POLICY = ScimPolicy(
    unknown=ScimPolicy.Unknown.ignore,
    remove_value_as_filter=ScimPolicy.RemoveValue.apply,
    unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create,
)
# Where each change stands, in the words the bridge's extension uses.
PENDING, TICKET_OPEN, COMPLETED, FAILED = "pending", "ticket open", "completed", "failed"


# --- the bridge's extension schemas -----------------------------------------------------------


class ProvisioningChange(ComplexAttribute):
    """One request the service submitted for this resource, and where it stands."""

    operation: Annotated[str | None, Mutability.read_only] = None
    entitlement: Annotated[str | None, Mutability.read_only] = None
    user: Annotated[str | None, Mutability.read_only] = None
    status: Annotated[str | None, Mutability.read_only] = None
    request: Annotated[str | None, Mutability.read_only] = None
    ticket_number: Annotated[str | None, Mutability.read_only] = None


# Where each change stands is returned when asked for (`?attributes=` naming the extension
# or one of these), as SCIM returns what a client does not write: a client comparing what
# it wrote with what it reads back never sees a difference it did not make.
_Shown = Annotated[str | None, Mutability.read_only, Returned.request]


class BridgeUser(Extension):
    """The justification the client gives the requests this user causes; and, when asked
    for, where the account stands: its latest account change, its ticket, every change."""

    __schema__ = URN("urn:ietf:params:scim:schemas:extension:otrsbridge:2.0:User")

    justification: str | None = None
    status: _Shown = None
    operation: _Shown = None
    request: _Shown = None
    ticket_number: _Shown = None
    changes: Annotated[list[ProvisioningChange] | None, Mutability.read_only, Returned.request] = (
        None
    )


class BridgeGroup(Extension):
    """The justification of its members' access requests; and, when asked for, the
    endpoint the entitlement belongs to and the latest change of each member."""

    __schema__ = URN("urn:ietf:params:scim:schemas:extension:otrsbridge:2.0:Group")

    justification: str | None = None
    endpoint: _Shown = None
    changes: Annotated[list[ProvisioningChange] | None, Mutability.read_only, Returned.request] = (
        None
    )


UserModel: Any = User[Union[EnterpriseUser, BridgeUser]]  # noqa: UP007 (a Union, as scim2-models reads it)
GroupModel: Any = Group[BridgeGroup]  # type: ignore[misc]
RESOURCES: dict[str, Any] = {"Users": UserModel, "Groups": GroupModel}
SCHEMAS: list[Any] = [UserModel, GroupModel, EnterpriseUser, BridgeUser, BridgeGroup]


# --- answers ----------------------------------------------------------------------------------


def _of(generic: Any, model: Any) -> Any:
    """A scim2-models message parameterised by the resource model it carries."""
    return generic[model]


def answer(data: dict, status: int = 200, headers: dict | None = None) -> HttpResponse:
    response = HttpResponse(json.dumps(data), status=status, content_type=CONTENT_TYPE)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def error(status: int, detail: str, scim_type: str | None = None, **headers: str) -> HttpResponse:
    body = Error(status=status, scim_type=scim_type, detail=detail).model_dump()
    return answer(body, status, {k.replace("_", "-"): v for k, v in headers.items()})


class ScimRequest(HttpRequest):
    api_client: ApiClient
    endpoint: Endpoint


def scim_view(*methods: str) -> Callable:
    """Wrap a SCIM view: CSRF-exempt, the bearer token and its endpoint scope, and every
    refusal (ours or scim2-models') answered in SCIM's error shape."""

    def decorate(view: Callable) -> Callable:
        @csrf_exempt
        @wraps(view)
        def wrapper(request: ScimRequest, endpoint: str, *args: Any, **kwargs: Any):
            try:
                request.api_client = authenticate(request)
                request.endpoint = _endpoint_for(request.api_client, endpoint)
                if request.method not in methods:
                    return error(
                        405, f"{request.method} is not allowed here.", Allow=", ".join(methods)
                    )
                with POLICY:
                    return view(request, *args, **kwargs)
            except ApiError as exc:
                return error(exc.status, exc.detail, **exc.headers)
            except ValidationError as exc:
                first = Error.from_validation_errors(exc)[0]
                return answer(first.model_dump(), 400)
            except SCIMException as exc:
                return answer(exc.to_error().model_dump(), exc.status)
            except service.ScimNotFound as exc:
                return error(404, str(exc))
            except service.ScimConflict as exc:
                return error(409, str(exc), "uniqueness")
            except service.ScimRefused as exc:
                return error(400, str(exc), "invalidValue")
            except Exception:
                log.exception("SCIM %s %s failed", request.method, request.path)
                return error(500, "The bridge failed to answer; the error is logged.")

        return wrapper

    return decorate


def _endpoint_for(client: ApiClient, name: str) -> Endpoint:
    """The endpoint this client may provision; any other name answers the same 404."""
    found = (
        client.scim_endpoints.filter(name=name).select_related("security_system").first()
        if "\x00" not in name
        else None
    )
    if found is None:
        raise ApiError(404, "not_found", "This token has no SCIM service at this address.")
    if not client.trusted:
        # Its changes would wait for an approver the identity provider knows nothing of.
        raise ApiError(
            403, "forbidden", "A SCIM client must be trusted: an admin marks its API client so."
        )
    return found


def _body(request: HttpRequest) -> dict:
    """The body as a JSON object, strictly decoded (no duplicate key, no NUL, bounded)."""
    raw = read_body(request, limit=MAX_BODY_BYTES)
    try:
        data = loads_strict(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ApiError(400, "invalid", "The body is not UTF-8 text.") from None
    except ValueError as exc:
        raise _syntax(f"The body is {exc}." if raw.strip() else "The body is empty.") from None
    if not isinstance(data, dict):
        raise _syntax("The body must be a JSON object.")
    return data


def _syntax(detail: str) -> SCIMException:
    exc = SCIMException(detail=detail)
    exc.scim_type = "invalidSyntax"
    return exc


def _base(request: ScimRequest) -> str:
    """The endpoint's service root, from the URL configuration (no prefix written here)."""
    root = reverse("scim:not_found", kwargs={"path": request.endpoint.name})
    return request.build_absolute_uri(root)


# --- discovery --------------------------------------------------------------------------------


@scim_view("GET")
def service_provider_config(request: ScimRequest) -> HttpResponse:
    config = ServiceProviderConfig(
        patch=Patch(supported=True),
        bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
        filter=Filter(supported=True, max_results=MAX_RESULTS),
        change_password=ChangePassword(supported=False),
        sort=Sort(supported=False),
        etag=ETag(supported=False),
        authentication_schemes=[
            AuthenticationScheme(
                type="oauthbearertoken",
                name="Bearer token",
                description="An API client's token: Authorization: Bearer <token>",
                primary=True,
            )
        ],
        meta=Meta(
            resource_type="ServiceProviderConfig",
            location=f"{_base(request)}/ServiceProviderConfig",
        ),
    )
    return answer(config.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE))


def _resource_types(request: ScimRequest) -> list[ResourceType]:
    found: list[ResourceType] = []
    for model in (UserModel, GroupModel):
        kind = ResourceType.from_resource(model)
        kind.meta = Meta(
            resource_type="ResourceType", location=f"{_base(request)}/ResourceTypes/{kind.id}"
        )
        found.append(kind)
    return found


def _schemas(request: ScimRequest) -> list:
    found = []
    for model in SCHEMAS:
        schema = model.to_schema()
        schema.meta = Meta(resource_type="Schema", location=f"{_base(request)}/Schemas/{schema.id}")
        found.append(schema)
    return found


def _discovery(request: ScimRequest, items: list, key: str | None) -> HttpResponse:
    if key is not None:
        for item in items:
            if item.id == key:
                return answer(item.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE))
        return error(404, f"There is no {key!r} here.")
    listed = _of(ListResponse, type(items[0]))(
        total_results=len(items), start_index=1, items_per_page=len(items), resources=items
    )
    return answer(listed.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE))


@scim_view("GET")
def resource_types(request: ScimRequest, key: str | None = None) -> HttpResponse:
    return _discovery(request, _resource_types(request), key)


@scim_view("GET")
def schemas(request: ScimRequest, key: str | None = None) -> HttpResponse:
    return _discovery(request, _schemas(request), key)


# --- where each change stands -----------------------------------------------------------------


def change_status(access_request: AccessRequest) -> tuple[str, str]:
    """(status, ticket number) of a request the service submitted."""
    tasks = list(access_request.tasks.all())
    number = next((t.ticket.ticket_number for t in tasks if t.ticket), "")
    if access_request.status == AccessRequest.Status.COMPLETED:
        return COMPLETED, number
    if access_request.status in AccessRequest.TERMINAL:
        return FAILED, number
    open_states = (ProvisioningTask.Status.TICKET_OPEN, ProvisioningTask.Status.TICKET_PENDING)
    if any(t.status in open_states for t in tasks):
        return TICKET_OPEN, number
    return PENDING, number


def _changes(where: dict) -> list[ScimChange]:
    tasks = ProvisioningTask.objects.select_related("ticket")
    return list(
        ScimChange.objects.filter(**where)
        .select_related("request", "user", "group")
        .prefetch_related(Prefetch("request__tasks", queryset=tasks))
        .order_by("id")
    )


def _change(change: ScimChange) -> ProvisioningChange:
    status, number = change_status(change.request)
    return ProvisioningChange(
        operation=change.request.get_operation_display(),
        entitlement=change.group.display_name if change.group else None,
        user=str(change.user.scim_id),
        status=status,
        request=change.request.number,
        ticket_number=number or None,
    )


# --- resources --------------------------------------------------------------------------------


def _meta(request: ScimRequest, kind: str, row: ScimUser | ScimGroup, changes: list) -> Meta:
    stamps = [row.updated_at, *(c.request.updated_at for c in changes)]
    statuses = "".join(change_status(c.request)[0][0] for c in changes)
    return Meta(
        resource_type=kind[:-1],
        created=row.created_at,
        last_modified=max(stamps),
        location=f"{_base(request)}/{kind}/{row.scim_id}",
        version=f'W/"{row.version}-{len(changes)}{statuses}"',
    )


def user_document(request: ScimRequest, user: ScimUser, model: Any = UserModel) -> Any:
    """The User as the client pushed it, with its id."""
    resource = model.model_validate(user.document)
    resource.id = str(user.scim_id)
    return resource


def group_document(request: ScimRequest, group: ScimGroup, model: Any = GroupModel) -> Any:
    """The Group as the client pushed it, with its id and the members it wants now."""
    resource = model.model_validate(group.document)
    resource.id = str(group.scim_id)
    members = group.memberships.filter(wanted=True, user__deleted_at__isnull=True)
    resource.members = [
        model.Members(
            value=str(m.user.scim_id),
            ref=f"{_base(request)}/Users/{m.user.scim_id}",
            type="User",
            display=m.display or m.user.user_name,
        )
        for m in members.select_related("user").order_by("id")
    ] or None
    return resource


def user_resource(request: ScimRequest, user: ScimUser) -> Any:
    """The User as the service answers it: with where each change stands, and meta."""
    resource = user_document(request, user, UserModel)
    changes = _changes({"user": user})
    account = [c for c in changes if c.group_id is None]
    latest = {}
    for change in changes:
        latest[change.group_id] = change
    shown = resource[BridgeUser] or BridgeUser()
    shown.changes = [_change(c) for c in latest.values()] + _waiting(user, latest) or None
    if account:
        last = _change(account[-1])
        shown.status, shown.operation = last.status, last.operation
        shown.request, shown.ticket_number = last.request, last.ticket_number
    elif user.active:
        shown.status = COMPLETED  # an account of the inventory, adopted as it was
    resource[BridgeUser] = shown
    resource.meta = _meta(request, "Users", user, changes)
    return resource


def _waiting(user: ScimUser, latest: dict[int | None, ScimChange]) -> list[ProvisioningChange]:
    """The access the client wants for this user that no request asks for yet (it waits
    for the account): pending too."""
    if not user.active or user.deleted_at is not None:
        return []
    account = Account.objects.filter(identity=user.identity, endpoint=user.endpoint, active=True)
    held = set(
        AccountEntitlement.objects.filter(account__in=account).values_list("entitlement", flat=True)
    )
    waiting = []
    for member in user.memberships.filter(
        wanted=True, group__deleted_at__isnull=True
    ).select_related("group"):
        last = latest.get(member.group_id)
        asked = last is not None and last.request.operation == Operation.ADD_ACCESS
        if member.group.display_name not in held and not asked:
            waiting.append(
                ProvisioningChange(
                    operation=Operation.ADD_ACCESS.label,
                    entitlement=member.group.display_name,
                    user=str(user.scim_id),
                    status=PENDING,
                )
            )
    return waiting


def group_resource(request: ScimRequest, group: ScimGroup) -> Any:
    """The Group as the service answers it: with each member's latest change, and meta."""
    resource = group_document(request, group, GroupModel)
    changes = _changes({"group": group})
    latest = {c.user_id: c for c in changes}
    shown = resource[BridgeGroup] or BridgeGroup()
    shown.endpoint = request.endpoint.display_name or request.endpoint.name
    shown.changes = [_change(c) for c in latest.values()] or None
    resource[BridgeGroup] = shown
    resource.meta = _meta(request, "Groups", group, changes)
    return resource


def _dump(resource: Any, asked: Any) -> dict:
    """The resource as a read answers it, with the `attributes` or `excludedAttributes`
    asked (RFC 7644 §3.9): a query string's, or a SearchRequest's."""
    if not isinstance(asked, ResponseParameters):
        asked = _of(ResponseParameters, type(resource)).model_validate(
            {k: asked[k] for k in ("attributes", "excludedAttributes") if asked.get(k)}
        )
    return resource.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE, response_parameters=asked)


def _stored(resource: Any) -> dict:
    """What is kept of a pushed resource: what the client set (a request's dump leaves out
    what is read-only), without the members, kept as rows, and without a password, which
    is never stored."""
    document = resource.model_dump(scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST)
    for key in ("id", "meta", "password", "members"):
        document.pop(key, None)
    return document


def _justification(resource: Any, extension: type) -> str:
    shown = resource[extension]
    return (shown.justification or "") if shown else ""


def user_state(resource: Any) -> service.UserState:
    if not resource.user_name:
        raise service.ScimRefused("userName is required.")
    emails = resource.emails or []
    email = next((e.value for e in emails if e.primary), None) or (
        emails[0].value if emails else ""
    )
    name = resource.name
    return service.UserState(
        user_name=resource.user_name,
        document=_stored(resource),
        external_id=resource.external_id or "",
        display_name=resource.display_name or "",
        active=resource.active is not False,
        first_name=(name.given_name or "") if name else "",
        last_name=(name.family_name or "") if name else "",
        email=email or "",
        justification=_justification(resource, BridgeUser),
    )


def group_state(resource: Any) -> service.GroupState:
    if not resource.display_name:
        raise service.ScimRefused("displayName is required.")
    return service.GroupState(
        display_name=resource.display_name,
        document=_stored(resource),
        external_id=resource.external_id or "",
        members={m.value: m.display or "" for m in resource.members or [] if m.value},
        justification=_justification(resource, BridgeGroup),
    )


# --- Users and Groups -------------------------------------------------------------------------


@scim_view("GET", "POST")
def users(request: ScimRequest) -> HttpResponse:
    return _collection(request, "Users")


@scim_view("GET", "POST")
def groups(request: ScimRequest) -> HttpResponse:
    return _collection(request, "Groups")


@scim_view("GET", "PUT", "PATCH", "DELETE")
def user(request: ScimRequest, scim_id: str) -> HttpResponse:
    return _one(request, "Users", scim_id)


@scim_view("GET", "PUT", "PATCH", "DELETE")
def group(request: ScimRequest, scim_id: str) -> HttpResponse:
    return _one(request, "Groups", scim_id)


_OPS: dict[str, tuple[Any, ...]] = {
    "Users": (
        user_state,
        user_document,
        user_resource,
        service.scim_user_create,
        service.scim_user_update,
        service.scim_user_delete,
    ),
    "Groups": (
        group_state,
        group_document,
        group_resource,
        service.scim_group_create,
        service.scim_group_update,
        service.scim_group_delete,
    ),
}


def _collection(request: ScimRequest, kind: str, search: bool = False) -> HttpResponse:
    model = written = RESOURCES[kind]
    to_state, _, render, create, _, _ = _OPS[kind]
    if request.method == "POST" and not search:
        resource = written.model_validate(
            _body(request), scim_ctx=Context.RESOURCE_CREATION_REQUEST
        )
        row = create(
            client=request.api_client, endpoint=request.endpoint, wanted=to_state(resource)
        )
        shown = render(request, row)
        return answer(
            shown.model_dump(scim_ctx=Context.RESOURCE_CREATION_RESPONSE),
            201,
            {"Location": shown.meta.location},
        )
    service.scim_adopt_inventory(request.endpoint)
    params = _body(request) if search else request.GET
    query = _of(SearchRequest, model).model_validate(
        {k: params[k] for k in _SEARCH_PARAMETERS if k in params}
    )
    rows, exact = _narrowed(kind, request.endpoint, query.filter)
    # Past any row there can be (an OFFSET the database could not hold), a page is empty.
    start = min(max(query.start_index or 1, 1), MAX_DB_INT)
    count = min(MAX_RESULTS if query.count is None else query.count, MAX_RESULTS)
    if exact:
        # The database answered the filter: count there, render one page.
        total = rows.count()
        page = [render(request, row) for row in rows[start - 1 : start - 1 + count]]
    else:
        found = [r for r in (render(request, row) for row in rows) if query.filter.match(r)]
        total, page = len(found), found[start - 1 : start - 1 + count]
    listed = _of(ListResponse, model)(
        total_results=total, start_index=start, items_per_page=len(page), resources=page
    )
    body = listed.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE)
    body["Resources"] = [_dump(r, query) for r in page]
    return answer(body)


_SEARCH_PARAMETERS = ("filter", "startIndex", "count", "attributes", "excludedAttributes")


@scim_view("POST")
def users_search(request: ScimRequest) -> HttpResponse:
    return _collection(request, "Users", search=True)


@scim_view("POST")
def groups_search(request: ScimRequest) -> HttpResponse:
    return _collection(request, "Groups", search=True)


@scim_view("POST")
def root_search(request: ScimRequest) -> HttpResponse:
    return error(
        501,
        "Search one resource type at a time: POST /Users/.search or /Groups/.search.",
    )


# The attributes a filter `eq` is answered from the database for (the others are matched
# on the rendered resources); `userName` and a Group's `displayName` compare without case.
_COLUMNS = {
    "Users": {"username": "user_name__iexact", "externalid": "external_id", "id": "scim_id"},
    "Groups": {"displayname": "display_name__iexact", "externalid": "external_id", "id": "scim_id"},
}


def _narrowed(kind: str, endpoint: Endpoint, query_filter: Any) -> tuple[Any, bool]:
    """The endpoint's rows the filter can match, and whether they are exactly its answer
    (no filter, or one `eq` the database answers)."""
    model = ScimUser if kind == "Users" else ScimGroup
    rows = model.objects.filter(endpoint=endpoint, deleted_at__isnull=True).order_by("id")
    if query_filter is None:
        return rows, True
    node = query_filter.ast
    if (
        isinstance(node, Comparison)
        and node.op == CompareOperator.eq
        and isinstance(node.attr_path, AttrPath)
        and node.attr_path.uri is None
        and node.attr_path.sub_attr is None
        and isinstance(node.value, str)
    ):
        column = _COLUMNS[kind].get(node.attr_path.attr.lower())
        if column == "scim_id":
            return rows.filter(scim_id__in=service.valid_uuids([node.value])), True
        if column:
            return rows.filter(**{column: node.value}), True
    return rows, False


def _one(request: ScimRequest, kind: str, scim_id: str) -> HttpResponse:
    written = RESOURCES[kind]
    to_state, document, render, _, update, delete = _OPS[kind]
    client, endpoint = request.api_client, request.endpoint
    if request.method == "DELETE":
        delete(client=client, endpoint=endpoint, scim_id=scim_id)
        return HttpResponse(status=204)
    if request.method == "GET":
        service.scim_adopt_inventory(endpoint)
        rows = model_rows(kind, endpoint).filter(scim_id__in=service.valid_uuids([scim_id]))
        row = rows.first()
        if row is None:
            raise service.ScimNotFound(f"There is no {kind[:-1]} {scim_id!r} here.")
        return answer(_dump(render(request, row), request.GET))
    body = _body(request)
    if request.method == "PUT":
        replacement = written.model_validate(body, scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST)

        def change(row: Any) -> Any:
            replacement.replace(document(request, row))
            return to_state(replacement)

    else:
        patch = _of(PatchOp, written).model_validate(body, scim_ctx=Context.RESOURCE_PATCH_REQUEST)

        def change(row: Any) -> Any:
            current = document(request, row)
            patch.patch(current)
            return to_state(current)

    row = update(client=client, endpoint=endpoint, scim_id=scim_id, change=change)
    return answer(_dump(render(request, row), request.GET))


def model_rows(kind: str, endpoint: Endpoint) -> Any:
    model = ScimUser if kind == "Users" else ScimGroup
    return model.objects.filter(endpoint=endpoint, deleted_at__isnull=True)


@csrf_exempt
def not_found(request: HttpRequest, path: str = "") -> HttpResponse:
    """Every other address under /scim/v2 answers SCIM's 404, never an HTML page."""
    return error(404, f"There is no SCIM resource at {request.path}.")
