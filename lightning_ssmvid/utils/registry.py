"""A registry of classes built by config name, filled by the modules of a package as they are imported."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable


class Registry:
    """``register(name)`` decorates a class; ``names()`` imports every module of ``package`` (but ``base``) first,
    so a new entry is one module and nothing else; ``get(name)`` refuses an unknown name listing the valid ones."""

    def __init__(self, package: str, kind: str):
        self.package, self.kind = package, kind
        self.entries: dict[str, Callable] = {}

    def register(self, name: str) -> Callable:
        def decorate(cls):
            if name in self.entries and self.entries[name] is not cls:
                raise ValueError(f"{self.kind} name {name!r} is registered twice")
            self.entries[name] = cls
            return cls

        return decorate

    def names(self) -> list[str]:
        path = importlib.import_module(self.package).__path__
        for module in pkgutil.iter_modules(path):
            if module.name != "base":
                importlib.import_module(f"{self.package}.{module.name}")
        return sorted(self.entries)

    def get(self, name: str) -> Callable:
        names = self.names()
        if name not in self.entries:
            raise ValueError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(names)}")
        return self.entries[name]
