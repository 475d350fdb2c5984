"""Name → factory registries (timm style) for data sets and models.

A factory is registered under its function name (or an explicit one); an
unknown name fails fast with the list of registered names. Tests are generated
from `names()`, so a new entry is tested without writing a test.
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

from trainables.errors import UserError
from trainables.references import keyword_parameters

F = TypeVar("F", bound=Callable[..., Any])


class Registry:
    """A named collection of factories of one kind ("model", "dataset")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., Any]] = {}

    def register(self, name: str | None = None) -> Callable[[F], F]:
        """Decorator: register `fn` under `name` (default: its name, `_` → `-`)."""

        def decorator(fn: F) -> F:
            key = name or fn.__name__.replace("_", "-")
            if key in self._factories:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._factories[key] = fn
            return fn

        return decorator

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., Any]:
        """The factory for `name`; unknown names raise a `UserError` listing the choices."""
        try:
            return self._factories[name]
        except KeyError:
            raise UserError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def accepted_options(self, name: str) -> set[str]:
        """Keyword names the factory for `name` takes (used to validate specs)."""
        return keyword_parameters(self.get(name))[0]

    def create(self, name: str, **kwargs: Any) -> Any:
        """Build `name` with `kwargs`; an option the factory does not take is a `UserError`."""
        factory = self.get(name)
        unknown = set(kwargs) - self.accepted_options(name)
        if unknown:
            raise UserError(
                f"{self.kind} {name!r} does not take option(s) {sorted(unknown)}; "
                f"it takes: {sorted(self.accepted_options(name))}"
            )
        return factory(**kwargs)
