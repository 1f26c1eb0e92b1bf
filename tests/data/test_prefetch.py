"""The background-thread prefetcher: order, errors, and stopping early."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from genos_cli.data.prefetch import prefetch


def test_items_in_order() -> None:
    assert list(prefetch(iter(range(1000)), depth=3)) == list(range(1000))


def test_producer_error_reaches_consumer() -> None:
    def failing() -> Iterator[int]:
        yield 1
        raise ValueError("corrupt block")

    with pytest.raises(ValueError, match="corrupt block"):
        list(prefetch(failing()))


def test_closing_early_stops_the_producer() -> None:
    produced: list[int] = []

    def endless() -> Iterator[int]:
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    before = threading.active_count()
    gen = prefetch(endless(), depth=2)
    assert [next(gen) for _ in range(5)] == [0, 1, 2, 3, 4]
    gen.close()
    assert threading.active_count() == before
    assert len(produced) <= 5 + 2 + 1  # at most `depth` (+ one in hand) ahead
