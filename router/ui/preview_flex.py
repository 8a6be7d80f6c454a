"""Flex messages (bubbles and carousels) as view models for `ui/previews.html`.

Each component becomes a `FlexNode` whose layout (flex, spacing, margin, padding, offsets,
sizes, colors) is already an inline style made only of checked values, so the template only
nests elements. A component type this module does not know becomes an "unknown" node.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from router.ui.preview_parts import (
    Action,
    Media,
    action,
    as_dict,
    as_list,
    as_text,
    css_length,
    inline_style,
    media,
    safe_color,
)

# LINE's flex keywords, in CSS pixels (close to what the LINE app draws).
_SPACING: Final = {"none": 0, "xs": 2, "sm": 4, "md": 8, "lg": 12, "xl": 16, "xxl": 20}
_FONT_SIZE: Final = {
    "xxs": 11,
    "xs": 13,
    "sm": 14,
    "md": 16,
    "lg": 19,
    "xl": 22,
    "xxl": 29,
    "3xl": 35,
    "4xl": 48,
    "5xl": 74,
}
_ICON_SIZE: Final = _FONT_SIZE
_BUBBLE_WIDTH: Final = {
    "nano": 120,
    "micro": 160,
    "deca": 220,
    "hecto": 241,
    "kilo": 260,
    "mega": 300,
    "giga": 386,
}
FLEX_DEPTH_MAX: Final = 40
"""Boxes nested deeper than this are drawn as one unknown box (templates recurse per level)."""
_ALIGN: Final = {"start": "flex-start", "end": "flex-end", "center": "center"}
_JUSTIFY: Final = {
    "flex-start": "flex-start",
    "center": "center",
    "flex-end": "flex-end",
    "space-between": "space-between",
    "space-around": "space-around",
    "space-evenly": "space-evenly",
}
_TEXT_ALIGN: Final = {"start": "left", "end": "right", "center": "center"}
_DECORATION: Final = {"underline": "underline", "line-through": "line-through", "none": "none"}


# Flex


@dataclass(frozen=True, slots=True)
class FlexNode:
    """One flex component. `kind` picks the template branch; `style` is already safe."""

    kind: Literal[
        "box", "text", "span", "image", "icon", "button", "separator", "filler", "unknown"
    ]
    style: str = ""
    layout: str = ""
    text: str = ""
    runs: list[FlexNode] = field(default_factory=list)
    children: list[FlexNode] = field(default_factory=list)
    media: Media | None = None
    action: Action | None = None
    button_style: str = ""
    face_style: str = ""
    type_name: str = ""


@dataclass(frozen=True, slots=True)
class Block:
    """A bubble's header, hero, body or footer, with its block style."""

    name: str
    node: FlexNode
    style: str


@dataclass(frozen=True, slots=True)
class Bubble:
    blocks: list[Block]
    style: str
    direction: str


@dataclass(frozen=True, slots=True)
class Flex:
    alt_text: str
    bubbles: list[Bubble]
    carousel: bool
    kind: Literal["flex"] = "flex"


def _flex_margin(entry: Mapping[str, object], parent_spacing: str | None) -> str | None:
    return css_length(entry.get("margin"), _SPACING) or parent_spacing


def _offsets(entry: Mapping[str, object]) -> dict[str, str | None]:
    position = "absolute" if entry.get("position") == "absolute" else None
    return {
        "position": position,
        "top": css_length(entry.get("offsetTop"), _SPACING),
        "bottom": css_length(entry.get("offsetBottom"), _SPACING),
        "left": css_length(entry.get("offsetStart"), _SPACING),
        "right": css_length(entry.get("offsetEnd"), _SPACING),
    }


def _flex_grow(entry: Mapping[str, object], default: int) -> str:
    grow = entry.get("flex")
    if not isinstance(grow, int) or isinstance(grow, bool) or not 0 <= grow <= 100:
        grow = default
    return f"{grow} {grow} {'0' if grow else 'auto'}"


def flex_node(
    value: object,
    parent_layout: str = "vertical",
    spacing: str | None = None,
    first: bool = True,
    depth: int = 0,
) -> FlexNode:
    """A flex component; in a horizontal or baseline box children default to `flex: 1`."""
    entry = as_dict(value)
    kind = entry.get("type")
    if depth > FLEX_DEPTH_MAX:
        return FlexNode("unknown", type_name="boxes nested too deep to preview")
    horizontal = parent_layout in ("horizontal", "baseline")
    margin = None if first else _flex_margin(entry, spacing)
    margin_side = "margin-left" if horizontal else "margin-top"
    common: dict[str, str | None] = {
        margin_side: margin,
        "flex": _flex_grow(entry, 1 if horizontal else 0),
        "align-self": _ALIGN.get(as_text(entry.get("gravity"))) if horizontal else None,
        **_offsets(entry),
    }
    if kind == "box":
        layout = as_text(entry.get("layout"))
        layout = layout if layout in ("vertical", "horizontal", "baseline") else "vertical"
        own_spacing = css_length(entry.get("spacing"), _SPACING)
        children = [
            flex_node(child, layout, own_spacing, number == 0, depth + 1)
            for number, child in enumerate(as_list(entry.get("contents")))
        ]
        style = inline_style(
            {
                **common,
                "background-color": safe_color(entry.get("backgroundColor")),
                "border-color": safe_color(entry.get("borderColor")),
                "border-style": "solid" if entry.get("borderWidth") else None,
                "border-width": css_length(entry.get("borderWidth"), {"none": 0, "light": 1})
                if entry.get("borderWidth") not in ("normal", "medium", "semi-bold", "bold")
                else "2px",
                "border-radius": css_length(entry.get("cornerRadius"), _SPACING),
                "width": css_length(entry.get("width"), {}),
                "height": css_length(entry.get("height"), {}),
                "padding": css_length(entry.get("paddingAll"), _SPACING),
                "padding-top": css_length(entry.get("paddingTop"), _SPACING),
                "padding-bottom": css_length(entry.get("paddingBottom"), _SPACING),
                "padding-left": css_length(entry.get("paddingStart"), _SPACING),
                "padding-right": css_length(entry.get("paddingEnd"), _SPACING),
                "justify-content": _JUSTIFY.get(as_text(entry.get("justifyContent"))),
                "align-items": _JUSTIFY.get(as_text(entry.get("alignItems"))),
            }
        )
        return FlexNode("box", style=style, layout=layout, children=children)
    if kind == "text":
        spans = [flex_span(span) for span in as_list(entry.get("contents"))]
        style = inline_style(
            {
                **common,
                "font-size": css_length(entry.get("size"), _FONT_SIZE) or "16px",
                "font-weight": "700" if entry.get("weight") == "bold" else None,
                "font-style": "italic" if entry.get("style") == "italic" else None,
                "text-decoration": _DECORATION.get(as_text(entry.get("decoration"))),
                "color": safe_color(entry.get("color")),
                "text-align": _TEXT_ALIGN.get(as_text(entry.get("align"))),
                "white-space": "pre-wrap" if entry.get("wrap") is True else "nowrap",
                "overflow": None if entry.get("wrap") is True else "hidden",
                "text-overflow": None if entry.get("wrap") is True else "ellipsis",
            }
        )
        return FlexNode("text", style=style, text=as_text(entry.get("text")), runs=spans)
    if kind == "image":
        ratio = as_text(entry.get("aspectRatio"))
        numbers = re.fullmatch(r"(\d{1,5}(?:\.\d{1,2})?):(\d{1,5}(?:\.\d{1,2})?)", ratio)
        aspect = f"{numbers.group(1)} / {numbers.group(2)}" if numbers else "1 / 1"
        if numbers and float(numbers.group(2)) == 0:
            aspect = "1 / 1"
        style = inline_style(
            {
                **common,
                "aspect-ratio": aspect,
                "background-color": safe_color(entry.get("backgroundColor")),
                "width": "100%" if entry.get("size") == "full" else None,
            }
        )
        return FlexNode(
            "image", style=style, media=media(entry.get("url")), action=_maybe_action(entry)
        )
    if kind == "icon":
        size = css_length(entry.get("size"), _ICON_SIZE) or "16px"
        style = inline_style({margin_side: margin, "width": size, "height": size})
        return FlexNode("icon", style=style, media=media(entry.get("url")))
    if kind == "button":
        look = as_text(entry.get("style"))
        look = look if look in ("primary", "secondary", "link") else "link"
        color = safe_color(entry.get("color"))
        face = inline_style(
            {
                "background-color": color if look != "link" else None,
                "color": color if look == "link" else None,
                "min-height": "40px" if entry.get("height") != "sm" else "32px",
            }
        )
        return FlexNode(
            "button",
            style=inline_style(common),
            face_style=face,
            action=action(entry.get("action")),
            button_style=look,
        )
    if kind == "separator":
        color = safe_color(entry.get("color"))
        side = "border-left" if horizontal else "border-top"
        style = inline_style({margin_side: margin, side: f"1px solid {color or '#d9dee3'}"})
        return FlexNode("separator", style=style)
    if kind == "filler":
        return FlexNode("filler", style=inline_style({"flex": _flex_grow(entry, 1)}))
    return FlexNode("unknown", type_name=as_text(kind) or "component")


def flex_span(value: object) -> FlexNode:
    entry = as_dict(value)
    if entry.get("type") != "span":
        return FlexNode("unknown", type_name=as_text(entry.get("type")) or "span")
    style = inline_style(
        {
            "font-size": css_length(entry.get("size"), _FONT_SIZE),
            "font-weight": "700" if entry.get("weight") == "bold" else None,
            "font-style": "italic" if entry.get("style") == "italic" else None,
            "text-decoration": _DECORATION.get(as_text(entry.get("decoration"))),
            "color": safe_color(entry.get("color")),
        }
    )
    return FlexNode("span", style=style, text=as_text(entry.get("text")))


def _maybe_action(entry: Mapping[str, object]) -> Action | None:
    return action(entry["action"]) if isinstance(entry.get("action"), dict) else None


_BLOCKS: Final = ("header", "hero", "body", "footer")


def bubble(value: object) -> Bubble:
    entry = as_dict(value)
    styles = as_dict(entry.get("styles"))
    blocks = []
    for name in _BLOCKS:
        if name not in entry:
            continue
        block_style = as_dict(styles.get(name))
        style = inline_style(
            {
                "background-color": safe_color(block_style.get("backgroundColor")),
                "border-top": f"1px solid {safe_color(block_style.get('separatorColor')) or '#d9dee3'}"
                if block_style.get("separator") is True
                else None,
            }
        )
        blocks.append(Block(name=name, node=flex_node(entry[name]), style=style))
    size = as_text(entry.get("size"))
    width = _BUBBLE_WIDTH.get(size, _BUBBLE_WIDTH["mega"])
    direction = "rtl" if entry.get("direction") == "rtl" else "ltr"
    return Bubble(blocks=blocks, style=inline_style({"width": f"{width}px"}), direction=direction)


def flex_message(entry: Mapping[str, object]) -> Flex | None:
    """A flex message's bubble or carousel; None when its contents are neither."""
    contents = as_dict(entry.get("contents"))
    alt_text = as_text(entry.get("altText"))
    if contents.get("type") == "bubble":
        return Flex(alt_text=alt_text, bubbles=[bubble(contents)], carousel=False)
    if contents.get("type") == "carousel":
        bubbles = [bubble(b) for b in as_list(contents.get("contents"))]
        return Flex(alt_text=alt_text, bubbles=bubbles, carousel=True)
    return None
