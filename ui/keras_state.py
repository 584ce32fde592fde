"""Keeps Keras' global state across script runs: Streamlit would reset it after every rerun.

After each script run Streamlit calls keras.backend.clear_session() (script_runner's
_clean_problem_modules). In Keras 3 that replaces the thread-local trackers of every thread,
so a page rerun in any browser reset the state of trainings running in the job threads (the
dtype policy of a mixed-precision fine-tuning, layer-name counters), cleared TensorFlow's
kernel cache under them, and ran a full garbage collection: 0.26-0.37 s of each rerun with
TensorFlow loaded, more than the page itself (docs/benchmarks.md). The studio builds no models
in page scripts (they are cached resources or job work), so it has nothing to clear.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

from streamlit.runtime.scriptrunner import script_runner


def _clean_all_but_keras() -> None:
    """What Streamlit's cleanup does besides Keras: close matplotlib's figures."""
    pyplot: Any = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        with contextlib.suppress(Exception):  # as Streamlit: never fail a run over it
            pyplot.close("all")


def keep_across_reruns() -> None:
    """Installs the cleanup without Keras (idempotent; nothing when Streamlit has no such hook)."""
    if hasattr(script_runner, "_clean_problem_modules"):
        script_runner._clean_problem_modules = _clean_all_but_keras
