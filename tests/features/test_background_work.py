"""Blocking steps that a cancel does not wait for, finished in the background for later."""

from __future__ import annotations

import threading
import time

import pytest

from core.errors import Cancelled
from core.features import background_work


def test_without_should_stop_the_step_runs_in_the_callers_thread() -> None:
    where: list[str] = []
    result = background_work.unless_stopped(
        "here", lambda: where.append(threading.current_thread().name) or 7, None)
    assert result == 7 and where == [threading.current_thread().name]


def test_the_result_and_the_error_reach_the_caller() -> None:
    assert background_work.unless_stopped("ok", lambda: "done", lambda: False) == "done"

    def broken() -> None:
        raise ValueError("converter said no")

    with pytest.raises(ValueError, match="converter said no"):
        background_work.unless_stopped("broken", broken, lambda: False)
    assert background_work.in_flight() == []


def test_a_cancel_lands_at_once_and_the_step_finishes_for_the_next_caller() -> None:
    release = threading.Event()
    calls: list[int] = []

    def slow_step() -> str:
        calls.append(1)
        release.wait(10)
        return "converted"

    asked = time.monotonic() + 0.3
    started = time.monotonic()
    with pytest.raises(Cancelled):
        background_work.unless_stopped("slow", slow_step, lambda: time.monotonic() > asked)
    assert time.monotonic() - started < 1.5  # not the step's 10 s
    assert background_work.in_flight() == ["slow"]

    # The next caller joins the step still running instead of starting it again.
    joined: list[str] = []
    waiter = threading.Thread(target=lambda: joined.append(
        background_work.unless_stopped("slow", slow_step, lambda: False)))
    waiter.start()
    time.sleep(0.3)
    release.set()
    waiter.join(5)
    assert joined == ["converted"] and calls == [1]
    assert background_work.in_flight() == []


def test_a_stop_asked_before_the_step_starts_never_starts_it() -> None:
    def never() -> None:
        raise AssertionError("started although the stop was already asked")

    with pytest.raises(Cancelled):
        background_work.unless_stopped("never", never, lambda: True)
    assert background_work.in_flight() == []
