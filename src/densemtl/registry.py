"""One registry idiom for everything a config names: tasks, weightings, datasets, backbones,
architectures, optimizers, loggers.

A registry maps names to builders (classes or functions). ``build(name, **kwargs)`` checks the
keywords against the builder's signature — an unknown key or a value of the wrong type fails
before anything is built, naming the config key and what it expects — and an unknown name lists
the valid ones with a "did you mean". Discovery is the same everywhere: on first lookup a
registry imports every module of its package (so a new task, weighting or architecture is its
own file there), plus the plugin modules named by ``plugins`` in the config or the
``DENSEMTL_PLUGINS`` environment variable (files or module names outside the package).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
import pkgutil
import sys
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

B = TypeVar("B", bound=Callable[..., Any])

#: separator of several plugins in ``DENSEMTL_PLUGINS`` (like ``PATH``)
PLUGIN_ENV = "DENSEMTL_PLUGINS"


def load_plugins(specs: Iterable[str | os.PathLike]) -> None:
    """Import plugin modules: a path to a ``.py`` file, or an importable module name. Their
    decorators register what they define; importing the same plugin twice is a no-op. (Objects
    pickled into spawned processes need an importable module name, not a file path.)"""
    for spec in specs:
        text = str(spec)
        if text.endswith(".py"):
            path = Path(text).resolve()
            if not path.is_file():
                raise FileNotFoundError(f"plugins: {text!r} is not a file")
            digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
            name = f"densemtl_plugin_{path.stem}_{digest}"  # the same name in every process
            if name in sys.modules:
                continue
            spec_ = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec_)  # type: ignore[arg-type]
            sys.modules[name] = module
            try:
                spec_.loader.exec_module(module)  # type: ignore[union-attr]
            except BaseException:
                del sys.modules[name]
                raise
        else:
            importlib.import_module(text)


def env_plugins() -> list[str]:
    """The plugins listed in ``$DENSEMTL_PLUGINS`` (``os.pathsep``-separated)."""
    return [p for p in os.environ.get(PLUGIN_ENV, "").split(os.pathsep) if p]


def _hint_name(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("collections.abc.", "")


def conforms(value: Any, hint: Any) -> bool:
    """Whether a config value (plain Python, as Hydra parses it) fits a type hint.

    Only what a config can get wrong is checked (numbers, strings, booleans, None, literals,
    sequences, mappings); a hint this does not understand accepts anything."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in (Path, os.PathLike):
        return isinstance(value, str | os.PathLike)
    base = origin or hint
    if base in (list, tuple, Sequence, typing.Sequence):
        if isinstance(value, str) or not isinstance(value, Sequence):
            return False
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if base is tuple and args and len(args) == len(typing.get_args(hint)):
            return len(value) == len(args) and all(map(conforms, value, args))
        return all(conforms(v, args[0]) for v in value) if args else True
    if base in (dict, Mapping, typing.Mapping):
        return isinstance(value, Mapping)
    return True


def _parameters(builder: Callable[..., Any]) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """Keyword parameters, their type hints, and whether any keyword is accepted. A class whose
    ``__init__`` passes ``**kwargs`` on contributes its bases' ``__init__`` parameters too."""
    bound: list[str] = []
    if isinstance(builder, functools.partial):  # parameters the partial fixes are not options
        bound = list(builder.keywords)
        bound += list(inspect.signature(builder.func).parameters)[: len(builder.args)]
        builder = builder.func
    if isinstance(builder, type):
        targets = [c.__init__ for c in builder.__mro__ if "__init__" in vars(c)]
    else:
        targets = [builder]
    params: dict[str, Any] = {}
    hints: dict[str, Any] = {}
    for target in targets:
        signature = inspect.signature(target)
        for name, p in signature.parameters.items():
            if name not in ("self", *bound) and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                params.setdefault(name, p)
        try:
            hints = {**typing.get_type_hints(target), **hints}
        except (NameError, TypeError):  # an annotation naming a type not importable there
            pass
        if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
            return params, hints, False
    return params, hints, True


def check_kwargs(
    builder: Callable[..., Any],
    kwargs: Mapping[str, Any],
    where: str,
    skip: Sequence[str] = (),
) -> None:
    """Raise if ``kwargs`` name a keyword ``builder`` does not take or hold a value of the wrong
    type; ``where`` is the config prefix of the keys (e.g. ``optimizer``), ``skip`` the leading
    parameters the caller passes itself (e.g. the task list)."""
    params, hints, takes_any = _parameters(builder)
    params = {n: p for n, p in params.items() if n not in skip}
    unknown = sorted(set(kwargs) - set(params))
    if unknown and not takes_any:
        raise ValueError(
            f"{where}: unknown option(s) {unknown}; valid options: {sorted(params)}"
            + "".join(_suggest(k, params) for k in unknown)
        )
    for key, value in kwargs.items():
        if key in params and not conforms(value, hints.get(key, Any)):
            raise ConfigTypeError(
                f"{where}.{key}={value!r}: expected {_hint_name(hints[key])}, "
                f"got {type(value).__name__}"
            )


def parameter_names(builder: Callable[..., Any]) -> list[str]:
    """Names of the keyword parameters of ``builder`` (of a class: its constructor's, bases
    included where it passes ``**kwargs`` on), in order."""
    return list(_parameters(builder)[0])


class ConfigTypeError(TypeError, ValueError):
    """A config value of the wrong type (a ``ValueError`` too: it is bad config input)."""


class UnknownNameError(KeyError, ValueError):
    """A name no registry entry has (a ``KeyError`` for lookups, a ``ValueError`` for config)."""

    def __str__(self) -> str:
        return str(self.args[0])


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f"; did you mean {close[0]!r} (for {name!r})?" if close else ""


class Registry(Generic[B]):
    """Name → builder, filled by ``@registry.register(name)`` in the modules of ``packages``.

    ``options_at`` is where a build's keywords sit in the config, for errors (e.g.
    ``optimizer``, or ``tasks.{name}`` with the entry's name filled in); ``name_key`` the key
    that names the entry (default ``<options_at>.name``).
    """

    def __init__(
        self, kind: str, options_at: str, packages: Sequence[str] = (), name_key: str | None = None
    ) -> None:
        self.kind = kind
        self.options_at = options_at
        self.name_key = name_key or f"{options_at}.name"
        self.packages = tuple(packages)
        self._builders: dict[str, B] = {}
        self._discovered = False

    def register(self, name: str | None = None) -> Callable[[B], B]:
        """Decorator registering a builder under ``name`` (default: the builder's ``name``
        attribute, as tasks and weightings carry)."""

        def decorate(builder: B) -> B:
            key = name if name is not None else builder.name  # type: ignore[attr-defined]
            known = self._builders.get(key)
            if known is not None and known is not builder:
                raise ValueError(f"{self.kind} name {key!r} registered twice")
            self._builders[key] = builder
            return builder

        return decorate

    def discover(self) -> None:
        """Import every module of the registry's packages and the environment's plugins."""
        if self._discovered:
            return
        self._discovered = True
        for package in self.packages:
            pkg = importlib.import_module(package)
            for info in pkgutil.iter_modules(pkg.__path__):
                importlib.import_module(f"{package}.{info.name}")
        load_plugins(env_plugins())

    def names(self) -> list[str]:
        """The registered names, sorted."""
        self.discover()
        return sorted(self._builders)

    def get(self, name: str) -> B:
        """The builder of ``name``; an unknown name lists the valid ones (and the closest)."""
        self.discover()
        if name not in self._builders:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r} ({self.name_key}={name!r}); valid {self.kind}s: "
                f"{', '.join(self.names())}"
                + _suggest(str(name), self._builders)
            )
        return self._builders[name]

    def check(self, name: str, kwargs: Mapping[str, Any], skip: Sequence[str] = ()) -> None:
        """Validate a build of ``name`` with ``kwargs`` without building it."""
        check_kwargs(self.get(name), kwargs, self.options_at.format(name=name), skip)

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``builder(*args, **kwargs)`` after checking ``kwargs`` against its signature (the
        positional ``args`` fill its leading parameters)."""
        builder = self.get(name)
        leading = parameter_names(builder)[: len(args)]
        check_kwargs(builder, kwargs, self.options_at.format(name=name), leading)
        return builder(*args, **kwargs)

    def __contains__(self, name: object) -> bool:
        self.discover()
        return name in self._builders

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __getitem__(self, name: str) -> B:
        return self.get(name)
