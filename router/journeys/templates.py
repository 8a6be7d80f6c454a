"""Journey templates: Jinja2's sandbox, so a definition can read data but never run code.

A template reads `member.*` (the member's fields and attributes), `event.*` (the properties
of the event that started the run) and `coupon("pool")` (the member's code from that pool for
this run). Undefined names are errors, never empty text: a message with a hole in it must fail
visibly. Jinja2 is the one well-kept sandboxed engine for Python; its syntax is the one
`{{ ... }}` users already write in email tools.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jinja2
import msgspec
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

TOP_LEVEL_NAMES = frozenset({"member", "event", "coupon"})
"""The only names a template may read."""


class _Scope(dict[str, Any]):
    """A mapping that knows where it sits (`event`, `member.attributes`), so that a name
    missing from it is reported by its whole path."""

    _router_path: str


def _scoped(value: Any, path: str) -> Any:
    if isinstance(value, Mapping):
        scope = _Scope({k: _scoped(v, f"{path}.{k}") for k, v in value.items()})
        scope._router_path = path
        return scope
    return value


class _NamedUndefined(jinja2.StrictUndefined):
    """Strict, and names the variable by its path: "event.cart_url", not "'dict object' has
    no attribute 'cart_url'"."""

    @property
    def _undefined_message(self) -> str:
        owner = getattr(self._undefined_obj, "_router_path", None)
        if owner is not None:
            return f"{owner}.{self._undefined_name}"
        if self._undefined_name is not None and self._undefined_obj is jinja2.utils.missing:
            return str(self._undefined_name)
        return str(super()._undefined_message)


# Sent text is not HTML-escaped here: email HTML parts are the company's own markup, and LINE
# text is plain.
_ENVIRONMENT = ImmutableSandboxedEnvironment(
    undefined=_NamedUndefined, autoescape=False, keep_trailing_newline=True
)


class TemplateError(ValueError):
    """A template that cannot be compiled, or a variable it names that has no value."""


def compile_template(source: str) -> jinja2.Template:
    return _compiled(source)


# A journey's templates are rendered once per member: compiling is most of the cost, so each
# source is compiled once (compiled templates are immutable and safe to share).
@functools.lru_cache(maxsize=1024)
def _compiled(source: str) -> jinja2.Template:
    try:
        return _ENVIRONMENT.from_string(source)
    except jinja2.TemplateSyntaxError as error:
        raise TemplateError(f"line {error.lineno}: {error.message}") from None


def is_template(text: str) -> bool:
    """Whether `text` holds template syntax at all (plain text is used as it is)."""
    return "{{" in text or "{%" in text or "{#" in text


def pools_used(source: str) -> set[str]:
    """The coupon pools a template calls `coupon("...")` with, so their codes can be taken
    before rendering. A call with anything but a literal name is refused: the pool must be
    known before the send."""
    try:
        tree = _ENVIRONMENT.parse(source)
    except jinja2.TemplateSyntaxError as error:
        raise TemplateError(f"line {error.lineno}: {error.message}") from None
    pools: set[str] = set()
    for call in tree.find_all(nodes.Call):
        if isinstance(call.node, nodes.Name) and call.node.name == "coupon":
            args = call.args
            if len(args) != 1 or not isinstance(args[0], nodes.Const):
                raise TemplateError('coupon() takes one pool name in quotes: coupon("pool")')
            pools.add(str(args[0].value))
    return pools


class VariableUse(msgspec.Struct, frozen=True):
    """A variable a template reads: `member.attributes.plan` is ("member", "attributes",
    "plan"), as far as the path is written with literal names."""

    path: tuple[str, ...]
    line: int


def variables_read(source: str) -> list[VariableUse]:
    """Every use of a name the template does not define itself, with the attribute or key
    names read from it (`event.cart_url`, `member["email"]`), so that validation can say
    which of them can never have a value."""
    try:
        tree = _ENVIRONMENT.parse(source)
    except jinja2.TemplateSyntaxError as error:
        raise TemplateError(f"line {error.lineno}: {error.message}") from None
    undeclared = meta.find_undeclared_variables(tree)
    uses: list[VariableUse] = []
    inner: set[int] = set()  # nodes already part of a longer path
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if id(node) in inner:
            continue
        path: list[str] = []
        current: nodes.Node = node
        while True:
            if isinstance(current, nodes.Getattr):
                path.append(current.attr)
            elif isinstance(current, nodes.Getitem) and isinstance(current.arg, nodes.Const):
                path.append(str(current.arg.value))
            elif isinstance(current, nodes.Getitem):
                path.clear()  # a computed key: only what comes before it is known
            else:
                break
            inner.add(id(current))
            current = current.node
        if isinstance(current, nodes.Name) and current.name in undeclared:
            inner.add(id(current))
            uses.append(VariableUse((current.name, *reversed(path)), node.lineno))
    for name in tree.find_all(nodes.Name):
        if name.ctx == "load" and name.name in undeclared and id(name) not in inner:
            uses.append(VariableUse((name.name,), name.lineno))
    return uses


def render(
    source: str,
    *,
    member: Mapping[str, Any],
    event: Mapping[str, Any],
    coupons: Mapping[str, str],
) -> str:
    """`source` filled in. `coupons`: the code taken for each pool the template uses."""
    if not is_template(source):
        return source

    def coupon(pool: str) -> str:
        try:
            return coupons[pool]
        except KeyError:
            raise TemplateError(f'coupon("{pool}"): no code was taken from that pool') from None

    context: dict[str, Callable[[str], str] | Mapping[str, Any]] = {
        "member": _scoped(member, "member"),
        "event": _scoped(event, "event"),
        "coupon": coupon,
    }
    try:
        return compile_template(source).render(context)
    except jinja2.UndefinedError as error:
        raise TemplateError(f"no value for {error.message}") from None
    except jinja2.exceptions.SecurityError as error:
        raise TemplateError(f"not allowed in a template: {error}") from None
