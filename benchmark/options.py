"""Typed options: one frozen dataclass per method (and the training profile), one coercion path.

A method declares its options as a frozen dataclass whose fields are made with :func:`option`::

    @dataclasses.dataclass(frozen=True)
    class WatershedOptions:
        smooth_sigma: float = option(1.0, "Gaussian sigma (pixels) on the H channel", low=0.0)
        normalize: str = option("median", "subtract each image's median H, or not", choices=("median", "none"))

and sets ``Options = WatershedOptions`` on its :class:`~benchmark.api.Method` class. Everything else
derives from that declaration: coercion of CLI strings (:func:`coerce`), validation (:func:`check`),
``config()``, the ``benchmark list -v`` option listing (:func:`describe`) and the canonical text that
enters the cell key (:func:`canonical_text`).

Supported field types: ``bool``, ``int``, ``float``, ``str``, ``tuple[float, ...]`` / ``tuple[int, ...]`` /
``tuple[str, ...]`` (CLI: comma-separated), and ``float | str`` / ``int | str`` where the string must be
one of the field's ``keywords`` (e.g. ``box_threshold = "auto"`` or a number). Floats must be finite.
Errors are :class:`OptionError` (a ``ValueError``) naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

#: metadata key under which :func:`option` stores its :class:`Spec`.
META = "nuclei_ssl_bench.option"

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class OptionError(ValueError):
    """A bad option name or value; the message names the key, the value and what is allowed."""


@dataclasses.dataclass(frozen=True)
class Spec:
    """What :func:`option` records about a field besides its default and type.

    Attributes:
        help: one-line description (``benchmark list -v``).
        choices: allowed values (for tuples: allowed elements), or ``None``.
        low, high: inclusive numeric bounds (for tuples: of every element), or ``None``.
        low_open: ``low`` itself is excluded (``> low`` instead of ``>= low``).
        keywords: strings accepted instead of a number by a ``float | str`` / ``int | str`` field.
    """

    help: str = ""
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    keywords: tuple[str, ...] = ()


def option(
    default: Any,
    help: str,
    *,
    choices: Sequence[Any] | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    keywords: Sequence[str] = (),
) -> Any:
    """A dataclass field with a default and the :class:`Spec` used to coerce and validate it."""
    spec = Spec(help, None if choices is None else tuple(choices), low, high, low_open, tuple(keywords))
    return dataclasses.field(default=default, metadata={META: spec})


def spec_of(field: dataclasses.Field) -> Spec:
    """The field's :class:`Spec` (an empty one for a plain dataclass field)."""
    return field.metadata.get(META, Spec())


# ------------------------------------------------------------------------------------ coercion
def type_text(tp: Any) -> str:
    """``float``, ``tuple of float``, ``float or keyword`` ... for messages and listings."""
    if tp is Any:
        return "any"
    origin = typing.get_origin(tp)
    if origin is tuple:
        return f"tuple of {type_text(typing.get_args(tp)[0])}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_text(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _scalar(value: Any, tp: type) -> Any:
    """``value`` (CLI string or Python value) as ``tp``; ``ValueError`` with the reason otherwise."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError("expected true/false (also yes/no, on/off, 1/0)")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError("expected an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError("expected an integer")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError("expected a number")
        try:
            out = float(value)
        except ValueError:
            raise ValueError("expected a number") from None
        if not math.isfinite(out):
            raise ValueError("expected a finite number")
        return out
    if tp is str:
        if not isinstance(value, str):
            raise ValueError("expected a string")
        return value
    return value  # Any: passed through


def _convert(value: Any, tp: Any, spec: Spec) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if isinstance(value, str) and value.strip() in spec.keywords:
            return value.strip()
        others = [a for a in typing.get_args(tp) if a not in (str, type(None))]
        for member in others:
            try:
                return _convert(value, member, spec)
            except ValueError:
                continue
        words = " or ".join(repr(k) for k in spec.keywords)
        raise ValueError(f"expected {' or '.join(type_text(a) for a in others)}" + (f" or {words}" if words else ""))
    if origin is tuple:
        kind = typing.get_args(tp)[0]
        if isinstance(value, str):
            items: Sequence[Any] = [x.strip() for x in value.replace(";", ",").split(",") if x.strip()]
        elif isinstance(value, (tuple, list)):
            items = value
        else:
            raise ValueError(f"expected comma-separated {type_text(kind)} values")
        try:
            return tuple(_scalar(x, kind) for x in items)
        except ValueError as exc:
            raise ValueError(f"every element: {exc}") from None
    return _scalar(value, tp)


def _allowed(tp: Any, spec: Spec) -> str:
    """What a field accepts, in words (``a float in [0, 1]``, ``one of 'paper', 'code'``)."""
    parts = []
    if spec.choices is not None:
        parts.append("one of " + ", ".join(repr(c) for c in spec.choices))
    else:
        parts.append(type_text(tp))
    if spec.low is not None and spec.high is not None:
        parts.append(f"in {'(' if spec.low_open else '['}{spec.low}, {spec.high}]")
    elif spec.low is not None:
        parts.append(f"{'>' if spec.low_open else '>='} {spec.low}")
    elif spec.high is not None:
        parts.append(f"<= {spec.high}")
    if spec.keywords:
        parts.append("or " + " / ".join(repr(k) for k in spec.keywords))
    return " ".join(parts)


def check(value: Any, spec: Spec) -> None:
    """``ValueError`` when a coerced ``value`` breaks the field's choices or range."""
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        if isinstance(item, str) and item in spec.keywords:
            continue
        if spec.choices is not None and item not in spec.choices:
            raise ValueError("not an allowed value")
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            if spec.low is not None and (item < spec.low or (spec.low_open and item == spec.low)):
                raise ValueError("out of range")
            if spec.high is not None and item > spec.high:
                raise ValueError("out of range")


def coerce(value: Any, tp: Any, spec: Spec, *, key: str, default: Any = dataclasses.MISSING) -> Any:
    """The one coercion of the suite: ``value`` (CLI string or Python value) as type ``tp``, validated.

    Args:
        value: what was given (``"0.3"`` from ``--set``, or a Python value from code).
        tp: the field's type (see the module docstring for the supported ones).
        spec: the field's :class:`Spec`.
        key: what the user typed to reach the field (``"bass.alpha"``, ``"profile.iterations"``).
        default: shown in the message when given.

    Raises:
        OptionError: naming ``key``, ``value`` and what is allowed.
    """
    try:
        out = _convert(value, tp, spec)
        check(out, spec)
        return out
    except ValueError as exc:
        shown = "" if default is dataclasses.MISSING else f" (default {canonical_text(default)})"
        raise OptionError(
            f"{key}={value!r}: {exc}; allowed: {_allowed(tp, spec)}{shown}"
        ) from None


# ------------------------------------------------------------------------------------ declarations
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def fields_of(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    """``(field, resolved type)`` of every field of the options dataclass ``cls``."""
    hints = _hints(cls)
    return [(f, hints.get(f.name, Any)) for f in dataclasses.fields(cls)]


def defaults_of(cls: type) -> dict[str, Any]:
    """``{name: default}`` of the options dataclass ``cls`` (fields without a default are left out)."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def parse(cls: type, name: str, value: Any, *, owner: str, show_default: bool = True) -> Any:
    """One value for field ``name`` of ``cls``, coerced and validated (``owner.name`` in messages)."""
    by_name = {f.name: (f, tp) for f, tp in fields_of(cls)}
    if name not in by_name:
        raise OptionError(f"{owner} has no option {name!r}; valid options: {', '.join(sorted(by_name))}")
    field, tp = by_name[name]
    default = field.default if show_default else dataclasses.MISSING
    return coerce(value, tp, spec_of(field), key=f"{owner}.{name}", default=default)


def build(cls: type, values: Mapping[str, Any], *, owner: str) -> Any:
    """An instance of the options dataclass ``cls`` from ``values`` (CLI strings or Python values).

    Raises:
        OptionError: unknown keys (listing the valid ones), wrong types, out-of-range values.
    """
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise OptionError(
            f"unknown {owner} option(s) {', '.join(map(repr, unknown))}: there is no option of that name; "
            f"valid options: {', '.join(sorted(valid))}"
        )
    return cls(**{k: parse(cls, k, v, owner=owner) for k, v in values.items()})


def as_dict(instance: Any) -> dict[str, Any]:
    """``{field: value}`` of an options instance (shallow: tuples stay tuples)."""
    return {f.name: getattr(instance, f.name) for f in dataclasses.fields(instance)}


def json_value(value: Any) -> Any:
    """The JSON form of an option value (tuples become lists)."""
    return [json_value(v) for v in value] if isinstance(value, (tuple, list)) else value


def canonical_text(value: Any) -> str:
    """The one spelling of a coerced value, as it enters the cell key (``0.3``, ``true``, ``0.5,1.0``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(canonical_text(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def with_defaults(base: type, name: str, **defaults: Any) -> type:
    """A frozen subclass of the options dataclass ``base`` with other defaults (types and specs kept).

    Used by method variants (``bass-nmh`` is ``bass`` with ``lrd=False, crc=False``).
    """
    by_name = {f.name: (f, tp) for f, tp in fields_of(base)}
    unknown = sorted(set(defaults) - set(by_name))
    if unknown:
        raise OptionError(f"{base.__name__} has no option(s) {unknown}; valid: {', '.join(sorted(by_name))}")
    changed = []
    for key, value in defaults.items():
        field, tp = by_name[key]
        value = coerce(value, tp, spec_of(field), key=f"{name}.{key}")
        changed.append((key, tp, dataclasses.field(default=value, metadata=field.metadata)))
    new = dataclasses.make_dataclass(name, changed, bases=(base,), frozen=True)
    new.__module__ = base.__module__
    return new


def from_defaults(defaults: Mapping[str, Any], name: str) -> type:
    """An options dataclass inferred from a plain ``{name: default}`` dict (older plugins' ``defaults``).

    Each field's type is its default's type (``tuple[<first element's type>, ...]`` for tuples,
    ``Any`` for ``None``); there are no ranges or choices.
    """
    fields = []
    for key, value in defaults.items():
        if value is None:
            tp: Any = Any
        elif isinstance(value, (tuple, list)):
            tp = tuple[type(value[0]) if value else float, ...]
            value = tuple(value)
        else:
            tp = type(value)
        fields.append((key, tp, option(value, "")))
    return dataclasses.make_dataclass(name, fields, frozen=True)


def describe(cls: type) -> list[dict[str, Any]]:
    """One row per field: ``name``, ``type``, ``default`` (JSON form), ``allowed``, ``help``."""
    return [
        {"name": f.name, "type": type_text(tp), "default": json_value(f.default),
         "allowed": _allowed(tp, spec_of(f)), "help": spec_of(f).help}
        for f, tp in fields_of(cls)
    ]
