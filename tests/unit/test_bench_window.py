"""Choice of the measuring window in the drain benchmark (benchmarks/pipeline.py)."""

from benchmarks.pipeline import _ends, _window


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


def test_the_window_ends_when_its_last_rows_landed() -> None:
    # A sink that inserts large blocks: the count stays at 60 for three samples before
    # the last block. Counting those three would halve the rate (60 / 6 against 60 / 3).
    samples = _samples([0, 0, 20, 20, 40, 60, 60, 60, 100])
    assert _window(samples, 0, 100) == (2, 5, False)


def test_base_is_subtracted() -> None:
    samples = _samples([1000, 1000, 1010, 1050, 1090, 1100])
    assert _window(samples, 1000, 100) == (2, 4, False)


def test_the_whole_drain_runs_from_before_the_first_row_to_the_last() -> None:
    # A store that fell behind and caught up inside the 10-90 % window: the window's rate
    # is nearly twice what the whole drain sustained (80 / 3 a sample against 100 / 7).
    samples = _samples([0, 0, 5, 10, 10, 10, 90, 95, 100, 100])
    low, high, _ = _window(samples, 0, 100)
    assert (samples[high]["stored"] - samples[low]["stored"]) / (high - low) == 80 / 3
    assert _ends(samples, 0, 100) == (1, 8)
    assert _ends(samples, 0, 200) == (1, 9)  # never complete: up to the last sample
