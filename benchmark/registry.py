"""A small generic registry with lazy ``"module:object"`` targets and entry-point discovery.

Modelled on lm-evaluation-harness ``api/registry.py``: a name maps to either a loaded object or a lazy
placeholder (a ``"module:object"`` string); the placeholder is imported on first :meth:`Registry.get`.
Built-in methods and datasets are declared through the *same* entry-point groups as third-party ones
(``nuclei_ssl_bench.methods`` / ``nuclei_ssl_bench.datasets``, see ``pyproject.toml``), and are also
registered in code so that a plain checkout that was never ``pip install``-ed still finds them.

Policies:
- the same name pointing at the same target twice is fine (an editable install seen twice);
- the same name pointing at two different targets raises :class:`RegistryConflict` naming both
  distributions;
- an unknown name raises :class:`UnknownNameError` listing what is available and the closest match;
- a plugin that fails to import raises :class:`PluginLoadError` naming the plugin and its distribution,
  and :meth:`Registry.describe` reports it without breaking listings.
"""

from __future__ import annotations

import difflib
import importlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Generic, TypeVar

T = TypeVar("T")

BUILTIN_DIST = "nuclei-ssl-bench"


class RegistryError(Exception):
    """Base class of registry errors."""


class RegistryConflict(RegistryError, ValueError):
    """Two different targets claim the same name."""


class UnknownNameError(RegistryError, KeyError):
    """A name that is not registered. ``str()`` lists the available names."""

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0]) if self.args else ""


class PluginLoadError(RegistryError, ImportError):
    """A registered target could not be imported."""


@dataclass
class Entry:
    """One registered name.

    Attributes:
        name: registry key.
        target: ``"module:object"`` string (lazy) or the object itself.
        dist: distribution that declared it (``"nuclei-ssl-bench"`` for built-ins).
        obj: the loaded object once imported.
        error: the import error message if loading failed.
    """

    name: str
    target: Any
    dist: str = BUILTIN_DIST
    obj: Any = None
    error: str | None = None

    @property
    def target_str(self) -> str:
        if isinstance(self.target, str):
            return self.target
        return f"{getattr(self.target, '__module__', '?')}:{getattr(self.target, '__qualname__', '?')}"


def load_target(target: str) -> Any:
    """Import ``"package.module:attr.sub"`` and return the object."""
    if ":" not in target:
        raise ValueError(f"lazy target {target!r} must look like 'package.module:object'")
    module_name, _, attr_path = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Name → object registry.

    Args:
        kind: what is registered (``"method"``, ``"dataset"``), used in messages.
        group: entry-point group scanned by :meth:`load_entry_points` (``None``: no discovery).
        base_cls: if given, loaded objects must be subclasses of it.
    """

    def __init__(self, kind: str, group: str | None = None, base_cls: type | None = None) -> None:
        self.kind = kind
        self.group = group
        self.base_cls = base_cls
        self._entries: dict[str, Entry] = {}
        self._lock = threading.RLock()
        self._discovered = False

    # ------------------------------------------------------------------ registration
    def register(self, name: str, target: Any, *, dist: str = BUILTIN_DIST) -> None:
        """Register ``target`` (object or ``"module:object"`` string) under ``name``.

        Raises:
            RegistryConflict: ``name`` is taken by a different target.
        """
        with self._lock:
            old = self._entries.get(name)
            new = Entry(name=name, target=target, dist=dist)
            if old is not None:
                if old.target_str == new.target_str:
                    return  # the same thing declared twice (editable install + code): harmless
                raise RegistryConflict(
                    f"{self.kind} name {name!r} is registered twice: by distribution {old.dist!r} "
                    f"({old.target_str}) and by distribution {dist!r} ({new.target_str}). "
                    f"Uninstall one of them or rename the plugin's entry point."
                )
            self._entries[name] = new

    def load_entry_points(self) -> None:
        """Merge the entry points of :attr:`group` (idempotent)."""
        if self.group is None or self._discovered:
            return
        with self._lock:
            if self._discovered:
                return
            self._discovered = True
            eps = metadata.entry_points(group=self.group)
            for ep in sorted(eps, key=lambda e: (e.name, e.value)):
                dist = ep.dist.name if ep.dist is not None else "?"
                self.register(ep.name, ep.value, dist=dist)

    # ------------------------------------------------------------------ lookup
    def names(self) -> list[str]:
        """Sorted registered names (entry points included). Imports nothing."""
        self.load_entry_points()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self.load_entry_points()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def entry(self, name: str) -> Entry:
        """The :class:`Entry` for ``name`` without importing it."""
        self.load_entry_points()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self._unknown_message(name)) from None

    def get(self, name: str) -> T:
        """Return the object registered as ``name``, importing it if needed.

        Raises:
            UnknownNameError: with the available names and the closest match.
            PluginLoadError: the target failed to import or is of the wrong type.
        """
        entry = self.entry(name)
        with self._lock:
            if entry.obj is not None:
                return entry.obj
            try:
                obj = load_target(entry.target) if isinstance(entry.target, str) else entry.target
            except Exception as exc:  # any import failure is the plugin's
                entry.error = f"{type(exc).__name__}: {exc}"
                raise PluginLoadError(
                    f"{self.kind} {name!r} from distribution {entry.dist!r} ({entry.target_str}) "
                    f"failed to import: {entry.error}"
                ) from exc
            if self.base_cls is not None and not (
                isinstance(obj, type) and issubclass(obj, self.base_cls)
            ):
                entry.error = f"not a subclass of {self.base_cls.__module__}.{self.base_cls.__name__}"
                raise PluginLoadError(
                    f"{self.kind} {name!r} from distribution {entry.dist!r} ({entry.target_str}) "
                    f"is {obj!r}, {entry.error}"
                )
            entry.obj = obj
            return obj

    def describe(self) -> list[tuple[str, Entry, Any | None]]:
        """``(name, entry, obj_or_None)`` for every name; broken plugins get ``obj=None`` and
        ``entry.error`` set instead of raising."""
        rows = []
        for name in self.names():
            entry = self._entries[name]
            try:
                obj = self.get(name)
            except PluginLoadError:
                obj = None
            rows.append((name, entry, obj))
        return rows

    def _unknown_message(self, name: str) -> str:
        available = sorted(self._entries)
        close = difflib.get_close_matches(name, available, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Available: {', '.join(available) or '(none)'}"

    def _clear(self) -> None:
        """Forget everything (tests only)."""
        with self._lock:
            self._entries.clear()
            self._discovered = False
