"""One registry type for students, losses and datasets (the timm `@register` / `create_model` habit).

Builders are plain functions with keyword parameters; `create` checks the caller's kwargs against the
builder's signature, so an unknown name or a misspelt argument is a `UserError` that lists what is valid.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from distill.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    builder: Callable[..., T]
    description: str

    def params(self) -> dict[str, Any]:
        """Keyword parameters with their defaults (`inspect.Parameter.empty` for required ones)."""
        signature = inspect.signature(self.builder)
        return {
            p.name: p.default
            for p in signature.parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorate(builder: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            doc = inspect.getdoc(builder) or ""
            self._entries[name] = Entry(name, builder, doc.split("\n\n")[0].replace("\n", " "))
            return builder

        return decorate

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str, *, param: str | None = None) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self.names())
            raise UserError(
                f"unknown {self.kind} {name!r}; known: {known}", code=f"unknown_{self.kind}", param=param
            ) from None

    def check_kwargs(self, name: str, kwargs: dict[str, Any], *, param: str | None = None) -> None:
        """Raise a UserError if `kwargs` names a parameter the builder does not take."""
        valid = self.get(name, param=param).params()
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise UserError(
                f"{self.kind} {name!r} has no parameter {', '.join(map(repr, unknown))}; "
                f"valid: {', '.join(sorted(valid))}",
                code="invalid_kwargs",
                param=param,
            )

    def create(self, name: str, *, param: str | None = None, **kwargs: Any) -> T:
        self.check_kwargs(name, kwargs, param=param)
        try:
            return self.get(name, param=param).builder(**kwargs)
        except (TypeError, ValueError) as exc:
            # A builder rejects bad values (negative width, a missing required size) with these.
            raise UserError(f"{self.kind} {name!r}: {exc}", code="invalid_kwargs", param=param) from exc

    def describe(self) -> list[dict[str, Any]]:
        """Name, one-line description and parameters (with defaults) of every entry, for `distill archs`."""
        out = []
        for name in self.names():
            entry = self._entries[name]
            params = {k: ("<required>" if v is inspect.Parameter.empty else v) for k, v in entry.params().items()}
            out.append({"name": name, "description": entry.description, "params": params})
        return out
