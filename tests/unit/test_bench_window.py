"""Choice of the measuring window in the drain benchmark (benchmarks/pipeline.py)."""

from benchmarks.pipeline import _window


def _samples(stored: list[int]) -> list[dict[str, int]]:
    return [{"stored": n, "t": i} for i, n in enumerate(stored)]


def test_steady_inserts_use_the_10_to_90_percent_window() -> None:
    samples = _samples([0, 5, 10, 30, 50, 70, 90, 95, 100])
    assert _window(samples, 0, 100) == (2, 6, False)


def test_chunky_inserts_never_give_an_empty_window() -> None:
    # Both ends of the 10-90 % window land on the same stored count (the CI failure:
    # a rate of 0.0 from a run that stored everything).
    samples = _samples([0, 0, 30, 30, 100])
    low, high, fallback = _window(samples, 0, 100)
    assert fallback
    assert samples[high]["stored"] > samples[low]["stored"]
    assert (low, high) == (1, 4)


def test_base_is_subtracted() -> None:
    samples = _samples([1000, 1000, 1010, 1050, 1090, 1100])
    assert _window(samples, 1000, 100) == (2, 4, False)
