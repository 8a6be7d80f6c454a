"""LINE Messaging API message objects as msgspec Structs, and the limits LINE enforces.

Field names and types follow LINE's OpenAPI description (`Message` and its subtypes in
messaging-api.yml), so `msgspec.json.encode` on these Structs gives the JSON LINE expects,
and decoding a caller's JSON rejects unknown types and fields before anything is stored.
Free-form parts (flex containers, templates, imagemap actions, quick reply buttons) stay
plain dicts. `check_messages` walks the whole tree against LINE's schemas
(`router.line.message_tree`: every type, required field, value and stated limit) and checks
what the schemas leave to LINE's reference (lengths, URL schemes, sizes, counts), so a
message that would be refused at send time is refused when it is accepted instead.

Lengths are counted in UTF-16 code units, as LINE counts them, except the template
fields LINE counts in grapheme clusters.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Annotated, Any, TypeAlias

import msgspec

from router.line.derived_text import utf16_len
from router.line.message_tree import MessageProblem, check_tree

LINE_MESSAGES_PER_REQUEST = 5
"""A push, reply or multicast request carries 1 to 5 message objects."""

# Documented maxima, from the Messaging API reference (message objects).
TEXT_MAX = 5000
ALT_TEXT_MAX = 1500  # flex, template and imagemap altText
SENDER_NAME_MAX = 20
MEDIA_URL_MAX = 2000  # https URLs LINE downloads: images, video, audio, icons
URI_ACTION_MAX = 10_000  # the `uri` of a uri action (LINE raised it from 1,000)
LINK_URI_MAX = 1000  # other URIs opened on tap: altUri.desktop, imagemap links
QUICK_REPLY_ITEMS_MAX = 13
EMOJIS_MAX = 20
SUBSTITUTIONS_MAX = 100
SUBSTITUTED_MENTIONS_MAX = 20
SUBSTITUTED_EMOJIS_MAX = 20
LOCATION_TEXT_MAX = 100  # title and address
TRACKING_ID_MAX = 100
IMAGEMAP_ACTIONS_MAX = 50
IMAGEMAP_BASE_WIDTH = 1040
IMAGEMAP_LABEL_MAX = 100
IMAGEMAP_MESSAGE_MAX = 400
IMAGEMAP_VIDEO_LABEL_MAX = 30
CLIPBOARD_TEXT_MAX = 1000
ACTION_DATA_MAX = 300
FLEX_CAROUSEL_BUBBLES_MAX = 12
TEMPLATE_COLUMNS_MAX = 10
# LINE documents "30 KB" and "50 KB" without saying which kilobyte; the smaller reading is
# used so that nothing accepted here is refused by LINE at send time.
FLEX_BUBBLE_BYTES_MAX = 30_000
FLEX_CAROUSEL_BYTES_MAX = 50_000


class _Wire(
    msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel", forbid_unknown_fields=True
):
    """camelCase on the wire, unset optional fields left out, unknown fields refused."""


# Common properties


class Sender(_Wire):
    """Icon and display name shown instead of the LINE Official Account's own."""

    name: str | None = None
    icon_url: str | None = None


class QuickReply(_Wire):
    """Quick reply buttons, each `{"type": "action", "action": {...}, "imageUrl": ...}`."""

    items: Annotated[list[dict[str, Any]], msgspec.Meta(max_length=QUICK_REPLY_ITEMS_MAX)]


class _Message(_Wire, tag_field="type"):
    quick_reply: QuickReply | None = None
    sender: Sender | None = None


# Message objects


class Emoji(_Wire):
    """A LINE emoji replacing the `$` at UTF-16 offset `index` of a text message."""

    index: Annotated[int, msgspec.Meta(ge=0)]
    product_id: str
    emoji_id: str


class TextMessage(_Message, tag="text", kw_only=True):
    text: str
    emojis: Annotated[list[Emoji], msgspec.Meta(max_length=EMOJIS_MAX)] | None = None
    quote_token: str | None = None


class TextMessageV2(_Message, tag="textV2", kw_only=True):
    """Text whose `{key}` placeholders are replaced by mentions or LINE emoji."""

    text: str
    substitution: (
        Annotated[dict[str, dict[str, Any]], msgspec.Meta(max_length=SUBSTITUTIONS_MAX)] | None
    ) = None
    quote_token: str | None = None


class StickerMessage(_Message, tag="sticker", kw_only=True):
    package_id: str
    sticker_id: str
    quote_token: str | None = None


class ImageMessage(_Message, tag="image", kw_only=True):
    original_content_url: str
    preview_image_url: str


class VideoMessage(_Message, tag="video", kw_only=True):
    original_content_url: str
    preview_image_url: str
    tracking_id: str | None = None


class AudioMessage(_Message, tag="audio", kw_only=True):
    original_content_url: str
    duration: int  # milliseconds


class LocationMessage(_Message, tag="location", kw_only=True):
    title: str
    address: str
    latitude: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    longitude: Annotated[float, msgspec.Meta(ge=-180, le=180)]


class ImagemapBaseSize(_Wire):
    width: int
    height: int


class ImagemapArea(_Wire):
    x: Annotated[int, msgspec.Meta(ge=0)]
    y: Annotated[int, msgspec.Meta(ge=0)]
    width: int
    height: int


class ImagemapExternalLink(_Wire):
    link_uri: str | None = None
    label: str | None = None


class ImagemapVideo(_Wire):
    original_content_url: str | None = None
    preview_image_url: str | None = None
    area: ImagemapArea | None = None
    external_link: ImagemapExternalLink | None = None


class ImagemapMessage(_Message, tag="imagemap", kw_only=True):
    base_url: str
    alt_text: str
    base_size: ImagemapBaseSize
    actions: Annotated[list[dict[str, Any]], msgspec.Meta(max_length=IMAGEMAP_ACTIONS_MAX)]
    video: ImagemapVideo | None = None


class TemplateMessage(_Message, tag="template", kw_only=True):
    alt_text: str
    template: dict[str, Any]


class FlexMessage(_Message, tag="flex", kw_only=True):
    alt_text: str
    contents: dict[str, Any]


LineMessage: TypeAlias = (
    TextMessage
    | TextMessageV2
    | StickerMessage
    | ImageMessage
    | VideoMessage
    | AudioMessage
    | LocationMessage
    | ImagemapMessage
    | TemplateMessage
    | FlexMessage
)
"""Any message object the router can send, told apart by its `type`."""

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(list[LineMessage])


def text_message(text: str) -> TextMessage:
    """A plain text message."""
    return TextMessage(text=text)


def encode_messages(messages: Sequence[LineMessage]) -> bytes:
    """The JSON array LINE expects as `messages` in a push or reply request."""
    return _encoder.encode(list(messages))


def decode_messages(data: bytes | str) -> list[LineMessage]:
    """Parse a JSON array of message objects; raises msgspec.ValidationError on bad input."""
    return _decoder.decode(data)


# Checks


def _too_long(out: list[MessageProblem], path: str, value: str, limit: int) -> None:
    length = utf16_len(value)
    if length > limit:
        name = path.rpartition(".")[2]
        out.append(
            MessageProblem(
                path,
                f"{name} is {length:,} UTF-16 code units; LINE allows at most {limit:,}",
            )
        )


def _not_empty(out: list[MessageProblem], path: str, value: str) -> None:
    if not value:
        out.append(MessageProblem(path, f"{path.rpartition('.')[2]} must not be empty"))


_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_LINK_SCHEMES = ("http", "https", "line", "tel")


# A value that is missing or of the wrong JSON kind is left to the schema walk
# (`check_tree`), which reports it once; the checks below look only at values of their kind.


def _https_url(out: list[MessageProblem], path: str, url: object) -> None:
    """URLs LINE's servers fetch: HTTPS only, at most 2,000 characters."""
    if not isinstance(url, str):
        return
    match = _SCHEME.match(url)
    if match is None or match.group(1).lower() != "https" or not url[match.end() :]:
        got = f"scheme {match.group(1)!r}" if match else "no scheme"
        out.append(MessageProblem(path, f"must be an https:// URL (LINE fetches it); got {got}"))
    _too_long(out, path, url, MEDIA_URL_MAX)


def _link_uri(out: list[MessageProblem], path: str, uri: object, limit: int = LINK_URI_MAX) -> None:
    """URIs opened when a user taps: http, https, line or tel, at most `limit` characters."""
    if not isinstance(uri, str):
        return
    match = _SCHEME.match(uri)
    if match is None or match.group(1).lower() not in _LINK_SCHEMES:
        got = f"scheme {match.group(1)!r}" if match else "no scheme"
        out.append(MessageProblem(path, f"must use the http, https, line or tel scheme; got {got}"))
    _too_long(out, path, uri, limit)


def _string(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _at_most(out: list[MessageProblem], path: str, items: Sequence[object], limit: int) -> None:
    if len(items) > limit:
        out.append(MessageProblem(path, f"has {len(items):,} entries; LINE allows at most {limit}"))


def _extends_grapheme(ch: str) -> bool:
    return (
        unicodedata.category(ch) in ("Mn", "Me", "Mc")
        or "\ufe00" <= ch <= "\ufe0f"
        or "\U0001f3fb" <= ch <= "\U0001f3ff"
        or "\U000e0020" <= ch <= "\U000e007f"
        or ch in "\uff9e\uff9f"
    )


def _grapheme_len(s: str) -> int:
    """User-perceived characters, for the template fields LINE counts that way.

    Joins combining marks, variation selectors, skin tones, ZWJ sequences and flag pairs:
    enough never to count more clusters than LINE does for Japanese, Latin and emoji.
    """
    if s.isascii():
        return len(s) - s.count("\r\n")
    count = 0
    joined = False
    flag_half = False
    for ch in s:
        if ch == "\u200d":
            joined = True
            continue
        if joined:
            joined = False
            continue
        if _extends_grapheme(ch):
            continue
        if "\U0001f1e6" <= ch <= "\U0001f1ff":
            flag_half = not flag_half
            if not flag_half:
                continue
        else:
            flag_half = False
        count += 1
    return count


def _graphemes_at_most(out: list[MessageProblem], path: str, value: object, limit: int) -> None:
    text = _string(value)
    if text is not None and (length := _grapheme_len(text)) > limit:
        name = path.rpartition(".")[2]
        out.append(
            MessageProblem(path, f"{name} is {length:,} characters; LINE allows at most {limit}")
        )


# LINE's reference: a rich menu switch action works only in rich menus.
_NOT_QUICK_REPLY_ACTIONS = frozenset({"richmenuswitch"})


def _check_action(out: list[MessageProblem], path: str, action: object) -> None:
    if not isinstance(action, dict):
        return
    kind = action.get("type")
    if kind == "uri":
        _link_uri(out, f"{path}.uri", action.get("uri"), URI_ACTION_MAX)
        alt = action.get("altUri")
        if isinstance(alt, dict) and "desktop" in alt:
            _link_uri(out, f"{path}.altUri.desktop", alt["desktop"])
    elif kind in ("postback", "datetimepicker", "richmenuswitch"):
        data = _string(action.get("data"))
        if data is not None:
            _too_long(out, f"{path}.data", data, ACTION_DATA_MAX)
    elif kind == "clipboard":
        text = _string(action.get("clipboardText"))
        if text is not None:
            _not_empty(out, f"{path}.clipboardText", text)
            _too_long(out, f"{path}.clipboardText", text, CLIPBOARD_TEXT_MAX)


def _check_common(out: list[MessageProblem], path: str, message: _Message) -> None:
    if message.sender is not None:
        if message.sender.name is not None:
            _too_long(out, f"{path}.sender.name", message.sender.name, SENDER_NAME_MAX)
        if message.sender.icon_url is not None:
            _https_url(out, f"{path}.sender.iconUrl", message.sender.icon_url)
    if message.quick_reply is not None:
        items = message.quick_reply.items
        _at_most(out, f"{path}.quickReply.items", items, QUICK_REPLY_ITEMS_MAX)
        for number, item in enumerate(items):
            where = f"{path}.quickReply.items[{number}]"
            if item.get("type") != "action":
                out.append(MessageProblem(f"{where}.type", 'must be "action"'))
            if "imageUrl" in item:
                _https_url(out, f"{where}.imageUrl", item["imageUrl"])
            action = item.get("action")
            # An unknown action type is the schema walk's to report.
            kind = action.get("type") if isinstance(action, dict) else None
            if isinstance(kind, str) and kind in _NOT_QUICK_REPLY_ACTIONS:
                out.append(
                    MessageProblem(
                        f"{where}.action.type",
                        f"{kind!r} actions cannot be quick reply buttons",
                    )
                )
            _check_action(out, f"{where}.action", action)


def _check_text(out: list[MessageProblem], path: str, message: TextMessage) -> None:
    _not_empty(out, f"{path}.text", message.text)
    _too_long(out, f"{path}.text", message.text, TEXT_MAX)
    if not message.emojis:
        return
    _at_most(out, f"{path}.emojis", message.emojis, EMOJIS_MAX)
    dollars: set[int] = set()
    offset = 0
    for ch in message.text:
        if ch == "$":
            dollars.add(offset)
        offset += 2 if ch > "\uffff" else 1
    for number, emoji in enumerate(message.emojis):
        if emoji.index not in dollars:
            out.append(
                MessageProblem(
                    f"{path}.emojis[{number}].index",
                    f"text has no $ placeholder at UTF-16 offset {emoji.index}",
                )
            )


_SUBSTITUTION_KEY = re.compile(r"[0-9A-Za-z_]{1,20}")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def _check_text_v2(out: list[MessageProblem], path: str, message: TextMessageV2) -> None:
    _not_empty(out, f"{path}.text", message.text)
    _too_long(out, f"{path}.text", message.text, TEXT_MAX)
    substitution = message.substitution or {}
    _at_most(out, f"{path}.substitution", list(substitution), SUBSTITUTIONS_MAX)
    mentions = emojis = 0
    for key, value in substitution.items():
        where = f"{path}.substitution.{key}"
        if not _SUBSTITUTION_KEY.fullmatch(key):
            out.append(MessageProblem(where, "keys are 1 to 20 characters of 0-9, a-z, A-Z and _"))
        kind = value.get("type")
        if kind == "mention":
            mentions += 1
        elif kind == "emoji":
            emojis += 1
    if mentions > SUBSTITUTED_MENTIONS_MAX:
        out.append(
            MessageProblem(
                f"{path}.substitution",
                f"{mentions} mentions; LINE allows at most {SUBSTITUTED_MENTIONS_MAX}",
            )
        )
    if emojis > SUBSTITUTED_EMOJIS_MAX:
        out.append(
            MessageProblem(
                f"{path}.substitution",
                f"{emojis} emoji; LINE allows at most {SUBSTITUTED_EMOJIS_MAX}",
            )
        )
    for match in _PLACEHOLDER.finditer(message.text):
        token = match.group()
        if token in ("{{", "}}"):
            continue
        key = match.group(1)
        if key is None:
            out.append(
                MessageProblem(
                    f"{path}.text",
                    f"unpaired {token!r} at offset {match.start()}; write {token * 2!r} "
                    "for a literal brace",
                )
            )
        elif key not in substitution:
            out.append(MessageProblem(f"{path}.text", f"placeholder {{{key}}} has no substitution"))


def _check_image(out: list[MessageProblem], path: str, message: ImageMessage) -> None:
    _https_url(out, f"{path}.originalContentUrl", message.original_content_url)
    _https_url(out, f"{path}.previewImageUrl", message.preview_image_url)


_TRACKING_ID = re.compile(r"[A-Za-z0-9\-.=,+*()%$&;:@{}!?<>\[\]]+")


def _check_video(out: list[MessageProblem], path: str, message: VideoMessage) -> None:
    _https_url(out, f"{path}.originalContentUrl", message.original_content_url)
    _https_url(out, f"{path}.previewImageUrl", message.preview_image_url)
    if message.tracking_id is not None:
        _too_long(out, f"{path}.trackingId", message.tracking_id, TRACKING_ID_MAX)
        if not _TRACKING_ID.fullmatch(message.tracking_id):
            out.append(
                MessageProblem(
                    f"{path}.trackingId",
                    "may only hold letters, digits and -.=,+*()%$&;:@{}!?<>[]",
                )
            )


def _check_audio(out: list[MessageProblem], path: str, message: AudioMessage) -> None:
    _https_url(out, f"{path}.originalContentUrl", message.original_content_url)


def _check_location(out: list[MessageProblem], path: str, message: LocationMessage) -> None:
    _too_long(out, f"{path}.title", message.title, LOCATION_TEXT_MAX)
    _too_long(out, f"{path}.address", message.address, LOCATION_TEXT_MAX)


def _check_alt_text(out: list[MessageProblem], path: str, alt_text: str) -> None:
    _not_empty(out, f"{path}.altText", alt_text)
    _too_long(out, f"{path}.altText", alt_text, ALT_TEXT_MAX)


def _check_imagemap(out: list[MessageProblem], path: str, message: ImagemapMessage) -> None:
    _https_url(out, f"{path}.baseUrl", message.base_url)
    _check_alt_text(out, path, message.alt_text)
    if message.base_size.width != IMAGEMAP_BASE_WIDTH:
        out.append(
            MessageProblem(
                f"{path}.baseSize.width",
                f"is {message.base_size.width}; LINE requires {IMAGEMAP_BASE_WIDTH}",
            )
        )
    _at_most(out, f"{path}.actions", message.actions, IMAGEMAP_ACTIONS_MAX)
    for number, action in enumerate(message.actions):
        where = f"{path}.actions[{number}]"
        kind = action.get("type")
        if kind == "uri":
            _link_uri(out, f"{where}.linkUri", action.get("linkUri"))
        elif kind == "message":
            text = _string(action.get("text"))
            if text is not None:
                _too_long(out, f"{where}.text", text, IMAGEMAP_MESSAGE_MAX)
        elif kind == "clipboard":
            text = _string(action.get("clipboardText"))
            if text is not None:
                _not_empty(out, f"{where}.clipboardText", text)
                _too_long(out, f"{where}.clipboardText", text, CLIPBOARD_TEXT_MAX)
        label = _string(action.get("label"))
        if label is not None:
            _too_long(out, f"{where}.label", label, IMAGEMAP_LABEL_MAX)
    video = message.video
    if video is not None:
        for name, url in (
            ("originalContentUrl", video.original_content_url),
            ("previewImageUrl", video.preview_image_url),
        ):
            if url is None:
                out.append(MessageProblem(f"{path}.video.{name}", "is required for a video"))
            else:
                _https_url(out, f"{path}.video.{name}", url)
        if video.area is None:
            out.append(MessageProblem(f"{path}.video.area", "is required for a video"))
        link = video.external_link
        if link is not None:
            _link_uri(out, f"{path}.video.externalLink.linkUri", link.link_uri)
            if link.label is not None:
                _too_long(
                    out, f"{path}.video.externalLink.label", link.label, IMAGEMAP_VIDEO_LABEL_MAX
                )


def _check_actions(
    out: list[MessageProblem], path: str, actions: object, most: int, least: int = 1
) -> None:
    if not isinstance(actions, list):
        return
    if least == most and len(actions) != most:
        out.append(MessageProblem(path, f"has {len(actions)} actions; LINE requires {most}"))
    elif not least <= len(actions) <= most:
        out.append(
            MessageProblem(path, f"has {len(actions)} actions; LINE allows {least} to {most}")
        )
    for number, action in enumerate(actions):
        _check_action(out, f"{path}[{number}]", action)


def _check_template(out: list[MessageProblem], path: str, message: TemplateMessage) -> None:
    _check_alt_text(out, path, message.alt_text)
    template = message.template
    where = f"{path}.template"
    kind = template.get("type")
    if kind == "buttons":
        has_header = "thumbnailImageUrl" in template or "title" in template
        if "thumbnailImageUrl" in template:
            _https_url(out, f"{where}.thumbnailImageUrl", template["thumbnailImageUrl"])
        _graphemes_at_most(out, f"{where}.title", template.get("title"), 40)
        _graphemes_at_most(out, f"{where}.text", template.get("text"), 60 if has_header else 160)
        if "defaultAction" in template:
            _check_action(out, f"{where}.defaultAction", template["defaultAction"])
        _check_actions(out, f"{where}.actions", template.get("actions"), 4)
    elif kind == "confirm":
        _graphemes_at_most(out, f"{where}.text", template.get("text"), 240)
        _check_actions(out, f"{where}.actions", template.get("actions"), 2, 2)
    elif kind in ("carousel", "image_carousel"):
        columns = template.get("columns")
        if not isinstance(columns, list):
            return
        if not columns:
            out.append(MessageProblem(f"{where}.columns", "must not be empty"))
            return
        _at_most(out, f"{where}.columns", columns, TEMPLATE_COLUMNS_MAX)
        for number, column in enumerate(columns):
            at = f"{where}.columns[{number}]"
            if not isinstance(column, dict):
                continue
            if kind == "image_carousel":
                _https_url(out, f"{at}.imageUrl", column.get("imageUrl"))
                _check_action(out, f"{at}.action", column.get("action"))
            else:
                has_header = "thumbnailImageUrl" in column or "title" in column
                if "thumbnailImageUrl" in column:
                    _https_url(out, f"{at}.thumbnailImageUrl", column["thumbnailImageUrl"])
                _graphemes_at_most(out, f"{at}.title", column.get("title"), 40)
                _graphemes_at_most(out, f"{at}.text", column.get("text"), 60 if has_header else 120)
                if "defaultAction" in column:
                    _check_action(out, f"{at}.defaultAction", column["defaultAction"])
                _check_actions(out, f"{at}.actions", column.get("actions"), 3)


def _json_size(out: list[MessageProblem], path: str, what: str, value: object, limit: int) -> None:
    size = len(_encoder.encode(value))
    if size > limit:
        out.append(
            MessageProblem(
                path,
                f"{what} JSON is {size:,} bytes; LINE allows at most {limit // 1000} KB, "
                f"checked as {limit:,} bytes",
            )
        )


def _check_flex(out: list[MessageProblem], path: str, message: FlexMessage) -> None:
    _check_alt_text(out, path, message.alt_text)
    contents = message.contents
    where = f"{path}.contents"
    kind = contents.get("type")
    if kind == "bubble":
        _json_size(out, where, "bubble", contents, FLEX_BUBBLE_BYTES_MAX)
    elif kind == "carousel":
        _json_size(out, where, "carousel", contents, FLEX_CAROUSEL_BYTES_MAX)
        bubbles = contents.get("contents")
        if not isinstance(bubbles, list):
            return
        if not bubbles:
            out.append(MessageProblem(f"{where}.contents", "must not be empty"))
            return
        _at_most(out, f"{where}.contents", bubbles, FLEX_CAROUSEL_BUBBLES_MAX)
        for number, bubble in enumerate(bubbles):
            if isinstance(bubble, dict):
                at = f"{where}.contents[{number}]"
                _json_size(out, at, "bubble", bubble, FLEX_BUBBLE_BYTES_MAX)


def check_messages(messages: Sequence[LineMessage]) -> list[MessageProblem]:
    """Every way these messages break LINE's schemas or documented limits; empty when
    sendable.

    Each message is walked against LINE's schemas (types, required fields, values, stated
    limits) and checked for what msgspec types and the schemas cannot say: UTF-16 lengths,
    URL schemes, JSON sizes, the 1 to 5 count, counts LINE's reference gives. Structs built
    in code skip msgspec's decode-time constraints, so list sizes are checked here again.
    A field both find fault with is reported once, with the more specific reason.
    """
    out: list[MessageProblem] = []
    count = len(messages)
    if not 1 <= count <= LINE_MESSAGES_PER_REQUEST:
        out.append(
            MessageProblem(
                "messages",
                f"{count} messages; LINE sends 1 to {LINE_MESSAGES_PER_REQUEST} per request",
            )
        )
    for number, message in enumerate(messages):
        path = f"messages[{number}]"
        _check_common(out, path, message)
        match message:
            case TextMessage():
                _check_text(out, path, message)
            case TextMessageV2():
                _check_text_v2(out, path, message)
            case ImageMessage():
                _check_image(out, path, message)
            case VideoMessage():
                _check_video(out, path, message)
            case AudioMessage():
                _check_audio(out, path, message)
            case LocationMessage():
                _check_location(out, path, message)
            case ImagemapMessage():
                _check_imagemap(out, path, message)
            case TemplateMessage():
                _check_template(out, path, message)
            case FlexMessage():
                _check_flex(out, path, message)
            case StickerMessage():
                pass  # LINE itself checks that the package and sticker exist
        reported = {problem.field for problem in out}
        tree = check_tree(msgspec.to_builtins(message), "Message", path)
        out.extend(problem for problem in tree if problem.field not in reported)
    return out
