"""A connection's documents as the call engine uses them: validated once, then cached.

Validating walks every string of every document, which is far more work than the call it
prepares, so the result is kept by the documents' fingerprint: a changed document (or
secret) has a new fingerprint, so an edit takes effect at once.
"""

from __future__ import annotations

import hashlib
import json

from .documents import Documents
from .models import Connection
from .spec import SpecError, validate_documents


def fingerprint(connection: Connection) -> str:
    """A digest of everything that decides the documents: all four and the secrets."""
    documents = [
        connection.connection_json,
        connection.create_ticket_json,
        connection.ticket_status_json,
        connection.config_json,
        connection.secrets_encrypted,
    ]
    return hashlib.sha256(json.dumps(documents, sort_keys=True, default=str).encode()).hexdigest()


_documents: dict[str, Documents] = {}
_DOCUMENTS_KEPT = 64


def validated_documents(connection: Connection, key: str) -> Documents:
    """The connection's documents, validated; `key` is its fingerprint(). Raises SpecError."""
    documents = _documents.get(key)
    if documents is None:
        others = {
            "create_ticket_json": connection.create_ticket_json,
            "ticket_status_json": connection.ticket_status_json,
            "config_json": connection.config_json or None,
        }
        # Validity is judged with the secrets as placeholders, as the admin and the import
        # judge it: an error message must never quote part of a password.
        validate_documents(connection_json=connection.connection_json, **others)
        try:
            documents = validate_documents(
                connection_json=connection.connection_document(), **others
            )
        except SpecError:
            raise SpecError(
                [
                    "ConnectionJSON: a secret value holds text the bridge would read as a "
                    "template (${…} or @NAME@); change that secret"
                ]
            ) from None
        if len(_documents) >= _DOCUMENTS_KEPT:
            _documents.clear()
        _documents[key] = documents
    return documents
