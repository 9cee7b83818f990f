"""Shared test fixtures, and the aioresponses compatibility shim for aiohttp >= 3.14."""

from __future__ import annotations

import inspect

import aiohttp
import aioresponses.core


def _needs_stream_writer() -> bool:
    params = inspect.signature(aiohttp.ClientResponse.__init__).parameters
    return "stream_writer" in params


if _needs_stream_writer():

    class _NullStreamWriter:
        """Stands in for the request's writer; aioresponses never writes a body."""

        output_size = 0

    class _CompatResponse(aiohttp.ClientResponse):
        """aioresponses 0.7.9 does not pass ``stream_writer`` (pnuckowski/aioresponses#289)."""

        def __init__(self, *args, **kwargs):
            kwargs.setdefault("stream_writer", _NullStreamWriter())
            super().__init__(*args, **kwargs)

    # aioresponses falls back to its module-level ClientResponse when a mock names no class.
    aioresponses.core.ClientResponse = _CompatResponse  # type: ignore[misc]
