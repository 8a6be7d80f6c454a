"""Readable LINE text from email content.

LINE counts text length in UTF-16 code units, so lengths here are in those units, and a
cut never leaves half of a surrogate pair, half of a grapheme or half of a URL behind.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from html.parser import HTMLParser

LINE_TEXT_LIMIT = 5000
"""LINE's maximum length of a text message, in UTF-16 code units."""

BULLET = "・"

# Elements whose whole content is never shown to a reader.
_IGNORED = frozenset({"head", "script", "style", "title", "template"})
# Elements that stand apart from their neighbours by a blank line.
_PARAGRAPH = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "blockquote", "pre", "hr", "dl"}
)
# Elements that start on a line of their own.
_LINE = frozenset(
    {
        "div",
        "table",
        "tr",
        "li",
        "section",
        "article",
        "header",
        "footer",
        "nav",
        "aside",
        "main",
        "center",
        "address",
        "figure",
        "figcaption",
        "caption",
        "dt",
        "dd",
        "form",
        "fieldset",
        "legend",
        "details",
        "summary",
    }
)
_CELLS = frozenset({"td", "th"})
_VOID = frozenset(
    {
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    }
)

# HTML collapses only ASCII whitespace; no-break spaces are spacers in email layouts, so
# they collapse too. U+3000 (ideographic space) is content and is left alone.
_WS_WITH_NEWLINE = re.compile(r"[ \t\f\xa0]*[\r\n][ \t\r\n\f\xa0]*")
_WS = re.compile(r"[ \t\f\xa0]+")
# Invisible padding that email templates put after a preheader.
_INVISIBLE = re.compile("[\u00ad\u034f\u200b\u200c\u2060\ufeff\x00]")
# A source line break between two CJK characters is not a space (CSS Text 3 segment
# break rules), so it disappears instead of splitting a Japanese sentence.
_CJK = (
    "\u2e80-\u2fff\u3001-\u303f\u3040-\u30ff\u31f0-\u31ff"  # radicals, punctuation, kana
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # kanji
    "\uff01-\uffef"  # full-width and half-width forms
)
_SOFT_BREAK = "\x00"  # placeholder for a collapsed source line break
_CJK_SOFT_BREAK = re.compile(f"(?<=[{_CJK}])\x00(?=[{_CJK}])")
_SPACES = re.compile(r" {2,}")
_SPACE_AROUND_NEWLINE = re.compile(r" *\n *")
_BLANK_LINES = re.compile(r"\n{3,}")
_ZERO_LENGTH = re.compile(r"[+-]?(?:0+(?:\.0*)?|\.0+)(?:[a-z]+|%)?")
_PIXEL_SIZE = re.compile(r"\s*(\d*\.?\d+)\s*(?:px)?\s*")
_URL_SCHEME = re.compile(r"(?i)https?://")

_LINK = 1
_LIST = 2


@lru_cache(maxsize=2048)
def _style_effect(style: str) -> tuple[bool, bool | None]:
    """(hides the element, sets font-size to zero / non-zero / not at all).

    Email templates repeat the same inline styles many times, hence the cache.
    """
    hides = False
    font_zero: bool | None = None
    for declaration in style.lower().split(";"):
        name, _, value = declaration.partition(":")
        name = name.strip()
        value = value.replace("!important", "").strip()
        if name == "display":
            hides = hides or value == "none"
        elif name == "visibility":
            hides = hides or value in ("hidden", "collapse")
        elif name in ("opacity", "max-height"):
            hides = hides or _ZERO_LENGTH.fullmatch(value) is not None
        elif name == "font-size":
            font_zero = _ZERO_LENGTH.fullmatch(value) is not None
    return hides, font_zero


def _at_most_one_pixel(value: str | None) -> bool:
    if not value:
        return False
    match = _PIXEL_SIZE.fullmatch(value)
    return match is not None and float(match.group(1)) <= 1


def _style_dimension(style: str, name: str) -> str | None:
    for declaration in style.lower().split(";"):
        key, _, value = declaration.partition(":")
        if key.strip() == name:
            return value.replace("!important", "").strip()
    return None


def _same_url(label: str, url: str) -> bool:
    def bare(value: str) -> str:
        return _URL_SCHEME.sub("", value.strip(), count=1).rstrip("/").lower()

    return bare(label) == bare(url)


class _Link:
    __slots__ = ("has_image", "hidden_content", "text_start", "url")

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.text_start: int | None = None
        self.has_image = False
        self.hidden_content = False


class _TextExtractor(HTMLParser):
    """Collects what a reader of the rendered email would see, as plain text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        # (tag, hides, font_zero before this element, flags)
        self._stack: list[tuple[str, bool, bool, int]] = []
        self._hidden = 0
        self._font_zero = False
        self._pre = 0
        self._pending_break = 0  # 1: new line, 2: blank line
        self._pending_space = ""
        self._prefix = ""
        self._links: list[_Link] = []
        self._lists: list[int] = []  # 0 for a bullet list, else the next number

    # Output

    def _visible(self) -> bool:
        """Text shows: not inside a hidden element, and not set in a zero font size."""
        return self._hidden == 0 and not self._font_zero

    def _break(self, lines: int) -> None:
        if lines > self._pending_break:
            self._pending_break = lines

    def _write(self, text: str) -> None:
        out = self.out
        if out:
            if self._pending_break:
                out.append("\n" * self._pending_break)
            elif self._pending_space:
                out.append(self._pending_space)
        self._pending_break = 0
        self._pending_space = ""
        for link in self._links:
            if link.text_start is None:
                link.text_start = len(out)
        if self._prefix:
            out.append(self._prefix)
            self._prefix = ""
        out.append(text)

    def handle_data(self, data: str) -> None:
        if not self._visible():
            if self._links and not data.isspace():
                self._links[-1].hidden_content = True
            return
        data = _INVISIBLE.sub("", data)
        if self._pre:
            for number, line in enumerate(data.split("\n")):
                if number:
                    self._pending_break = max(self._pending_break, 1)
                    if not line:
                        self._pending_break = 2
                if line.strip():
                    self._write(_WS.sub(" ", line))
            return
        core = data.strip(" \t\r\n\f\xa0")
        if not core:
            if data and not self._pending_space:
                self._pending_space = _SOFT_BREAK if ("\n" in data or "\r" in data) else " "
            return
        lead = data[: len(data) - len(data.lstrip(" \t\r\n\f\xa0"))]
        if lead and not self._pending_space:
            self._pending_space = _SOFT_BREAK if ("\n" in lead or "\r" in lead) else " "
        self._write(_WS.sub(" ", _WS_WITH_NEWLINE.sub(_SOFT_BREAK, core)))
        trail = data[len(data.rstrip(" \t\r\n\f\xa0")) :]
        if trail:
            self._pending_space = _SOFT_BREAK if ("\n" in trail or "\r" in trail) else " "

    # Tags

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self._close("head")
        attributes = dict(attrs)
        style = attributes.get("style") or ""
        hides, font_zero = _style_effect(style) if style else (False, None)
        hides = hides or "hidden" in attributes or tag in _IGNORED

        if tag == "img":
            self._image(attributes, style, hides)
            return
        # Layout (breaks, links, list items) exists even where a zero font size hides the
        # glyphs, so only hidden elements suppress it.
        visible = self._hidden == 0 and not hides
        if tag == "br":
            if visible:
                self._pending_break = min(self._pending_break + 1, 2)
            return
        if tag in _VOID:
            if tag == "hr" and visible:
                self._break(2)
            return

        if visible:
            self._boundary(tag)
        flags = 0
        if tag == "a":
            if self._links:
                self._close("a")
            if visible:
                href = (attributes.get("href") or "").strip()
                self._links.append(_Link(href if _URL_SCHEME.match(href) else None))
                flags = _LINK
            elif self._links:
                self._links[-1].hidden_content = True
        elif tag in ("ul", "ol"):
            start = attributes.get("start") or "1"
            self._lists.append(int(start) if tag == "ol" and start.isdigit() else 0)
            flags = _LIST
        elif tag == "li" and visible:
            if self._lists and self._lists[-1]:
                self._prefix = f"{self._lists[-1]}. "
                self._lists[-1] += 1
            else:
                self._prefix = BULLET
        elif tag == "pre":
            self._pre += 1

        self._stack.append((tag, hides, self._font_zero, flags))
        if hides:
            self._hidden += 1
        if font_zero is not None:
            self._font_zero = font_zero

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            if tag == "br" and self._hidden == 0:
                self._pending_break = min(self._pending_break + 1, 2)
            return
        self._close(tag)
        if self._hidden == 0:
            self._boundary(tag)
            if tag == "li":
                self._prefix = ""

    def _boundary(self, tag: str) -> None:
        """Where a block, line or cell starts or ends, text needs a break or a space."""
        if tag in _PARAGRAPH:
            self._break(self._paragraph_break(tag))
        elif tag in _LINE:
            self._break(1)
        elif tag in _CELLS:
            self._pending_space = " "

    def _paragraph_break(self, tag: str) -> int:
        """A list nested in a list item stays with its item; other blocks get a blank line."""
        return 1 if self._lists and tag in ("ul", "ol") else 2

    def _close(self, tag: str) -> None:
        """Pop up to the innermost open `tag`, closing anything left open inside it."""
        stack = self._stack
        for depth in range(len(stack) - 1, -1, -1):
            if stack[depth][0] == tag:
                break
        else:
            return
        while len(stack) > depth:
            name, hides, font_zero, flags = stack.pop()
            if hides:
                self._hidden -= 1
            self._font_zero = font_zero
            if flags & _LINK:
                self._end_link()
            elif flags & _LIST:
                self._lists.pop()
            if name == "pre":
                self._pre -= 1

    def _image(self, attributes: dict[str, str | None], style: str, hides: bool) -> None:
        if not self._links:
            return  # images carry no text of their own
        pixel = (
            hides
            or _at_most_one_pixel(attributes.get("width"))
            or _at_most_one_pixel(attributes.get("height"))
            or (
                bool(style)
                and (
                    _at_most_one_pixel(_style_dimension(style, "width"))
                    or _at_most_one_pixel(_style_dimension(style, "height"))
                )
            )
        )
        link = self._links[-1]
        if pixel or self._hidden:
            link.hidden_content = True
        else:
            link.has_image = True

    def _end_link(self) -> None:
        link = self._links.pop()
        if link.text_start is None:
            # Nothing readable inside: a linked image or an empty anchor shows its URL;
            # an anchor around a tracking pixel or hidden text shows nothing.
            if link.url and (link.has_image or not link.hidden_content):
                self._write(link.url)
            return
        if link.url is None:
            return
        label = "".join(self.out[link.text_start :]).replace(_SOFT_BREAK, " ")
        if _same_url(label, link.url):
            del self.out[link.text_start :]
            self.out.append(link.url)
        else:
            self.out.append(" " + link.url)

    def result(self) -> str:
        self.close()
        while self._stack:  # unclosed elements: finish any open link
            self._close(self._stack[-1][0])
        text = "".join(self.out)
        text = _CJK_SOFT_BREAK.sub("", text).replace(_SOFT_BREAK, " ")
        text = _SPACES.sub(" ", text)
        text = _SPACE_AROUND_NEWLINE.sub("\n", text)
        text = _BLANK_LINES.sub("\n\n", text)
        return text.strip()


def utf16_len(s: str) -> int:
    """Length as LINE counts it: UTF-16 code units, so an emoji outside the BMP is 2."""
    if s.isascii():
        return len(s)
    return len(s.encode("utf-16-le", "surrogatepass")) // 2


def html_to_text(html: str) -> str:
    """Plain text a reader would see in the rendered HTML email.

    Hidden parts (head, scripts, styles, comments, preheaders hidden with inline styles,
    tracking pixels) are dropped; blocks become line breaks, list items get a bullet, and
    each link keeps its URL after its label so it stays usable in a LINE chat.
    """
    parser = _TextExtractor()
    parser.feed(html)
    return parser.result()


# Where a cut may fall, best first: paragraph, line, sentence end, space.
_FULL_STOPS = "\u3002\uff01\uff1f"  # ideographic full stop, full-width ! and ?
# Closing brackets and quotes (Japanese and Western) belong to the sentence they end.
_CLOSERS = "\u300d\u300f\uff09)\u3011\u3015\u3009\u300b\"'\u201d\u2019"
# A full stop, or an ASCII one followed by space or a closer (so not "3.5" or "a.com").
_SENTENCE_END = re.compile(f"(?:[{_FULL_STOPS}]|[.!?](?=[\\s{_CLOSERS}]|$))[{_CLOSERS}]*")
_WHITESPACE = re.compile(r"[ \t\u3000]")
_URL_PREFIXES = ("https://", "http://", "line://", "www.")
_URL_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F))
_RUN_BEFORE = re.compile(r"(?<![!-~])[!-~]+\Z")  # the printable-ASCII run ending at the cut
_RUN_AFTER = re.compile(r"[!-~]*")
_REGIONAL_INDICATOR = ("\U0001f1e6", "\U0001f1ff")


def _extends_cluster(ch: str) -> bool:
    """True for characters that belong to the grapheme before them."""
    return (
        unicodedata.category(ch) in ("Mn", "Me", "Mc")
        or "\ufe00" <= ch <= "\ufe0f"  # variation selectors
        or "\U0001f3fb" <= ch <= "\U0001f3ff"  # skin tones
        or "\U000e0020" <= ch <= "\U000e007f"  # emoji tag sequences
        or "\U000e0100" <= ch <= "\U000e01ef"
        or "\udc00" <= ch <= "\udfff"  # low surrogate left unpaired in the string
        or ch in "\u200d\uff9e\uff9f"
    )


def _grapheme_start(text: str, index: int) -> int:
    """Move `index` back so it does not split a grapheme cluster."""
    while 0 < index < len(text):
        if _extends_cluster(text[index]) or text[index - 1] == "\u200d":
            index -= 1
            continue
        low, high = _REGIONAL_INDICATOR
        if low <= text[index] <= high:
            run = 0
            while run < index and low <= text[index - 1 - run] <= high:
                run += 1
            if run % 2:
                index -= 1
                continue
        break
    return index


def _fitting_prefix(text: str, units: int) -> int:
    """Number of code points of `text` that fit in `units` UTF-16 code units."""
    head = text[:units]
    if head.isascii():
        return len(head)
    encoded = head.encode("utf-16-le", "surrogatepass")
    if len(encoded) <= 2 * units:
        return len(head)
    encoded = encoded[: 2 * units]
    if 0xD800 <= int.from_bytes(encoded[-2:], "little") <= 0xDBFF:
        encoded = encoded[:-2]  # never keep half of a surrogate pair
    return len(encoded.decode("utf-16-le", "surrogatepass"))


def _outside_url(text: str, cut: int) -> int:
    """Move `cut` to the start of a URL it falls inside of.

    A URL runs to the end of its run of printable ASCII, so the cut is inside one exactly
    when a URL prefix starts in the same run before the cut.
    """
    if (
        cut <= 0
        or cut >= len(text)
        or text[cut] not in _URL_CHARS
        or text[cut - 1] not in _URL_CHARS
    ):
        return cut
    before = _RUN_BEFORE.search(text, 0, cut)
    after = _RUN_AFTER.match(text, cut, cut + 9)  # enough to finish any prefix
    start = before.start() if before else cut
    run = text[start : after.end() if after else cut].lower()
    inside = cut - start
    found = [
        position
        for prefix in _URL_PREFIXES
        if (position := run.find(prefix, 0, inside + len(prefix) - 1)) != -1
        and position + len(prefix) < len(run)
    ]
    return start + min(found) if found else cut


def _best_cut(text: str, end: int) -> int:
    """Where to cut `text` at or before code point `end`: the most natural boundary in the
    last fifth of the room, else a grapheme boundary."""
    low = end - max(1, end // 5)
    head = text[:end]
    for separator in ("\n\n", "\n"):
        found = head.rfind(separator, low)
        if found > 0:
            return found
    last = None
    for match in _SENTENCE_END.finditer(text, low, end + 1):
        if match.end() <= end:
            last = match.end()
        elif match.start() + 1 <= end:
            last = match.start() + 1
    if last:
        return last
    spaces = [m.start() for m in _WHITESPACE.finditer(head, low)]
    if spaces and spaces[-1] > 0:
        return spaces[-1]
    return _grapheme_start(text, end)


def truncate_utf16(text: str, limit: int, ellipsis: str = "…") -> str:
    """Fit `text` into `limit` UTF-16 code units, ellipsis included.

    Text that fits is returned unchanged. Otherwise the cut falls on the most natural
    boundary near the end of the room (paragraph, line, sentence, space, then anything),
    never inside a surrogate pair, a grapheme or a URL (a URL is dropped whole rather
    than sent broken).
    """
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    if utf16_len(text) <= limit:
        return text
    room = limit - utf16_len(ellipsis)
    if room < 0:
        raise ValueError(f"a limit of {limit} leaves no room for the ellipsis {ellipsis!r}")
    end = _fitting_prefix(text, room)
    cut = _outside_url(text, _best_cut(text, end))
    return text[:cut].rstrip() + ellipsis


# A campaign sends one body to many members, and parsing is the slow part (the stdlib
# parser manages about 2 MB/s), so recent bodies are converted once.
_campaign_html_to_text = lru_cache(maxsize=32)(html_to_text)


def _normalize_plain(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _BLANK_LINES.sub("\n\n", text).strip()


def derive_line_text(
    subject: str | None, text: str | None, html: str | None, limit: int = LINE_TEXT_LIMIT
) -> str:
    """The LINE text for an email: subject, blank line, body, cut to `limit` UTF-16 units.

    The plain-text part is preferred because its author laid it out for plain reading;
    the HTML part is converted only when there is no text part.
    """
    body = _normalize_plain(text) if text else ""
    if not body and html:
        body = _campaign_html_to_text(html)
    parts = [part for part in ((subject or "").strip(), body) if part]
    if not parts:
        raise ValueError("no subject, text or html content to derive a LINE message from")
    return truncate_utf16("\n\n".join(parts), limit)
