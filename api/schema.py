"""Every operation of the OpenAPI document lists the JSON errors it may answer with."""

from __future__ import annotations

from typing import Any

ERROR_REF = {"$ref": "#/components/schemas/Error"}
ERRORS = {
    "400": "The payload or a query parameter was refused.",
    "401": "Not signed in (no session, or no valid token).",
    "403": "Signed in, but not allowed to do this (the message says why).",
    "404": "No such object, or it is not one of your teams'.",
    "405": "Method not allowed.",
    "406": "Not acceptable.",
    "409": "The rules refuse this in the object's current state (the message says why).",
    "415": "Unsupported media type.",
    "429": "Too many requests.",
}


def add_errors(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "fields": {"type": "object"},
                    "rows": {"type": "array", "items": {"type": "object"}},
                },
            }
        },
    }
    for path in result.get("paths", {}).values():
        for operation in path.values():
            responses = operation.setdefault("responses", {})
            for code, text in ERRORS.items():
                responses.setdefault(
                    code, {"description": text, "content": {"application/json": {"schema": ERROR_REF}}}
                )
    return result
