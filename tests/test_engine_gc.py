"""The cyclic collector while an engine runs: what existed before is frozen, young objects
are collected less often, and everything is as it was once the last engine side by side ends."""

from __future__ import annotations

import gc

from ego4d_dl.engine.core import _YOUNG_THRESHOLD, _young_objects_only

__all__: list[str] = []


def test_the_collector_is_restored_after_engines_side_by_side() -> None:
    before = gc.get_threshold()
    frozen_before = gc.get_freeze_count()
    kept: list[list[int]] = [[] for _ in range(10)]  # tracked, and made before the run
    outer = _young_objects_only()
    inner = _young_objects_only()
    with outer:
        assert gc.get_freeze_count() > frozen_before
        assert gc.get_threshold()[0] == max(before[0], _YOUNG_THRESHOLD)
        with inner:
            assert gc.get_threshold()[0] == max(before[0], _YOUNG_THRESHOLD)
        # The inner engine ended first: the outer one still runs with its settings.
        assert gc.get_threshold()[0] == max(before[0], _YOUNG_THRESHOLD)
        assert gc.get_freeze_count() > frozen_before
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen_before
    assert all(gc.is_tracked(k) for k in kept)


def test_the_collector_is_restored_when_the_run_fails() -> None:
    before = gc.get_threshold()
    frozen_before = gc.get_freeze_count()
    try:
        with _young_objects_only():
            raise RuntimeError("a run that stops")
    except RuntimeError:
        pass
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen_before
