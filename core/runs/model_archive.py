"""Writing model.keras without serialising the same frozen base again for every run.

Keras' `model.save` writes every weight of the model. For a MobileNetV2 classifier that took
0.35-0.5 s on the dev CPU, a quarter of a second run that changes only the head, and the
base's 264 arrays come out the same every time.

A .keras file is a zip of metadata.json, config.json and model.weights.h5. In the weights
file each layer of the model has its own group, written by Keras from that layer alone. So
the first model saved on a frozen base goes through `model.save`, and the base's group is kept
in memory. A later model on the same base object is written from three parts:
- Keras' own config and metadata;
- the weights of every other layer, as Keras writes them with the base skipped;
- the kept group of the base.

Anything unexpected falls back to `model.save`: another layout of layers, a base that can
train, assets in the file. Tests check the result against Keras' own file: the same members,
config, groups, attributes and values.

Module-level state: the kept groups, one per live frozen base object (a weak reference: they
go with the base). A kept group is what Keras wrote for that unchanging base, so it cannot
change a file; forget_kept_bases() drops them (tests start from nothing kept).
"""

from __future__ import annotations

import io
import itertools
import logging
import tempfile
import threading
import weakref
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import keras

log = logging.getLogger(__name__)

_METADATA, _CONFIG, _WEIGHTS = "metadata.json", "config.json", "model.weights.h5"

try:  # Keras' own pieces of model.save; without them every save is a plain model.save.
    from keras.src.saving import saving_lib

    _serialize_model_as_json = saving_lib._serialize_model_as_json
    _save_weights_only = saving_lib.save_weights_only
except (ImportError, AttributeError):  # pragma: no cover - another Keras
    _serialize_model_as_json = _save_weights_only = None


@dataclass
class _BaseWeights:
    """A frozen base's group of model.weights.h5, kept from a file Keras wrote.

    Attributes:
        group_name: Its name under "layers/" (Keras names it after the layer classes).
        layer_classes: Classes of the model's layers up to the base, which fix that name.
        store: An in-memory HDF5 file holding the group as "base".
    """

    group_name: str
    layer_classes: tuple[type, ...]
    store: h5py.File


_kept: weakref.WeakKeyDictionary[Any, _BaseWeights] = weakref.WeakKeyDictionary()
_lock = threading.Lock()
_store_names = itertools.count()  # HDF5 tells open files apart by name


def forget_kept_bases() -> None:
    """Drops the base weights kept in this process; the next save goes through model.save."""
    with _lock:
        _kept.clear()


def save_model(model: keras.Model, path: str | Path, frozen_base: keras.Model | None = None,
               ) -> bool:
    """Writes `model` to `path` (.keras) as `model.save` would.

    Args:
        model: The model to save.
        path: Where; the file is overwritten.
        frozen_base: One of model's layers whose weights have not changed since an earlier
            save in this process (the studio's shared frozen bases never change). Its saved
            weights are reused when it was saved before; the first time, `model.save` writes
            the file and the base's part is kept.

    Returns:
        True if the base's kept weights were reused, False if `model.save` wrote the file.
    """
    path = Path(path)
    index = _base_index(model, frozen_base)
    if index is None:
        model.save(path)
        return False
    with _lock:
        kept = _kept.get(frozen_base)
    classes = tuple(type(layer) for layer in model.layers[:index + 1])
    if kept is not None and kept.layer_classes == classes:
        try:
            _write_with_kept_base(model, frozen_base, kept, path)
            return True
        except Exception:  # only a shortcut: model.save below still writes the file
            log.warning("Saving %s with model.save instead", path.name, exc_info=True)
    model.save(path)
    try:
        kept = _keep_base_weights(path, frozen_base, classes)
    except Exception:  # the file is saved; only later saves lose the shortcut
        log.warning("Could not keep the base's weights from %s", path.name, exc_info=True)
        kept = None
    if kept is not None:
        with _lock:
            _kept[frozen_base] = kept
    return False


def _base_index(model: keras.Model, base: keras.Model | None) -> int | None:
    """Position of `base` among model's layers, if its saved weights may be reused."""
    if base is None or _serialize_model_as_json is None or _save_weights_only is None:
        return None
    if base.trainable_weights:
        return None  # trainable: its weights may have moved since it was kept
    positions = [i for i, layer in enumerate(model.layers) if layer is base]
    if len(positions) != 1:
        return None
    # Layers with assets (lookup tables) write files besides the weights.
    if any(hasattr(layer, "save_assets") for layer in model._flatten_layers()):
        return None
    return positions[0]


def _keep_base_weights(path: Path, base: keras.Model, classes: tuple[type, ...],
                       ) -> _BaseWeights | None:
    """The base's group in the .keras file Keras just wrote, copied to memory."""
    with zipfile.ZipFile(path) as archive:
        if sorted(archive.namelist()) != sorted((_METADATA, _CONFIG, _WEIGHTS)):
            return None  # assets or another layout: keep saving with Keras
        weights = h5py.File(io.BytesIO(archive.read(_WEIGHTS)), "r")
    with weights:
        layers = weights.get("layers")
        names = [name for name, group in (layers or {}).items()
                 if "vars" in group and group["vars"].attrs.get("name") == base.name]
        if len(names) != 1:
            return None
        store = h5py.File(f"kept-base-{next(_store_names)}", "w", driver="core",
                          backing_store=False)
        weights.copy(layers[names[0]], store, name="base")
    return _BaseWeights(group_name=names[0], layer_classes=classes, store=store)


def _write_with_kept_base(model: keras.Model, base: keras.Model, kept: _BaseWeights,
                          path: Path) -> None:
    config_json, metadata_json = _serialize_model_as_json(model)
    with tempfile.TemporaryDirectory(prefix="tl-studio-save-") as folder:
        rest = Path(folder) / "rest.weights.h5"
        _save_weights_only(model, str(rest), objects_to_skip=[base])
        with h5py.File(rest, "a") as weights:
            layers = weights.require_group("layers")
            if kept.group_name in layers:
                raise RuntimeError(f"Keras wrote layers/{kept.group_name} for a skipped base")
            with _lock:
                kept.store.copy(kept.store["base"], layers, name=kept.group_name)
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(_METADATA, metadata_json)
            archive.writestr(_CONFIG, config_json)
            archive.write(rest, _WEIGHTS)  # streamed from the file, not held in memory
