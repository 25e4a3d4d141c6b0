"""One registry for every kind of plug-in: net families, corrector kinds, dataset sources, detectors and Tune's
trial schedulers.

A plug-in is one class: it has a `name` (what a spec calls it), a `Settings` dataclass (its own spec
keys, a docstring each, held in the spec under the plug-in's name, e.g. `corrector.xgboost.max_rounds`)
and `check(settings)`, which names the first impossible value. Subclassing a kind's base class registers
it, so a plug-in inside the package is one module, and one outside it is named in the spec as
"package.module:Class" and imported then. The package's own plug-ins are imported on first look-up, so
nothing here (nor the spec schema) imports the plug-ins' modules at import time.

Only a spec the user runs imports a module (`user_code`): a name read back from a run directory (its
spec.yaml, a net's model.json, a result) may only name a module this process has already imported, since a
run directory may come from someone else and importing runs code (the commands that read a run take
`--import MODULE` for a run made with a user's module).
"""

from __future__ import annotations

import contextvars
import difflib
import importlib
import pkgutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from correctsweep.errors import SpecError, UntrustedCode


@dataclass
class NoSettings:
    """This plug-in has no settings of its own."""


class Plugin:
    """The base of every plug-in class."""

    name: ClassVar[str]
    """What a spec calls the plug-in (its registry key)."""
    Settings: ClassVar[type] = NoSettings
    """The plug-in's own settings: a dataclass whose every field has a default and a docstring."""
    registry: ClassVar[Registry]

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if "name" in vars(cls):
            cls.registry.add(cls)

    @classmethod
    def claims(cls, name: str) -> bool:
        """Whether the spec's `name` means this plug-in (a net family answers for many architectures)."""
        return name == cls.name

    @classmethod
    def spellings(cls) -> list[str]:
        """The names a spec may use for it, offered when a name is misspelt."""
        return [cls.name]

    @classmethod
    def check(cls, settings: Any) -> None:
        """A SpecError naming the first of `settings` that holds an impossible value."""


class Registry:
    """The plug-ins of one kind, by name: those of `package` (imported on first use), those registered by
    importing their module, and "package.module:Class" names imported on request."""

    def __init__(self, what: str, key: str, package: str):
        self.what, self.key, self.package = what, key, package
        self.known: dict[str, type[Plugin]] = {}
        self._loaded = False

    def add(self, cls: type[Plugin]) -> None:
        self.known[cls.name] = cls

    def builtin(self) -> dict[str, type[Plugin]]:
        """Every registered plug-in, the package's own imported first."""
        if not self._loaded:
            self._loaded = True
            package = importlib.import_module(self.package)
            for module in pkgutil.iter_modules(package.__path__):
                importlib.import_module(f"{self.package}.{module.name}")
        return self.known

    def names(self) -> list[str]:
        return [name for cls in self.builtin().values() for name in cls.spellings()]

    def get(self, name: Any, key: str | None = None) -> type[Plugin]:
        """The plug-in `name` means, or a SpecError naming `key` and the close names."""
        key = key or self.key
        known = self.builtin()
        if not isinstance(name, str) or not name.strip():
            raise SpecError(f"'{key}' must name a {self.what}, e.g. {next(iter(known))}")
        if name in known:
            return known[name]
        claimed = [cls for cls in known.values() if cls.claims(name)]
        if claimed:
            return claimed[0]
        if ":" in name:
            return self._external(name, key)
        close = difflib.get_close_matches(name, self.names(), n=4, cutoff=0.5)
        raise SpecError(f"'{key}' has no {self.what} {name!r}; "
                        + (f"close names: {', '.join(close)}" if close else f"known: {', '.join(self.names()[:12])}")
                        + " (or name your own as package.module:Class)")

    def _external(self, path: str, key: str) -> type[Plugin]:
        cls = load_class(path, key)
        if not (isinstance(cls, type) and issubclass(cls, Plugin) and cls.registry is self):
            raise SpecError(f"'{key}': {path} is not a {self.what} (a subclass of the package's base class for "
                            f"{self.what}s, see docs/extending.md)")
        return cls


_USER_CODE = contextvars.ContextVar("user_code", default=False)


@contextmanager
def user_code() -> Iterator[None]:
    """Within: the names being read come from a spec the user runs, so their modules may be imported."""
    token = _USER_CODE.set(True)
    try:
        yield
    finally:
        _USER_CODE.reset(token)


def import_module(name: str, key: str) -> Any:
    """The module `name`, imported from the Python path (a SpecError naming `key` if it does not import)."""
    try:
        return importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 -- a user's module may raise anything on import
        raise SpecError(f"'{key}' {name!r} does not import ({type(e).__name__}: {str(e)[:80]}); "
                        "check the module path and that it is importable (PYTHONPATH)") from None


def load_class(path: str, key: str) -> Any:
    """The attribute `path` ("package.module:Class") names, imported from the Python path; outside
    `user_code`, only from a module already imported."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise SpecError(f"'{key}' {path!r} must look like package.module:Class")
    if module_name not in sys.modules and not _USER_CODE.get():
        raise UntrustedCode(f"'{key}' {path!r} names module {module_name}, which is not imported: what a run "
                            f"directory holds never decides what code runs; if you trust that module, pass --import "
                            f"{module_name} (or import it first)")
    found = getattr(import_module(module_name, key), attr, None)
    if found is None:
        raise SpecError(f"'{key}' {path!r}: {module_name} has no {attr}")
    return found


NETS = Registry("net", "base_net.arch", "correctsweep.nets")
KINDS = Registry("corrector kind", "corrector.kind", "correctsweep.kinds")
SOURCES = Registry("dataset source", "data.source", "correctsweep.sources")
DETECTORS = Registry("detector", "detectors.names", "correctsweep.detectors")
SCHEDULERS = Registry("scheduler", "scheduler.name", "correctsweep.schedulers")
