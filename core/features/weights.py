"""Where a base's weights come from: the Keras cache (downloaded once), a file, TF Hub.

Everything is checked before any work starts, and `ResolvedWeights.fingerprint` (base,
weights content, input size) keys the feature caches. Offline, a missing file is named with
the folder to put it in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from core.errors import WeightsUnavailableError
from core.features import backbones, hub
from core.features.backbones import BackboneSpec
from core.files import file_sha256

log = logging.getLogger(__name__)

OFFLINE_ENV_VAR = "TL_STUDIO_OFFLINE"
WEIGHTS_HOST = "storage.googleapis.com"
_WEIGHT_SUFFIXES = (".h5", ".hdf5", ".keras")


def keras_models_dir() -> Path:
    """Keras' weights cache, read now: $KERAS_HOME/models, else ~/.keras/models.

    Keras itself reads KERAS_HOME once at import; reading it here at call time lets a caller
    (or a test) point it elsewhere later. Like Keras, falls back to /tmp/.keras when the home
    folder is not writable.
    """
    env = os.environ.get("KERAS_HOME")
    if env:
        base = Path(env).expanduser()
    else:
        base = Path("~/.keras").expanduser()
        parent = base if base.exists() else base.parent
        if not os.access(parent, os.W_OK):
            base = Path("/tmp/.keras")
    return base / "models"


def network_available(host: str = WEIGHTS_HOST, port: int = 443, timeout: float = 2.0) -> bool:
    """Whether host:port accepts a TCP connection within timeout seconds.

    $TL_STUDIO_OFFLINE=1 forces False without trying. Name resolution runs in a helper thread,
    so a hanging DNS lookup cannot stall the caller beyond the timeout either.
    """
    if os.environ.get(OFFLINE_ENV_VAR, "").strip().lower() in {"1", "true", "yes", "on"}:
        return False
    outcome: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(True)
        except OSError:
            outcome.append(False)

    worker = threading.Thread(target=probe, name="tl-network-probe", daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    return bool(outcome and outcome[0])


def _folder_state(folder: Path) -> tuple[tuple[str, int, int], ...]:
    return tuple(
        (p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*")) if p.is_file()
    )


def _folder_sha256(folder: Path) -> str:
    digest = hashlib.sha256()
    for rel, _, _ in _folder_state(folder):
        digest.update(rel.encode() + b"\0")
        digest.update(file_sha256(folder / rel).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class ResolvedWeights:
    """Where a base's weights come from, checked to be usable.

    Attributes:
        kind: "imagenet" (Keras cache file), "file" (a given weights file), "none" (random
            initialisation from seed) or "hub" (a TF Hub model).
        spec_name: Registry name of the base these weights belong to.
        input_size: Input size the base is built at (part of the fingerprint).
        path: The weights file, or the local SavedModel folder of a TF Hub base.
        seed: Seed of the random initialisation (kind "none").
        hub_handle: The TF Hub handle or URL as given (kind "hub").
    """

    kind: str
    spec_name: str
    input_size: int
    path: Path | None = None
    seed: int = 0
    hub_handle: str | None = None
    # Content hashes keyed by (path, size, mtime): recomputed only when the file changes.
    _hashes: dict[tuple[Any, ...], str] = field(
        default_factory=dict, compare=False, repr=False
    )

    def content_hash(self) -> str | None:
        """sha256 of the weights file (or SavedModel folder); None when there is no file."""
        if self.path is None:
            return None
        path = Path(self.path)
        if path.is_dir():
            key: tuple[Any, ...] = (str(path), _folder_state(path))
            compute = _folder_sha256
        else:
            stat = path.stat()
            key = (str(path), stat.st_size, stat.st_mtime_ns)
            compute = file_sha256
        if key not in self._hashes:
            self._hashes.clear()
            self._hashes[key] = compute(path)
        return self._hashes[key]

    @property
    def fingerprint(self) -> str:
        """Identifies base + weights content + input size; the feature-cache key."""
        if self.kind == "none":
            source: Any = {"seed": self.seed}
        elif self.kind == "hub" and self.path is None:
            source = {"handle": self.hub_handle}
        else:
            source = {"sha256": self.content_hash()}
        blob = json.dumps(
            {"base": self.spec_name, "size": self.input_size, "kind": self.kind,
             "source": source, "build": backbones.BUILD_VERSION}, sort_keys=True,
        )
        digest = hashlib.sha256(blob.encode()).hexdigest()[:20]
        return f"{self.spec_name}-{self.input_size}-{self.kind}-{digest}"

    def describe(self) -> str:
        """One line for people: where the weights come from."""
        if self.kind == "imagenet":
            return f"ImageNet weights from the Keras cache ({self.path})"
        if self.kind == "file":
            return f"weights file {self.path}"
        if self.kind == "hub":
            return f"TF Hub model {self.hub_handle}"
        return f"random initialisation (seed {self.seed}), no pretrained weights"

    def load_into(self, app: keras.Model, spec: BackboneSpec) -> None:
        """Loads the weights file into the base's Keras application (build_base calls it).

        Raises:
            WeightsUnavailableError: The file does not fit the architecture.
        """
        _load_into(app, spec, self)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict, fingerprint included."""
        return {"kind": self.kind, "base": self.spec_name, "input_size": self.input_size,
                "path": str(self.path) if self.path else None, "seed": self.seed,
                "hub_handle": self.hub_handle, "fingerprint": self.fingerprint}


def _missing_weights_message(spec: BackboneSpec, folder: Path, why: str) -> str:
    return (
        f"The ImageNet weights of {spec.display_name} are not here and cannot be downloaded "
        f"({why}). Put the file {spec.weights_file} (from {spec.weights_url}) into the folder "
        f"{folder}, or set KERAS_HOME to a folder whose models/ subfolder holds it, or pass "
        "the weights file's path instead of 'imagenet'."
    )


def weights_available(spec: BackboneSpec, *, allow_download: bool = True) -> bool:
    """Whether resolve_weights(spec, "imagenet") would succeed here, without downloading.

    Args:
        spec: A registry base (TF Hub bases: True for an existing local folder or when the
            network is reachable).
        allow_download: Count "not cached but the download server is reachable" as
            available (a bounded 2 s network check).
    """
    if spec.is_hub:
        handle = spec.hub_handle or ""
        if not hub.is_remote(handle):
            return (Path(handle).expanduser() / "saved_model.pb").is_file()
        return hub.is_cached(handle) or (allow_download and network_available(hub.host_of(handle)))
    if spec.weights_file and (keras_models_dir() / spec.weights_file).is_file():
        return True
    return allow_download and network_available()


def resolve_weights(spec: BackboneSpec, weights: str | os.PathLike[str] | None, *,
                    seed: int = 0, hub_handle: str | None = None) -> ResolvedWeights:
    """Finds and checks a base's weights before any work starts.

    Args:
        spec: The base.
        weights: "imagenet" (Keras cache at $KERAS_HOME/models, read now; downloaded when
            missing and the network is reachable), a weights file path (.h5/.hdf5/.keras,
            loaded into the architecture to check it fits), or None for a randomly
            initialised base (deterministic from seed; only when explicitly asked for).
            Ignored for TF Hub bases, whose weights are the handle's.
        seed: Seed of the random initialisation when weights is None.
        hub_handle: Overrides spec.hub_handle for TF Hub bases.

    Returns:
        ResolvedWeights, whose fingerprint keys the feature cache.

    Raises:
        WeightsUnavailableError: Weights neither cached nor downloadable (naming the file and
            the folder to put it in), or a given file/folder that is missing or does not fit.
    """
    if spec.is_hub:
        handle = (hub_handle or spec.hub_handle or "").strip()
        folder = hub.resolve_handle(handle, lambda host: network_available(host))
        return ResolvedWeights("hub", spec.name, spec.input_size, path=folder,
                               hub_handle=handle)
    if weights is None:
        return ResolvedWeights("none", spec.name, spec.input_size, seed=int(seed))
    if isinstance(weights, str) and weights.strip().lower() == "imagenet":
        return ResolvedWeights("imagenet", spec.name, spec.input_size,
                               path=_imagenet_file(spec))
    return _resolve_file(spec, Path(os.fspath(weights)).expanduser())


def _imagenet_file(spec: BackboneSpec) -> Path:
    folder = keras_models_dir()
    path = folder / str(spec.weights_file)
    if path.is_file():
        return path
    if not network_available():
        why = ("offline mode is on: $TL_STUDIO_OFFLINE" if os.environ.get(OFFLINE_ENV_VAR)
               else f"{WEIGHTS_HOST} is not reachable")
        raise WeightsUnavailableError(_missing_weights_message(spec, folder, why))
    log.info("Downloading %s into %s", spec.weights_file, folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        got = keras.utils.get_file(
            spec.weights_file, spec.weights_url, cache_dir=str(folder.parent),
            cache_subdir=folder.name, file_hash=spec.weights_hash,
        )
    except Exception as exc:  # any download failure gets the same advice
        raise WeightsUnavailableError(
            _missing_weights_message(spec, folder, f"the download failed: {exc}")
        ) from exc
    return Path(got)


def _resolve_file(spec: BackboneSpec, path: Path) -> ResolvedWeights:
    hint = (f"Pass the no-top weights of {spec.display_name} (Keras names the ImageNet file "
            f"{spec.weights_file}).")
    if not path.exists():
        raise WeightsUnavailableError(f"Weights file {path} does not exist. {hint}")
    if not path.is_file():
        raise WeightsUnavailableError(f"{path} is a folder, not a weights file. {hint}")
    if not path.name.lower().endswith(_WEIGHT_SUFFIXES):
        raise WeightsUnavailableError(
            f"{path.name} is not a Keras weights file: use a .h5, .hdf5 or .keras file. {hint}"
        )
    resolved = ResolvedWeights("file", spec.name, spec.input_size, path=path.resolve())
    # Load once into the architecture now, so a wrong file fails before any work.
    app = backbones.application(spec)
    resolved.load_into(app, spec)
    del app
    return resolved


def _load_into(app: keras.Model, spec: BackboneSpec, resolved: ResolvedWeights) -> None:
    try:
        app.load_weights(str(resolved.path))
    except Exception as exc:  # Keras raises several types for a bad file
        advice = ("Delete it so it is downloaded again, or replace it with the right file."
                  if resolved.kind == "imagenet" else
                  f"Pass the no-top weights of {spec.display_name} (Keras names the ImageNet "
                  f"file {spec.weights_file}).")
        raise WeightsUnavailableError(
            f"The weights file {resolved.path} does not fit {spec.display_name} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). {advice}"
        ) from exc
    if spec.name == "efficientnet_b0":
        _match_keras_imagenet_scaling(app)


def _match_keras_imagenet_scaling(app: keras.Model) -> None:
    """Gives EfficientNetB0 loaded from a file the input scaling of weights="imagenet".

    With weights="imagenet" Keras adds Rescaling(1/sqrt(std)) after its Normalization layer
    (keras-team/keras issue 49930); with a file path it does not. Dividing the stored variance
    by that factor squared is the same computation and stays in serialisable variables.
    """
    norm = next(layer for layer in app.layers
                if isinstance(layer, keras.layers.Normalization))
    factor = np.asarray(backbones.IMAGENET_STD_RGB, np.float32)
    norm.adapt_variance.assign(np.asarray(norm.adapt_variance) * factor)
    norm.finalize_state()
