"""ContinuationIndex: the text -> exact token ids memory behind token-exact continuation."""

from __future__ import annotations

from ttc.engines.vllm_engine import ContinuationIndex


def test_exact_hit_returns_recorded_ids() -> None:
    idx = ContinuationIndex()
    idx.record("<s>user: hi\nassistant: Step 1.\n\n", [1, 2, 3, 4])
    assert idx.lookup("<s>user: hi\nassistant: Step 1.\n\n") == ("<s>user: hi\nassistant: Step 1.\n\n", (1, 2, 3, 4))
    assert idx.hits == 1


def test_prefix_hit_picks_the_longest_recorded_prefix() -> None:
    idx = ContinuationIndex()
    idx.record("abc", [1])
    idx.record("abcdef", [1, 2])
    idx.record("xyz", [9])
    assert idx.lookup("abcdefgh") == ("abcdef", (1, 2))
    assert idx.lookup("abcd") == ("abc", (1,))
    assert idx.lookup("zzz") is None
    assert idx.lookup("ab") is None  # a recorded text longer than the prompt never matches


def test_capacity_drops_least_recently_used() -> None:
    idx = ContinuationIndex(capacity=2)
    idx.record("a1", [1])
    idx.record("b2", [2])
    assert idx.lookup("a1") is not None  # touch a1: b2 is now the oldest
    idx.record("c3", [3])
    assert len(idx) == 2
    assert idx.lookup("b2") is None
    assert idx.lookup("a1") == ("a1", (1,))


def test_prefix_scan_is_bounded_to_recent_entries() -> None:
    idx = ContinuationIndex(scan=2)
    idx.record("old-prefix", [1])
    idx.record("p", [2])
    idx.record("q", [3])
    assert idx.lookup("old-prefix and more") is None  # beyond the scan window
    assert idx.lookup("old-prefix") == ("old-prefix", (1,))  # exact hits are never bounded
