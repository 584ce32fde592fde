"""The status words of runs and background jobs, defined once."""

from __future__ import annotations

QUEUED = "queued"
RUNNING = "running"
COMPLETED = "completed"
CANCELLED = "cancelled"
FAILED = "failed"
# Only ever derived when reading: the process that was running it died, or its record is bad.
INTERRUPTED = "interrupted"
BROKEN = "broken"

ACTIVE = (QUEUED, RUNNING)
FINAL = (COMPLETED, CANCELLED, FAILED)
# What a run's status.json may hold (runs are never queued: a queued job has no run yet).
RUN_RECORDED = (RUNNING, COMPLETED, CANCELLED, FAILED)
