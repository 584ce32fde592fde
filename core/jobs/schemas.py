"""What a job record (<home>/jobs/<job id>.json) must hold to be taken over after a restart
(see core.schema). A record that does not match is dropped with a warning."""

from __future__ import annotations

from core.schema import anything, boolean, document, integer, mapping, number, text

JOB_RECORD = document({
    "job_id": text(), "title": text(), "kind": text(), "subject": text(), "device": text(),
    "state": text(), "position": integer(1), "cancel_requested": boolean,
    "submitted": number(0), "started": number(0), "finished": number(0),
    "error": text(), "error_traceback": text(), "pid": integer(0), "hostname": text(),
    "pid_started": anything,
    "stored_kwargs": mapping(anything),
}, required=("job_id", "state"))
