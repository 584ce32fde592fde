"""The test accuracy's 95% Wilson interval and when it is too wide to mean much (issue 27)."""

from __future__ import annotations

import pytest

from core.runs import interval


def test_the_issues_example_and_known_values() -> None:
    measured = interval.accuracy(5 / 6, 6)
    assert measured.text() == "83% (6 photos: 44-97%)"
    assert measured.too_few and "Only 6 test photos" in measured.warning()
    # Wilson (1927), as R's prop.test(correct=FALSE) and statsmodels' proportion_confint give.
    assert interval.wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    low, high = interval.wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)  # never zero width at 0%
    assert interval.wilson(10, 10)[1] == pytest.approx(1.0)


def test_many_photos_give_a_narrow_interval_and_no_warning() -> None:
    measured = interval.accuracy(0.9, 400)
    assert not measured.too_few and measured.warning() is None
    assert interval.accuracy(None, 10) is None and interval.accuracy(0.5, 0) is None
    assert interval.accuracy_text(0.5, None) == "50%"
    assert interval.accuracy_text(None, None) is None
