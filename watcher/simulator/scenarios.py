"""Scenario scripts over the demo world, and the alerts the ``demo`` script should raise.

The timeline is documented in the ``watcher.simulator`` docstring; keep the three in step:
the scripts here, ``DEMO_EXPECTED_ALERTS`` and that table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .demo import (
    ACV,
    ASHWAGANDHA,
    BAYA,
    CATEGORY_ID,
    CERAVE,
    CLASSIC_CLOG,
    DEFAULT_SEED,
    HANDLE,
    LIP_GLOSS,
    MATCHA,
    PREBIOTIC,
    QUERY,
    RESTORE_KIT,
    SHOWCASE_NEW_2,
    SHOWCASE_NEW_8,
    SLEEP,
    STORE_URL,
    SUPERGREENS,
    TEETH_WHITENING,
    demo_world,
    holiday_set,
    showcase_addition,
)
from .world import World


@dataclass(frozen=True, slots=True)
class ExpectedAlert:
    """One alert ``watcher/demo.yaml`` should raise when polled once per step."""

    step: int
    rule: str
    watch: str
    product_id: str


DEMO_EXPECTED_ALERTS: tuple[ExpectedAlert, ...] = tuple(
    ExpectedAlert(*row)
    for row in (
        (1, "price-drop-10", "goli-store", ACV),
        (1, "all-time-low", "goli-store", ACV),
        (1, "all-time-low", "goli-store", ASHWAGANDHA),
        (2, "price-drop-10", "goli-store", MATCHA),
        (2, "all-time-low", "goli-store", MATCHA),
        (2, "new-in-showcase", "glow-showcase", SHOWCASE_NEW_2[0]),
        (2, "new-in-showcase", "glow-showcase", SHOWCASE_NEW_2[1]),
        (2, "price-drop-10", "crocs-search", CLASSIC_CLOG),
        (2, "all-time-low", "crocs-search", CLASSIC_CLOG),
        (3, "price-drop-10", "goli-store", SUPERGREENS),
        (3, "all-time-low", "goli-store", SUPERGREENS),
        (3, "deep-discount", "goli-store", SUPERGREENS),
        (3, "climbers", "crocs-search", BAYA),
        (4, "sold-out", "goli-store", RESTORE_KIT),
        (4, "price-drop-10", "glow-showcase", CERAVE),
        (4, "all-time-low", "glow-showcase", CERAVE),
        (4, "price-drop-10", "crocs-search", CLASSIC_CLOG),
        (4, "all-time-low", "crocs-search", CLASSIC_CLOG),
        (4, "cheap-classic-clog", "crocs-search", CLASSIC_CLOG),
        (5, "price-drop-10", "goli-store", PREBIOTIC),
        (5, "all-time-low", "goli-store", PREBIOTIC),
        (5, "climbers", "beauty-top", LIP_GLOSS),
        (6, "restocked", "goli-store", RESTORE_KIT),
        (6, "price-drop-10", "goli-store", MATCHA),
        (6, "climbers", "crocs-search", CLASSIC_CLOG),
        (7, "climbers", "beauty-top", TEETH_WHITENING),
        (8, "price-drop-10", "goli-store", SLEEP),
        (8, "all-time-low", "goli-store", SLEEP),
        (8, "new-in-showcase", "glow-showcase", SHOWCASE_NEW_8),
    )
)


def _demo_1(w: World) -> None:
    store = w.stores[STORE_URL]
    store.product(ACV).reprice("16.99")
    store.product(ASHWAGANDHA).reprice("20.99")


def _demo_2(w: World) -> None:
    store = w.stores[STORE_URL]
    store.product(MATCHA).reprice("10.99")
    store.product(PREBIOTIC).reprice("18.99")
    for pid in reversed(SHOWCASE_NEW_2):
        w.showcases[HANDLE].add(showcase_addition(w.seed, pid), at=0)
    w.searches[QUERY].product(CLASSIC_CLOG).reprice("34.99")


def _demo_3(w: World) -> None:
    store = w.stores[STORE_URL]
    store.product(SUPERGREENS).reprice("34.99")
    store.sell_out(RESTORE_KIT)
    w.searches[QUERY].move(BAYA, 4)


def _demo_4(w: World) -> None:
    w.stores[STORE_URL].product(MATCHA).reprice("12.99")
    w.showcases[HANDLE].product(CERAVE).reprice("14.99")
    w.searches[QUERY].product(CLASSIC_CLOG).reprice("29.99")


def _demo_5(w: World) -> None:
    w.stores[STORE_URL].product(PREBIOTIC).reprice("14.99")
    w.rankings[CATEGORY_ID].move(LIP_GLOSS, 3)


def _demo_6(w: World) -> None:
    store = w.stores[STORE_URL]
    store.restock(RESTORE_KIT)
    store.product(MATCHA).reprice("11.49")
    w.searches[QUERY].move(CLASSIC_CLOG, 2)


def _demo_7(w: World) -> None:
    w.stores[STORE_URL].add(holiday_set(w.seed), at=0)
    w.rankings[CATEGORY_ID].move(TEETH_WHITENING, 6)


def _demo_8(w: World) -> None:
    w.stores[STORE_URL].product(SLEEP).reprice("24.99")
    w.showcases[HANDLE].add(showcase_addition(w.seed, SHOWCASE_NEW_8), at=0)


def _set(**changes: object) -> Callable[[World], None]:
    """A step setting flags on the demo watches: ``_set(store__not_found=True)``."""

    def apply(w: World) -> None:
        targets = {
            "store": w.stores[STORE_URL],
            "showcase": w.showcases[HANDLE],
            "search": w.searches[QUERY],
            "ranking": w.rankings[CATEGORY_ID],
        }
        for path, value in changes.items():
            target, attr = path.split("__")
            setattr(targets[target], attr, value)

    return apply


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named script: step number → mutation of the world."""

    name: str
    doc: str
    script: dict[int, Callable[[World], None]]


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "demo",
            "Price drops, a discount crossing, a sell-out and restock, new items, rank jumps.",
            dict(
                enumerate(
                    (_demo_1, _demo_2, _demo_3, _demo_4, _demo_5, _demo_6, _demo_7, _demo_8),
                    start=1,
                )
            ),
        ),
        Scenario("quiet", "The demo world, frozen: nothing ever changes.", {}),
        Scenario(
            "outage",
            "The demo world going wrong one watch at a time, then recovering.",
            {
                1: _set(store__not_found=True),
                2: _set(store__not_found=False, showcase__private=True),
                3: _set(showcase__private=False, search__failing=503),
                4: _set(search__failing=None, ranking__failing=500),
                5: _set(ranking__failing=None),
            },
        ),
    )
}


def build_world(seed: int = DEFAULT_SEED, scenario: str = "demo") -> World:
    """The demo world at step 0 with ``scenario``'s script attached."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {sorted(SCENARIOS)}")
    world = demo_world(seed)
    world.script = SCENARIOS[scenario].script
    return world
