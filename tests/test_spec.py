"""Document validation: every defect is reported, each as `<Document>: <json.path>: <problem>`."""

from __future__ import annotations

import copy
import json

import pytest

from connections import paths
from connections.documents import BatchSpec, ConfigSpec
from connections.paths import PathNotFound, get_path
from connections.spec import SpecError, validate_documents
from tests.engine_fixtures import documents

BASE = "https://otrs.example.com/otrs/nph-genericinterface.pl/Webservice/GenericTicketConnectorREST"

# Saviynt's OTRS package (shared/reference/saviynt-ticketing-json.md §8), as the admin sees it.
SAVIYNT_BODY = (
    '{"Ticket": {"Title":"Ticket Created by Saviynt","QueueID":"101", "TypeID":"2","State":"New",'
    '"Priority":"3 normal","CustomerUser":"igaadmin","Article":{"Subject":"FirstData Application Request",'
    '"CommunicationChannel":"Internal","Body":"Saviynt Task ID: ${task}\\\\r\\\\nUser Firstname: '
    "${user.firstname}\\\\r\\\\nUser Lastname: ${user.lastname}\\\\r\\\\nAccount: ${task.accountName}"
    '\\\\r\\\\nApplication Name: ${endpoint}","ContentType":"text/plain; charset=utf8"}}}}'
)
SAVIYNT_CREATE = {
    "call": [
        {
            "name": "call1",
            "connection": "userAuth",
            "url": "https://bos.managed-otrs.com/otrs/nph-genericinterface.pl/Webservice/SaviyntTicketConnector/"
            "TicketCreate?UserLogin=<username>&Password=${connection.Password}",
            "httpMethod": "POST",
            "httpParams": SAVIYNT_BODY,
            "httpHeaders": {"Authorization": "${access_token}"},
            "httpContentType": "application/json",
            "ticketidPath": "TicketID",
            "successResponses": {"statusCode": [200, 201]},
        }
    ]
}
SAVIYNT_STATUS = {
    "call": [
        {
            "name": "call1",
            "connection": "userAuth",
            "url": "https://@HOSTNAME@/otrs/nph-genericinterface.pl/Webservice/SaviyntTicketConnector/TicketGet"
            "?Password=${connection.Password}&UserLogin=@USERNAME@&TicketID=${ticketID}",
            "httpMethod": "POST",
            "httpHeaders": {"Authorization": "${access_token}"},
            "ticketStatusValue": ["closed successful"],
            "ticketStatusPath": "Ticket[0].State",
            "disContinueStatusValue": ["closed unsuccessful", "removed"],
            "successResponses": [{"Ticket[0].State": "${ticketStatusValue}"}],
        }
    ]
}
SAVIYNT_CONNECTION = {
    "authentications": {
        "userAuth": {
            "authType": "oauth2",
            "url": f"{BASE}/Session",
            "httpMethod": "POST",
            "httpParams": {
                "UserLogin": "${connection.userName}",
                "Password": "${connection.password}",
            },
            "tokenResponsePath": "SessionID",
            "properties": {"userName": "bridge", "password": "pw"},
        }
    }
}


def errors_of(**changes) -> list[str]:
    docs = {**documents(BASE), **changes}
    with pytest.raises(SpecError) as caught:
        validate_documents(**docs)
    assert str(caught.value) == "\n".join(caught.value.errors)
    return caught.value.errors


def changed(document: str, edit) -> dict:
    """documents(BASE)[document] after `edit(doc)` changed a copy of it."""
    doc = copy.deepcopy(documents(BASE)[document])
    edit(doc)
    return {document: doc}


def create_call(**changes) -> dict:
    return changed("create_ticket_json", lambda d: d["call"][0].update(changes))


def status_call(**changes) -> dict:
    return changed("ticket_status_json", lambda d: d["call"][0].update(changes))


def auth_block(**changes) -> dict:
    return changed("connection_json", lambda d: d["authentications"]["otrs"].update(changes))


# --- the good documents ----------------------------------------------------------------------


def test_the_otrs_documents_parse_into_typed_objects():
    docs = validate_documents(**documents(BASE))

    otrs = docs.connection.auths["otrs"]
    assert (otrs.auth_type, otrs.token_response_path, otrs.login_user) == (
        "oauth2",
        "SessionID",
        "bridge",
    )
    assert (
        otrs.refreshable and otrs.max_refresh_try_count == 3 and otrs.token_lifetime_seconds == 3000
    )
    assert "bridge-demo-password" not in repr(otrs)
    assert (docs.create.ticket_id_call, docs.create.ticket_id_path) == ("TicketCreate", "TicketID")
    assert docs.create.search_call.ticket_id_path == "TicketID[0]"
    assert docs.status.batch == BatchSpec(50, "Ticket", "TicketID")
    assert docs.status.merge_target.states == ("merged",)
    assert docs.config == ConfigSpec(2, 5, 1, 0.05, True, "")


def test_documents_may_be_json_strings_and_config_may_be_absent():
    docs = documents(BASE)
    as_text = {k: json.dumps(v) for k, v in docs.items() if k != "config_json"}

    parsed = validate_documents(**as_text)

    assert parsed.config == ConfigSpec()
    assert parsed.create.calls[0].http_params == docs["create_ticket_json"]["call"][0]["httpParams"]


def test_saviynt_config_json_shape_is_accepted():
    config = {
        "connectionTimeoutConfig": {
            "connectionTimeout": 10,
            "readTimeout": 60,
            "retryCount": 3,
            "retryWait": 2,
        }
    }

    parsed = validate_documents(**{**documents(BASE), "config_json": config})

    assert parsed.config == ConfigSpec(10, 60, 3, 2, True, "")


def test_top_level_ticketid_path_and_chained_calls():
    second = {
        "name": "call2",
        "connection": "otrs",
        "url": f"{BASE}/Ticket/${{response.TicketCreate.message.TicketID}}",
        "httpMethod": "PATCH",
        "httpParams": {
            "SessionID": "${access_token}",
            "Ticket": {"Title": "${response.TicketCreate.message.TicketNumber}"},
        },
    }

    def edit(doc):
        doc["call"].append(second)
        doc["ticketidPath"] = "call2.message.TicketID"

    parsed = validate_documents(**{**documents(BASE), **changed("create_ticket_json", edit)})

    assert (parsed.create.ticket_id_call, parsed.create.ticket_id_path) == ("call2", "TicketID")


# --- Saviynt's package --------------------------------------------------------------------------


def test_saviynt_package_defects_are_all_reported():
    with pytest.raises(SpecError) as caught:
        validate_documents(
            connection_json=SAVIYNT_CONNECTION,
            create_ticket_json=SAVIYNT_CREATE,
            ticket_status_json=SAVIYNT_STATUS,
        )

    errors = caught.value.errors
    assert (
        "CreateTicketJSON: call[0].httpParams: not valid JSON at line 1 column 450 (extra data)"
        in errors
    )
    assert (
        "CreateTicketJSON: call[0].url: Password= in the URL: credentials in a URL reach access logs; "
        "put them in the body"
    ) in errors
    assert (
        "CreateTicketJSON: call[0].url: ${connection.Password}: the auth block 'userAuth' has no property "
        "'Password' (it has: password, userName)"
    ) in errors
    assert (
        "TicketStatusJSON: call[0].url: @HOSTNAME@ was never filled in; set it when importing the package"
        in errors
    )
    assert (
        "TicketStatusJSON: call[0].url: @USERNAME@ was never filled in; set it when importing the package"
        in errors
    )
    assert (
        "TicketStatusJSON: call[0].successResponses[0].Ticket[0].State: ${ticketStatusValue} cannot be used "
        "here; give the literal value"
    ) in errors
    assert len(errors) == 8, errors


def test_article_nested_inside_ticket_is_refused():
    body = json.loads(SAVIYNT_BODY[:-1])
    body.update(SessionID="${access_token}", Title="${correlationKey}")

    errors = errors_of(**create_call(httpParams=body))

    assert errors == [
        "CreateTicketJSON: call[0].httpParams.Ticket.Article: Article is nested inside Ticket; OTRS TicketCreate "
        "needs Ticket and Article side by side at the top level (it answers TicketCreate.MissingParameter otherwise)",
        # Saviynt's body also spells the state "New" (defect 6 of the reference).
        "CreateTicketJSON: call[0].httpParams.Ticket.State: 'New' is not an OTRS state name; OTRS spells it 'new'",
    ]


def test_the_article_check_is_narrow():
    body = {
        "Ticket": {"Article": {"x": 1}},
        "SessionID": "${access_token}",
        "Title": "${correlationKey}",
    }

    validate_documents(
        **{**documents(BASE), **create_call(url=f"{BASE}/Something", httpParams=body)}
    )


# --- one defect at a time -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            create_call(
                httpParams={
                    "SessionID": "${access_token}",
                    "Ticket": {"Title": "${user.name.toUpperCase()}"},
                }
            ),
            "CreateTicketJSON: call[0].httpParams.Ticket.Title: ${user.name.toUpperCase()} is an expression; "
            "only variable names are allowed",
        ),
        (
            create_call(url=f"{BASE}/Ticket?x=${{cond ? 'a' : 'b'}}"),
            "CreateTicketJSON: call[0].url: ${cond ? 'a' : 'b'} is an expression; only variable names are allowed",
        ),
        (
            create_call(
                url=f"{BASE}/Ticket?x=${{for (Map m : response.X.message.result){{m.id}}}}"
            ),
            "CreateTicketJSON: call[0].url: ${for (Map m : response.X.message.result){m.id}} is an expression; "
            "only variable names are allowed",
        ),
        (
            create_call(url=f"{BASE}/Ticket?x=${{endpoint.queue|${{user.email}}}}"),
            "CreateTicketJSON: call[0].url: ${endpoint.queue|${user.email}}: a default after | is "
            "plain text; it cannot hold $, { or }",
        ),
        (
            create_call(url=f"{BASE}/Ticket?x=${{endpoint.queue || 'Raw'}}"),
            "CreateTicketJSON: call[0].url: ${endpoint.queue || 'Raw'} is an expression; "
            "only variable names are allowed",
        ),
        (
            create_call(url=f"{BASE}/Ticket?x=${{ user.email }}"),
            "CreateTicketJSON: call[0].url: ${ user.email } is an expression; only variable names are allowed",
        ),
        (
            create_call(url=f"{BASE}/Ticket?x=${{user.email"),
            "CreateTicketJSON: call[0].url: '${user.email': ${ is never closed",
        ),
        (
            create_call(url=f"{BASE}/Ticket?x=${{userName}}"),
            "CreateTicketJSON: call[0].url: ${userName}: unknown variable here; allowed are ${access_token}, "
            "${account}, ${correlationKey}, ${endpoint}, ${endpoint.*}, ${endpoint.displayName}, "
            "${endpoint.name}, ${entitlement}, ${entitlements}, ${requestor}, ${requestor.email}, "
            "${securitySystem}, ${securitySystem.displayName}, ${securitySystem.name}, ${task}, "
            "${task.accountName}, ${task.entitlement}, ${task.id}, ${task.inventoryNote}, "
            "${task.justification}, ${task.operation}, ${task.operationLabel}, ${task.requestNumber}, ${user}, ${user.*}, "
            "${user.displayname}, ${user.email}, ${user.firstname}, ${user.lastname}, ${user.manager}, "
            "${user.username}, ${connection.password}, ${connection.userName}",
        ),
        (
            create_call(url=f"{BASE}/Ticket?x=${{response.Later.message.id}}"),
            "CreateTicketJSON: call[0].url: ${response.Later.message.id}: Later is not an earlier call of this document",
        ),
        (
            create_call(connection="userAuth"),
            "CreateTicketJSON: call[0].connection: 'userAuth' is not an auth block of ConnectionJSON (it has: otrs)",
        ),
        (
            create_call(httpParams='{"Ticket": {"Title": "a", "Title": "b"}}'),
            "CreateTicketJSON: call[0].httpParams: not valid JSON: duplicate key 'Title'",
        ),
        (
            create_call(httpParams='{"Ticket": NaN}'),
            "CreateTicketJSON: call[0].httpParams: not valid JSON: NaN is not allowed in JSON",
        ),
        (
            create_call(httpParams=12),
            "CreateTicketJSON: call[0].httpParams: must be a JSON object or a JSON string, not a number",
        ),
        (
            create_call(httpHeaders=["Authorization"]),
            "CreateTicketJSON: call[0].httpHeaders: must be an object, not a list",
        ),
        (
            create_call(httpMethod="FETCH"),
            "CreateTicketJSON: call[0].httpMethod: 'FETCH' is not an HTTP method this engine sends",
        ),
        (
            create_call(ticketidPath="Ticket[x]"),
            "CreateTicketJSON: call[0].ticketidPath: 'Ticket[x]' is not a valid path (expected keys like a.b[0].c)",
        ),
        (
            create_call(url=f"{BASE}/Ticket?SessionID=${{access_token}}"),
            "CreateTicketJSON: call[0].url: SessionID= in the URL: credentials in a URL reach access logs; "
            "put them in the body",
        ),
        (
            create_call(
                httpParams={"SessionID": "abcdefgh", "Ticket": {"Title": "${correlationKey}"}}
            ),
            "CreateTicketJSON: call[0].httpParams.SessionID: a literal SessionID would be stored unencrypted; "
            "refer to it as ${connection.<property>} or ${access_token}",
        ),
        (
            create_call(httpHeaders={"Authorization": "Basic YnJpZGdlOnB3"}),
            "CreateTicketJSON: call[0].httpHeaders.Authorization: a literal Authorization would be stored "
            "unencrypted; refer to it as ${connection.<property>} or ${access_token}",
        ),
        (
            changed(
                "create_ticket_json",
                lambda d: d["searchCall"].update(url=f"{BASE}/Ticket?SessionID=${{access_token}}"),
            ),
            "CreateTicketJSON: searchCall: must search for ${correlationKey}, or it could adopt another task's ticket",
        ),
        (
            changed(
                "create_ticket_json",
                lambda d: d["searchCall"].update(httpParams={"Title": "${correlationKey}"}),
            ),
            "CreateTicketJSON: searchCall.httpParams: a GET call cannot carry httpParams: OTRS ignores GET bodies; "
            "put the parameters in the URL query string",
        ),
        (
            create_call(ticketidPath=""),
            "CreateTicketJSON: ticketidPath is required: set it in the call whose response holds the ticket id, "
            "or at the top level as <call>.message.<path>",
        ),
        (
            {"create_ticket_json": {"call": []}},
            "CreateTicketJSON: call: is required: a list of call objects",
        ),
        (
            status_call(ticketStatusPath=None),
            "TicketStatusJSON: call[0]: ticketStatusPath is required",
        ),
        (
            status_call(statusMap={"merged": "done"}),
            "TicketStatusJSON: call[0].statusMap.merged: 'done' is not an outcome; use one of completed, "
            "discontinued, failed, pending, open",
        ),
        (
            status_call(statusMap={"closed successful": "failed"}),
            "TicketStatusJSON: call[0].statusMap.closed successful: says 'failed' but the state lists say 'completed'",
        ),
        (
            status_call(ticketStatusValue=["removed"]),
            "TicketStatusJSON: call[0]: 'removed' is in both ticketStatusValue and disContinueStatusValue",
        ),
        (
            status_call(url=f"{BASE}/Ticket/${{ticketID}}?SessionID=${{access_token}}"),
            "TicketStatusJSON: call[0].url: ${ticketID}: unknown variable here; allowed are ${access_token}, "
            "${ticketIDs}, ${connection.password}, ${connection.userName}",
        ),
        (
            status_call(batch={"size": 0, "ticketListPath": "Ticket"}),
            "TicketStatusJSON: call[0].batch.size: must be between 1 and 500, not 0",
        ),
        (
            status_call(ticketStatusValue=5),
            "TicketStatusJSON: call[0].ticketStatusValue: must be a string or a list of strings",
        ),
        (
            changed(
                "ticket_status_json",
                lambda d: d["mergeTargetCall"].update(targetPattern="(unclosed"),
            ),
            "TicketStatusJSON: mergeTargetCall.targetPattern: not a valid regular expression: "
            "missing ), unterminated subpattern at position 0",
        ),
        (
            auth_block(maxRefreshTryCount="3"),
            "ConnectionJSON: authentications.otrs.maxRefreshTryCount: must be a whole number, not a string",
        ),
        (
            auth_block(retryFailureStatusCode=["401"]),
            "ConnectionJSON: authentications.otrs.retryFailureStatusCode: must be a list of whole numbers "
            "between 100 and 599",
        ),
        (
            auth_block(tokenLifetimeSeconds=30),
            "ConnectionJSON: authentications.otrs.tokenLifetimeSeconds: must be between 120 and 604800, not 30",
        ),
        (
            auth_block(authType="BasicWithHmac"),
            "ConnectionJSON: authentications.otrs.authType: 'BasicWithHmac' is not supported; use Basic or oauth2 "
            "(a token call or a static accessToken)",
        ),
        (
            auth_block(url=f"{BASE}/Session?UserLogin=bridge&Password=${{connection.password}}"),
            "ConnectionJSON: authentications.otrs.url: Password= in the URL: credentials in a URL reach access "
            "logs; put them in the body",
        ),
        (
            auth_block(httpParams='{"UserLogin": "bridge", "Password": "plain"}'),
            "ConnectionJSON: authentications.otrs.httpParams.Password: a literal Password would be stored "
            "unencrypted; refer to it as ${connection.<property>} or ${access_token}",
        ),
        (
            auth_block(tokenResponsePath="#HEADERS#"),
            "ConnectionJSON: authentications.otrs.tokenResponsePath: name the header after #HEADERS#",
        ),
        (
            {"connection_json": '{"authentications": {}}'},
            "ConnectionJSON: authentications: is required: an object of named auth blocks",
        ),
        (
            {"connection_json": '{"authentications": '},
            "ConnectionJSON: not valid JSON at line 1 column 21 (expecting value)",
        ),
        (
            {"config_json": {"readTimeout": -1, "verifyTLS": "yes"}},
            "ConfigJSON: readTimeout: must be between 0.1 and 600, not -1",
        ),
    ],
)
def test_each_defect_is_named(change, expected):
    assert expected in errors_of(**change)


def test_a_literal_password_in_a_connection_object_is_fine_because_it_is_encrypted():
    validate_documents(
        **{**documents(BASE), **auth_block(httpParams={"UserLogin": "bridge", "Password": "plain"})}
    )


def test_every_error_of_every_document_is_collected():
    errors = errors_of(
        **create_call(connection="nope", url="${bad expr}"),
        **status_call(ticketStatusPath=None),
        config_json="[1, 2]",
    )

    assert [e.split(":")[0] for e in errors] == [
        "CreateTicketJSON",
        "CreateTicketJSON",
        "TicketStatusJSON",
        "ConfigJSON",
    ], errors


# --- paths, placeholders, outcomes --------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a.b", 1),
        ("Ticket[0].State", "open"),
        ("TicketID[0]", "7"),
        ("TicketID[-1]", "8"),
        ("odata~dot#error.code", "E1"),
        ("", None),
    ],
)
def test_get_path(path, expected):
    data = {
        "a": {"b": 1},
        "Ticket": [{"State": "open"}],
        "TicketID": ["7", "8"],
        "odata.error": {"code": "E1"},
    }

    assert get_path(data, path) == (data if path == "" else expected)


@pytest.mark.parametrize("path", ["a.c", "Ticket[1].State", "a.b.c", "TicketID.x", "missing[0]"])
def test_get_path_raises_path_not_found(path):
    data = {"a": {"b": 1}, "Ticket": [{"State": "open"}], "TicketID": ["7"]}

    with pytest.raises(PathNotFound):
        get_path(data, path)


def test_placeholders_are_found_and_resolved_once_inside_json_strings():
    document = {
        "url": "https://@HOST@/x",
        "httpParams": '{"Queue": "@QUEUE@", "Note": "mail a@b.c@d"}',
    }

    assert paths.find_placeholders(document) == {"HOST", "QUEUE"}
    resolved = paths.resolve_placeholders(
        document, {"HOST": "otrs.example.com", "QUEUE": 'Ra"w @HOST@'}
    )

    assert resolved == {
        "url": "https://otrs.example.com/x",
        "httpParams": {"Queue": 'Ra"w @HOST@', "Note": "mail a@b.c@d"},
    }


def test_outcomes_follow_lists_then_map_then_state_types():
    status = validate_documents(
        **{
            **documents(BASE),
            **status_call(statusMap={"open": "open"}, stateTypeMap={"closed": "completed"}),
        }
    ).status

    assert status.outcome_for("closed successful") == "completed"
    assert status.outcome_for("removed", "removed") == "discontinued"
    assert status.outcome_for("open", "open") == "open"
    assert status.outcome_for("closed with workaround", "closed") == "completed"
    assert status.outcome_for("Closed Successful", "unknown type") is None
    assert status.outcome_for("brand new state") is None


def test_a_miscapitalised_otrs_state_is_refused_by_name():
    from connections import spec
    from tests.engine_fixtures import connection_json, create_ticket_json, ticket_status_json

    create = create_ticket_json("http://otrs.example/otrs/nph-genericinterface.pl/Webservice/W")
    create["call"][0]["httpParams"]["Ticket"]["State"] = "New"
    with pytest.raises(spec.SpecError) as info:
        spec.validate_documents(
            connection_json=connection_json(
                "http://otrs.example/otrs/nph-genericinterface.pl/Webservice/W"
            ),
            create_ticket_json=create,
            ticket_status_json=ticket_status_json(
                "http://otrs.example/otrs/nph-genericinterface.pl/Webservice/W"
            ),
        )
    assert (
        "CreateTicketJSON: call[0].httpParams.Ticket.State: 'New' is not an OTRS state name; OTRS spells it 'new'"
        in info.value.errors
    )
