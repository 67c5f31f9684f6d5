"""Declarative input schemas: keys declared as dataclass fields, YAML read safely and validated into them.

:func:`option` declares a key (default, description, unit, constraints) and :func:`section` a nested
section; :func:`build` turns a parsed YAML mapping into the frozen dataclass, refusing unknown, missing
and ill-typed keys with one message naming the key; :func:`read_yaml` reads an input file with the
limits below; :func:`reference_rows` gives a schema's rows of the Markdown key reference. The schema
itself (which keys exist) is :mod:`mldft_app.config`.
"""

import dataclasses
import math
import re
import typing
from dataclasses import MISSING, field
from pathlib import Path

import yaml

from .errors import UserInputError
from .parallel import shorten


def option(default=MISSING, *, doc, unit=None, choices=None, minimum=None, maximum=None, above=None, length=None,
           min_items=None, path=False):
    """Declare an input key: default (MISSING = required), description, unit and constraints.

    ``minimum``/``maximum`` are inclusive bounds, ``above`` an exclusive lower bound; ``length`` is the
    exact and ``min_items`` the least number of items of a list. Numbers must be finite.
    """
    meta = dict(doc=doc, unit=unit, choices=choices, minimum=minimum, maximum=maximum, above=above, length=length,
                min_items=min_items, path=path)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls, doc):
    """Declare a sub-section (a nested dataclass whose keys all have defaults unless required)."""
    return field(default_factory=cls, metadata=dict(doc=doc, section=True))


# ----------------------------------------------------------------------------------------------------
# Validation


def _type_name(tp):
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, typing.List):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin in (dict, typing.Dict):
        k, v = typing.get_args(tp)
        return f"mapping {_type_name(k)} -> {_type_name(v)}"
    if dataclasses.is_dataclass(tp):
        return "mapping (section)"
    return {type(None): "null", int: "integer", float: "number", str: "string", bool: "true/false"}.get(tp, str(tp))


def _describe(meta, tp):
    parts = [_type_name(tp)]
    if meta.get("choices"):
        parts.append("one of " + ", ".join(repr(c) for c in meta["choices"]))
    if meta.get("minimum") is not None:
        parts.append(f">= {meta['minimum']}")
    if meta.get("above") is not None:
        parts.append(f"> {meta['above']}")
    if meta.get("maximum") is not None:
        parts.append(f"<= {meta['maximum']}")
    if meta.get("length"):
        parts.append(f"exactly {meta['length']} values")
    if meta.get("min_items"):
        parts.append(f"at least {meta['min_items']} value(s)")
    if meta.get("unit"):
        parts.append(f"in {meta['unit']}")
    return ", ".join(parts)


def _convert(value, tp, key, meta, base_dir):
    """Check/convert one YAML value against a declared type; raise UserInputError naming ``key``."""

    def fail(extra=""):
        raise UserInputError(f"input key '{key}': expected {_describe(meta, tp)}, got {shorten(repr(value))}{extra}")

    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, key, meta, base_dir)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            fail()
        return build(tp, value, key + ".", base_dir)
    if origin in (list, typing.List):
        if not isinstance(value, list):
            fail()
        if (meta.get("length") and len(value) != meta["length"]) or len(value) < (meta.get("min_items") or 0):
            fail(f" ({len(value)} values)")
        (inner,) = typing.get_args(tp)
        item_meta = {**meta, "length": None, "min_items": None}
        return [_convert(v, inner, f"{key}[{i}]", item_meta, base_dir) for i, v in enumerate(value)]
    if origin in (dict, typing.Dict):
        if not isinstance(value, dict):
            fail()
        kt, vt = typing.get_args(tp)
        return {_convert(k, kt, key, {}, base_dir): _convert(v, vt, f"{key}.{k}", meta, base_dir) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            fail()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail()
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            fail(" (numbers must be finite)" if isinstance(value, float) else "")
        value = float(value)
    elif tp is str:
        if not isinstance(value, str) or not value:
            fail()
        if meta.get("path"):
            value = _resolve_path(value, key, base_dir)
    if meta.get("choices") and value not in meta["choices"]:
        fail()
    if meta.get("minimum") is not None and value < meta["minimum"]:
        fail()
    if meta.get("above") is not None and value <= meta["above"]:
        fail()
    if meta.get("maximum") is not None and value > meta["maximum"]:
        fail()
    return value


def _resolve_path(value, key, base_dir):
    """A path value made absolute (relative to the input file's directory)."""
    if len(value) > MAX_PATH_CHARS or "\0" in value:
        raise UserInputError(f"input key '{key}': {shorten(repr(value), 200)} is not a usable path "
                             f"({len(value)} characters{', a NUL byte' if chr(0) in value else ''})")
    try:
        return value if Path(value).is_absolute() else str((base_dir / value).resolve())
    except (OSError, RuntimeError) as err:
        raise UserInputError(f"input key '{key}': cannot resolve path {shorten(repr(value))}: {err}") from None


def build(cls, data, prefix, base_dir):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    not_names = [k for k in data if not isinstance(k, str)]
    if not_names:
        raise UserInputError(f"input key {shorten(repr(not_names[0]))} under '{prefix.rstrip('.') or '(top level)'}' is not a "
                             f"name: keys are words such as {', '.join(sorted(fields)[:3])}")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserInputError(
            f"input key '{prefix}{shorten(unknown[0])}' is not known; allowed keys here: {', '.join(sorted(fields))}"
        )
    values = {}
    for name, f in fields.items():
        key = prefix + name
        if name in data:
            values[name] = _convert(data[name], hints[name], key, f.metadata, base_dir)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise UserInputError(f"input key '{key}' is missing: expected {_describe(f.metadata, hints[name])} ({f.metadata['doc']})")
    return cls(**values)


# ----------------------------------------------------------------------------------------------------
# Reading YAML


MAX_PATH_CHARS = 4096
"""Longest path value accepted (PATH_MAX on Linux)."""

MAX_INPUT_BYTES = 1 << 20
"""Largest input file read (inputs are a few hundred bytes; anything larger is not an input file)."""

MAX_NESTING = 32
"""Deepest nesting of YAML mappings and lists accepted (the schema needs 3)."""

MAX_NODES = 100_000
"""Most YAML values an input may hold once aliases are expanded (bounds "billion laughs" inputs)."""

_FLOAT_12 = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?$")


class InputLoader(yaml.SafeLoader):
    """PyYAML's safe loader with two YAML 1.2 behaviours: ``1.0e9`` and ``1e-3`` are numbers (YAML 1.1
    reads them as strings), and a key given twice in one mapping is an error (not "the last wins")."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:  # unhashable keys are refused by PyYAML itself
                    continue
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {shorten(repr(key))} is given twice in one mapping (first on line {first.start_mark.line + 1})",
                        key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


InputLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+.0123456789"))


def check_yaml_shape(text, path):
    """Refuse YAML nested deeper than :data:`MAX_NESTING` or holding more than :data:`MAX_NODES` values
    once aliases are expanded, or with an alias inside its own anchor, before it is built.

    Works on the parser's event stream (no recursion, no expansion), so it is fast on any input.
    """
    open_nodes = []  # [expanded size, anchor] of each open mapping/list
    sizes = {}  # anchor -> expanded size of its node
    total = 0
    for event in yaml.parse(text, Loader=InputLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            open_nodes.append([1, event.anchor])
            if len(open_nodes) > MAX_NESTING:
                raise UserInputError(f"input file {path}: mappings/lists nested more than {MAX_NESTING} deep (line {event.start_mark.line + 1})")
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            size, anchor = open_nodes.pop()
            if anchor is not None:
                sizes[anchor] = size
        elif isinstance(event, yaml.ScalarEvent):
            size = 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in sizes:
                raise UserInputError(f"input file {path}: alias *{shorten(event.anchor)} refers to a node that contains it (line {event.start_mark.line + 1})")
            size = sizes[event.anchor]
        else:
            continue
        if open_nodes:
            open_nodes[-1][0] += size
        else:
            total += size
        if max(total, open_nodes[-1][0] if open_nodes else 0) > MAX_NODES:
            raise UserInputError(f"input file {path}: more than {MAX_NODES} values once aliases are expanded (an alias bomb?)")


def read_yaml(path):
    """The parsed YAML of input file ``path`` (UTF-8, within the limits above). Raises UserInputError."""
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            raw = stream.read(MAX_INPUT_BYTES + 1)
    except OSError as err:
        raise UserInputError(f"cannot read input file {shorten(str(path))}: {err.strerror}") from None
    if len(raw) > MAX_INPUT_BYTES:
        raise UserInputError(f"input file {path} is larger than {MAX_INPUT_BYTES >> 20} MiB: not an input file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise UserInputError(f"input file {path} is not UTF-8 text: byte 0x{raw[err.start]:02x} on line {line} "
                             "(save it as UTF-8)") from None
    try:
        check_yaml_shape(text, path)
        return yaml.load(text, Loader=InputLoader)
    except yaml.YAMLError as err:
        raise UserInputError(f"input file {path} is not valid YAML: {shorten(str(err))}") from None


# ----------------------------------------------------------------------------------------------------
# Documentation


def _default_text(f):
    if f.default is not MISSING:
        return repr(f.default) if f.default is not None else "null"
    if f.default_factory is not MISSING:
        value = f.default_factory()
        return "(section)" if dataclasses.is_dataclass(value) else repr(value)
    return "**required**"


def reference_rows(cls, prefix):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)] or ([tp] if dataclasses.is_dataclass(tp) else [])
        if inner:
            yield f"| `{prefix}{f.name}` | section | {_default_text(f)} | | {f.metadata['doc']} |"
            yield from reference_rows(inner[0], f"{prefix}{f.name}.")
            continue
        meta = f.metadata
        constraint = _describe({**meta, "unit": None}, tp)
        yield f"| `{prefix}{f.name}` | {constraint} | {_default_text(f)} | {meta.get('unit') or ''} | {meta['doc']} |"


__all__ = ["MAX_INPUT_BYTES", "MAX_NESTING", "MAX_NODES", "MAX_PATH_CHARS", "InputLoader", "build", "check_yaml_shape",
           "option", "read_yaml", "reference_rows", "section"]
