"""The names of the files in a run's folder (core.runs.folder reads them, the writer writes
them, the run record and the index point at them)."""

CONFIG_FILE = "config.json"
LABELS_FILE = "labels.json"
DATASET_FILE = "dataset.json"
SPLIT_FILE = "split.csv"
HISTORY_FILE = "history.csv"
EVENTS_FILE = "events.jsonl"
METRICS_FILE = "metrics.json"
HEAD_SEARCH_FILE = "head_search.json"  # the settings the head search tried (core.training.head_search)
MODEL_FILE = "model.keras"
FAMILIARITY_FILE = "familiarity.npz"  # 'none of these' (core.results.familiarity)
VERSIONS_FILE = "versions.json"
STATUS_FILE = "status.json"
# Files whose presence makes a folder look like a run.
MARKER_FILES = (STATUS_FILE, CONFIG_FILE, LABELS_FILE)
# Temporary files of writes in progress: ".<name>.<random>.tmp" (core.files) and the model's
# ".model-<random>.tmp.keras" (Keras wants the .keras suffix).
TEMP_SUFFIXES = (".tmp", ".tmp.keras")
