"""Latency histograms that merge across processes, and percentiles from them.

Latencies are counted in logarithmic buckets, 16 per power of two (each bucket
about 4.4 % wide) from 1 µs to about 1000 s: recording is one ``log2`` and one
increment, and the histograms of several workers add up exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["BUCKETS_PER_OCTAVE", "LatencyHistogram", "summarize"]

BUCKETS_PER_OCTAVE = 16
_SIZE = 30 * BUCKETS_PER_OCTAVE  # 2**30 µs is about 18 minutes
_log2 = math.log2


class LatencyHistogram:
    """Counts of latencies (in seconds) in logarithmic microsecond buckets."""

    __slots__ = ("counts", "maximum", "minimum", "total", "values")

    def __init__(self) -> None:
        self.counts = [0] * _SIZE
        self.total = 0.0  # sum, for the mean
        self.values = 0
        self.minimum = math.inf
        self.maximum = 0.0

    def record(self, seconds: float) -> None:
        micros = seconds * 1e6
        if micros < 1.0:
            index = 0
        else:
            index = int(_log2(micros) * BUCKETS_PER_OCTAVE)
            if index >= _SIZE:
                index = _SIZE - 1
        self.counts[index] += 1
        self.values += 1
        self.total += seconds
        if seconds < self.minimum:
            self.minimum = seconds
        if seconds > self.maximum:
            self.maximum = seconds

    def merge(self, other: LatencyHistogram) -> None:
        counts = self.counts
        for index, count in enumerate(other.counts):
            if count:
                counts[index] += count
        self.values += other.values
        self.total += other.total
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)

    # Serialisation (JSON between worker and coordinator, and in the output file)

    def to_json(self) -> dict[str, object]:
        return {
            "buckets_per_octave": BUCKETS_PER_OCTAVE,
            "counts": {str(i): c for i, c in enumerate(self.counts) if c},
            "values": self.values,
            "total": self.total,
            "min": None if self.values == 0 else self.minimum,
            "max": self.maximum,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> LatencyHistogram:
        histogram = cls()
        counts = data.get("counts", {})
        assert isinstance(counts, dict)
        for index, count in counts.items():
            histogram.counts[int(index)] = int(count)
        histogram.values = int(str(data.get("values", 0)))
        histogram.total = float(str(data.get("total", 0.0)))
        minimum = data.get("min")
        histogram.minimum = math.inf if minimum is None else float(str(minimum))
        histogram.maximum = float(str(data.get("max", 0.0)))
        return histogram

    # Reading

    @staticmethod
    def bucket_bounds(index: int) -> tuple[float, float]:
        """The bucket's [low, high) in seconds."""
        if index == 0:
            return 0.0, 2 ** (1 / BUCKETS_PER_OCTAVE) / 1e6
        return (
            2 ** (index / BUCKETS_PER_OCTAVE) / 1e6,
            2 ** ((index + 1) / BUCKETS_PER_OCTAVE) / 1e6,
        )

    def percentile(self, fraction: float) -> float | None:
        """The latency (seconds) below which ``fraction`` of the values lie."""
        if self.values == 0:
            return None
        rank = max(1, math.ceil(fraction * self.values))
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                low, high = self.bucket_bounds(index)
                # The middle of the bucket (geometric), clamped to what was seen.
                middle = math.sqrt(low * high) if low > 0 else high / 2
                return min(max(middle, self.minimum), self.maximum)
        return self.maximum

    def buckets(self) -> Iterable[tuple[float, float, int]]:
        for index, count in enumerate(self.counts):
            if count:
                low, high = self.bucket_bounds(index)
                yield low, high, count


PERCENTILES: Sequence[tuple[str, float]] = (
    ("p50", 0.50),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p99.9", 0.999),
)


def summarize(histogram: LatencyHistogram) -> dict[str, float | int | None]:
    """Count, mean, max and the usual percentiles, in milliseconds."""

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 3)

    summary: dict[str, float | int | None] = {"count": histogram.values}
    summary["mean_ms"] = ms(histogram.total / histogram.values) if histogram.values else None
    for name, fraction in PERCENTILES:
        summary[f"{name}_ms"] = ms(histogram.percentile(fraction))
    summary["max_ms"] = ms(histogram.maximum) if histogram.values else None
    return summary
