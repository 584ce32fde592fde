"""CSV files for spreadsheets (Evaluate's per-class table, the export's per_class.csv) make
cells that a spreadsheet would run as a formula inert, as OWASP's CSV-injection guidance says."""

from __future__ import annotations

import csv
import io

import numpy as np

from core import text
from core.results import report
from core.runs import evaluation

FORMULAS = ['=HYPERLINK("http://host.invalid","x")', "+1+1", "-2+3", "@SUM(A1)", "\tcat",
            "\rdog"]


def test_csv_cell_quotes_formula_starts_and_keeps_numbers() -> None:
    for value in FORMULAS:
        assert text.csv_cell(value) == "'" + value
    assert text.csv_cell("cats") == "cats"
    assert text.csv_cell(-0.5) == -0.5


def test_the_per_class_csv_neutralises_formula_class_names() -> None:
    labels = [*FORMULAS, "plain"]
    n = len(labels)
    probs = np.eye(n, dtype="float32")
    result = evaluation.evaluate_probabilities(probs, np.arange(n), labels,
                                               [f"/x/{i}.png" for i in range(n)])
    rows = list(csv.DictReader(io.StringIO(report.per_class_csv(result).decode("utf-8"), newline="")))
    classes = [row["class"] for row in rows]
    assert sorted(classes) == sorted(["'" + f for f in FORMULAS] + ["plain"])
    assert not any(c.startswith(text.FORMULA_STARTS) for c in classes)
    assert all(float(row["precision"]) == 1.0 for row in rows)
