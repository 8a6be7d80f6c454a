"""Handlebars as SendGrid's dynamic templates render it.

The language itself (paths, `{{#if}}`/`{{else if}}`, `{{#unless}}`, `{{#each}}` with `@index`
and `../`, `{{#with}}`, `{{{triple}}}` unescaped) is pydantic-handlebars'; the helpers SendGrid
adds (`equals`, `notEquals`, `and`, `or`, `greaterThan`, `lessThan`, `length`, `insert`,
`formatDate`) are defined here. Anything else that calls a helper (`{{shout name}}`, partials)
is refused with `TemplateError` instead of rendering as nothing, so a template that would not
look as written never goes out.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

from pydantic_handlebars import (
    CompiledTemplate,
    HandlebarsEnvironment,
    HandlebarsError,
    HelperOptions,
)

MAX_OUTPUT = 1_000_000
"""Characters one rendered field may have: a loop over a large list stops here."""


class TemplateError(Exception):
    """A template that cannot be rendered: bad syntax, an unsupported helper, a bad argument."""


def _truthy(value: Any) -> bool:
    """Handlebars' truth: empty lists, empty strings, 0, null and false are false."""
    return not (value is None or value is False or value == "" or value == [] or value == 0)


def _same(a: Any, b: Any) -> bool:
    """SendGrid compares a number with its text as equal (`{{#equals count "1"}}`)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) != isinstance(b, int | float):
        return str(a) == str(b)
    return bool(a == b)


def _pair(args: tuple[Any, ...], name: str) -> tuple[Any, ...]:
    if len(args) != 2:
        raise TemplateError(f"{{{{#{name}}}}} takes two values, got {len(args)}")
    return args


def _equals(context: Any, *args: Any, options: HelperOptions) -> str:
    a, b = _pair(args, "equals")
    return options.fn() if _same(a, b) else options.inverse()


def _not_equals(context: Any, *args: Any, options: HelperOptions) -> str:
    a, b = _pair(args, "notEquals")
    return options.inverse() if _same(a, b) else options.fn()


def _number(value: Any, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TemplateError(f"{{{{#{name}}}}} compares numbers, got {value!r}") from None


def _greater_than(context: Any, *args: Any, options: HelperOptions) -> str:
    a, b = _pair(args, "greaterThan")
    greater = _number(a, "greaterThan") > _number(b, "greaterThan")
    return options.fn() if greater else options.inverse()


def _less_than(context: Any, *args: Any, options: HelperOptions) -> str:
    a, b = _pair(args, "lessThan")
    less = _number(a, "lessThan") < _number(b, "lessThan")
    return options.fn() if less else options.inverse()


def _and(context: Any, *args: Any, options: HelperOptions) -> str:
    del context
    return options.fn() if args and all(_truthy(a) for a in args) else options.inverse()


def _or(context: Any, *args: Any, options: HelperOptions) -> str:
    del context
    return options.fn() if any(_truthy(a) for a in args) else options.inverse()


def _length(*args: Any, options: HelperOptions) -> int:
    del options
    value = args[0] if args else None
    if isinstance(value, list | str | dict):
        return len(value)
    return 0


def _insert(*args: Any, options: HelperOptions) -> Any:
    """`{{insert name "default=Customer"}}`: the value, or the default when it is empty."""
    del options
    value = args[0] if args else None
    if _truthy(value) or len(args) < 2:
        return value
    fallback = str(args[1])
    return fallback.removeprefix("default=")


_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_TOKENS = re.compile(r"\[[^\]]*\]|YYYY|YY|MMMM|MMM|MM|M|DD|D|dddd|ddd|HH|H|hh|h|mm|m|ss|s|A|a|ZZ|Z")
_OFFSET = re.compile(r"^([+-])(\d{2}):?(\d{2})$")


def _moment(value: Any) -> datetime:
    """An ISO 8601 time, or a number of milliseconds since 1970 (a JavaScript date)."""
    if isinstance(value, bool):
        raise TemplateError(f"formatDate needs a time, got {value!r}")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise TemplateError(f"formatDate cannot read the time {value!r}") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise TemplateError(f"formatDate needs a time, got {value!r}")


def _format_token(token: str, t: datetime) -> str:
    if token.startswith("["):
        return token[1:-1]
    hour12 = t.hour % 12 or 12
    offset = t.utcoffset() or timedelta()
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hh, mm = divmod(abs(minutes), 60)
    table = {
        "YYYY": f"{t.year:04d}",
        "YY": f"{t.year % 100:02d}",
        "MMMM": _MONTHS[t.month - 1],
        "MMM": _MONTHS[t.month - 1][:3],
        "MM": f"{t.month:02d}",
        "M": str(t.month),
        "DD": f"{t.day:02d}",
        "D": str(t.day),
        "dddd": _DAYS[t.weekday()],
        "ddd": _DAYS[t.weekday()][:3],
        "HH": f"{t.hour:02d}",
        "H": str(t.hour),
        "hh": f"{hour12:02d}",
        "h": str(hour12),
        "mm": f"{t.minute:02d}",
        "m": str(t.minute),
        "ss": f"{t.second:02d}",
        "s": str(t.second),
        "A": "AM" if t.hour < 12 else "PM",
        "a": "am" if t.hour < 12 else "pm",
        "ZZ": f"{sign}{hh:02d}{mm:02d}",
        "Z": f"{sign}{hh:02d}:{mm:02d}",
    }
    return table[token]


def format_date(value: Any, pattern: str, offset: str | None = None) -> str:
    """SendGrid's `{{formatDate time "MMMM D, YYYY" "-0800"}}`: UTC unless an offset is given."""
    moment = _moment(value).astimezone(UTC)
    if offset:
        match = _OFFSET.match(offset)
        if match is None:
            raise TemplateError(f"formatDate's offset is like -0800, got {offset!r}")
        sign, hours, minutes = match.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes))
        moment = moment.astimezone(timezone(-delta if sign == "-" else delta))
    return _TOKENS.sub(lambda m: _format_token(m.group(0), moment), pattern)


def _format_date(*args: Any, options: HelperOptions) -> str:
    del options
    if len(args) not in (2, 3):
        raise TemplateError("{{formatDate}} takes a time, a format and optionally an offset")
    if args[0] is None or args[0] == "":
        return ""
    offset = str(args[2]) if len(args) == 3 and args[2] is not None else None
    return format_date(args[0], str(args[1]), offset)


_SENDGRID_HELPERS: dict[str, Any] = {
    "equals": _equals,
    "notEquals": _not_equals,
    "greaterThan": _greater_than,
    "lessThan": _less_than,
    "and": _and,
    "or": _or,
    "length": _length,
    "insert": _insert,
    "formatDate": _format_date,
}
_BUILT_IN = frozenset({"if", "unless", "each", "with", "lookup", "log", "else"})
KNOWN_HELPERS = _BUILT_IN | frozenset(_SENDGRID_HELPERS)


def _environment(escape: bool) -> HandlebarsEnvironment:
    env = HandlebarsEnvironment(auto_escape=escape, max_output_size=MAX_OUTPUT)
    for name, helper in _SENDGRID_HELPERS.items():
        env.register_helper(name, helper)
    return env


_HTML = _environment(escape=True)
_TEXT = _environment(escape=False)

# A tag's opening: sigils, then a name followed by an argument (so a helper call).
_TAG = re.compile(r"\{\{\{?~?\s*([#^/>&!]?)\s*([^\s}()~]+)((?:[^}]|\}(?!\}))*)\}\}")
_SUBEXPRESSION = re.compile(r"\(\s*([^\s()]+)")


def _unsupported(source: str) -> str | None:
    """The first helper or partial the template calls that SendGrid's set does not have."""
    for match in _TAG.finditer(source):
        sigil, name, rest = match.groups()
        if sigil == "!":
            continue
        if sigil == ">":
            return f"partials ({{{{> {name}}}}}) are not supported"
        for inner in _SUBEXPRESSION.findall(rest):
            if inner not in KNOWN_HELPERS:
                return f"unsupported helper {inner!r}"
        is_call = bool(rest.strip().strip("~").strip())
        if sigil in ("#", "") and is_call and name not in KNOWN_HELPERS:
            return f"unsupported helper {name!r}"
    return None


@lru_cache(maxsize=512)
def _compiled(source: str, escape: bool) -> CompiledTemplate:
    problem = _unsupported(source)
    if problem is not None:
        raise TemplateError(problem)
    try:
        return (_HTML if escape else _TEXT).compile(source)
    except HandlebarsError as exc:
        raise TemplateError(str(exc)) from None


def check(source: str) -> None:
    """Raise `TemplateError` if `source` would not compile (syntax, unsupported helpers)."""
    _compiled(source, True)


def render(source: str, data: dict[str, Any], *, escape: bool = True) -> str:
    """`source` rendered with `data`; `{{value}}` HTML-escaped when `escape`, as SendGrid does
    in every field of an email (subject and plain text included)."""
    if "{{" not in source:
        return source
    template = _compiled(source, escape)
    try:
        rendered = template.render(data)
    except TemplateError:
        raise
    except (HandlebarsError, RecursionError, ValueError, TypeError) as exc:
        raise TemplateError(str(exc) or type(exc).__name__) from None
    if len(rendered) > MAX_OUTPUT:
        raise TemplateError(f"the rendered text is longer than {MAX_OUTPUT:,} characters")
    return rendered
