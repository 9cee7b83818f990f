"""Upstream data sources: pure page normalisation plus the HTTP client that pages and retries.

``normalise`` (pure) maps raw pages to ``Product``; ``specs`` declares each watch type's
request and parser; ``client`` does the I/O.
"""

from watcher.sources.client import ProviderClient
from watcher.sources.normalise import (
    MalformedPayload,
    ParsedPage,
    assign_ranks,
    parse_keyapi_page,
    parse_search_page,
    parse_showcase_page,
    parse_store_page,
)
from watcher.sources.specs import PROVIDERS, SOURCES, ProviderSpec, Request, SourceSpec

__all__ = [
    "PROVIDERS",
    "SOURCES",
    "MalformedPayload",
    "ParsedPage",
    "ProviderClient",
    "ProviderSpec",
    "Request",
    "SourceSpec",
    "assign_ranks",
    "parse_keyapi_page",
    "parse_search_page",
    "parse_showcase_page",
    "parse_store_page",
]
