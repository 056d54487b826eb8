"""How many examples a property test draws: every one in the full suite, a tenth in the fast
inner loop (``pytest -m "not sandbox"``), where each property still runs, as a smoke test.

``tests/conftest.py`` chooses the loop before the test modules are imported; property tests
write ``@settings(max_examples=examples(300))``, and those without a count get the profile's.
"""

from __future__ import annotations

from hypothesis import settings

__all__ = ["FAST_LOOP_PROFILE", "examples", "fast_loop", "use_fast_loop"]

FAST_LOOP_PROFILE = "fast-loop"
_FRACTION = 10
_MIN_EXAMPLES = 5
_fast = False

settings.register_profile(FAST_LOOP_PROFILE, max_examples=100 // _FRACTION)


def use_fast_loop() -> None:
    """Draw a tenth of the examples from now on (the profile and ``examples``)."""
    global _fast
    _fast = True
    settings.load_profile(FAST_LOOP_PROFILE)


def fast_loop() -> bool:
    """Whether this run is the fast inner loop."""
    return _fast


def examples(full: int) -> int:
    """``full`` in the full suite; a tenth of it (at least a few) in the fast loop."""
    return max(min(full, _MIN_EXAMPLES), full // _FRACTION) if _fast else full
