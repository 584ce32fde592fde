"""Downloadable files of a run for people who don't write code: an HTML report, a model zip.

Plain Python (no Streamlit): the Evaluate page offers them as downloads, `python -m core export`
writes them to a folder.
"""

from __future__ import annotations

import html
import io
import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from core import files, runs
from core.audit_choices import audit_text
from core.errors import AppError

if TYPE_CHECKING:
    from core.evaluation import EvalResult
    from core.runs import Run

MODEL_README = """\
Trained with Transfer Learning Studio.

model.keras   one Keras model: a raw RGB photo ({size} x {size}, pixel values 0..255) in,
              one probability per class out (preprocessing is inside the model)
labels.json   the class names, in the order of the model's outputs

Use it in Python (TensorFlow {tf} / Keras {keras}):

    import json, keras, numpy as np
    from PIL import Image
    model = keras.saving.load_model("model.keras", compile=False)
    labels = json.load(open("labels.json"))["labels"]
    photo = Image.open("photo.jpg").convert("RGB").resize(({size}, {size}))
    probabilities = model.predict(np.asarray(photo, "float32")[None])[0]
    print(labels[int(probabilities.argmax())])

A model built on a TF Hub base also needs tensorflow_hub and the studio's core package
(import core.backbones before loading: it registers the TF Hub layer).
"""

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:60rem;margin:2rem auto;
padding:0 1rem;color:#1f2a1f;line-height:1.45}
h1{margin-bottom:.2rem}.sub{color:#586258;margin-top:0}
.big{font-size:2.4rem;font-weight:700;color:#2e7d32;margin:.2rem 0}
table{border-collapse:collapse;margin:.6rem 0 1.2rem}td,th{border:1px solid #d5ddd5;padding:.3rem .6rem;
text-align:right}th{background:#f1f5f1}td:first-child,th:first-child{text-align:left}
.good{color:#2e7d32}.bad{color:#c62828}.note{color:#586258;font-size:.92rem}
"""


def model_zip(run: Run) -> bytes:
    """A zip of the run's model.keras, labels.json and a README saying how to use them.

    Raises:
        FileNotFoundError: when the run has no model.
    """
    if run.model_path is None:
        raise FileNotFoundError(f"run {run.run_id} has no {runs.MODEL_FILE}")
    buffer = io.BytesIO()
    versions = run.versions or {}
    readme = MODEL_README.format(size=run.input_size or "S", tf=versions.get("tensorflow", "?"),
                                 keras=versions.get("keras", "?"))
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(run.model_path, runs.MODEL_FILE)
        zf.write(run.run_dir / runs.LABELS_FILE, runs.LABELS_FILE)
        zf.writestr("README.txt", readme)
    return buffer.getvalue()


def per_class_csv(result: EvalResult) -> bytes:
    """The per-class table (class, precision, recall, f1, support) as UTF-8 CSV."""
    return result.per_class.to_csv(index=False, float_format="%.4f").encode("utf-8")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _plain_words(result: EvalResult) -> str:
    right = int(result.predictions["correct"].sum())
    total = result.num_samples
    text = (f"Out of <b>{total}</b> test photos the model had never seen while training, it "
            f"named <b>{right}</b> correctly.")
    k = max((k for k in result.top_k_accuracy if k > 1), default=None)
    if k is not None:
        text += (f" The right answer was among its {k} best guesses for "
                 f"{_pct(result.top_k_accuracy[k])} of them.")
    return text


def _mistakes(result: EvalResult, limit: int = 10) -> str:
    labels = result.labels
    pairs = []
    for i, true in enumerate(labels):
        for j, predicted in enumerate(labels):
            count = int(result.confusion[i, j])
            if i != j and count:
                pairs.append((count, true, predicted))
    if not pairs:
        return "<p class='good'>No mistakes on the test photos.</p>"
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    items = "".join(f"<li><b>{html.escape(t)}</b> taken for <b>{html.escape(p)}</b>: "
                    f"{c} photo{'s' if c != 1 else ''}</li>" for c, t, p in pairs[:limit])
    return f"<ul>{items}</ul>"


def _settings(run: Run) -> pd.DataFrame:
    config = run.config.to_dict() if run.config is not None else {}
    params = run.metrics.get("params") or {}
    seconds = run.metrics.get("seconds") or {}
    averaged = run.averaged_epochs
    rows: list[tuple[str, Any]] = [
        ("Pretrained base", run.backbone),
        ("Weights", config.get("weights") or ("TF Hub" if config.get("hub_handle") else "random")),
        ("Input size", f"{run.input_size} px" if run.input_size else None),
        ("Epochs trained", run.metrics.get("epochs_run")),
        ("Learning rate", config.get("learning_rate")),
        ("Hidden layers", ", ".join(map(str, config.get("hidden_units") or [])) or "none"),
        ("Fine-tuned layers", config.get("fine_tune_layers")),
        ("Fine-tuned weights", f"average of {averaged} epochs" if averaged > 1 else None),
        ("Augmentation", "yes" if run.config is not None and run.config.augments else "no"),
        ("Parameters", f"{params['total']:,}" if params.get("total") else None),
        ("Training time", f"{seconds['total']:.0f} s" if seconds.get("total") else None),
        ("Dataset audit", audit_text(run.dataset)),
    ]
    return pd.DataFrame([(k, "–" if v is None else v) for k, v in rows],
                        columns=["Setting", "Value"])


def report_html(run: Run, result: EvalResult) -> str:
    """A one-page, self-contained HTML report of a run, readable without knowing ML."""
    dataset = run.dataset.get("name") or "the dataset"
    created = run.created.astimezone().strftime("%Y-%m-%d %H:%M") if run.created else ""
    per_class = result.per_class.copy()
    for column in ("precision", "recall", "f1"):
        per_class[column] = per_class[column].map(_pct)
    per_class.columns = ["Class", "Precision", "Recall", "F1", "Test photos"]
    confusion = pd.DataFrame(result.confusion, columns=result.labels)
    confusion.insert(0, "True class \\ predicted", result.labels)
    best = run.best_val_accuracy
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Model report: {html.escape(dataset)}</title>
<style>{_STYLE}</style></head><body>
<h1>How well does the model recognise {html.escape(dataset)}?</h1>
<p class="sub">Run {html.escape(run.run_id)} · {html.escape(created)} ·
{len(result.labels)} classes: {html.escape(", ".join(result.labels))}</p>
<p class="big">{_pct(result.accuracy)} correct</p>
<p>{_plain_words(result)}</p>
<p class="note">Best accuracy on the validation photos while training: {_pct(best)}.</p>
<h2>Class by class</h2>
<p class="note"><b>Precision</b>: when the model says a class, how often it is right.
<b>Recall</b>: of the photos of a class, how many it finds. <b>F1</b> combines both.</p>
{_table(per_class)}
<h2>Most common mistakes</h2>
{_mistakes(result)}
<h2>Confusion matrix</h2>
<p class="note">Rows: the true class. Columns: what the model said. The diagonal is right.</p>
{_table(confusion)}
<h2>How it was trained</h2>
{_table(_settings(run))}
<p class="note">Made with Transfer Learning Studio. Files of this run: {html.escape(str(run.run_dir))}.
Versions: {html.escape(json.dumps({k: v for k, v in (run.versions or {}).items() if k != "device"}))}</p>
</body></html>
"""


def export(run: Run, folder: str | Path) -> dict[str, Path]:
    """Writes the run's shareable files into a folder, each atomically.

    Files: <run id>-report.html, <run id>-per-class.csv and, when the run has a model,
    <run id>-model.zip (the Evaluate page's downloads, under the same names).

    Returns:
        {"report", "per_class", "model"} -> the file written ("model" only with a model).

    Raises:
        AppError: when the run has no test evaluation to report (not completed), or the
            folder cannot be written.
    """
    result = run.evaluation
    if result is None:
        raise AppError(
            f"Run {run.run_id} has no test results to report (status: {run.status}). "
            "Export a completed run; `python -m core runs` lists them."
        )
    out = Path(folder).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        written = {"report": out / f"{run.run_id}-report.html",
                   "per_class": out / f"{run.run_id}-per-class.csv"}
        files.write_text_atomic(written["report"], report_html(run, result))
        files.write_bytes_atomic(written["per_class"], per_class_csv(result))
        if run.model_path is not None:
            written["model"] = out / f"{run.run_id}-model.zip"
            files.write_bytes_atomic(written["model"], model_zip(run))
    except OSError as exc:
        raise AppError(f"Cannot write the exported files to {out}: {exc.strerror or exc}. "
                       "Choose a folder you can write to with --out.") from exc
    return written
