"""Upstream data sources: one module per provider, registered here by an explicit list.

``socialfetch`` and ``keyapi`` each declare a ``ProviderSpec`` (base URL, regions, auth,
envelope, credits, and a ``SourceSpec`` per watch type: path, params, paging, pure parser);
``normalise`` holds what their parsers share; ``client`` (aiohttp, imported only by whoever
polls) pages, retries and bills. Light to import: the config loader and ``watcher.kinds``
read ``PROVIDERS`` from here, so nothing here may import aiohttp or ``watcher.config``.
"""

from __future__ import annotations

from watcher.sources import keyapi, socialfetch
from watcher.sources.specs import ProviderSpec, SourceSpec

__all__ = ["PROVIDERS", "SOURCES", "ProviderSpec", "SourceSpec"]

# Adding a provider: write its module beside these two, then list it here.
_MODULES = (socialfetch, keyapi)


def _providers() -> dict[str, ProviderSpec]:
    out: dict[str, ProviderSpec] = {}
    for module in _MODULES:
        spec = module.PROVIDER
        if spec.name in out:
            raise ValueError(f"provider {spec.name!r} is registered twice")
        out[spec.name] = spec
    return out


def _sources(providers: dict[str, ProviderSpec]) -> dict[str, SourceSpec]:
    out: dict[str, SourceSpec] = {}
    for provider in providers.values():
        for source in provider.sources:
            if source.provider != provider.name:
                raise ValueError(f"source {source.watch_type!r} is not {provider.name}'s")
            if source.watch_type in out:
                raise ValueError(f"source {source.watch_type!r} is already registered")
            out[source.watch_type] = source
    return out


PROVIDERS: dict[str, ProviderSpec] = _providers()  # provider name → its definition
SOURCES: dict[str, SourceSpec] = _sources(PROVIDERS)  # watch type → how it is fetched
