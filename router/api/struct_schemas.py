"""Struct schemas as msgspec decodes them: Litestar's, plus what Litestar leaves out.

Litestar describes a Struct's fields and their `msgspec.Meta` limits, but not that a Struct
with `forbid_unknown_fields` refuses any other field, nor the rules over several fields a
Struct declares (`router.wire_rules`). Without them the document accepts bodies the server
refuses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.openapi.spec import OpenAPIType, Schema

from router.wire_rules import Alternatives, declared

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.openapi.spec import Reference
    from litestar.typing import FieldDefinition


def _given(field: str) -> Schema:
    """The field is present and neither null nor the empty string."""
    return Schema(required=[field], properties={field: Schema(schema_not=Schema(enum=[None, ""]))})


def _rule_schema(rule: Alternatives, encode_names: dict[str, str]) -> list[Schema | Reference]:
    return [_given(encode_names[name]) for name in rule.fields]


def _inner(t: msgspec.inspect.Type) -> msgspec.inspect.Type:
    """The type under `X | None` and under `Annotated` metadata."""
    if isinstance(t, msgspec.inspect.UnionType):
        rest = [u for u in t.types if not isinstance(u, msgspec.inspect.NoneType)]
        if len(rest) == 1:
            t = rest[0]
    while isinstance(t, msgspec.inspect.Metadata):
        t = t.type
    return t


def _string_schema(t: msgspec.inspect.Type) -> Schema | None:
    """A dict key's or value's own limits, msgspec's and those only documented."""
    extra: dict[str, Any] = {}
    if isinstance(t, msgspec.inspect.Metadata):
        extra = dict((t.extra_json_schema or {}).get("extra", {}))
        t = t.type
    if not isinstance(t, msgspec.inspect.StrType):
        return None
    pattern = t.pattern or extra.get("pattern")
    # A format the router names itself ("mailbox"), which OpenAPIFormat does not list.
    named_format: Any = extra.get("format")
    if pattern is None and named_format is None and t.min_length is None and t.max_length is None:
        return None
    return Schema(
        type=OpenAPIType.STRING,
        pattern=pattern,
        min_length=t.min_length,
        max_length=t.max_length,
        format=named_format,
    )


def _complete(prop: Schema | Reference, t: msgspec.inspect.Type) -> None:
    """What Litestar leaves out of a field's schema: a limit of 0 (read as unset), and the
    limits of a dict's keys and values."""
    if not isinstance(prop, Schema):
        return
    inner = _inner(t)
    if isinstance(inner, msgspec.inspect.ListType) and inner.max_length == 0:
        prop.max_items = 0
    if isinstance(inner, msgspec.inspect.ListType) and (
        item_limits := _string_schema(inner.item_type)
    ):
        for arm in prop.one_of or [prop]:
            if isinstance(arm, Schema) and isinstance(arm.items, Schema):
                for name in ("pattern", "min_length", "max_length", "format"):
                    if (value := getattr(item_limits, name)) is not None:
                        setattr(arm.items, name, value)
        return
    if isinstance(inner, msgspec.inspect.ListType) and isinstance(
        _inner(inner.item_type), msgspec.inspect.DictType
    ):
        items = next(
            (s.items for s in prop.one_of or [prop] if isinstance(s, Schema) and s.items), None
        )
        if isinstance(items, Schema):
            _complete(items, inner.item_type)
        return
    if isinstance(inner, msgspec.inspect.DictType):
        if (names := _string_schema(inner.key_type)) is not None:
            prop.property_names = names
        if (values := _string_schema(inner.value_type)) is not None:
            target = prop
            if prop.one_of:  # `dict | None`: the dict's own schema
                target = next(
                    (
                        s
                        for s in prop.one_of
                        if isinstance(s, Schema) and s.type == OpenAPIType.OBJECT
                    ),
                    prop,
                )
            target.additional_properties = values


class StructSchemas(StructSchemaPlugin):
    """Takes over Litestar's own Struct plugin (it is registered before the defaults)."""

    def to_openapi_schema(
        self, field_definition: FieldDefinition, schema_creator: SchemaCreator
    ) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        struct_type = field_definition.type_
        info = msgspec.inspect.type_info(struct_type)
        assert isinstance(info, msgspec.inspect.StructType)
        if info.forbid_unknown_fields:
            schema.additional_properties = False
        for field in info.fields:
            if schema.properties and field.encode_name in schema.properties:
                _complete(schema.properties[field.encode_name], field.type)
        encode_names = {f.name: f.encode_name for f in info.fields}
        all_of: list[Schema | Reference] = []
        for rule in declared(struct_type):
            branches = _rule_schema(rule, encode_names)
            if rule.exactly_one:
                all_of.append(Schema(one_of=branches, description=rule.message))
            else:
                all_of.append(Schema(any_of=branches, description=rule.message))
        if all_of:
            schema.all_of = all_of
        return schema
