"""A local fake of Social Fetch and KeyAPI with a scripted, changing world.

Used by ``watcher demo`` (no keys, no network) and by end-to-end tests over real sockets.
It mimics ``/work/shared/api-docs``: the same paths, envelopes, field names (also the ones
watcher ignores), pagination, auth headers and error statuses.

Endpoints (one aiohttp app):

* ``GET /v1/tiktok/shop/products?url=&cursor=&region=`` — store (``x-api-key``)
* ``GET /v1/tiktok/profiles/{handle}/showcase-products?cursor=&region=`` — showcase
* ``GET /v1/tiktok/shop/products/search?query=&page=&region=`` — search
* ``GET /v1/tiktok/insights/products?page=&limit=&ecom_category_id=&search_keyword=&…`` —
  KeyAPI top products (``Authorization: Bearer …``; ``limit`` capped at 20, default 20)
* control: ``POST /_sim/step`` (body ``{"count": n}`` optional) → ``{"step": n}``;
  ``POST /_sim/reset`` (``{"scenario", "seed"}`` optional); ``POST /_sim/faults`` (a fault
  object or a list, see ``Fault``), ``GET``/``DELETE /_sim/faults``; ``GET``/``DELETE
  /_sim/requests``; ``GET /_sim/state``.

Unknown store URL → 200 ``lookupStatus: not_found``; unknown handle, query or category →
an empty list. Social Fetch pages hold ``page_size`` products (default 10); cursors are
base64 JSON of the position (offset and last id), so paging is stable within a step.

Demo world (``scenario="demo"``; ids in ``watcher.simulator.demo``, config in
``watcher/demo.yaml``):

* store ``https://www.tiktok.com/shop/store/goli-nutrition/7495794203056835079`` — 32
  products (4 pages of 10), 33 from step 7;
* showcase ``glowwithmia`` — 14 items (2 pages), 16 from step 2, 17 from step 8; one item
  has no title, price, rating, seller or image (the docs allow each to be null);
* search ``crocs clogs`` — 25 results (3 pages); only ``CLASSIC_CLOG`` matches
  ``(?i)classic clog``;
* top products ``ecom_category_id=601450`` (Beauty & Personal Care) — 30 rows (2 pages of 20);
  ``ecom_category_id`` matches a category at any level (``848648`` Makeup & Perfume,
  ``601583`` Perfume), ``search_keyword`` filters by name; two small other rankings
  (``605196`` Sports & Outdoor, ``600001`` Home Supplies) include ``l2`` rows without a
  third level.

Timeline (step N = the world after N calls of ``step()``; a watcher polling once per step
after a baseline at step 0 sees these changes at poll N). In every step 1–8 listed products
also sell a few units (``sold``/``reviews`` grow, KeyAPI ``post``/``impression`` grow); after
step 8 nothing changes at all.

====  =========================================================================
step  change (constant name in ``demo``) → alert from ``demo.yaml``
====  =========================================================================
1     store ACV 19.99 → 16.99 (−15 %) → price_drop + lowest_price;
      store ASHWAGANDHA 21.99 → 20.99 (−4.5 %) → lowest_price only
2     store MATCHA 12.99 → 10.99 (−15.4 %) → price_drop + lowest_price;
      store PREBIOTIC 16.99 → 18.99 (a rise: nothing);
      showcase gains SHOWCASE_NEW_2 (two items, at the top) → new_item ×2;
      search CLASSIC_CLOG 44.99 → 34.99 (−22 %) → price_drop + lowest_price
3     store SUPERGREENS 44.99 → 34.99, discount 25 % → 42 % → price_drop + lowest_price +
      discount_at_least 40; store RESTORE_KIT sells out (gone from the listing in steps
      3, 4, 5); search BAYA rank 14 → 4 → rank_jump (CLASSIC_CLOG 9 → 10)
4     (RESTORE_KIT absent 2 polls) → out_of_stock; store MATCHA back to 12.99 (nothing);
      showcase CERAVE 17.99 → 14.99 → price_drop + lowest_price;
      search CLASSIC_CLOG 34.99 → 29.99 (≤ 30.00, discount 45 %) → price_below +
      price_drop + lowest_price
5     store PREBIOTIC 18.99 → 14.99 (−21 %, below 16.99) → price_drop + lowest_price;
      top products LIP_GLOSS rank 17 → 3 → rank_jump (TEETH_WHITENING 12 → 13)
6     store RESTORE_KIT back (99.98) → back_in_stock; store MATCHA 12.99 → 11.49 (−11.5 %)
      → price_drop but *not* lowest_price (10.99 was lower);
      search CLASSIC_CLOG rank 10 → 2 → rank_jump
7     store gains HOLIDAY_SET at the top (new item, no demo rule);
      top products TEETH_WHITENING rank 13 → 6 → rank_jump
8     store SLEEP 29.99 → 24.99 (−16.7 %) → price_drop + lowest_price;
      showcase gains SHOWCASE_NEW_8 at the top → new_item
====  =========================================================================

``DEMO_EXPECTED_ALERTS`` (in ``scenarios``) lists exactly these alerts as (step, rule id, watch id,
product id), for polls at least the rules' ``cooldown`` (1s) apart.

Other scenarios: ``quiet`` (the same world, never changes) and ``outage`` (1: store
not_found; 2: store back, showcase private/empty; 3: showcase back, search answers
503; 4: search back, top products answer 500; 5: all healthy).

Tests can change the world directly: ``world.stores[url].not_found = True``,
``world.showcases[handle].private = True``, ``world.searches[query].failing = 503``,
``world.rankings[category].failing = 500``, ``store.sell_out(id)``, ``item.reprice("9.99")``,
``search.move(id, rank)``.
"""

from __future__ import annotations

from .demo import DEFAULT_SEED
from .faults import Fault
from .scenarios import DEMO_EXPECTED_ALERTS, SCENARIOS, ExpectedAlert, build_world
from .server import RequestRecord, RunningSimulator, Simulator, start_simulator
from .world import World

__all__ = [
    "DEFAULT_SEED",
    "DEMO_EXPECTED_ALERTS",
    "SCENARIOS",
    "ExpectedAlert",
    "Fault",
    "RequestRecord",
    "RunningSimulator",
    "Simulator",
    "World",
    "build_world",
    "start_simulator",
]
