"""The aioresponses shim in conftest lets mocked responses work on aiohttp 3.14."""

import aiohttp
from aioresponses import aioresponses


async def test_shim():
    with aioresponses() as m:
        m.get("http://x.test/a?b=1", payload={"ok": 1}, status=200)
        async with aiohttp.ClientSession() as s:
            r = await s.get("http://x.test/a", params={"b": "1"})
            assert (await r.json()) == {"ok": 1}
