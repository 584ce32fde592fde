"""Downloadable files of a run for people who don't write code: an HTML report, a model zip.

Plain Python (no Streamlit): the Evaluate page offers them as downloads; core.export.exporter puts
the report, with its format table, into every export folder.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from core import text
from core.audit.choices import audit_text
from core.errors import AppError
from core.runs import evaluation, head_choice, interval

if TYPE_CHECKING:
    from core.runs.evaluation import EvalResult
    from core.runs.store import Run

# Names of the files inside the model zip (the export's own layout, which its README explains).
MODEL_NAME = "model.keras"
LABELS_NAME = "labels.json"
# Versions worth telling a reader; the server's platform string and paths are left out.
REPORTED_VERSIONS = ("python", "tensorflow", "keras", "numpy")

MODEL_README = """\
Trained with Transfer Learning Studio.

model.keras   one Keras model: a raw RGB photo ({size} x {size}, pixel values 0..255) in,
              one probability per class out (preprocessing is inside the model)
labels.json   the class names, in the order of the model's outputs

Use it in Python (TensorFlow {tf} / Keras {keras}):

    import json, keras, numpy as np
    from PIL import Image, ImageOps
    model = keras.saving.load_model("model.keras", compile=False)
    labels = json.load(open("labels.json"))["labels"]
    photo = Image.open("photo.jpg")
    photo.draft("RGB", ({size}, {size}))              # JPEG: decoded at a reduced scale first
    photo = ImageOps.exif_transpose(photo).convert("RGB")  # upright, as the camera held it
    photo = photo.resize(({size}, {size}), Image.Resampling.BILINEAR)  # whole photo, no crop
    probabilities = model.predict(np.asarray(photo, "float32")[None])[0]
    print(labels[int(probabilities.argmax())])

These are the studio's own resize rules, so the model sees the pixels it was trained on. The
studio also converts embedded colour profiles (Adobe RGB, Display P3...) to sRGB and puts
transparent parts on white; core.data.images.load_resized(path, {size}) does all of it.

A model built on a TF Hub base also needs tensorflow_hub and the studio's core package
(import core.features.backbones before loading: it registers the TF Hub layer).
"""

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:60rem;margin:2rem auto;
padding:0 1rem;color:#1f2a1f;line-height:1.45}
h1{margin-bottom:.2rem}.sub{color:#586258;margin-top:0}
.big{font-size:2.4rem;font-weight:700;color:#2e7d32;margin:.2rem 0}
table{border-collapse:collapse;margin:.6rem 0 1.2rem}td,th{border:1px solid #d5ddd5;padding:.3rem .6rem;
text-align:right}th{background:#f1f5f1}td:first-child,th:first-child{text-align:left}
.good{color:#2e7d32}.bad{color:#c62828}.note{color:#586258;font-size:.92rem}
.pair{display:flex;gap:.8rem;flex-wrap:wrap}figure{margin:0}figcaption{font-size:.9rem;color:#586258}
"""
WORST_MISTAKES_SHOWN = 6


def model_zip(run: Run) -> bytes:
    """A zip of the run's model, its class names and a README saying how to use them.

    Raises:
        RunNotUsableError: when the run is not completed or is broken.
    """
    run.require_usable("be exported")
    assert run.model_path is not None  # a usable run has a model
    buffer = io.BytesIO()
    versions = run.versions or {}
    readme = MODEL_README.format(size=run.input_size or "S", tf=versions.get("tensorflow", "?"),
                                 keras=versions.get("keras", "?"))
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(run.model_path, MODEL_NAME)
        zf.writestr(LABELS_NAME, json.dumps(run.labels_record(), indent=2, ensure_ascii=False))
        zf.writestr("README.txt", readme)
    return buffer.getvalue()


def per_class_csv(result: EvalResult) -> bytes:
    """The per-class table (class, precision, recall, f1, support) as UTF-8 CSV.

    Class names that a spreadsheet would run as a formula (=, +, -, @...) get a leading quote.
    """
    table = result.per_class.copy()
    for column in table.columns:
        if not pd.api.types.is_numeric_dtype(table[column]):
            table[column] = table[column].map(text.csv_cell)
    # Text quoted: a carriage return inside a name stays inside its cell.
    return table.to_csv(index=False, float_format="%.4f",
                        quoting=csv.QUOTE_NONNUMERIC).encode("utf-8")


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
    tested = interval.accuracy(result.accuracy, total)
    if tested is not None:
        text += (f" With so many photos, the true accuracy is, with 95% confidence, between "
                 f"{_pct(tested.low)} and {_pct(tested.high)}.")
        if tested.warning():
            text += f" <b>{html.escape(tested.warning())}</b>"
    shown = evaluation.informative_top_k(result)
    k = shown[-1] if shown else None
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


def _png_source(pixels: Any) -> str:
    from core.results import overlays

    return "data:image/png;base64," + base64.b64encode(overlays.png_bytes(pixels)).decode("ascii")


def _explained_mistakes(run: Run, result: EvalResult, limit: int) -> str:
    """The worst mistakes with their heatmaps, embedded as PNGs (the page stays one file)."""
    if limit <= 0 or bool(result.predictions["correct"].all()):
        return ""
    from core.results import explain

    title = "<h2>Where the model looked in its worst mistakes</h2>"
    try:
        mistakes = explain.worst_mistakes(run, result, limit)
    except AppError as exc:
        return f"{title}<p class='note'>No heatmaps: {html.escape(str(exc))}</p>"
    parts = [title, "<p class='note'>The test photos the model got most confidently wrong. Red "
             "marks where it found the most evidence for a class, blue none: on the left for "
             "its answer, on the right for the true class. Evidence in the background, not on "
             "the subject, means the model learnt the wrong thing.</p>"]
    for mistake in mistakes:
        name = html.escape(Path(mistake.path).name)
        words = (f"<p><b>{name}</b>: a <b>{html.escape(mistake.true)}</b> taken for "
                 f"<b>{html.escape(mistake.predicted)}</b> ({_pct(mistake.confidence)})</p>")
        if mistake.error or mistake.original is None:
            parts.append(f"{words}<p class='note'>{html.escape(str(mistake.error))}</p>")
            continue
        figures = "".join(
            f"<figure><img src='{_png_source(explain.on_original(heat, mistake.original))}' "
            f"alt='{what} heatmap of {name}'><figcaption>{what}: {html.escape(heat.label)} "
            f"{_pct(heat.probability)}</figcaption></figure>"
            for heat, what in ((mistake.predicted_map, "Its answer"),
                               (mistake.true_map, "The true class")) if heat is not None)
        parts.append(f"{words}<div class='pair'>{figures}</div>")
    return "\n".join(parts)


def _settings(run: Run) -> pd.DataFrame:
    config = run.config.to_dict() if run.config is not None else {}
    params = run.metrics.get("params") or {}
    seconds = run.metrics.get("seconds") or {}
    averaged = run.averaged_epochs
    rows: list[tuple[str, Any]] = [
        ("Pretrained base", run.backbone),
        ("Weights", _weights_text(config)),
        ("Input size", f"{run.input_size} px" if run.input_size else None),
        ("Epochs trained", run.metrics.get("epochs_run")),
        ("Learning rate", config.get("learning_rate")),
        ("Hidden layers", ", ".join(map(str, config.get("hidden_units") or [])) or "none"),
        ("Fine-tuned layers", config.get("fine_tune_layers")),
        ("Fine-tune learning rate", run.fine_tune_rate_text),
        ("Fine-tuned weights", f"average of {averaged} epochs" if averaged > 1 else None),
        ("Augmentation", "yes" if run.config is not None and run.config.augments else "no"),
        ("Parameters", f"{params['total']:,}" if params.get("total") else None),
        ("Training time", f"{seconds['total']:.0f} s" if seconds.get("total") else None),
        ("Dataset audit", audit_text(run.dataset)),
    ]
    return pd.DataFrame([(k, "–" if v is None else v) for k, v in rows],
                        columns=["Setting", "Value"])


def _weights_text(config: Mapping[str, Any]) -> str:
    """imagenet, random, TF Hub or the weights file's name: never a path on the server."""
    weights = config.get("weights")
    if weights in (None, "", "none"):
        return "TF Hub" if config.get("hub_handle") else "random"
    return str(weights) if weights == "imagenet" else f"file {Path(str(weights)).name}"


def _head_choice(run: Run) -> str:
    """The head search's paragraph and its table of settings tried (core.runs.head_choice)."""
    record = run.metrics.get("head_search")
    text = f"<p>{html.escape(head_choice.record_text(record))}</p>"
    table = head_choice.record_table(record)
    if table.empty:
        return text
    for column in ("CV accuracy", "Spread (±)"):
        table[column] = table[column].map(_pct)
    return text + _table(table)


def _familiarity_text(run: Run) -> str:
    from core.results import familiarity

    return familiarity.summary_text(familiarity.run_facts(run), len(run.labels))


def _versions_text(run: Run) -> str:
    versions = run.versions or {}
    return ", ".join(f"{name} {versions[name]}" for name in REPORTED_VERSIONS
                     if versions.get(name)) or "not recorded"


def _formats_section(formats: Sequence[Mapping[str, Any]] | None) -> str:
    """The export's format table (core.export.exporter's metadata entries, each with a "title")."""
    if not formats:
        return ""
    rows = [{
        "Format": f.get("title") or f.get("name"), "File": f.get("file"),
        "Size": "–" if f.get("size_bytes") is None else f"{f['size_bytes'] / 1e6:.2f} MB",
        "Test accuracy": _pct(f.get("test_accuracy")), "Agreement": _pct(f.get("agreement")),
        "Latency (p50)": "–" if f.get("latency_ms_p50") is None
        else f"{f['latency_ms_p50']:.1f} ms",
        "Verdict": ("recommended" if f.get("recommended") else f.get("note") or "")
        if f.get("status") == "ok" else f"{f.get('status')}: {f.get('error') or f.get('note')}",
    } for f in formats]
    return ("<h2>Deployable formats</h2><p class='note'>Each file was loaded again in a clean "
            "process and scored on the test photos. Agreement: share of photos with the same "
            "answer as the Keras model.</p>" + _table(pd.DataFrame(rows)))


def report_html(run: Run, result: EvalResult,
                formats: Sequence[Mapping[str, Any]] | None = None, *,
                heatmaps: int = WORST_MISTAKES_SHOWN) -> str:
    """A one-page, self-contained HTML report of a run, readable without knowing ML.

    Args:
        run: The run.
        result: Its test evaluation.
        heatmaps: How many of the worst mistakes to show with their Grad-CAM heatmaps
            (embedded as PNGs; loads the run's model); 0 for none.
        formats: An export's formats (core.export.exporter), shown as a table when given.
    """
    dataset = run.dataset.get("name") or "the dataset"
    created = run.created.astimezone().strftime("%Y-%m-%d %H:%M") if run.created else ""
    per_class = result.per_class.copy()
    for column in ("precision", "recall", "f1"):
        per_class[column] = per_class[column].map(_pct)
    per_class.columns = ["Class", "Precision", "Recall", "F1", "Test photos"]
    confusion = pd.DataFrame(result.confusion, columns=result.labels)
    confusion.insert(0, "True class \\ predicted", result.labels)
    held_label, held_value, held_meaning = run.held_out_estimate()
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Model report: {html.escape(dataset)}</title>
<style>{_STYLE}</style></head><body>
<h1>How well does the model recognise {html.escape(dataset)}?</h1>
<p class="sub">Run {html.escape(run.run_id)} · {html.escape(created)} ·
{len(result.labels)} classes: {html.escape(", ".join(result.labels))}</p>
<p class="big">{_pct(result.accuracy)} correct</p>
<p>{_plain_words(result)}</p>
<p class="note">{html.escape(held_label)}: {_pct(held_value)}. {html.escape(held_meaning)}</p>
<h2>Class by class</h2>
<p class="note"><b>Precision</b>: when the model says a class, how often it is right.
<b>Recall</b>: of the photos of a class, how many it finds. <b>F1</b> combines both.</p>
{_table(per_class)}
<h2>Most common mistakes</h2>
{_mistakes(result)}
{_explained_mistakes(run, result, heatmaps)}
<h2>"None of these": photos of other things</h2>
<p>{html.escape(_familiarity_text(run))}</p>
<h2>Confusion matrix</h2>
<p class="note">Rows: the true class. Columns: what the model said. The diagonal is right.</p>
{_table(confusion)}
<h2>How it was trained</h2>
{_table(_settings(run))}
<h2>How the head was chosen</h2>
{_head_choice(run)}
{_formats_section(formats)}
<p class="note">Made with Transfer Learning Studio, run {html.escape(run.run_id)}.
Versions: {html.escape(_versions_text(run))}.</p>
</body></html>
"""
