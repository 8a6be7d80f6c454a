"""OpenAPI details Litestar cannot infer: problem responses and item-by-item batch bodies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Operation

from router.problems import PROBLEM_MEDIA_TYPE, Problem

_DESCRIPTIONS = {
    400: "Invalid request: the problem's `errors` name each bad field",
    401: "Missing or unknown API key",
    404: "No such resource",
    409: "Conflict with stored state (idempotency key, LINE user ID)",
    413: "Request body too large",
    422: "Valid, but cannot be carried out (unknown member, no channel reaches the recipient)",
}


def problems(*codes: int) -> dict[int, ResponseSpec]:
    """Problem-detail responses for these status codes (401 and 413 are always possible)."""
    return {
        code: ResponseSpec(
            data_container=Problem,
            description=_DESCRIPTIONS[code],
            media_type=PROBLEM_MEDIA_TYPE,
            generate_examples=False,
        )
        for code in sorted({*codes, 401, 413})
    }


def batch_operation(key: str, item_schema: dict[str, Any], max_items: int) -> type[Operation]:
    """An Operation whose request body is `{key: [item, ...]}`.

    Batch routes read their body themselves, so that each item is decoded on its own and a bad
    item is reported instead of failing the request; this says what that body is."""

    @dataclass
    class BatchOperation(Operation):
        def to_schema(self) -> dict[str, Any]:
            schema = super().to_schema()
            schema["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": [key],
                            "properties": {
                                key: {
                                    "type": "array",
                                    "minItems": 1,
                                    "maxItems": max_items,
                                    "items": item_schema,
                                }
                            },
                        }
                    }
                },
            }
            return schema

    return BatchOperation


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}
