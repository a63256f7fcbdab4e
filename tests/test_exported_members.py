"""The public surface: ``streamproxy.__all__`` is sorted and is exactly what the package exposes."""

from __future__ import annotations

import importlib.metadata
import types

import streamproxy

# names a package module always has, and the one dunder that is API
_MODULE_DUNDERS = {"annotations", "TYPE_CHECKING", "Any"}


def test_all_is_sorted() -> None:
    assert streamproxy.__all__ == sorted(streamproxy.__all__)


def test_all_names_exactly_the_public_members() -> None:
    exposed = {
        name
        for name, value in vars(streamproxy).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)  # subpackages are reached by their path
        and name not in _MODULE_DUNDERS
    }
    lazy = {"create_app"}  # imported on first use, so the assembler needs no web stack
    assert exposed | lazy | {"__version__"} == set(streamproxy.__all__)


def test_every_exported_name_resolves() -> None:
    for name in streamproxy.__all__:
        assert getattr(streamproxy, name) is not None


def test_the_lazy_app_factory_is_the_proxy_one() -> None:
    from streamproxy.proxy import create_app

    assert streamproxy.create_app is create_app


def test_version_matches_the_installed_distribution() -> None:
    assert streamproxy.__version__ == importlib.metadata.version("streamproxy")
