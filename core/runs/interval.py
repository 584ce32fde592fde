"""How far an accuracy measured on a few test photos can be trusted: the Wilson interval."""

from __future__ import annotations

import math
from dataclasses import dataclass

# 95% two-sided normal quantile.
Z_95 = 1.959964
# A test accuracy whose interval is wider than this (in accuracy points) says little: the
# pages warn. 30 photos at 80% give 0.61-0.91 (30 points); 100 at 90% give 0.83-0.94.
WIDE_INTERVAL = 0.25


@dataclass(frozen=True)
class Accuracy:
    """An accuracy on n photos with its 95% Wilson interval.

    Attributes:
        value: Share of photos named correctly.
        photos: How many photos it was measured on.
        low, high: The 95% Wilson score interval of the true accuracy.
    """

    value: float
    photos: int
    low: float
    high: float

    @property
    def too_few(self) -> bool:
        """Whether the interval is too wide for the number to mean much."""
        return self.high - self.low > WIDE_INTERVAL

    def text(self) -> str:
        """'83% (6 photos: 44-97%)'."""
        noun = "photo" if self.photos == 1 else "photos"
        return (f"{self.value:.0%} ({self.photos:,} {noun}: "
                f"{self.low * 100:.0f}-{self.high * 100:.0f}%)")

    def warning(self) -> str | None:
        """A sentence for people when the test split is too small, else None."""
        if not self.too_few:
            return None
        return (f"Only {self.photos} test photos: the true accuracy could be anywhere from "
                f"{self.low:.0%} to {self.high:.0%} (95% interval). Add photos, or give the "
                "test split a larger share, for a number that means more.")

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready: value, photos, low, high."""
        return {"value": self.value, "photos": self.photos, "low": self.low,
                "high": self.high}


def wilson(correct: int, photos: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (correct of photos); (0, 1) when photos is 0.

    Unlike value ± z·sqrt(p(1-p)/n), it stays within [0, 1] and is not of zero width at
    0% or 100%, which matter most on small test splits.
    """
    if photos <= 0:
        return 0.0, 1.0
    p = correct / photos
    denominator = 1 + z * z / photos
    centre = (p + z * z / (2 * photos)) / denominator
    half = z * math.sqrt(p * (1 - p) / photos + z * z / (4 * photos * photos)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy(value: float | None, photos: int | None) -> Accuracy | None:
    """The accuracy with its interval; None when either is unknown."""
    if value is None or not photos:
        return None
    correct = round(value * photos)
    low, high = wilson(correct, int(photos))
    return Accuracy(float(value), int(photos), low, high)


def accuracy_text(value: float | None, photos: int | None) -> str | None:
    """'83% (6 photos: 44-97%)', the bare percentage when the count is unknown, else None."""
    measured = accuracy(value, photos)
    if measured is not None:
        return measured.text()
    return None if value is None else f"{value:.0%}"
