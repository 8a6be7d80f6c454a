"""LINE message objects: wire format and limits checked against LINE's own schemas (the
models line-bot-sdk generates from LINE's OpenAPI files), and LINE's documented limits."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec
import pytest
from linebot.v3.messaging import models as line_models

from router.line.messages import (
    LINE_MESSAGES_PER_REQUEST,
    LINK_URI_MAX,
    AudioMessage,
    Emoji,
    FlexMessage,
    ImagemapArea,
    ImagemapBaseSize,
    ImagemapExternalLink,
    ImagemapMessage,
    ImagemapVideo,
    ImageMessage,
    LineMessage,
    LocationMessage,
    MessageProblem,
    QuickReply,
    Sender,
    StickerMessage,
    TemplateMessage,
    TextMessage,
    TextMessageV2,
    VideoMessage,
    check_messages,
    decode_messages,
    encode_messages,
    text_message,
)

# Message objects shaped like the examples in LINE's Messaging API reference.
QUICK_REPLY = {
    "items": [
        {"type": "action", "action": {"type": "cameraRoll", "label": "Send photo"}},
        {
            "type": "action",
            "imageUrl": "https://example.com/icon.png",
            "action": {"type": "uri", "label": "Shop", "uri": "https://example.com/shop"},
        },
    ]
}
SENDER = {"name": "Cony", "iconUrl": "https://example.com/cony.png"}
BUBBLE: dict[str, Any] = {
    "type": "bubble",
    "body": {
        "type": "box",
        "layout": "vertical",
        "contents": [{"type": "text", "text": "hello"}, {"type": "text", "text": "world"}],
    },
}

SAMPLES: dict[str, dict[str, Any]] = {
    "text": {
        "type": "text",
        "text": "$ LINE emoji $",
        "emojis": [
            {"index": 0, "productId": "5ac1bfd5040ab15980c9b435", "emojiId": "001"},
            {"index": 13, "productId": "5ac1bfd5040ab15980c9b435", "emojiId": "002"},
        ],
        "quoteToken": "yHAz4Ua2wx7",
        "quickReply": QUICK_REPLY,
        "sender": SENDER,
    },
    "textV2": {
        "type": "textV2",
        "text": "Welcome, {user1}! {laugh}\n{everyone} There is a newcomer!",
        "substitution": {
            "user1": {"type": "mention", "mentionee": {"type": "user", "userId": "U4958"}},
            "laugh": {"type": "emoji", "productId": "5a8555cfe6256cc92ea23c2a", "emojiId": "002"},
            "everyone": {"type": "mention", "mentionee": {"type": "all"}},
        },
    },
    "sticker": {"type": "sticker", "packageId": "446", "stickerId": "1988"},
    "image": {
        "type": "image",
        "originalContentUrl": "https://example.com/original.jpg",
        "previewImageUrl": "https://example.com/preview.jpg",
    },
    "video": {
        "type": "video",
        "originalContentUrl": "https://example.com/original.mp4",
        "previewImageUrl": "https://example.com/preview.jpg",
        "trackingId": "track-id",
    },
    "audio": {
        "type": "audio",
        "originalContentUrl": "https://example.com/original.m4a",
        "duration": 60000,
    },
    "location": {
        "type": "location",
        "title": "my location",
        "address": "1-3 Kioicho, Chiyoda-ku, Tokyo, 102-8282, Japan",
        "latitude": 35.67966,
        "longitude": 139.73669,
    },
    "imagemap": {
        "type": "imagemap",
        "baseUrl": "https://example.com/bot/images/rm001",
        "altText": "This is an imagemap",
        "baseSize": {"width": 1040, "height": 1040},
        "video": {
            "originalContentUrl": "https://example.com/video.mp4",
            "previewImageUrl": "https://example.com/video_preview.jpg",
            "area": {"x": 0, "y": 0, "width": 1040, "height": 585},
            "externalLink": {"linkUri": "https://example.com/see_more.html", "label": "See More"},
        },
        "actions": [
            {
                "type": "uri",
                "linkUri": "https://example.com/",
                "area": {"x": 0, "y": 586, "width": 520, "height": 454},
            },
            {
                "type": "message",
                "text": "Hello",
                "area": {"x": 520, "y": 586, "width": 520, "height": 454},
            },
        ],
    },
    "template": {
        "type": "template",
        "altText": "This is a buttons template",
        "template": {
            "type": "buttons",
            "thumbnailImageUrl": "https://example.com/bot/images/image.jpg",
            "imageAspectRatio": "rectangle",
            "imageSize": "cover",
            "imageBackgroundColor": "#FFFFFF",
            "title": "Menu",
            "text": "Please select",
            "defaultAction": {
                "type": "uri",
                "label": "View detail",
                "uri": "http://example.com/page/123",
            },
            "actions": [
                {"type": "postback", "label": "Buy", "data": "action=buy&itemid=123"},
                {"type": "uri", "label": "View detail", "uri": "http://example.com/page/123"},
            ],
        },
    },
    "flex": {"type": "flex", "altText": "this is a flex message", "contents": BUBBLE},
}

EXPECTED_CLASS = {
    "text": TextMessage,
    "textV2": TextMessageV2,
    "sticker": StickerMessage,
    "image": ImageMessage,
    "video": VideoMessage,
    "audio": AudioMessage,
    "location": LocationMessage,
    "imagemap": ImagemapMessage,
    "template": TemplateMessage,
    "flex": FlexMessage,
}


def decode_one(message: dict[str, Any]) -> LineMessage:
    [decoded] = decode_messages(json.dumps([message]))
    return decoded


def problems_for(*messages: LineMessage) -> list[MessageProblem]:
    return check_messages(list(messages))


def only_problem(*messages: LineMessage) -> MessageProblem:
    problems = problems_for(*messages)
    assert len(problems) == 1, problems
    return problems[0]


# Wire format


@pytest.mark.parametrize("kind", list(SAMPLES))
def test_each_type_decodes_from_line_json_and_encodes_back_identically(kind: str) -> None:
    message = decode_one(SAMPLES[kind])
    assert type(message) is EXPECTED_CLASS[kind]
    assert json.loads(encode_messages([message])) == [SAMPLES[kind]]
    assert check_messages([message]) == []


def test_plain_msgspec_encode_gives_line_json() -> None:
    message = TextMessage(
        text="hi",
        quote_token="q",
        sender=Sender(name="Shop", icon_url="https://example.com/i.png"),
        quick_reply=QuickReply(items=[{"type": "action", "action": {"type": "camera"}}]),
    )
    assert json.loads(msgspec.json.encode(message)) == {
        "type": "text",
        "text": "hi",
        "quoteToken": "q",
        "sender": {"name": "Shop", "iconUrl": "https://example.com/i.png"},
        "quickReply": {"items": [{"type": "action", "action": {"type": "camera"}}]},
    }
    # Unset optional fields are left out, not sent as null.
    assert msgspec.json.encode(text_message("hi")) == b'{"type":"text","text":"hi"}'


def test_decoding_works_as_a_field_of_a_larger_struct() -> None:
    class Push(msgspec.Struct):
        to: str
        messages: list[LineMessage]

    push = msgspec.json.decode(
        json.dumps({"to": "U1", "messages": [SAMPLES["sticker"], SAMPLES["flex"]]}), type=Push
    )
    assert [type(m) for m in push.messages] == [StickerMessage, FlexMessage]


# LINE's own description of these objects: line-bot-sdk's models are generated from LINE's
# OpenAPI files, so their field metadata (wire names, required fields, maximum lengths and
# counts, the values a `type` may take) is LINE's, in whatever SDK version is installed.


def line_fields(schema: str) -> dict[str, Any]:
    """The fields (pydantic ModelField) of one of LINE's schemas, by wire name."""
    model = getattr(line_models, schema)
    return {field.alias: field for field in model.__fields__.values()}


def line_constraint(schema: str, wire_name: str, constraint: str) -> int | None:
    """A constraint LINE states on a field: max_length, min_length, max_items, min_items."""
    value = getattr(line_fields(schema)[wire_name].outer_type_, constraint, None)
    return value if isinstance(value, int) else None


def line_types(schema: str) -> set[str]:
    """The `type` values LINE defines for a polymorphic schema (its discriminator map)."""
    model = getattr(line_models, schema)
    mapping = getattr(model, f"_{schema}__discriminator_value_class_map")
    return set(mapping)


STRUCTS = [
    ("TextMessage", TextMessage),
    ("TextMessageV2", TextMessageV2),
    ("StickerMessage", StickerMessage),
    ("ImageMessage", ImageMessage),
    ("VideoMessage", VideoMessage),
    ("AudioMessage", AudioMessage),
    ("LocationMessage", LocationMessage),
    ("ImagemapMessage", ImagemapMessage),
    ("TemplateMessage", TemplateMessage),
    ("FlexMessage", FlexMessage),
    ("Sender", Sender),
    ("QuickReply", QuickReply),
    ("Emoji", Emoji),
    ("ImagemapBaseSize", ImagemapBaseSize),
    ("ImagemapArea", ImagemapArea),
    ("ImagemapVideo", ImagemapVideo),
    ("ImagemapExternalLink", ImagemapExternalLink),
]


@pytest.mark.parametrize(("schema", "cls"), STRUCTS)
def test_wire_names_match_lines_schema(schema: str, cls: type[msgspec.Struct]) -> None:
    expected = set(line_fields(schema))
    if "Message" in schema:
        expected -= {"type"}  # the tag, not a field of the Struct
    assert expected, f"no properties read for {schema}"
    wire_names = {f.encode_name for f in msgspec.structs.fields(cls)}
    assert wire_names == expected


# Fields LINE's reference requires although its OpenAPI file leaves them optional.
REQUIRED_BY_THE_REFERENCE = {
    "QuickReply": {"items"},
    "Emoji": {"index", "productId", "emojiId"},
}


@pytest.mark.parametrize(("schema", "cls"), STRUCTS)
def test_required_fields_match_lines_schema(schema: str, cls: type[msgspec.Struct]) -> None:
    line_required = {name for name, f in line_fields(schema).items() if f.required} - {"type"}
    router_required = {f.encode_name for f in msgspec.structs.fields(cls) if f.required}
    assert line_required <= router_required  # nothing LINE requires may be left out
    assert router_required - line_required == REQUIRED_BY_THE_REFERENCE.get(schema, set())


def https_url(length: int) -> str:
    base = "https://example.com/"
    return base + "a" * (length - len(base))


def in_buttons(action: dict[str, Any]) -> list[LineMessage]:
    template = {"type": "buttons", "text": "Pick", "actions": [action]}
    return [TemplateMessage(alt_text="alt", template=template)]


def in_imagemap(action: dict[str, Any]) -> list[LineMessage]:
    message = decode_one(SAMPLES["imagemap"])
    assert isinstance(message, ImagemapMessage)
    message.actions = [dict(action, area={"x": 0, "y": 0, "width": 1040, "height": 1040})]
    return [message]


def quick_reply_item(**fields: Any) -> dict[str, Any]:
    return {"type": "action", "action": {"type": "camera", "label": "Camera"}, **fields}


class Limit(NamedTuple):
    """One length or count LINE's schema states, and where the router reports breaking it."""

    schema: str
    field: str
    path: str  # of the problem in check_messages
    build: Callable[[int], list[LineMessage]]  # messages with the field this long / this many


LIMITS = [
    Limit(
        "Sender",
        "name",
        "messages[0].sender.name",
        lambda n: [TextMessage(text="x", sender=Sender(name="a" * n))],
    ),
    Limit(
        "Sender",
        "iconUrl",
        "messages[0].sender.iconUrl",
        lambda n: [TextMessage(text="x", sender=Sender(icon_url=https_url(n)))],
    ),
    Limit(
        "QuickReply",
        "items",
        "messages[0].quickReply.items",
        lambda n: [TextMessage(text="x", quick_reply=QuickReply(items=[quick_reply_item()] * n))],
    ),
    Limit(
        "QuickReplyItem",
        "imageUrl",
        "messages[0].quickReply.items[0].imageUrl",
        lambda n: [
            TextMessage(
                text="x", quick_reply=QuickReply(items=[quick_reply_item(imageUrl=https_url(n))])
            )
        ],
    ),
    Limit(
        "URIAction",
        "uri",
        "messages[0].template.actions[0].uri",
        lambda n: in_buttons({"type": "uri", "label": "Go", "uri": https_url(n)}),
    ),
    Limit(
        "AltUri",
        "desktop",
        "messages[0].template.actions[0].altUri.desktop",
        lambda n: in_buttons(
            {"type": "uri", "uri": "https://e.com/", "altUri": {"desktop": https_url(n)}}
        ),
    ),
    Limit(
        "PostbackAction",
        "data",
        "messages[0].template.actions[0].data",
        lambda n: in_buttons({"type": "postback", "label": "Buy", "data": "d" * n}),
    ),
    Limit(
        "DatetimePickerAction",
        "data",
        "messages[0].template.actions[0].data",
        lambda n: in_buttons({"type": "datetimepicker", "data": "d" * n, "mode": "date"}),
    ),
    Limit(
        "RichMenuSwitchAction",
        "data",
        "messages[0].template.actions[0].data",
        lambda n: in_buttons({"type": "richmenuswitch", "richMenuAliasId": "m", "data": "d" * n}),
    ),
    Limit(
        "ClipboardAction",
        "clipboardText",
        "messages[0].template.actions[0].clipboardText",
        lambda n: in_buttons({"type": "clipboard", "label": "Copy", "clipboardText": "c" * n}),
    ),
    Limit(
        "ClipboardImagemapAction",
        "clipboardText",
        "messages[0].actions[0].clipboardText",
        lambda n: in_imagemap({"type": "clipboard", "clipboardText": "c" * n}),
    ),
    Limit("PushMessageRequest", "messages", "messages", lambda n: [text_message("a")] * n),
    Limit("MulticastRequest", "messages", "messages", lambda n: [text_message("a")] * n),
]

# Where the router allows less than LINE's schema, on purpose: the limit it keeps.
STRICTER_THAN_LINE = {
    # The SDK's schema allows 10,000 here; messaging-api.yml, which the router's schema
    # table follows, still states 1,000 (a uri action's own `uri` is 10,000 in both).
    ("AltUri", "desktop"): LINK_URI_MAX,
}


def problems_at(messages: list[LineMessage], path: str) -> list[MessageProblem]:
    return [p for p in check_messages(messages) if p.field == path]


def limit_id(limit: Limit) -> str:
    return f"{limit.schema}.{limit.field}"


@pytest.mark.parametrize("limit", LIMITS, ids=limit_id)
def test_the_router_keeps_lines_maximum(limit: Limit) -> None:
    kind = "max_items" if limit.field in ("items", "messages") else "max_length"
    line_max = line_constraint(limit.schema, limit.field, kind)
    assert line_max is not None, f"LINE's schema states no {kind} for {limit_id(limit)}"
    router_max = STRICTER_THAN_LINE.get((limit.schema, limit.field), line_max)
    assert router_max <= line_max
    assert problems_at(limit.build(router_max), limit.path) == []
    assert problems_at(limit.build(router_max + 1), limit.path) != []


@pytest.mark.parametrize(
    "limit", [x for x in LIMITS if x.field in ("clipboardText", "messages")], ids=limit_id
)
def test_the_router_keeps_lines_minimum(limit: Limit) -> None:
    kind = "min_items" if limit.field == "messages" else "min_length"
    line_min = line_constraint(limit.schema, limit.field, kind)
    assert line_min == 1, f"LINE's schema states {kind} {line_min} for {limit_id(limit)}"
    assert problems_at(limit.build(line_min), limit.path) == []
    assert problems_at(limit.build(line_min - 1), limit.path) != []


def test_msgspec_decoding_keeps_lines_quick_reply_maximum() -> None:
    line_max = line_constraint("QuickReply", "items", "max_items")
    assert line_max is not None
    items = [quick_reply_item()]
    decode_messages(
        json.dumps([{"type": "text", "text": "x", "quickReply": {"items": items * line_max}}])
    )
    with pytest.raises(msgspec.ValidationError, match=f"length <= {line_max}"):
        decode_messages(
            json.dumps(
                [{"type": "text", "text": "x", "quickReply": {"items": items * (line_max + 1)}}]
            )
        )


# The values a `type` may take where the router checks it: exactly LINE's.


class TypeProbe(NamedTuple):
    schema: str
    path: str
    build: Callable[[str], list[LineMessage]]  # messages with this `type` value at `path`


TYPE_PROBES = [
    TypeProbe(
        "Template",
        "messages[0].template.type",
        lambda t: [TemplateMessage(alt_text="a", template={"type": t})],
    ),
    TypeProbe(
        "FlexContainer",
        "messages[0].contents.type",
        lambda t: [FlexMessage(alt_text="a", contents={"type": t})],
    ),
    TypeProbe("ImagemapAction", "messages[0].actions[0].type", lambda t: in_imagemap({"type": t})),
    TypeProbe(
        "SubstitutionObject",
        "messages[0].substitution.x.type",
        lambda t: [TextMessageV2(text="{x}", substitution={"x": {"type": t}})],
    ),
]


@pytest.mark.parametrize("probe", TYPE_PROBES, ids=lambda p: p.schema)
def test_the_router_accepts_exactly_lines_types(probe: TypeProbe) -> None:
    expected = line_types(probe.schema)
    for kind in expected:
        assert problems_at(probe.build(kind), probe.path) == [], kind
    # The reason for an unknown type names every type the router accepts.
    (problem,) = problems_at(probe.build("no-such-type"), probe.path)
    assert set(re.findall(r'"([^"]+)"', problem.reason)) == expected


def test_quick_reply_items_are_lines_action_items() -> None:
    item_type = line_fields("QuickReplyItem")["type"].default
    assert item_type == "action"
    message = TextMessage(text="x", quick_reply=QuickReply(items=[quick_reply_item()]))
    assert problems_for(message) == []
    (problem,) = problems_for(
        TextMessage(text="x", quick_reply=QuickReply(items=[quick_reply_item(type="button")]))
    )
    assert problem.reason == f'must be "{item_type}"'


# LINE's reference: a rich menu switch action works only in rich menus.
NOT_QUICK_REPLY_ACTIONS = {"richmenuswitch"}


def test_quick_reply_buttons_take_every_line_action_but_rich_menu_switches() -> None:
    for kind in line_types("Action"):
        item = quick_reply_item(action={"type": kind, "label": "L"})
        message = TextMessage(text="x", quick_reply=QuickReply(items=[item]))
        refused = problems_at([message], "messages[0].quickReply.items[0].action.type")
        assert bool(refused) == (kind in NOT_QUICK_REPLY_ACTIONS), kind


# Message types LINE defines that the router does not offer to callers.
NOT_OFFERED = {"coupon"}  # a coupon is created and managed in LINE, not sent as content


def test_message_types_are_lines() -> None:
    tags = {cls.__struct_config__.tag for cls in EXPECTED_CLASS.values()}
    assert tags <= line_types("Message")
    assert line_types("Message") - tags <= NOT_OFFERED


def test_tags_are_lines_type_values() -> None:
    assert {cls.__struct_config__.tag for cls in EXPECTED_CLASS.values()} == set(SAMPLES)


# Decoding rejects what is not a LINE message


def test_unknown_type_is_rejected() -> None:
    with pytest.raises(
        msgspec.ValidationError, match=r"Invalid value 'carousel' - at `\$\[0\]\.type`"
    ):
        decode_messages('[{"type": "carousel", "text": "x"}]')


def test_missing_type_is_rejected() -> None:
    with pytest.raises(msgspec.ValidationError, match="missing required field `type`"):
        decode_messages('[{"text": "x"}]')


def test_wrong_field_type_is_rejected() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"Expected `str`, got `int` - at `\$\[0\]"):
        decode_messages('[{"type": "text", "text": 5}]')


def test_unknown_field_is_rejected_rather_than_dropped() -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field `previewUrl`"):
        decode_messages('[{"type": "text", "text": "x", "previewUrl": "https://a"}]')


def test_snake_case_names_are_not_lines_names() -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field `alt_text`"):
        decode_messages('[{"type": "flex", "alt_text": "x", "contents": {}}]')


def test_too_many_quick_reply_items_rejected_when_decoding() -> None:
    message = {"type": "text", "text": "x", "quickReply": {"items": [{"type": "action"}] * 14}}
    with pytest.raises(msgspec.ValidationError, match=r"length <= 13 - at `\$\[0\]\.quickReply"):
        decode_messages(json.dumps([message]))


def test_latitude_out_of_range_rejected_when_decoding() -> None:
    message = dict(SAMPLES["location"], latitude=91)
    with pytest.raises(msgspec.ValidationError, match=r"<= 90\.0 - at `\$\[0\]\.latitude`"):
        decode_messages(json.dumps([message]))


# Message count


def test_one_to_five_messages_pass() -> None:
    assert LINE_MESSAGES_PER_REQUEST == 5
    assert check_messages([text_message("a")]) == []
    assert check_messages([text_message("a")] * 5) == []


@pytest.mark.parametrize("count", [0, 6])
def test_message_count_outside_one_to_five(count: int) -> None:
    assert check_messages([text_message("a")] * count) == [
        MessageProblem("messages", f"{count} messages; LINE sends 1 to 5 per request")
    ]


# Text length in UTF-16 code units


def test_text_at_5000_units_passes() -> None:
    assert problems_for(text_message("a" * 5000)) == []


def test_text_over_5000_units() -> None:
    assert only_problem(text_message("a" * 5213)) == MessageProblem(
        "messages[0].text", "text is 5,213 UTF-16 code units; LINE allows at most 5,000"
    )


def test_emoji_counts_two_units() -> None:
    # 2,500 emoji are 2,500 code points but 5,000 UTF-16 units: exactly at the limit.
    assert problems_for(text_message("😀" * 2500)) == []
    # One more BMP character tips it over although len() is only 2,501.
    problem = only_problem(text_message("😀" * 2500 + "あ"))
    assert problem.reason == "text is 5,001 UTF-16 code units; LINE allows at most 5,000"


def test_problem_path_names_the_message_index() -> None:
    problems = problems_for(text_message("ok"), text_message("ok"), text_message("x" * 5001))
    assert [p.field for p in problems] == ["messages[2].text"]


def test_empty_text() -> None:
    assert only_problem(text_message("")) == MessageProblem(
        "messages[0].text", "text must not be empty"
    )


def test_text_v2_length_is_checked_too() -> None:
    assert problems_for(TextMessageV2(text="x" * 5000)) == []
    assert only_problem(TextMessageV2(text="x" * 5001)).field == "messages[0].text"


# LINE emoji


def test_emoji_index_must_point_at_a_dollar_in_utf16_offsets() -> None:
    # The 🍎 before the placeholder takes two units, so `$` is at offset 2, not 1.
    good = TextMessage(text="🍎$", emojis=[Emoji(index=2, product_id="p", emoji_id="001")])
    assert problems_for(good) == []
    bad = TextMessage(text="🍎$", emojis=[Emoji(index=1, product_id="p", emoji_id="001")])
    assert only_problem(bad) == MessageProblem(
        "messages[0].emojis[0].index", "text has no $ placeholder at UTF-16 offset 1"
    )


def test_at_most_20_emoji() -> None:
    emojis = [Emoji(index=i, product_id="p", emoji_id="001") for i in range(21)]
    assert problems_for(TextMessage(text="$" * 20, emojis=emojis[:20])) == []
    problem = only_problem(TextMessage(text="$" * 21, emojis=emojis))
    assert problem == MessageProblem("messages[0].emojis", "has 21 entries; LINE allows at most 20")


# Text v2 substitution


def test_placeholder_without_substitution() -> None:
    message = TextMessageV2(text="Hi {name}, {{literal}}")
    assert only_problem(message) == MessageProblem(
        "messages[0].text", "placeholder {name} has no substitution"
    )


def test_unpaired_brace() -> None:
    problem = only_problem(TextMessageV2(text="50% off }"))
    assert problem.field == "messages[0].text"
    assert "unpaired '}'" in problem.reason


def test_substitution_key_and_type() -> None:
    message = TextMessageV2(
        text="{bad-key} {x}",
        substitution={
            "bad-key": {"type": "emoji", "productId": "p", "emojiId": "001"},
            "x": {"type": "sticker"},
        },
    )
    assert problems_for(message) == [
        MessageProblem(
            "messages[0].substitution.bad-key",
            "keys are 1 to 20 characters of 0-9, a-z, A-Z and _",
        ),
        MessageProblem("messages[0].substitution.x.type", 'must be one of "mention", "emoji"'),
    ]


def test_at_most_20_mentions() -> None:
    mention = {"type": "mention", "mentionee": {"type": "all"}}
    keys = [f"m{i}" for i in range(21)]
    text = "".join(f"{{{k}}}" for k in keys)
    ok = TextMessageV2(text=text, substitution={k: mention for k in keys[:20]})
    assert [p.reason for p in problems_for(ok)] == ["placeholder {m20} has no substitution"]
    too_many = TextMessageV2(text=text, substitution={k: mention for k in keys})
    assert only_problem(too_many).reason == "21 mentions; LINE allows at most 20"


# Common properties


def test_sender_name_limit() -> None:
    assert problems_for(TextMessage(text="x", sender=Sender(name="あ" * 20))) == []
    problem = only_problem(TextMessage(text="x", sender=Sender(name="あ" * 21)))
    assert problem == MessageProblem(
        "messages[0].sender.name", "name is 21 UTF-16 code units; LINE allows at most 20"
    )


def test_sender_icon_must_be_https() -> None:
    message = TextMessage(text="x", sender=Sender(icon_url="http://example.com/i.png"))
    assert only_problem(message) == MessageProblem(
        "messages[0].sender.iconUrl",
        "must be an https:// URL (LINE fetches it); got scheme 'http'",
    )


def test_quick_reply_count_checked_for_structs_built_in_code() -> None:
    item = {"type": "action", "action": {"type": "camera", "label": "Camera"}}
    assert problems_for(TextMessage(text="x", quick_reply=QuickReply(items=[item] * 13))) == []
    message = TextMessage(text="x", quick_reply=QuickReply(items=[item] * 14))
    assert only_problem(message) == MessageProblem(
        "messages[0].quickReply.items", "has 14 entries; LINE allows at most 13"
    )


def test_quick_reply_button_fields() -> None:
    items = [
        {"type": "button", "action": {"type": "camera"}},
        {"type": "action", "imageUrl": "ftp://x/i.png", "action": {"type": "richmenuswitch"}},
        {"type": "action", "action": {"type": "uri", "uri": "javascript:alert(1)"}},
    ]
    problems = problems_for(TextMessage(text="x", quick_reply=QuickReply(items=items)))
    assert [(p.field, p.reason) for p in problems] == [
        ("messages[0].quickReply.items[0].type", 'must be "action"'),
        (
            "messages[0].quickReply.items[1].imageUrl",
            "must be an https:// URL (LINE fetches it); got scheme 'ftp'",
        ),
        (
            "messages[0].quickReply.items[1].action.type",
            "'richmenuswitch' actions cannot be quick reply buttons",
        ),
        (
            "messages[0].quickReply.items[2].action.uri",
            "must use the http, https, line or tel scheme; got scheme 'javascript'",
        ),
    ]


# URLs


def test_media_url_must_be_https() -> None:
    message = ImageMessage(
        original_content_url="http://example.com/a.jpg",
        preview_image_url="example.com/b.jpg",
    )
    assert problems_for(message) == [
        MessageProblem(
            "messages[0].originalContentUrl",
            "must be an https:// URL (LINE fetches it); got scheme 'http'",
        ),
        MessageProblem(
            "messages[0].previewImageUrl",
            "must be an https:// URL (LINE fetches it); got no scheme",
        ),
    ]


def test_media_url_length_limit() -> None:
    base = "https://example.com/"
    at_limit = base + "a" * (2000 - len(base))
    over = at_limit + "a"
    assert problems_for(AudioMessage(original_content_url=at_limit, duration=1)) == []
    assert only_problem(AudioMessage(original_content_url=over, duration=1)) == MessageProblem(
        "messages[0].originalContentUrl",
        "originalContentUrl is 2,001 UTF-16 code units; LINE allows at most 2,000",
    )


def test_video_tracking_id() -> None:
    ok = VideoMessage(
        original_content_url="https://e.com/v.mp4",
        preview_image_url="https://e.com/p.jpg",
        tracking_id="a" * 100,
    )
    assert problems_for(ok) == []
    too_long = msgspec.structs.replace(ok, tracking_id="a" * 101)
    assert only_problem(too_long).reason == (
        "trackingId is 101 UTF-16 code units; LINE allows at most 100"
    )
    bad_chars = msgspec.structs.replace(ok, tracking_id="キャンペーン")
    assert only_problem(bad_chars).field == "messages[0].trackingId"


def test_location_title_and_address() -> None:
    ok = LocationMessage(title="東" * 100, address="x", latitude=35.0, longitude=139.0)
    assert problems_for(ok) == []
    bad = msgspec.structs.replace(ok, address="🗼" * 51)
    assert only_problem(bad) == MessageProblem(
        "messages[0].address", "address is 102 UTF-16 code units; LINE allows at most 100"
    )


# Alternative text and flex


def flex(contents: dict[str, Any], alt_text: str = "alt") -> FlexMessage:
    return FlexMessage(alt_text=alt_text, contents=contents)


def test_alt_text_limit_is_1500() -> None:
    assert problems_for(flex(BUBBLE, "あ" * 1500)) == []
    assert only_problem(flex(BUBBLE, "あ" * 1501)) == MessageProblem(
        "messages[0].altText", "altText is 1,501 UTF-16 code units; LINE allows at most 1,500"
    )
    assert only_problem(flex(BUBBLE, "")).reason == "altText must not be empty"


def bubble_of_size(size: int) -> dict[str, Any]:
    """A bubble whose compact JSON is exactly `size` bytes."""
    bubble = copy.deepcopy(BUBBLE)
    bubble["body"]["contents"][0]["text"] = ""
    padding = size - len(msgspec.json.encode(bubble))
    bubble["body"]["contents"][0]["text"] = "a" * padding
    assert len(msgspec.json.encode(bubble)) == size
    return bubble


def test_bubble_json_size() -> None:
    assert problems_for(flex(bubble_of_size(30_000))) == []
    assert only_problem(flex(bubble_of_size(30_001))) == MessageProblem(
        "messages[0].contents",
        "bubble JSON is 30,001 bytes; LINE allows at most 30 KB, checked as 30,000 bytes",
    )


def test_bubble_size_counts_utf8_bytes_not_characters() -> None:
    bubble = bubble_of_size(30_000)
    # Three-byte Japanese characters in place of ASCII grow the JSON past the limit.
    bubble["body"]["contents"][0]["text"] = "あ" * 10_000
    assert only_problem(flex(bubble)).reason.startswith("bubble JSON is 30,")


def test_carousel_size_bubble_count_and_each_bubble() -> None:
    small = bubble_of_size(4_000)
    assert problems_for(flex({"type": "carousel", "contents": [small] * 12})) == []

    carousel = {"type": "carousel", "contents": [small] * 13}
    size = len(msgspec.json.encode(carousel))
    problems = problems_for(flex(carousel))
    assert [(p.field, p.reason) for p in problems] == [
        (
            "messages[0].contents",
            f"carousel JSON is {size:,} bytes; LINE allows at most 50 KB, checked as 50,000 bytes",
        ),
        ("messages[0].contents.contents", "has 13 entries; LINE allows at most 12"),
    ]

    big = bubble_of_size(30_001)
    problems = problems_for(flex({"type": "carousel", "contents": [small, big]}))
    assert [p.field for p in problems] == ["messages[0].contents.contents[1]"]


def test_flex_container_type() -> None:
    assert only_problem(flex({"type": "box"})) == MessageProblem(
        "messages[0].contents.type", 'must be one of "bubble", "carousel"'
    )
    assert only_problem(flex({"type": "carousel", "contents": [BUBBLE, {"type": "box"}]})) == (
        MessageProblem("messages[0].contents.contents[1].type", 'must be "bubble"')
    )


# Imagemap and template


def test_imagemap_checks() -> None:
    message = decode_one(SAMPLES["imagemap"])
    assert isinstance(message, ImagemapMessage)
    message.base_size.width = 1000
    message.actions[0]["linkUri"] = "ftp://example.com/"
    message.actions[1]["text"] = "x" * 401
    assert [(p.field, p.reason) for p in problems_for(message)] == [
        ("messages[0].baseSize.width", "is 1000; LINE requires 1040"),
        (
            "messages[0].actions[0].linkUri",
            "must use the http, https, line or tel scheme; got scheme 'ftp'",
        ),
        (
            "messages[0].actions[1].text",
            "text is 401 UTF-16 code units; LINE allows at most 400",
        ),
    ]


def test_template_buttons_text_limit_depends_on_header() -> None:
    template = {
        "type": "buttons",
        "text": "あ" * 160,
        "actions": [{"type": "message", "label": "OK", "text": "ok"}],
    }
    message = TemplateMessage(alt_text="alt", template=template)
    assert problems_for(message) == []
    with_title = TemplateMessage(alt_text="alt", template=dict(template, title="Menu"))
    assert only_problem(with_title) == MessageProblem(
        "messages[0].template.text", "text is 160 characters; LINE allows at most 60"
    )


def test_template_text_counts_graphemes() -> None:
    family = "👨‍👩‍👧"  # one grapheme, five code points, eight UTF-16 units
    yes_no = [{"type": "message", "label": a, "text": a} for a in ("yes", "no")]
    template = {"type": "confirm", "text": family * 240, "actions": yes_no}
    assert problems_for(TemplateMessage(alt_text="alt", template=template)) == []
    template["text"] = family * 241
    problem = only_problem(TemplateMessage(alt_text="alt", template=template))
    assert problem.reason == "text is 241 characters; LINE allows at most 240"


def test_template_action_counts_and_postback_data() -> None:
    confirm = {"type": "confirm", "text": "OK?", "actions": [{"type": "message", "text": "y"}]}
    assert only_problem(TemplateMessage(alt_text="a", template=confirm)) == MessageProblem(
        "messages[0].template.actions", "has 1 actions; LINE requires 2"
    )
    buttons = {
        "type": "buttons",
        "text": "Pick",
        "actions": [{"type": "postback", "data": "d" * 301}],
    }
    assert only_problem(TemplateMessage(alt_text="a", template=buttons)) == MessageProblem(
        "messages[0].template.actions[0].data",
        "data is 301 UTF-16 code units; LINE allows at most 300",
    )


def test_image_carousel_columns() -> None:
    column = {"imageUrl": "https://e.com/1.jpg", "action": {"type": "uri", "uri": "tel:0312345678"}}
    ok = {"type": "image_carousel", "columns": [column] * 10}
    assert problems_for(TemplateMessage(alt_text="a", template=ok)) == []
    bad = {"type": "image_carousel", "columns": [column] * 10 + [dict(column, imageUrl="x")]}
    assert [p.field for p in problems_for(TemplateMessage(alt_text="a", template=bad))] == [
        "messages[0].template.columns",
        "messages[0].template.columns[10].imageUrl",
    ]


def test_unknown_template_type() -> None:
    message = TemplateMessage(alt_text="a", template={"type": "list"})
    assert only_problem(message).field == "messages[0].template.type"


def test_problems_from_several_messages_are_all_reported() -> None:
    problems = problems_for(
        text_message("x" * 5001),
        StickerMessage(package_id="1", sticker_id="1"),
        flex({"type": "nope"}, alt_text=""),
    )
    assert [p.field for p in problems] == [
        "messages[0].text",
        "messages[2].altText",
        "messages[2].contents.type",
    ]
