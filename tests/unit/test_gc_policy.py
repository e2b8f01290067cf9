"""The GC policy freezes long-lived objects and still reclaims cycles among them."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from services.gc_policy import GcPolicy


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture(autouse=True)
def _unfreeze() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_freeze_moves_survivors_out_of_the_scanned_generations() -> None:
    population = [0]
    policy = GcPolicy(lambda: population[0])
    gc.unfreeze()
    keep = [Node() for _ in range(1000)]
    before = gc.get_freeze_count()
    population[0] = 1000
    assert policy._grown()
    policy.freeze_young()
    assert gc.get_freeze_count() >= before + len(keep)
    assert not policy._grown()
    population[0] = 1010
    assert not policy._grown()  # below 2% / 20 of growth
    population[0] = 1020
    assert policy._grown()


def test_full_collection_reclaims_cycles_formed_after_freezing() -> None:
    policy = GcPolicy()
    a, b = Node(), Node()
    a.other, b.other = b, a
    probe = weakref.ref(a)
    policy.freeze_young()
    del a, b
    gc.collect()
    assert probe() is not None  # frozen: ordinary collections do not see it
    pause = policy.full_collection()
    assert probe() is None
    assert pause >= 0
