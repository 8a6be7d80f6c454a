"""The router's table of LINE's message schemas is LINE's messaging-api.yml, exactly, and the
walk over it refuses what LINE refuses, naming the path of the bad field."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from linesim.message_rules import RULES
from router.line.message_schema import SCHEMAS, Field, all_fields, all_required
from router.line.message_tree import MessageProblem, check_tree
from router.line.messages import check_messages, decode_messages
from tests.harness import LINE_TOKEN, RouterUnderTest
from tests.test_line_messages import BUBBLE, SAMPLES

ROOT = Path(__file__).resolve().parent.parent


def spec_path() -> Path:
    """LINE's OpenAPI description, in `shared/line-openapi/` beside the checkout (or above it)."""
    for folder in ROOT.parents:
        candidate = folder / "shared" / "line-openapi" / "messaging-api.yml"
        if candidate.is_file():
            return candidate
    raise AssertionError(f"no shared/line-openapi/messaging-api.yml beside {ROOT} or above it")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    schemas: dict[str, Any] = yaml.safe_load(spec_path().read_text())["components"]["schemas"]
    return schemas


def ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[1]


def flattened(spec: dict[str, Any], name: str) -> tuple[dict[str, Any], set[str], str | None]:
    """A schema's properties and required fields with those of the schema its allOf extends."""
    schema = spec[name]
    properties: dict[str, Any] = {}
    required = set(schema.get("required", []))
    base = None
    for part in schema.get("allOf", []):
        if "$ref" in part:
            base = ref_name(part["$ref"])
            inherited, inherited_required, _ = flattened(spec, base)
            properties |= inherited
            required |= inherited_required
        else:
            properties |= part.get("properties", {})
            required |= set(part.get("required", []))
    properties |= schema.get("properties", {})
    return properties, required, base


def expected_field(prop: dict[str, Any]) -> Field:
    """What the table must say for one property of LINE's schema."""
    if "$ref" in prop:
        return Field(kind="object", schema=ref_name(prop["$ref"]))
    kind = prop["type"]
    if kind == "array":
        return Field(
            kind="array", schema=ref_name(prop["items"]["$ref"]), max_items=prop.get("maxItems")
        )
    if kind == "object":
        return Field(kind="map", schema=ref_name(prop["additionalProperties"]["$ref"]))
    return Field(
        kind=kind,
        enum=tuple(prop.get("enum", ())),
        uri=prop.get("format") == "uri",
        min_length=prop.get("minLength"),
        max_length=prop.get("maxLength"),
        pattern=prop.get("pattern"),
    )


def reachable(spec: dict[str, Any], root: str) -> set[str]:
    """Every schema a `root` object can hold, through properties, items and mappings."""
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        stack: list[Any] = [spec[name]]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                for key, value in node.items():
                    if key == "$ref":
                        todo.append(ref_name(value))
                    elif key == "mapping":
                        todo.extend(ref_name(v) for v in value.values())
                    else:
                        stack.append(value)
            elif isinstance(node, list):
                stack.extend(node)
    return seen


def test_the_table_has_every_schema_a_message_reaches(spec: dict[str, Any]) -> None:
    assert set(SCHEMAS) == reachable(spec, "Message")


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_each_schema_is_lines(spec: dict[str, Any], name: str) -> None:
    properties, required, base = flattened(spec, name)
    assert SCHEMAS[name].base == base
    assert all_required(name) == required
    fields = all_fields(name)
    assert set(fields) == set(properties)
    for field_name, prop in properties.items():
        assert fields[field_name] == expected_field(prop), f"{name}.{field_name}"
    mapping = spec[name].get("discriminator", {}).get("mapping", {})
    assert dict(SCHEMAS[name].subtypes) == {tag: ref_name(ref) for tag, ref in mapping.items()}


# The walk: what LINE refuses, with the path of the bad field


def bubble_with(**body_changes: Any) -> dict[str, Any]:
    bubble = copy.deepcopy(BUBBLE)
    bubble["body"].update(body_changes)
    return bubble


def flex(contents: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"type": "flex", "altText": "alt", "contents": contents}]


BUTTON = {"type": "button", "action": {"type": "uri", "label": "Go", "uri": "https://e.com/"}}
REFUSED = [
    pytest.param(
        flex({"type": "bubble", "body": {"type": "box", "contents": []}}),
        [MessageProblem("messages[0].contents.body.layout", "required")],
        id="box-without-layout",
    ),
    pytest.param(
        flex(bubble_with(contents=[{"type": "image"}])),
        [MessageProblem("messages[0].contents.body.contents[0].url", "required")],
        id="image-without-url",
    ),
    pytest.param(
        flex(bubble_with(contents=[{"type": "text", "text": "a"}, BUTTON, {"type": "button"}])),
        [MessageProblem("messages[0].contents.body.contents[2].action", "required")],
        id="button-without-action",
    ),
    pytest.param(
        [
            dict(
                SAMPLES["imagemap"],
                actions=[{"type": "uri", "linkUri": "https://e.com/"}],
            )
        ],
        [MessageProblem("messages[0].actions[0].area", "required")],
        id="imagemap-action-without-area",
    ),
    pytest.param(
        flex(bubble_with(contents=[{"type": "foo"}])),
        [
            MessageProblem(
                "messages[0].contents.body.contents[0].type",
                'must be one of "box", "button", "image", "video", "icon", "text", "span", '
                '"separator", "filler"',
            )
        ],
        id="component-type-foo",
    ),
    pytest.param(
        [
            {
                "type": "template",
                "altText": "alt",
                "template": {"type": "buttons", "text": "Pick", "actions": [{"type": "bogus"}]},
            }
        ],
        [
            MessageProblem(
                "messages[0].template.actions[0].type",
                'must be one of "camera", "cameraRoll", "clipboard", "datetimepicker", '
                '"location", "message", "postback", "richmenuswitch", "uri"',
            )
        ],
        id="template-action-bogus",
    ),
    pytest.param(
        [
            {
                "type": "template",
                "altText": "alt",
                "template": {"type": "confirm", "actions": [BUTTON["action"]] * 2},
            }
        ],
        [MessageProblem("messages[0].template.text", "required")],
        id="template-without-text",
    ),
    pytest.param(
        flex(bubble_with(layout="diagonal")),
        [
            MessageProblem(
                "messages[0].contents.body.layout",
                'must be one of "horizontal", "vertical", "baseline"',
            )
        ],
        id="enum",
    ),
    pytest.param(
        flex(bubble_with(contents=[{"type": "text", "text": "a", "wrap": "yes"}])),
        [MessageProblem("messages[0].contents.body.contents[0].wrap", "must be true or false")],
        id="field-kind",
    ),
    pytest.param(
        flex(bubble_with(contents=[{"type": "box", "layout": "vertical", "contents": [{}]}])),
        [MessageProblem("messages[0].contents.body.contents[0].contents[0].type", "required")],
        id="nested-component-without-type",
    ),
    pytest.param(
        [
            {
                "type": "text",
                "text": "x",
                "quickReply": {
                    "items": [
                        {
                            "type": "action",
                            "action": {"type": "postback", "data": "d", "inputOption": "shout"},
                        }
                    ]
                },
            }
        ],
        [
            MessageProblem(
                "messages[0].quickReply.items[0].action.inputOption",
                'must be one of "closeRichMenu", "openRichMenu", "openKeyboard", "openVoice"',
            )
        ],
        id="quick-reply-action-enum",
    ),
    pytest.param(
        [
            {
                "type": "textV2",
                "text": "{u}",
                "substitution": {"u": {"type": "mention", "mentionee": {"type": "user"}}},
            }
        ],
        [MessageProblem("messages[0].substitution.u.mentionee.userId", "required")],
        id="mention-without-user-id",
    ),
]


@pytest.mark.parametrize(("messages", "problems"), REFUSED)
def test_what_lines_schema_refuses_is_refused_with_its_path(
    messages: list[dict[str, Any]], problems: list[MessageProblem]
) -> None:
    assert check_messages(decode_messages(json.dumps(messages))) == problems


def test_every_sample_fits_the_schema() -> None:
    for kind, sample in SAMPLES.items():
        assert check_tree(sample, "Message", "messages[0]") == [], kind


def test_unknown_fields_are_left_alone_as_line_leaves_them() -> None:
    assert check_tree(flex(bubble_with(futureField=1))[0], "Message", "m") == []


def test_deep_nesting_is_refused_not_crashed() -> None:
    box: dict[str, Any] = {"type": "box", "layout": "vertical", "contents": []}
    for _ in range(500):
        box = {"type": "box", "layout": "vertical", "contents": [box]}
    problems = check_tree(flex({"type": "bubble", "body": box})[0], "Message", "m")
    assert [p.reason for p in problems] == ["nested more than 64 objects deep"]


# The simulator refuses the same trees, in LINE's 400 shape, by its own rules


@pytest.mark.parametrize("name", sorted(RULES))
def test_each_simulator_rule_is_lines(spec: dict[str, Any], name: str) -> None:
    lineage = [name]
    while (base := RULES[lineage[-1]].base) is not None:
        lineage.append(base)
    rules = [RULES[n] for n in lineage]
    properties, required, base = flattened(spec, name)
    assert RULES[name].base == base
    assert {f for r in rules for f in r.required} == required
    holds = {f: h for r in rules for f, h in r.holds.items()}
    expected_holds = {}
    for field_name, prop in properties.items():
        expected = expected_field(prop)
        if expected.kind == "object":
            expected_holds[field_name] = expected.schema
        elif expected.kind == "array":
            expected_holds[field_name] = f"[{expected.schema}]"
        elif expected.kind == "map":
            expected_holds[field_name] = f"{{{expected.schema}}}"
    assert holds == expected_holds
    stated = {
        "enums": {f: tuple(p["enum"]) for f, p in properties.items() if "enum" in p},
        "max_length": {f: p["maxLength"] for f, p in properties.items() if "maxLength" in p},
        "min_length": {f: p["minLength"] for f, p in properties.items() if "minLength" in p},
        "max_items": {f: p["maxItems"] for f, p in properties.items() if "maxItems" in p},
    }
    for what, values in stated.items():
        assert {f: v for r in rules for f, v in getattr(r, what).items()} == values, what
    mapping = spec[name].get("discriminator", {}).get("mapping", {})
    assert dict(RULES[name].types) == {tag: ref_name(ref) for tag, ref in mapping.items()}


def test_the_simulator_rules_cover_every_schema_a_message_reaches(spec: dict[str, Any]) -> None:
    assert set(RULES) == reachable(spec, "Message")


async def push(base_url: str, messages: list[dict[str, Any]]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url) as client:
        return await client.post(
            "/v2/bot/message/push",
            json={"to": "U" + "0" * 32, "messages": messages},
            headers={"Authorization": f"Bearer {LINE_TOKEN}"},
        )


# The simulator checks types, required fields, values and sizes, not the JSON kind of scalars.
SIMULATOR_REFUSES = [case for case in REFUSED if case.id != "field-kind"]


@pytest.mark.parametrize(("messages", "problems"), SIMULATOR_REFUSES)
async def test_the_simulator_refuses_them_as_line_does(
    line_sim: Any, messages: list[dict[str, Any]], problems: list[MessageProblem]
) -> None:
    response = await push(line_sim.base_url, messages)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["message"] == f"The request body has {len(problems)} error(s)"
    assert [d["property"] for d in body["details"]] == [p.field for p in problems]
    assert all(d["message"] for d in body["details"])
    assert (
        await push(line_sim.base_url, [SAMPLES["flex"], SAMPLES["template"]])
    ).status_code == 200


# Through the router: refused at intake with the path, never sent


async def test_intake_refuses_them_naming_the_field(router: RouterUnderTest, line_sim: Any) -> None:
    member = {"line_user_id": "U" + "1" * 32, "line_friend": True}
    assert (await router.client.put("/v1/members/friend", json=member)).status_code == 201
    for case in REFUSED:
        messages, problems = case.values
        response = await router.client.post(
            "/v1/intents",
            json={"member_id": "friend", "route": "line_only", "line": {"messages": messages}},
        )
        assert response.status_code == 400, (case.id, response.text)
        errors = [(e["field"], e["message"]) for e in response.json()["errors"]]
        assert errors == [(f"line.{p.field}", p.reason) for p in problems], case.id
    assert line_sim.received == []
