"""Message objects checked as LINE's schemas define them, to the last flex component.

LINE refuses a message whose tree breaks its OpenAPI description (``messaging-api.yml``): an
unknown ``type`` anywhere, a missing required property, a value outside an enumeration, a
string or list over its stated size. Each rule below is one schema of that file, under its
name: the ``type`` values a polymorphic schema maps to subtypes, the schema a subtype extends,
its required properties, the schemas its object, list (``[X]``) and map (``{X}``) properties
hold, its enumerations and its stated maximum lengths and counts. Unknown properties are
ignored, as LINE ignores them. Written from the spec on its own, apart from the router's
table, so each checks the other; a test holds both to the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import msgspec

from linesim.schemas import ErrorDetail
from linesim.validation import utf16_length


class Rule(msgspec.Struct, frozen=True, kw_only=True):
    """One schema of messaging-api.yml, as far as LINE refuses a request over it."""

    base: str | None = None
    types: Mapping[str, str] = msgspec.field(default_factory=dict)
    required: tuple[str, ...] = ()
    holds: Mapping[str, str] = msgspec.field(default_factory=dict)
    enums: Mapping[str, tuple[str, ...]] = msgspec.field(default_factory=dict)
    max_length: Mapping[str, int] = msgspec.field(default_factory=dict)
    min_length: Mapping[str, int] = msgspec.field(default_factory=dict)
    max_items: Mapping[str, int] = msgspec.field(default_factory=dict)


_POSITION: Final = ("relative", "absolute")
_GRAVITY: Final = ("top", "bottom", "center")
_ALIGN: Final = ("start", "end", "center")
_TEXT_STYLE: Final = {
    "weight": ("regular", "bold"),
    "style": ("normal", "italic"),
    "decoration": ("none", "underline", "line-through"),
}
_DATA: Final = {"data": 300}
_NO_MIN_DATA: Final = {"data": 0}

RULES: Final[Mapping[str, Rule]] = {
    "Message": Rule(
        types={
            "text": "TextMessage",
            "textV2": "TextMessageV2",
            "sticker": "StickerMessage",
            "image": "ImageMessage",
            "video": "VideoMessage",
            "audio": "AudioMessage",
            "location": "LocationMessage",
            "imagemap": "ImagemapMessage",
            "template": "TemplateMessage",
            "flex": "FlexMessage",
            "coupon": "CouponMessage",
        },
        required=("type",),
        holds={"quickReply": "QuickReply", "sender": "Sender"},
    ),
    "QuickReply": Rule(holds={"items": "[QuickReplyItem]"}, max_items={"items": 13}),
    "QuickReplyItem": Rule(holds={"action": "Action"}, max_length={"imageUrl": 2000}),
    "Sender": Rule(max_length={"name": 20, "iconUrl": 2000}),
    "TextMessage": Rule(base="Message", required=("text",), holds={"emojis": "[Emoji]"}),
    "Emoji": Rule(),
    "TextMessageV2": Rule(
        base="Message", required=("text",), holds={"substitution": "{SubstitutionObject}"}
    ),
    "SubstitutionObject": Rule(
        types={"mention": "MentionSubstitutionObject", "emoji": "EmojiSubstitutionObject"},
        required=("type",),
    ),
    "MentionSubstitutionObject": Rule(
        base="SubstitutionObject", required=("mentionee",), holds={"mentionee": "MentionTarget"}
    ),
    "EmojiSubstitutionObject": Rule(base="SubstitutionObject", required=("productId", "emojiId")),
    "MentionTarget": Rule(
        types={"user": "UserMentionTarget", "all": "AllMentionTarget"}, required=("type",)
    ),
    "UserMentionTarget": Rule(base="MentionTarget", required=("userId",)),
    "AllMentionTarget": Rule(base="MentionTarget"),
    "StickerMessage": Rule(base="Message", required=("packageId", "stickerId")),
    "ImageMessage": Rule(base="Message", required=("originalContentUrl", "previewImageUrl")),
    "VideoMessage": Rule(base="Message", required=("originalContentUrl", "previewImageUrl")),
    "AudioMessage": Rule(base="Message", required=("originalContentUrl", "duration")),
    "LocationMessage": Rule(base="Message", required=("title", "address", "latitude", "longitude")),
    "CouponMessage": Rule(base="Message", required=("couponId",), max_length={"deliveryTag": 30}),
    "ImagemapMessage": Rule(
        base="Message",
        required=("baseUrl", "altText", "baseSize", "actions"),
        holds={
            "baseSize": "ImagemapBaseSize",
            "actions": "[ImagemapAction]",
            "video": "ImagemapVideo",
        },
    ),
    "ImagemapBaseSize": Rule(required=("width", "height")),
    "ImagemapArea": Rule(required=("x", "y", "width", "height")),
    "ImagemapVideo": Rule(holds={"area": "ImagemapArea", "externalLink": "ImagemapExternalLink"}),
    "ImagemapExternalLink": Rule(),
    "ImagemapAction": Rule(
        types={
            "message": "MessageImagemapAction",
            "uri": "URIImagemapAction",
            "clipboard": "ClipboardImagemapAction",
        },
        required=("type", "area"),
        holds={"area": "ImagemapArea"},
    ),
    "MessageImagemapAction": Rule(base="ImagemapAction", required=("text",)),
    "URIImagemapAction": Rule(base="ImagemapAction", required=("linkUri",)),
    "ClipboardImagemapAction": Rule(
        base="ImagemapAction",
        required=("clipboardText",),
        max_length={"clipboardText": 1000},
        min_length={"clipboardText": 1},
    ),
    "TemplateMessage": Rule(
        base="Message", required=("altText", "template"), holds={"template": "Template"}
    ),
    "Template": Rule(
        types={
            "buttons": "ButtonsTemplate",
            "confirm": "ConfirmTemplate",
            "carousel": "CarouselTemplate",
            "image_carousel": "ImageCarouselTemplate",
        },
        required=("type",),
    ),
    "ButtonsTemplate": Rule(
        base="Template",
        required=("text", "actions"),
        holds={"defaultAction": "Action", "actions": "[Action]"},
    ),
    "ConfirmTemplate": Rule(
        base="Template", required=("text", "actions"), holds={"actions": "[Action]"}
    ),
    "CarouselTemplate": Rule(
        base="Template", required=("columns",), holds={"columns": "[CarouselColumn]"}
    ),
    "CarouselColumn": Rule(
        required=("text", "actions"), holds={"defaultAction": "Action", "actions": "[Action]"}
    ),
    "ImageCarouselTemplate": Rule(
        base="Template", required=("columns",), holds={"columns": "[ImageCarouselColumn]"}
    ),
    "ImageCarouselColumn": Rule(required=("imageUrl", "action"), holds={"action": "Action"}),
    "Action": Rule(
        types={
            "camera": "CameraAction",
            "cameraRoll": "CameraRollAction",
            "clipboard": "ClipboardAction",
            "datetimepicker": "DatetimePickerAction",
            "location": "LocationAction",
            "message": "MessageAction",
            "postback": "PostbackAction",
            "richmenuswitch": "RichMenuSwitchAction",
            "uri": "URIAction",
        }
    ),
    "CameraAction": Rule(base="Action"),
    "CameraRollAction": Rule(base="Action"),
    "LocationAction": Rule(base="Action"),
    "MessageAction": Rule(base="Action"),
    "ClipboardAction": Rule(
        base="Action",
        required=("clipboardText",),
        max_length={"clipboardText": 1000},
        min_length={"clipboardText": 1},
    ),
    "DatetimePickerAction": Rule(
        base="Action",
        enums={"mode": ("date", "time", "datetime")},
        max_length=_DATA,
        min_length=_NO_MIN_DATA,
    ),
    "PostbackAction": Rule(
        base="Action",
        enums={"inputOption": ("closeRichMenu", "openRichMenu", "openKeyboard", "openVoice")},
        max_length=_DATA,
        min_length=_NO_MIN_DATA,
    ),
    "RichMenuSwitchAction": Rule(
        base="Action",
        max_length={"data": 300, "richMenuAliasId": 32},
        min_length={"data": 0, "richMenuAliasId": 0},
    ),
    "URIAction": Rule(base="Action", holds={"altUri": "AltUri"}),
    "AltUri": Rule(max_length={"desktop": 1000}, min_length={"desktop": 0}),
    "FlexMessage": Rule(
        base="Message", required=("altText", "contents"), holds={"contents": "FlexContainer"}
    ),
    "FlexContainer": Rule(
        types={"bubble": "FlexBubble", "carousel": "FlexCarousel"}, required=("type",)
    ),
    "FlexBubble": Rule(
        base="FlexContainer",
        holds={
            "styles": "FlexBubbleStyles",
            "header": "FlexBox",
            "hero": "FlexComponent",
            "body": "FlexBox",
            "footer": "FlexBox",
            "action": "Action",
        },
        enums={
            "direction": ("ltr", "rtl"),
            "size": ("nano", "micro", "deca", "hecto", "kilo", "mega", "giga"),
        },
    ),
    "FlexBubbleStyles": Rule(
        holds={part: "FlexBlockStyle" for part in ("header", "hero", "body", "footer")}
    ),
    "FlexBlockStyle": Rule(),
    "FlexCarousel": Rule(
        base="FlexContainer", required=("contents",), holds={"contents": "[FlexBubble]"}
    ),
    "FlexComponent": Rule(
        types={
            "box": "FlexBox",
            "button": "FlexButton",
            "image": "FlexImage",
            "video": "FlexVideo",
            "icon": "FlexIcon",
            "text": "FlexText",
            "span": "FlexSpan",
            "separator": "FlexSeparator",
            "filler": "FlexFiller",
        },
        required=("type",),
    ),
    "FlexBox": Rule(
        base="FlexComponent",
        required=("layout", "contents"),
        holds={
            "contents": "[FlexComponent]",
            "action": "Action",
            "background": "FlexBoxBackground",
        },
        enums={
            "layout": ("horizontal", "vertical", "baseline"),
            "position": _POSITION,
            "justifyContent": (
                "center",
                "flex-start",
                "flex-end",
                "space-between",
                "space-around",
                "space-evenly",
            ),
            "alignItems": ("center", "flex-start", "flex-end"),
        },
    ),
    "FlexBoxBackground": Rule(
        types={"linearGradient": "FlexBoxLinearGradient"}, required=("type",)
    ),
    "FlexBoxLinearGradient": Rule(base="FlexBoxBackground"),
    "FlexButton": Rule(
        base="FlexComponent",
        required=("action",),
        holds={"action": "Action"},
        enums={
            "style": ("primary", "secondary", "link"),
            "gravity": _GRAVITY,
            "position": _POSITION,
            "height": ("md", "sm"),
            "adjustMode": ("shrink-to-fit",),
        },
    ),
    "FlexImage": Rule(
        base="FlexComponent",
        required=("type", "url"),
        holds={"action": "Action"},
        enums={
            "position": _POSITION,
            "align": _ALIGN,
            "gravity": _GRAVITY,
            "aspectMode": ("fit", "cover"),
        },
    ),
    "FlexVideo": Rule(
        base="FlexComponent",
        required=("url", "previewUrl", "altContent"),
        holds={"altContent": "FlexComponent", "action": "Action"},
    ),
    "FlexIcon": Rule(base="FlexComponent", required=("url",), enums={"position": _POSITION}),
    "FlexText": Rule(
        base="FlexComponent",
        holds={"action": "Action", "contents": "[FlexSpan]"},
        enums={
            "align": _ALIGN,
            "gravity": _GRAVITY,
            **_TEXT_STYLE,
            "position": _POSITION,
            "adjustMode": ("shrink-to-fit",),
        },
    ),
    "FlexSpan": Rule(base="FlexComponent", enums=_TEXT_STYLE),
    "FlexSeparator": Rule(base="FlexComponent"),
    "FlexFiller": Rule(base="FlexComponent"),
}
"""Every schema a message object reaches, by its name in messaging-api.yml."""

_MAX_DEPTH: Final = 64


def _lineage(name: str) -> list[Rule]:
    rule = RULES[name]
    return ([] if rule.base is None else _lineage(rule.base)) + [rule]


def _tag(name: str) -> str | None:
    base = RULES[name].base
    if base is None:
        return None
    return next(tag for tag, sub in RULES[base].types.items() if sub == name)


def check_message(message: object, prop: str) -> list[ErrorDetail]:
    """LINE's details for everything wrong with one message object (parsed JSON)."""
    details: list[ErrorDetail] = []
    _check(details, message, "Message", prop, 0)
    return details


def _check(details: list[ErrorDetail], value: object, name: str, prop: str, depth: int) -> None:
    if not isinstance(value, dict) or depth > _MAX_DEPTH:
        details.append(ErrorDetail(message="Must be an object", property=prop))
        return
    kind = value.get("type")
    types = RULES[name].types
    if types:
        if "type" not in value:
            details.append(ErrorDetail(message="Must be specified", property=f"{prop}.type"))
            return
        chosen = types.get(kind) if isinstance(kind, str) else None
        if chosen is None:
            details.append(_not_one_of(tuple(types), f"{prop}.type"))
            return
        name = chosen
    elif (tag := _tag(name)) is not None and kind != tag:
        details.append(_not_one_of((tag,), f"{prop}.type"))
        return
    for rule in _lineage(name):
        _check_fields(details, value, rule, prop, depth)


def _check_fields(
    details: list[ErrorDetail], value: dict[str, object], rule: Rule, prop: str, depth: int
) -> None:
    for field in rule.required:
        if field not in value:
            details.append(ErrorDetail(message="Must be specified", property=f"{prop}.{field}"))
    for field, values in rule.enums.items():
        if field in value and value[field] not in values:
            details.append(_not_one_of(values, f"{prop}.{field}"))
    for field, high in rule.max_length.items():
        text = value.get(field)
        low = rule.min_length.get(field, 0)
        if isinstance(text, str) and not low <= utf16_length(text) <= high:
            details.append(
                ErrorDetail(
                    message=f"Length must be between {low} and {high}", property=f"{prop}.{field}"
                )
            )
    for field, high in rule.max_items.items():
        items = value.get(field)
        if isinstance(items, list) and len(items) > high:
            details.append(
                ErrorDetail(
                    message=f"Size must be between 0 and {high}", property=f"{prop}.{field}"
                )
            )
    for field, held in rule.holds.items():
        if field not in value:
            continue
        nested = value[field]
        where = f"{prop}.{field}"
        if held.startswith("["):
            if not isinstance(nested, list):
                details.append(ErrorDetail(message="Must be an array", property=where))
                continue
            for index, item in enumerate(nested):
                _check(details, item, held[1:-1], f"{where}[{index}]", depth + 1)
        elif held.startswith("{"):
            if not isinstance(nested, dict):
                details.append(ErrorDetail(message="Must be an object", property=where))
                continue
            for key, item in nested.items():
                _check(details, item, held[1:-1], f"{where}.{key}", depth + 1)
        else:
            _check(details, nested, held, where, depth + 1)


def _not_one_of(values: tuple[str, ...], prop: str) -> ErrorDetail:
    return ErrorDetail(
        message=f"Must be one of the following values: [{', '.join(values)}]", property=prop
    )
