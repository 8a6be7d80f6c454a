"""LINE's message object schemas as a table: every type a message tree may hold, its fields.

One entry per schema of `components/schemas` in LINE's messaging-api.yml that a message can
reach (message objects, quick replies, actions, imagemap actions, templates, flex containers
and components), under the schema's own name. A polymorphic schema lists the `type` values
it takes and the schema each selects (its discriminator mapping); a subtype names its base,
whose fields it has too. Each field says what JSON it holds (and, for objects and lists,
which schema), the values it may take, and the lengths and counts LINE's schema states.

`tests/test_line_message_schema.py` reads messaging-api.yml and fails on any difference, so
the table is the spec; `router.line.message_tree` walks a message against it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

import msgspec

Kind = Literal["string", "integer", "number", "boolean", "object", "array", "map"]


class Field(msgspec.Struct, frozen=True, kw_only=True):
    """One property: its JSON kind; for object, array (items) and map (values), its schema."""

    kind: Kind
    schema: str | None = None
    enum: tuple[str, ...] = ()
    uri: bool = False  # `format: uri`
    min_length: int | None = None
    max_length: int | None = None
    max_items: int | None = None
    pattern: str | None = None


class Schema(msgspec.Struct, frozen=True, kw_only=True):
    """A schema's own fields (a subtype's base adds its own), required ones, and either the
    `type` values it dispatches on (a base) or the `type` value that selects it (a subtype)."""

    fields: Mapping[str, Field]
    required: frozenset[str] = frozenset()
    base: str | None = None
    subtypes: Mapping[str, str] = msgspec.field(default_factory=dict)


STRING: Final = Field(kind="string")
URI: Final = Field(kind="string", uri=True)
INTEGER: Final = Field(kind="integer")
NUMBER: Final = Field(kind="number")
BOOLEAN: Final = Field(kind="boolean")
ACTION: Final = Field(kind="object", schema="Action")
COMPONENT: Final = Field(kind="object", schema="FlexComponent")
FLEX_BOX: Final = Field(kind="object", schema="FlexBox")
AREA: Final = Field(kind="object", schema="ImagemapArea")
POSITION: Final = Field(kind="string", enum=("relative", "absolute"))
GRAVITY: Final = Field(kind="string", enum=("top", "bottom", "center"))
ALIGN: Final = Field(kind="string", enum=("start", "end", "center"))
WEIGHT: Final = Field(kind="string", enum=("regular", "bold"))
STYLE: Final = Field(kind="string", enum=("normal", "italic"))
DECORATION: Final = Field(kind="string", enum=("none", "underline", "line-through"))
SHRINK_TO_FIT: Final = Field(kind="string", enum=("shrink-to-fit",))
DATA: Final = Field(kind="string", min_length=0, max_length=300)
CLIPBOARD_TEXT: Final = Field(kind="string", min_length=1, max_length=1000)
OFFSETS: Final = {
    "position": POSITION,
    "offsetTop": STRING,
    "offsetBottom": STRING,
    "offsetStart": STRING,
    "offsetEnd": STRING,
}


def _object(schema: str) -> Field:
    return Field(kind="object", schema=schema)


def _list(schema: str, max_items: int | None = None) -> Field:
    return Field(kind="array", schema=schema, max_items=max_items)


def _one_of(*values: str) -> Field:
    return Field(kind="string", enum=values)


def _sub(base: str, fields: Mapping[str, Field], *required: str) -> Schema:
    return Schema(fields=fields, required=frozenset(required), base=base)


def _base(fields: Mapping[str, Field], subtypes: Mapping[str, str], *required: str) -> Schema:
    return Schema(
        fields={"type": STRING, **fields}, required=frozenset(required), subtypes=subtypes
    )


SCHEMAS: Final[Mapping[str, Schema]] = {
    # Message objects and their common properties
    "Message": _base(
        {"quickReply": _object("QuickReply"), "sender": _object("Sender")},
        {
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
        "type",
    ),
    "QuickReply": Schema(fields={"items": _list("QuickReplyItem", max_items=13)}),
    "QuickReplyItem": Schema(
        fields={
            "imageUrl": Field(kind="string", uri=True, max_length=2000),
            "action": ACTION,
            "type": STRING,
        }
    ),
    "Sender": Schema(
        fields={
            "name": Field(kind="string", max_length=20),
            "iconUrl": Field(kind="string", uri=True, max_length=2000),
        }
    ),
    "TextMessage": _sub(
        "Message",
        {"text": STRING, "emojis": _list("Emoji"), "quoteToken": STRING},
        "text",
    ),
    "Emoji": Schema(fields={"index": INTEGER, "productId": STRING, "emojiId": STRING}),
    "TextMessageV2": _sub(
        "Message",
        {
            "text": STRING,
            "substitution": Field(kind="map", schema="SubstitutionObject"),
            "quoteToken": STRING,
        },
        "text",
    ),
    "SubstitutionObject": _base(
        {}, {"mention": "MentionSubstitutionObject", "emoji": "EmojiSubstitutionObject"}, "type"
    ),
    "MentionSubstitutionObject": _sub(
        "SubstitutionObject", {"mentionee": _object("MentionTarget")}, "mentionee"
    ),
    "EmojiSubstitutionObject": _sub(
        "SubstitutionObject", {"productId": STRING, "emojiId": STRING}, "productId", "emojiId"
    ),
    "MentionTarget": _base({}, {"user": "UserMentionTarget", "all": "AllMentionTarget"}, "type"),
    "UserMentionTarget": _sub("MentionTarget", {"userId": STRING}, "userId"),
    "AllMentionTarget": _sub("MentionTarget", {}),
    "StickerMessage": _sub(
        "Message",
        {"packageId": STRING, "stickerId": STRING, "quoteToken": STRING},
        "packageId",
        "stickerId",
    ),
    "ImageMessage": _sub(
        "Message",
        {"originalContentUrl": URI, "previewImageUrl": URI},
        "originalContentUrl",
        "previewImageUrl",
    ),
    "VideoMessage": _sub(
        "Message",
        {"originalContentUrl": URI, "previewImageUrl": URI, "trackingId": STRING},
        "originalContentUrl",
        "previewImageUrl",
    ),
    "AudioMessage": _sub(
        "Message",
        {"originalContentUrl": URI, "duration": INTEGER},
        "originalContentUrl",
        "duration",
    ),
    "LocationMessage": _sub(
        "Message",
        {"title": STRING, "address": STRING, "latitude": NUMBER, "longitude": NUMBER},
        "title",
        "address",
        "latitude",
        "longitude",
    ),
    "CouponMessage": _sub(
        "Message",
        {"couponId": STRING, "deliveryTag": Field(kind="string", max_length=30)},
        "couponId",
    ),
    # Imagemap
    "ImagemapMessage": _sub(
        "Message",
        {
            "baseUrl": URI,
            "altText": STRING,
            "baseSize": _object("ImagemapBaseSize"),
            "actions": _list("ImagemapAction"),
            "video": _object("ImagemapVideo"),
        },
        "baseUrl",
        "altText",
        "baseSize",
        "actions",
    ),
    "ImagemapBaseSize": Schema(
        fields={"height": INTEGER, "width": INTEGER}, required=frozenset({"width", "height"})
    ),
    "ImagemapArea": Schema(
        fields={"x": INTEGER, "y": INTEGER, "width": INTEGER, "height": INTEGER},
        required=frozenset({"x", "y", "width", "height"}),
    ),
    "ImagemapVideo": Schema(
        fields={
            "originalContentUrl": URI,
            "previewImageUrl": URI,
            "area": AREA,
            "externalLink": _object("ImagemapExternalLink"),
        }
    ),
    "ImagemapExternalLink": Schema(fields={"linkUri": URI, "label": STRING}),
    "ImagemapAction": _base(
        {"area": AREA},
        {
            "message": "MessageImagemapAction",
            "uri": "URIImagemapAction",
            "clipboard": "ClipboardImagemapAction",
        },
        "type",
        "area",
    ),
    "MessageImagemapAction": _sub("ImagemapAction", {"text": STRING, "label": STRING}, "text"),
    "URIImagemapAction": _sub("ImagemapAction", {"linkUri": STRING, "label": STRING}, "linkUri"),
    "ClipboardImagemapAction": _sub(
        "ImagemapAction", {"clipboardText": CLIPBOARD_TEXT, "label": STRING}, "clipboardText"
    ),
    # Templates
    "TemplateMessage": _sub(
        "Message", {"altText": STRING, "template": _object("Template")}, "altText", "template"
    ),
    "Template": _base(
        {},
        {
            "buttons": "ButtonsTemplate",
            "confirm": "ConfirmTemplate",
            "carousel": "CarouselTemplate",
            "image_carousel": "ImageCarouselTemplate",
        },
        "type",
    ),
    "ButtonsTemplate": _sub(
        "Template",
        {
            "thumbnailImageUrl": URI,
            "imageAspectRatio": STRING,
            "imageSize": STRING,
            "imageBackgroundColor": STRING,
            "title": STRING,
            "text": STRING,
            "defaultAction": ACTION,
            "actions": _list("Action"),
        },
        "text",
        "actions",
    ),
    "ConfirmTemplate": _sub(
        "Template", {"text": STRING, "actions": _list("Action")}, "text", "actions"
    ),
    "CarouselTemplate": _sub(
        "Template",
        {"columns": _list("CarouselColumn"), "imageAspectRatio": STRING, "imageSize": STRING},
        "columns",
    ),
    "CarouselColumn": Schema(
        fields={
            "thumbnailImageUrl": URI,
            "imageBackgroundColor": STRING,
            "title": STRING,
            "text": STRING,
            "defaultAction": ACTION,
            "actions": _list("Action"),
        },
        required=frozenset({"text", "actions"}),
    ),
    "ImageCarouselTemplate": _sub("Template", {"columns": _list("ImageCarouselColumn")}, "columns"),
    "ImageCarouselColumn": Schema(
        fields={"imageUrl": URI, "action": ACTION}, required=frozenset({"imageUrl", "action"})
    ),
    # Actions
    "Action": _base(
        {"label": STRING},
        {
            "camera": "CameraAction",
            "cameraRoll": "CameraRollAction",
            "clipboard": "ClipboardAction",
            "datetimepicker": "DatetimePickerAction",
            "location": "LocationAction",
            "message": "MessageAction",
            "postback": "PostbackAction",
            "richmenuswitch": "RichMenuSwitchAction",
            "uri": "URIAction",
        },
    ),
    "CameraAction": _sub("Action", {}),
    "CameraRollAction": _sub("Action", {}),
    "LocationAction": _sub("Action", {}),
    "ClipboardAction": _sub("Action", {"clipboardText": CLIPBOARD_TEXT}, "clipboardText"),
    "DatetimePickerAction": _sub(
        "Action",
        {
            "data": DATA,
            "mode": _one_of("date", "time", "datetime"),
            "initial": STRING,
            "max": STRING,
            "min": STRING,
        },
    ),
    "MessageAction": _sub("Action", {"text": STRING}),
    "PostbackAction": _sub(
        "Action",
        {
            "data": DATA,
            "displayText": STRING,
            "text": STRING,
            "inputOption": _one_of("closeRichMenu", "openRichMenu", "openKeyboard", "openVoice"),
            "fillInText": STRING,
        },
    ),
    "RichMenuSwitchAction": _sub(
        "Action",
        {"data": DATA, "richMenuAliasId": Field(kind="string", min_length=0, max_length=32)},
    ),
    "URIAction": _sub("Action", {"uri": URI, "altUri": _object("AltUri")}),
    "AltUri": Schema(fields={"desktop": Field(kind="string", min_length=0, max_length=1000)}),
    # Flex Message
    "FlexMessage": _sub(
        "Message", {"altText": STRING, "contents": _object("FlexContainer")}, "altText", "contents"
    ),
    "FlexContainer": _base({}, {"bubble": "FlexBubble", "carousel": "FlexCarousel"}, "type"),
    "FlexBubble": _sub(
        "FlexContainer",
        {
            "direction": _one_of("ltr", "rtl"),
            "styles": _object("FlexBubbleStyles"),
            "header": FLEX_BOX,
            "hero": COMPONENT,
            "body": FLEX_BOX,
            "footer": FLEX_BOX,
            "size": _one_of("nano", "micro", "deca", "hecto", "kilo", "mega", "giga"),
            "action": ACTION,
        },
    ),
    "FlexBubbleStyles": Schema(
        fields={
            "header": _object("FlexBlockStyle"),
            "hero": _object("FlexBlockStyle"),
            "body": _object("FlexBlockStyle"),
            "footer": _object("FlexBlockStyle"),
        }
    ),
    "FlexBlockStyle": Schema(
        fields={"backgroundColor": STRING, "separator": BOOLEAN, "separatorColor": STRING}
    ),
    "FlexCarousel": _sub("FlexContainer", {"contents": _list("FlexBubble")}, "contents"),
    "FlexComponent": _base(
        {},
        {
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
        "type",
    ),
    "FlexBox": _sub(
        "FlexComponent",
        {
            "layout": _one_of("horizontal", "vertical", "baseline"),
            "flex": INTEGER,
            "contents": _list("FlexComponent"),
            "spacing": STRING,
            "margin": STRING,
            **OFFSETS,
            "backgroundColor": STRING,
            "borderColor": STRING,
            "borderWidth": STRING,
            "cornerRadius": STRING,
            "width": STRING,
            "maxWidth": STRING,
            "height": STRING,
            "maxHeight": STRING,
            "paddingAll": STRING,
            "paddingTop": STRING,
            "paddingBottom": STRING,
            "paddingStart": STRING,
            "paddingEnd": STRING,
            "action": ACTION,
            "justifyContent": _one_of(
                "center", "flex-start", "flex-end", "space-between", "space-around", "space-evenly"
            ),
            "alignItems": _one_of("center", "flex-start", "flex-end"),
            "background": _object("FlexBoxBackground"),
        },
        "layout",
        "contents",
    ),
    "FlexBoxBackground": _base({}, {"linearGradient": "FlexBoxLinearGradient"}, "type"),
    "FlexBoxLinearGradient": _sub(
        "FlexBoxBackground",
        {
            "angle": STRING,
            "startColor": STRING,
            "endColor": STRING,
            "centerColor": STRING,
            "centerPosition": STRING,
        },
    ),
    "FlexButton": _sub(
        "FlexComponent",
        {
            "flex": INTEGER,
            "color": STRING,
            "style": _one_of("primary", "secondary", "link"),
            "action": ACTION,
            "gravity": GRAVITY,
            "margin": STRING,
            **OFFSETS,
            "height": _one_of("md", "sm"),
            "adjustMode": SHRINK_TO_FIT,
            "scaling": BOOLEAN,
        },
        "action",
    ),
    "FlexImage": _sub(
        "FlexComponent",
        {
            "url": URI,
            "flex": INTEGER,
            "margin": STRING,
            **OFFSETS,
            "align": ALIGN,
            "gravity": GRAVITY,
            "size": STRING,
            "aspectRatio": STRING,
            "aspectMode": _one_of("fit", "cover"),
            "backgroundColor": STRING,
            "action": ACTION,
            "animated": BOOLEAN,
        },
        "type",
        "url",
    ),
    "FlexVideo": _sub(
        "FlexComponent",
        {
            "url": URI,
            "previewUrl": URI,
            "altContent": COMPONENT,
            "aspectRatio": STRING,
            "action": ACTION,
        },
        "url",
        "previewUrl",
        "altContent",
    ),
    "FlexIcon": _sub(
        "FlexComponent",
        {
            "url": URI,
            "size": STRING,
            "aspectRatio": STRING,
            "margin": STRING,
            **OFFSETS,
            "scaling": BOOLEAN,
        },
        "url",
    ),
    "FlexText": _sub(
        "FlexComponent",
        {
            "flex": INTEGER,
            "text": STRING,
            "size": STRING,
            "align": ALIGN,
            "gravity": GRAVITY,
            "color": STRING,
            "weight": WEIGHT,
            "style": STYLE,
            "decoration": DECORATION,
            "wrap": BOOLEAN,
            "lineSpacing": STRING,
            "margin": STRING,
            **OFFSETS,
            "action": ACTION,
            "maxLines": INTEGER,
            "contents": _list("FlexSpan"),
            "adjustMode": SHRINK_TO_FIT,
            "scaling": BOOLEAN,
        },
    ),
    "FlexSpan": _sub(
        "FlexComponent",
        {
            "text": STRING,
            "size": STRING,
            "color": STRING,
            "weight": WEIGHT,
            "style": STYLE,
            "decoration": DECORATION,
        },
    ),
    "FlexSeparator": _sub("FlexComponent", {"margin": STRING, "color": STRING}),
    "FlexFiller": _sub("FlexComponent", {"flex": INTEGER}),
}
"""Every schema a message can reach, by its name in messaging-api.yml."""


def all_fields(name: str) -> dict[str, Field]:
    """A schema's fields with its base's: what an object of this type may hold."""
    schema = SCHEMAS[name]
    inherited = all_fields(schema.base) if schema.base is not None else {}
    return inherited | dict(schema.fields)


def all_required(name: str) -> frozenset[str]:
    """A schema's required fields with its base's."""
    schema = SCHEMAS[name]
    inherited = all_required(schema.base) if schema.base is not None else frozenset()
    return inherited | schema.required


def tag_of(name: str) -> str | None:
    """The `type` value that selects this subtype in its base's mapping."""
    base = SCHEMAS[name].base
    if base is None:
        return None
    return next(tag for tag, sub in SCHEMAS[base].subtypes.items() if sub == name)
