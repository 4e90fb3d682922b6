"""What reports need to know about methods, read from the method registry (never a list in report code).

Each :class:`~benchmark.api.Method` declares it as class attributes: ``table_order`` (row order),
``family`` and ``ablation`` (Table 2 rows), ``needs`` and ``approximation``, and ``report_sweeps``
(option -> title of its sweep table). A new method appears in the reports through its registration alone.
A method that is in a result store but no longer importable keeps its rows, ordered after the known ones.
"""

from __future__ import annotations

from typing import Any

from benchmark.catalog import METHODS
from benchmark.registry import RegistryError

#: the order of a method the registry cannot load (after every declared ``table_order``).
UNKNOWN_ORDER = 10**6


def method_class(name: str) -> type | None:
    """The registered class of ``name``, or ``None`` when it is unknown or fails to import."""
    try:
        return METHODS.get(name)
    except RegistryError:
        return None


def method_sort_key(name: str) -> tuple[int, str]:
    """Row order of a method in every table and figure: its ``table_order``, then its name."""
    cls = method_class(name)
    return (int(getattr(cls, "table_order", UNKNOWN_ORDER)) if cls is not None else UNKNOWN_ORDER, name)


def method_info(name: str) -> dict[str, Any]:
    """``family``, ``ablation``, ``needs``, ``approximation`` and ``table_order`` of ``name`` (empty values
    when it is not registered)."""
    cls = method_class(name)
    return {
        "family": getattr(cls, "family", None),
        "ablation": getattr(cls, "ablation", None),
        "needs": sorted(getattr(cls, "needs", ())),
        "approximation": getattr(cls, "approximation", None),
        "table_order": method_sort_key(name)[0],
    }


def _loadable() -> list[type]:
    return [cls for _name, _entry, cls in METHODS.describe() if cls is not None]


def ablation_rows(family: str = "bass") -> list[tuple[str, frozenset[str]]]:
    """Table 2 rows of a family in table order: ``(method, components it keeps)``, from each method's
    ``ablation`` label (``"NMH + LRD"`` -> ``{"NMH", "LRD"}``)."""
    rows = [(cls.name, frozenset(p.strip() for p in cls.ablation.split("+") if p.strip()))
            for cls in _loadable() if cls.family == family and cls.ablation]
    return sorted(rows, key=lambda r: method_sort_key(r[0]))


def ablation_columns(rows: list[tuple[str, frozenset[str]]]) -> list[str]:
    """The components of ``rows`` in order of first appearance (BASS: NMH, LRD, CRC)."""
    cols: list[str] = []
    for name, _parts in rows:
        label = method_class(name).ablation  # type: ignore[union-attr]
        for part in (p.strip() for p in label.split("+")):
            if part and part not in cols:
                cols.append(part)
    return cols


def report_sweeps() -> dict[str, str]:
    """``{option: table title}`` of every sweep a registered method declares (``report_sweeps``)."""
    out: dict[str, str] = {}
    for cls in sorted(_loadable(), key=lambda c: method_sort_key(c.name)):
        for option, title in dict(getattr(cls, "report_sweeps", {}) or {}).items():
            out.setdefault(option, title)
    return out
