"""Folder and zip ingestion: probe the walk's files in worker processes, duplicates, report."""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import logging
import multiprocessing
import os
import sys
import threading
import types
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pandas as pd

from core.config import IngestConfig, studio_home
from core.data import images, names, probe_cache, uploads
from core.data import walk as dataset_walk
from core.data.probe_cache import ProbeCache
from core.errors import DatasetError
from core.progress import CHECKING, EventSink, PhaseProgress

log = logging.getLogger(__name__)

INDEX_COLUMNS = ["path", "label", "label_index", "sha256", "width", "height", "format"]
# Below this many files, probing in this process beats starting worker processes.
POOL_MIN_FILES = 200


@dataclass
class ValidationReport:
    """What ingestion found: usable images per class and everything that was left out.

    Attributes:
        root: The dataset root folder (class folders live directly under it).
        classes: Class name -> number of usable images (0 for an empty class folder).
        rejected: Files left out, as {"file": path relative to root, "reason": why}.
        duplicates: Groups of identical files, as {"files": [...], "cross_class": bool,
            "kept": [files kept]}; cross-class groups keep nothing by default.
        ignored: Number of files skipped without a check: system and hidden files
            (__MACOSX, .DS_Store, Thumbs.db...) and non-image files beside the class
            folders (README.txt, LICENSE...).
        unassigned: Images lying at the top level, outside any class folder.
        warnings: Problems worth fixing that do not stop training.
        errors: Problems that make the dataset unusable, each saying what to do.
    """

    root: str
    classes: dict[str, int] = field(default_factory=dict)
    rejected: list[dict[str, str]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    ignored: int = 0
    unassigned: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        """True when nothing stops training on this dataset."""
        return not self.errors

    @property
    def num_images(self) -> int:
        """Usable images over all classes."""
        return sum(self.classes.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; also carries the derived "usable" and "images" keys."""
        data = dataclasses.asdict(self)
        data["usable"] = self.usable
        data["images"] = self.num_images
        return data

    def to_json(self, indent: int | None = None) -> str:
        """The report as one JSON object."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationReport:
        """Inverse of to_dict; derived and unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Dataset:
    """An ingested dataset: its root, one index row per usable image, and the report.

    Attributes:
        root: The dataset root folder.
        index: DataFrame with INDEX_COLUMNS, absolute paths, sorted by path.
        report: The validation report.
    """

    root: Path
    index: pd.DataFrame
    report: ValidationReport

    @property
    def classes(self) -> list[str]:
        """Class names with usable images, sorted; label_index is the position here."""
        return sorted(self.index["label"].unique().tolist())


# ---------------------------------------------------------------------------------------
# Probing files in worker processes


def worker_count(config: IngestConfig) -> int:
    """Processes that check images: config.workers, else one per CPU this process may use."""
    if config.workers:
        return config.workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


_main_lock = threading.Lock()


@contextlib.contextmanager
def _workers_import_only_core() -> Iterator[None]:
    """While worker processes start, __main__ is a bare module with nothing to re-run.

    A spawned worker first re-runs the parent's __main__ file (as __mp_main__), so that
    functions defined there could be unpickled. Under Streamlit, __main__ is the page script:
    every worker would run the page (its widgets warn "missing ScriptRunContext"). The
    workers need only core.data.images, which they import by name. Spawning happens in the
    thread that submits the work, so the swap covers it; other threads starting workers
    wait on the lock, and a __main__ replaced meanwhile (a new page run) is left as it is.
    """
    with _main_lock:
        main = sys.modules.get("__main__")
        stand_in = types.ModuleType("__main__")
        sys.modules["__main__"] = stand_in
        try:
            yield
        finally:
            if sys.modules.get("__main__") is stand_in and main is not None:
                sys.modules["__main__"] = main


def _probe_all(
    paths: list[Path], config: IngestConfig, on_event: EventSink | None,
    cache: ProbeCache | None = None,
) -> Iterator[images.ProbeResult]:
    """Probes every path (in a process pool for many files), yielding results in order.

    With a cache, files unchanged since an earlier read are not decoded again.
    """
    files = [str(p) for p in paths]
    known = {name: hit for name in files
             if cache is not None and (hit := cache.lookup(name)) is not None}
    unknown = [name for name in files if name not in known]
    stamps = probe_cache.signatures(unknown) if cache is not None else {}
    fresh = _probe_files(unknown, config)
    progress = PhaseProgress(on_event, CHECKING, "files")
    total = len(files)
    try:
        for done, name in enumerate(files, 1):
            result = known.get(name)
            if result is None:
                result = next(fresh)
                if cache is not None:
                    cache.remember(result, stamps.get(name))
            progress(done, total)
            yield result
    finally:
        fresh.close()
    if cache is not None:
        cache.save()


def _probe_files(files: list[str], config: IngestConfig) -> Iterator[images.ProbeResult]:
    """images.probe_file of each name, in order; a process pool for many files."""
    probe = functools.partial(
        images.probe_file, max_pixels=config.max_pixels, min_side=config.min_side,
        max_bytes=config.max_file_bytes,
    )
    total = len(files)
    workers = min(worker_count(config), max(1, total))
    if workers == 1 or total < POOL_MIN_FILES:
        results: Iterable[images.ProbeResult] = map(probe, files)
        pool = None
    else:
        # spawn, not fork: the caller may be a threaded server (Streamlit) or hold TF state.
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=images.quiet_worker,
        )
        chunksize = max(1, min(64, total // (workers * 8)))
        with _workers_import_only_core():  # map submits every chunk, starting the workers
            results = pool.map(probe, files, chunksize=chunksize)
    try:
        yield from results
    except concurrent.futures.BrokenExecutor as exc:
        raise DatasetError(
            "A worker process checking the images died (out of memory, or a decoder crashed "
            "on a malformed file). Lower the number of workers or the pixel limit, or remove "
            "recently added files, and try again."
        ) from exc
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------
# Ingestion


def _rel(path: Path | str, root: Path) -> str:
    return dataset_walk.printable(Path(path).relative_to(root).as_posix())


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _dataset_messages(
    report: ValidationReport, config: IngestConfig, cross_dropped: int
) -> None:
    """Fills report.errors and report.warnings from the class counts."""
    counts = report.classes
    if len(counts) < 2:
        if not counts:
            where = (f"; {_plural(len(report.unassigned), 'image')} lie at the top level"
                     if report.unassigned else "")
            report.errors.append(
                f"No class folders found{where}. Put the images in one folder per class, "
                "e.g. flowers/daisy/1.jpg and flowers/tulips/2.jpg."
            )
        else:
            only = next(iter(counts))
            report.errors.append(
                f"Only one class folder found ('{only}'). Add at least one more class folder "
                "with images: a classifier needs 2 or more classes."
            )
    for first, second in names.case_collisions(counts):
        report.errors.append(
            f"Class folders '{first}' and '{second}' differ only in case; they are one folder "
            "on macOS and Windows, and one class to people. Merge or rename one of them."
        )
    for name, n in counts.items():
        if n < config.min_images_per_class:
            missing = config.min_images_per_class - n
            report.errors.append(
                f"Class '{name}' has {_plural(n, 'usable image')}; add at least {missing} more "
                f"(each class needs {config.min_images_per_class}) or remove the folder."
            )
        elif n < config.warn_images_per_class:
            report.warnings.append(
                f"Class '{name}' has only {_plural(n, 'image')}; {config.warn_images_per_class} "
                "or more per class give a more reliable model."
            )
    nonzero = {k: v for k, v in counts.items() if v > 0}
    if len(nonzero) >= 2:
        big = max(nonzero, key=nonzero.__getitem__)
        small = min(nonzero, key=nonzero.__getitem__)
        ratio = nonzero[big] / nonzero[small]
        if ratio > config.warn_imbalance_ratio:
            report.warnings.append(
                f"Classes are imbalanced: '{big}' has {nonzero[big]} images, '{small}' only "
                f"{nonzero[small]} ({ratio:.1f}:1, more than {config.warn_imbalance_ratio:g}:1). "
                "Add images to the small classes or train with balanced class weights."
            )
    if report.unassigned:
        report.warnings.append(
            f"{_plural(len(report.unassigned), 'image')} at the top level belong to no class "
            "and were left out; move them into a class folder."
        )
    if cross_dropped:
        report.warnings.append(
            f"{_plural(cross_dropped, 'image')} appear in more than one class (label "
            "conflicts) and were left out; keep each photo in one class only."
        )


def _refuse_outside(path: Path, within: Sequence[Path]) -> None:
    """DatasetError when a folder or zip (links followed) lies outside the shared folders."""
    real = path.resolve()
    roots = [Path(root).resolve() for root in within]
    if not any(real == root or root in real.parents for root in roots):
        shared = ", ".join(str(root) for root in roots)
        raise DatasetError(f"{path} is outside the folders this server shares ({shared}, "
                           "set by TL_STUDIO_DATA_ROOTS), so it cannot be read here. Copy the "
                           "photos into one of them, or upload a zip instead.")


def ingest(
    source: str | Path | bytes | IO[bytes],
    *,
    home: Path | None = None,
    config: IngestConfig = IngestConfig(),
    on_event: EventSink | None = None,
    within: Sequence[Path] | None = None,
) -> Dataset:
    """Turns a folder or a zip of class folders into a validated dataset.

    Every file is checked by content in worker processes (hash, full decode); no decoded
    image is kept, so memory stays flat however large the dataset.

    Args:
        source: A folder path, a zip path, the zip's bytes, or a binary file object (an
            upload). Zips are extracted under <studio home>/uploads/<sha256[:16]>/.
        home: Studio home; default core.config.studio_home().
        config: Limits and thresholds.
        on_event: Called with ProgressEvents of phases "unpacking" (a zip) and
            "checking photos".
        within: For a folder: files whose real place (links followed) is outside these
            folders are refused unread (a server's TL_STUDIO_DATA_ROOTS).

    Returns:
        The Dataset; problems with the data as a whole are in dataset.report.errors.

    Raises:
        DatasetError: When the source itself is unusable (missing, not a folder or zip,
            damaged zip, zip over the limits).
    """
    if within and isinstance(source, (str, os.PathLike)):
        _refuse_outside(Path(source).expanduser(), within)
    top, zip_skipped = _source_folder(source, studio_home(home), config, on_event)
    layout = dataset_walk.scan(top)
    if within and isinstance(source, (str, os.PathLike)) and Path(source).expanduser().is_dir():
        dataset_walk.confine(layout, within)  # a zip's extraction is the studio's own
    report = ValidationReport(root=str(layout.root), ignored=layout.ignored)
    report.rejected.extend(_zip_rejections(zip_skipped, top, layout.root))
    report.rejected.extend({"file": _rel(path, layout.root), "reason": reason}
                           for path, reason in layout.refused)
    # Files unchanged since this folder was last read are not decoded again.
    cache = ProbeCache(studio_home(home), layout.root, config)
    usable = _check_files(layout, report, config, on_event, cache)
    kept, cross_dropped = _resolve_duplicates(usable, report, config)
    report.classes = _class_counts(layout, kept)
    report.rejected.sort(key=lambda item: item["file"])
    _dataset_messages(report, config, cross_dropped)
    index = _make_index(kept)
    log.info(
        "Ingested %s: %d usable images in %d classes, %d rejected, %d ignored",
        layout.root, len(index), len(report.classes), len(report.rejected), report.ignored,
    )
    return Dataset(root=layout.root, index=index, report=report)


def _source_folder(
    source: Any, home: Path, config: IngestConfig, on_event: EventSink | None
) -> tuple[Path, list[dict[str, str]]]:
    """The folder to scan (a zip is extracted first) and the zip entries skipped."""
    if not isinstance(source, (str, os.PathLike)):
        return uploads.unpack_upload(source, home, config, on_event)
    path = Path(source).expanduser()
    if not path.exists():
        raise DatasetError(
            f"{path} does not exist. Give the path of a folder with one sub-folder per "
            "class, or of a zip of such folders."
        )
    if not dataset_walk.is_utf8(str(path)):
        raise DatasetError(
            f"The path {dataset_walk.printable(str(path))} is not valid UTF-8 text, so the "
            "dataset index cannot store it; rename the folders on it (for example with convmv) "
            "and retry."
        )
    if path.is_dir():
        return path.resolve(), []
    if path.is_file():
        return uploads.unpack_upload(path, home, config, on_event)
    raise DatasetError(f"{path} is neither a folder nor a zip file.")


def _zip_rejections(
    zip_skipped: list[dict[str, str]], top: Path, root: Path
) -> list[dict[str, str]]:
    """Skipped zip entries named relative to the dataset root (below any wrapping folder)."""
    wrapper = root.relative_to(top).as_posix() + "/" if root != top else ""
    rejected = []
    for item in zip_skipped:
        name = item["file"]
        rel = name[len(wrapper):] if wrapper and name.startswith(wrapper) else name
        rejected.append({"file": rel, "reason": item["reason"]})
    return rejected


def _labelled_files(layout: dataset_walk.Layout) -> list[tuple[Path, str]]:
    """(file, class) for every file in a class folder.

    Labels are NFC-normalised: macOS writes decomposed names (e + combining accent), which
    would otherwise look identical to, yet differ from, the same name typed elsewhere.
    """
    return [(p, unicodedata.normalize("NFC", folder))
            for folder, files in layout.class_files.items() for p in files]


def _check_files(
    layout: dataset_walk.Layout, report: ValidationReport, config: IngestConfig,
    on_event: EventSink | None, cache: ProbeCache | None = None,
) -> list[tuple[str, str, images.ProbeResult]]:
    """Probes every file; returns the usable ones as (relative path, class, probe).

    Files that are not usable land in report.rejected; loose top-level images in
    report.unassigned, other loose files (README.txt, LICENSE...) in report.ignored.
    """
    labelled = _labelled_files(layout)
    probes = _probe_all([p for p, _ in labelled] + layout.top_files, config, on_event, cache)
    usable: list[tuple[str, str, images.ProbeResult]] = []
    for i, probe in enumerate(probes):
        rel = _rel(probe.path, layout.root)
        if i >= len(labelled):  # a loose top-level file
            if probe.is_image:
                report.unassigned.append(rel)
            else:
                report.ignored += 1
        elif probe.ok:
            usable.append((rel, labelled[i][1], probe))
        else:
            report.rejected.append({"file": rel, "reason": probe.reason})
    return usable


def _class_counts(
    layout: dataset_walk.Layout, kept: list[tuple[str, str, images.ProbeResult]]
) -> dict[str, int]:
    """Usable images per class folder, 0 for a folder with none."""
    names = sorted({unicodedata.normalize("NFC", f) for f in layout.class_files})
    counts = {name: 0 for name in names}
    for _rel_path, label, _probe in kept:
        counts[label] += 1
    return counts


def _resolve_duplicates(
    usable: list[tuple[str, str, images.ProbeResult]], report: ValidationReport,
    config: IngestConfig,
) -> tuple[list[tuple[str, str, images.ProbeResult]], int]:
    """Keeps one copy per class of identical files; drops label conflicts when asked."""
    by_hash: dict[str, list[tuple[str, str, images.ProbeResult]]] = defaultdict(list)
    for item in usable:
        by_hash[item[2].sha256].append(item)
    drop: set[str] = set()
    cross_dropped = 0
    for group in by_hash.values():
        if len(group) < 2:
            continue
        group.sort(key=lambda item: item[0])
        files = [item[0] for item in group]
        cross = len({item[1] for item in group}) > 1
        if cross and config.drop_cross_class_duplicates:
            keep: list[str] = []
            cross_dropped += len(files)
        else:
            first_per_class: dict[str, str] = {}
            for rel, label, _probe in group:
                first_per_class.setdefault(label, rel)
            keep = sorted(first_per_class.values())
        drop.update(f for f in files if f not in keep)
        report.duplicates.append({"files": files, "cross_class": cross, "kept": keep})
    report.duplicates.sort(key=lambda d: d["files"][0])
    kept = [item for item in usable if item[0] not in drop]
    return kept, cross_dropped


def _make_index(kept: list[tuple[str, str, images.ProbeResult]]) -> pd.DataFrame:
    labels = sorted({label for _rel, label, _probe in kept})
    position = {name: i for i, name in enumerate(labels)}
    rows = sorted(kept, key=lambda item: item[2].path)
    frame = pd.DataFrame({
        "path": pd.Series([p.path for _r, _l, p in rows], dtype=str),
        "label": pd.Series([lab for _r, lab, _p in rows], dtype=str),
        "label_index": pd.Series([position[lab] for _r, lab, _p in rows], dtype="int64"),
        "sha256": pd.Series([p.sha256 for _r, _l, p in rows], dtype=str),
        "width": pd.Series([p.info.width for _r, _l, p in rows], dtype="int64"),
        "height": pd.Series([p.info.height for _r, _l, p in rows], dtype="int64"),
        "format": pd.Series([p.info.format for _r, _l, p in rows], dtype=str),
    })
    return frame[INDEX_COLUMNS]
