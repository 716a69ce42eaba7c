"""Typed, self-validating config dataclasses: the one field checker behind agent and env configs.

A config is a ``@dataclass`` deriving :class:`TypedConfig`. Building it checks every field against
its annotation (``__post_init__``), then :meth:`TypedConfig.validate` checks ranges, so a bad value
is refused by name before a model loads or a call is charged. Choice fields are ``str`` enums
(:class:`enum.StrEnum`): a config takes the member or its text and keeps the member. The same
annotations type command-line values (:func:`parse_field`: ``--agent-kwarg lr=abc`` and
``--env-kwarg prompt_length=ten`` are refused by name) and document the fields
(:func:`config_fields`, from each field's trailing comment, CleanRL's one-line-per-field style).

This module sits below the env and agent layers so that both validate the same way.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import re
import types
import typing
from enum import Enum
from typing import Any

import numpy as np

from promptgym.errors import ConfigError


class TypedConfig:
    """Mixin for config dataclasses: every field is type-checked on construction, then :meth:`validate` runs.

    Subclasses are ``@dataclass`` classes whose fields have defaults in the signature and a one-line
    comment each; they add range checks in :meth:`validate` (raise through :func:`require`). A bad
    value raises :class:`~promptgym.errors.ConfigError` naming the field.
    """

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            setattr(self, f.name, coerce(type(self).__name__, f.name, hints.get(f.name, Any), getattr(self, f.name)))
        self.validate()

    def validate(self) -> None:
        """Range checks beyond the field types (override; raise through :func:`require`)."""


def require(ok: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``ok``."""
    if not ok:
        raise ConfigError(message)


def field_names(config_class: type) -> list[str]:
    """The field names of a config dataclass, in declaration order."""
    return [f.name for f in dataclasses.fields(config_class)]


def choices(enum: type[Enum]) -> tuple[str, ...]:
    """The texts a ``str`` enum accepts, in declaration order."""
    return tuple(str(m.value) for m in enum)


def type_name(tp: Any) -> str:
    """A short readable form of an annotation: ``int or None``; an enum reads as its choices."""
    if tp is type(None):
        return "None"
    if isinstance(tp, type) and issubclass(tp, Enum):
        return "|".join(choices(tp))
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    return getattr(tp, "__name__", str(tp))


def _is_enum(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Enum)


def _expected(tp: Any) -> str:
    """What a message says a field must be: its type, or ``one of ce, hinge (or None)`` for a choice."""
    options = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    enums = [o for o in options if _is_enum(o)]
    if len(enums) == 1 and set(options) <= {enums[0], type(None)}:
        return f"one of {', '.join(choices(enums[0]))}" + (" (or None)" if len(options) > 1 else "")
    return type_name(tp)


def coerce(owner: str, name: str, tp: Any, value: Any) -> Any:
    """``value`` checked against annotation ``tp`` (ints are accepted for floats; bools never for numbers).

    An enum field takes a member or its text and returns the member; any other class takes its instances.
    """
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return coerce(owner, name, arg, value)
            except ConfigError:
                continue
        raise ConfigError(f"{owner}.{name} must be {_expected(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
    elif _is_enum(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, str) and value in choices(tp):
            return tp(value)
        raise ConfigError(f"{owner}.{name} must be {_expected(tp)}, got {value!r}")
    elif tp is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
    elif tp is int:
        if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
            if not math.isfinite(float(value)):
                raise ConfigError(f"{owner}.{name} must be a finite number, got {value!r}")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif (origin or tp) in (dict, list, tuple):
        if isinstance(value, origin or tp):
            return value
    elif origin is None and isinstance(tp, type):
        if isinstance(value, tp):
            return value
    else:
        return value
    raise ConfigError(f"{owner}.{name} must be {type_name(tp)}, got {value!r}")


def parse_field(config_class: type, name: str, text: str) -> Any:
    """A command-line value for field ``name`` of ``config_class``, typed by the field's annotation.

    ``"0.5"`` for a float field, ``"none"`` for an optional one, JSON for dicts and lists, an enum's
    text for a choice field (returned as plain text, as run records store it). A value that does
    not fit raises a ConfigError naming the field and its type.
    """
    fields = field_names(config_class)
    if name not in fields:
        raise ConfigError(f"{config_class.__name__} has no field {name!r}; its fields: {', '.join(fields)}")
    tp = typing.get_type_hints(config_class).get(name, Any)
    options = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    lowered = text.strip().lower()
    for opt in options:
        try:
            if opt is type(None) and lowered in ("none", "null"):
                return None
            if _is_enum(opt) and text in choices(opt):
                return text
            if opt is bool and lowered in ("true", "false", "1", "0", "yes", "no"):
                return lowered in ("true", "1", "yes")
            if opt is int:
                return int(text)
            if opt is float:
                return float(text)
            if opt is str:
                return text
            if (typing.get_origin(opt) or opt) in (dict, list, tuple):
                return json.loads(text)
            if opt is Any:
                try:
                    return json.loads(text)
                except json.JSONDecodeError:
                    return text
        except (ValueError, json.JSONDecodeError):
            continue
    raise ConfigError(f"{config_class.__name__}.{name} must be {_expected(tp)}, got {text!r}")


def config_fields(config_class: type) -> list[tuple[str, str, Any, str]]:
    """``(name, type, default, one-line meaning)`` of each field of a config dataclass.

    The meaning is the field's trailing ``# comment`` in the source, so the documentation shown by
    ``promptgym list`` is the code's own. An enum default is shown as its text.
    """
    docs: dict[str, str] = {}
    for klass in reversed(config_class.__mro__):
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for line in source.splitlines():
            m = re.match(r"\s+(\w+)\s*:[^#]*?#\s*(.+)$", line)
            if m:
                docs[m.group(1)] = m.group(2).strip()
    hints = typing.get_type_hints(config_class)
    out = []
    for f in dataclasses.fields(config_class):
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        if isinstance(default, Enum):
            default = default.value
        out.append((f.name, type_name(hints.get(f.name, Any)), default, docs.get(f.name, "")))
    return out


__all__ = ["TypedConfig", "choices", "coerce", "config_fields", "field_names", "parse_field", "require", "type_name"]
