"""Every JSON endpoint names a bad field by its own path: a misspelt field as itself (`emial`,
`email.subjct`), a wrongly typed value where it sits (`line.messages[0].text`), never `data`
or the object around it."""

from __future__ import annotations

from typing import Any

from tests.harness import RouterUnderTest

EMAIL = {"subject": "Autumn sale", "text": "20% off"}
CASES: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("POST", "/v1/intents", {"member_id": "m-1", "emial": "x", "email": EMAIL}, "emial", "unknown"),
    (
        "POST",
        "/v1/intents",
        {"member_id": "m-1", "email": {"subjct": "Sale", "text": "20% off"}},
        "email.subjct",
        "unknown",
    ),
    (
        "POST",
        "/v1/intents",
        {"member_id": "m-1", "line": {"messages": [{"type": "text", "text": 5}]}},
        "line.messages[0].text",
        "Expected `str`, got `int`",
    ),
    (
        "POST",
        "/v1/intents/batch",
        {"intents": [{"member_id": "m-1", "email": EMAIL, "emial": "x"}]},
        "intents[0].emial",
        "unknown",
    ),
    ("PUT", "/v1/members/m-1", {"emial": "taro@example.jp"}, "emial", "unknown"),
    ("PUT", "/v1/members/m-1", {"line_friend": "yes"}, "line_friend", "Expected `bool"),
    (
        "POST",
        "/v1/members/batch",
        {"members": [{"member_id": "m-1", "emial": "taro@example.jp"}]},
        "members[0].emial",
        "unknown",
    ),
    (
        "POST",
        "/v1/events",
        {"member_id": "m-1", "name": "x", "propertes": {}},
        "propertes",
        "unknown",
    ),
    (
        "POST",
        "/v1/suppressions",
        {"suppressions": [{"adress": "taro@example.jp"}]},
        "suppressions[0].adress",
        "unknown",
    ),
    (
        "POST",
        "/v1/campaigns",
        {"audience_ids": ["00000000-0000-0000-0000-000000000001"], "emial": EMAIL},
        "emial",
        "unknown",
    ),
    ("PUT", "/v1/coupon-pools/welcome", {"nmae": "Welcome"}, "nmae", "unknown"),
    (
        "PUT",
        "/v1/journeys/nudge",
        {"name": "N", "trigger": {"event": "e"}, "steps": [{"wait": "PT1H"}], "exit_onn": []},
        "exit_onn",
        "unknown",
    ),
]


async def test_a_bad_field_is_named_by_its_own_path(router: RouterUnderTest) -> None:
    """One router for every case: each is one request."""
    for method, path, body, field, said in CASES:
        r = await router.client.request(method, path, json=body)
        problem = r.json()
        if "results" in problem:  # a batch answers per item
            errors = [e for result in problem["results"] for e in result.get("errors", [])]
        else:
            assert r.status_code == 400, r.text
            assert r.headers["content-type"] == "application/problem+json"
            errors = problem["errors"]
        assert [e["field"] for e in errors] == [field], (path, r.text)
        assert said in errors[0]["message"], (path, r.text)
