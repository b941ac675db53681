"""The one registry of heads: ``@register_head("name")`` on a
:class:`~edgetl.heads.base.Head` subclass makes it a kind the search tries,
the CLI accepts and :func:`make_head` builds.

Registration order is the order of simplicity: when two candidates tie in
accuracy and cost, the search keeps the head registered first
(``edgetl/heads/__init__.py`` imports the head modules in that order)."""

from __future__ import annotations

from typing import Callable, TypeVar

from .base import Head

H = TypeVar("H", bound=type)

_HEADS: dict[str, type[Head]] = {}


def register_head(name: str) -> Callable[[H], H]:
    """Class decorator: register a Head subclass under ``name`` (also set as its ``kind``)."""

    def add(cls: H) -> H:
        if not (isinstance(cls, type) and issubclass(cls, Head)):
            raise TypeError(f"register_head({name!r}) needs a subclass of edgetl.heads.base.Head, got {cls!r}")
        if name in _HEADS:
            raise ValueError(f"head kind {name!r} is already registered (by {_HEADS[name].__qualname__}); "
                             f"choose another name")
        cls.kind = name
        _HEADS[name] = cls
        return cls

    return add


def head_kinds() -> tuple[str, ...]:
    """The registered kinds, simplest first."""
    return tuple(_HEADS)


def head_class(kind: str) -> type[Head]:
    """The Head subclass registered as ``kind``; ValueError naming the kinds otherwise."""
    try:
        return _HEADS[kind]
    except KeyError:
        raise ValueError(f"unknown head kind {kind!r}; choose one of {', '.join(_HEADS)}") from None


def make_head(kind: str, **kwargs) -> Head:
    """An unfitted head of ``kind`` with ``kwargs`` as hyper-parameters."""
    return head_class(kind)(**kwargs)


def make_head_for_run(kind: str, head_params: dict) -> Head:
    """An unfitted head of ``kind`` configured from a run's common head
    settings (:meth:`Head.params_for_run`: the NCM head takes none of them, the MLP keeps its own epochs)."""
    cls = head_class(kind)
    return cls(**cls.params_for_run(head_params))
