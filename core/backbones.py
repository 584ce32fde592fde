"""Registry of pretrained bases, weights resolution (Keras cache, file, TF Hub) and base building."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import socket
import threading
import types
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import core.keras_fixes  # noqa: F401  applied before any model is saved or loaded
from core.errors import ConfigError, WeightsUnavailableError

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "mobilenet_v2"
HUB_BACKBONE = "tfhub"
OFFLINE_ENV_VAR = "TL_STUDIO_OFFLINE"
WEIGHTS_HOST = "storage.googleapis.com"
# Bump when build_base changes what a given base + weights computes, so feature caches renew.
BUILD_VERSION = 1

_KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"
_WEIGHT_SUFFIXES = (".h5", ".hdf5", ".keras")
_IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
_IMAGENET_STD_RGB = (0.229, 0.224, 0.225)

# What the folded preprocessing does, per mode (raw RGB 0..255 in).
_PREPROCESSING_TEXT = {
    "tf": "scales pixels to [-1, 1] (x / 127.5 - 1), folded in as a Rescaling layer",
    "torch": "scales to [0, 1] then normalises with the ImageNet mean and standard deviation "
             "(Rescaling + Normalization layers)",
    "builtin": "built into the Keras model (its own Rescaling/Normalization layers)",
    "hub": "scales pixels to [0, 1], the TF Hub image feature-vector convention",
}


@dataclass(frozen=True)
class BackboneSpec:
    """One pretrained base the studio can train on.

    Attributes:
        name: Registry key, e.g. "mobilenet_v2".
        display_name: Name shown in the UI.
        input_size: Square input size in pixels the base is built for.
        feature_dim: Length of the global-average-pooled feature vector (0: known once built).
        params: Parameters of the no-top base.
        depth: Layers in the Keras no-top model (the count fine-tuning's "top N layers" uses).
        weights_file: No-top ImageNet weights file name exactly as Keras caches it.
        weights_url: Where Keras downloads that file from.
        weights_hash: Hash Keras checks a download against (md5 or sha256), None when Keras has
            none.
        weights_mb: Approximate size of the weights file in MB.
        relative_speed: Rough CPU images/s relative to mobilenet_v2 (higher is faster).
        preprocessing_mode: "tf" ([-1, 1]), "torch" (ImageNet mean/std), "builtin" (inside the
            Keras model) or "hub" ([0, 1]).
        constructor: Name of the keras.applications constructor.
        keras_module: keras.applications submodule holding its preprocess_input.
        constructor_kwargs: Extra constructor arguments, as (name, value) pairs.
        hub_handle: TF Hub handle, URL or SavedModel folder (TF Hub bases only).
    """

    name: str
    display_name: str
    input_size: int
    feature_dim: int
    params: int
    depth: int
    weights_file: str | None
    weights_url: str | None
    weights_hash: str | None
    weights_mb: float
    relative_speed: float
    preprocessing_mode: str
    constructor: str = ""
    keras_module: str = ""
    constructor_kwargs: tuple[tuple[str, Any], ...] = ()
    hub_handle: str | None = None

    def __post_init__(self) -> None:
        if self.preprocessing_mode not in _PREPROCESSING_TEXT:
            raise ConfigError(
                f"Unknown preprocessing mode {self.preprocessing_mode!r} for {self.name}; use one "
                f"of {', '.join(_PREPROCESSING_TEXT)}."
            )
        if self.input_size < 32:
            raise ConfigError(f"Input size must be at least 32 pixels; got {self.input_size}.")

    @property
    def preprocessing(self) -> str:
        """What the folded preprocessing does, in words."""
        return _PREPROCESSING_TEXT[self.preprocessing_mode]

    @property
    def is_hub(self) -> bool:
        """True for a TF Hub base."""
        return self.name == HUB_BACKBONE

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict, with the preprocessing description."""
        data = dataclasses.asdict(self)
        data["constructor_kwargs"] = dict(self.constructor_kwargs)
        data["preprocessing"] = self.preprocessing
        return data


def _spec(**kwargs: Any) -> BackboneSpec:
    return BackboneSpec(**kwargs)


# Facts checked against keras.applications by tests/test_backbones.py (file names, URLs and
# hashes come from the Keras 3.15 sources; params/depth/feature_dim from building each base).
# relative_speed: images/s of the CPU feature path (TFLite/XNNPACK) relative to mobilenet_v2 on
# the 2-core dev machine (560 img/s), from bench/feature_extraction.py --relative-speed.
BACKBONES: Mapping[str, BackboneSpec] = types.MappingProxyType({
    s.name: s for s in (
        _spec(name="mobilenet_v2", display_name="MobileNetV2 (default)", input_size=224,
              feature_dim=1280, params=2_257_984, depth=155,
              weights_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
              weights_url=_KERAS_APPS + "mobilenet_v2/"
              "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
              weights_hash=None, weights_mb=9.4, relative_speed=1.0, preprocessing_mode="tf",
              constructor="MobileNetV2", keras_module="mobilenet_v2"),
        _spec(name="mobilenet_v3_small", display_name="MobileNetV3 Small", input_size=224,
              feature_dim=576, params=939_120, depth=158,
              weights_file="weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
              weights_url=_KERAS_APPS + "mobilenet_v3/"
              "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
              weights_hash="d3e8ec802a04aa4fc771ee12a9a9b836", weights_mb=4.4,
              relative_speed=3.7, preprocessing_mode="builtin", constructor="MobileNetV3Small",
              keras_module="mobilenet_v3",
              constructor_kwargs=(("include_preprocessing", True),)),
        _spec(name="mobilenet_v3_large", display_name="MobileNetV3 Large", input_size=224,
              feature_dim=960, params=2_996_352, depth=188,
              weights_file="weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
              weights_url=_KERAS_APPS + "mobilenet_v3/"
              "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
              weights_hash="07fb09a5933dd0c8eaafa16978110389", weights_mb=12.3,
              relative_speed=1.1, preprocessing_mode="builtin", constructor="MobileNetV3Large",
              keras_module="mobilenet_v3",
              constructor_kwargs=(("include_preprocessing", True),)),
        _spec(name="efficientnet_b0", display_name="EfficientNetB0", input_size=224,
              feature_dim=1280, params=4_049_571, depth=238,
              weights_file="efficientnetb0_notop.h5",
              weights_url="https://storage.googleapis.com/keras-applications/"
              "efficientnetb0_notop.h5",
              weights_hash="50bc09e76180e00e4465e1a485ddc09d", weights_mb=16.7,
              relative_speed=0.48, preprocessing_mode="builtin", constructor="EfficientNetB0",
              keras_module="efficientnet"),
        _spec(name="efficientnet_v2_b0", display_name="EfficientNetV2-B0", input_size=224,
              feature_dim=1280, params=5_919_312, depth=271,
              weights_file="efficientnetv2-b0_notop.h5",
              weights_url=_KERAS_APPS + "efficientnet_v2/efficientnetv2-b0_notop.h5",
              weights_hash="893217f2bb855e2983157299931e43ff", weights_mb=24.3,
              relative_speed=0.35, preprocessing_mode="builtin", constructor="EfficientNetV2B0",
              keras_module="efficientnet_v2",
              constructor_kwargs=(("include_preprocessing", True),)),
        _spec(name="resnet50_v2", display_name="ResNet50V2", input_size=224, feature_dim=2048,
              params=23_564_800, depth=191,
              weights_file="resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
              weights_url=_KERAS_APPS + "resnet/"
              "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
              weights_hash="fac2f116257151a9d068a22e544a4917", weights_mb=94.7,
              relative_speed=0.1, preprocessing_mode="tf", constructor="ResNet50V2",
              keras_module="resnet_v2"),
        _spec(name="inception_v3", display_name="InceptionV3", input_size=299, feature_dim=2048,
              params=21_802_784, depth=312,
              weights_file="inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
              weights_url=_KERAS_APPS + "inception_v3/"
              "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
              weights_hash="bcbd6486424b2319ff4ef7d526e38f63", weights_mb=87.9,
              relative_speed=0.065, preprocessing_mode="tf", constructor="InceptionV3",
              keras_module="inception_v3"),
        _spec(name="xception", display_name="Xception", input_size=299, feature_dim=2048,
              params=20_861_480, depth=133,
              weights_file="xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
              weights_url=_KERAS_APPS + "xception/"
              "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
              weights_hash="b0042744bf5b25fce3cb969f33bebb97", weights_mb=83.7,
              relative_speed=0.04, preprocessing_mode="tf", constructor="Xception",
              keras_module="xception"),
        _spec(name="densenet121", display_name="DenseNet121", input_size=224, feature_dim=1024,
              params=7_037_504, depth=428,
              weights_file="densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
              weights_url=_KERAS_APPS + "densenet/"
              "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
              weights_hash="30ee3e1110167f948a6b9946edeeb738", weights_mb=29.1,
              relative_speed=0.054, preprocessing_mode="torch", constructor="DenseNet121",
              keras_module="densenet"),
        _spec(name="nasnet_mobile", display_name="NASNetMobile", input_size=224,
              feature_dim=1056, params=4_269_716, depth=770,
              weights_file="nasnet_mobile_no_top.h5",
              weights_url=_KERAS_APPS + "nasnet/NASNet-mobile-no-top.h5",
              weights_hash="1ed92395b5b598bdda52abe5c0dbfd63", weights_mb=20.0,
              relative_speed=0.19, preprocessing_mode="tf", constructor="NASNetMobile",
              keras_module="nasnet"),
        _spec(name="convnext_tiny", display_name="ConvNeXt Tiny", input_size=224,
              feature_dim=768, params=27_820_128, depth=134,
              weights_file="convnext_tiny_notop.h5",
              weights_url=_KERAS_APPS + "convnext/convnext_tiny_notop.h5",
              weights_hash="d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1",
              weights_mb=111.4, relative_speed=0.012, preprocessing_mode="builtin",
              constructor="ConvNeXtTiny", keras_module="convnext",
              constructor_kwargs=(("include_preprocessing", True),)),
    )
})


def get_spec(name: str, *, hub_handle: str | None = None, hub_input_size: int = 224
             ) -> BackboneSpec:
    """Returns the registry record of a base, or a TF Hub base record.

    Args:
        name: A registry name (see BACKBONES) or "tfhub".
        hub_handle: TF Hub handle, URL or local SavedModel folder; needed for "tfhub".
        hub_input_size: Square input size the TF Hub model expects.

    Returns:
        The BackboneSpec. A TF Hub record has feature_dim 0 until the model is loaded.

    Raises:
        ConfigError: Unknown name (the message lists the valid ones) or a TF Hub base without
            a handle.
    """
    if name == HUB_BACKBONE:
        if not hub_handle or not str(hub_handle).strip():
            raise ConfigError(
                "A TF Hub base needs a handle: a TF Hub URL of an image feature-vector model or "
                "a local SavedModel folder."
            )
        if not 32 <= int(hub_input_size) <= 1024:
            raise ConfigError(
                f"TF Hub input size must be between 32 and 1024 pixels; got {hub_input_size}."
            )
        return BackboneSpec(
            name=HUB_BACKBONE, display_name=f"TF Hub: {hub_handle}",
            input_size=int(hub_input_size), feature_dim=0, params=0, depth=1,
            weights_file=None, weights_url=None, weights_hash=None, weights_mb=0.0,
            relative_speed=0.0, preprocessing_mode="hub", hub_handle=str(hub_handle).strip(),
        )
    try:
        return BACKBONES[name]
    except (KeyError, TypeError):
        valid = ", ".join([*BACKBONES, HUB_BACKBONE])
        raise ConfigError(f"Unknown base {name!r}. Choose one of: {valid}.") from None


# --------------------------------------------------------------------------- weights


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


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _folder_state(folder: Path) -> tuple[tuple[str, int, int], ...]:
    return tuple(
        (p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*")) if p.is_file()
    )


def _folder_sha256(folder: Path) -> str:
    digest = hashlib.sha256()
    for rel, _, _ in _folder_state(folder):
        digest.update(rel.encode() + b"\0")
        digest.update(_file_sha256(folder / rel).encode())
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
            compute = _file_sha256
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
             "source": source, "build": BUILD_VERSION}, sort_keys=True,
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
        if not _is_remote(handle):
            return (Path(handle).expanduser() / "saved_model.pb").is_file()
        return _hub_cached(handle) or (allow_download and network_available(_host_of(handle)))
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
        return _resolve_hub(spec, hub_handle or spec.hub_handle or "")
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
    app = _application(spec)
    _load_into(app, spec, resolved)
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
    factor = np.asarray(_IMAGENET_STD_RGB, np.float32)
    norm.adapt_variance.assign(np.asarray(norm.adapt_variance) * factor)
    norm.finalize_state()


# --------------------------------------------------------------------------- TF Hub


def _is_remote(handle: str) -> bool:
    return "://" in handle


def _host_of(handle: str) -> str:
    return urllib.parse.urlparse(handle).hostname or "tfhub.dev"


def _hub_cached(handle: str) -> bool:
    """Whether tensorflow_hub already holds this handle in its cache (no download needed)."""
    from tensorflow_hub import resolver  # lazy: importing tensorflow_hub also loads tf_keras

    cache = resolver.tfhub_cache_dir(use_temp=True)
    module_dir = Path(cache) / hashlib.sha1(handle.encode("utf8")).hexdigest()
    return (module_dir / "saved_model.pb").is_file()


def _resolve_hub(spec: BackboneSpec, handle: str) -> ResolvedWeights:
    handle = handle.strip()
    if not handle:
        raise WeightsUnavailableError(
            "A TF Hub base needs a handle: a TF Hub URL or a local SavedModel folder."
        )
    if _is_remote(handle):
        if not (_hub_cached(handle) or network_available(_host_of(handle))):
            raise WeightsUnavailableError(
                f"The TF Hub model {handle} is not in the TF Hub cache and {_host_of(handle)} is "
                "not reachable. Download it on a connected machine and pass its SavedModel "
                "folder instead, or set TFHUB_CACHE_DIR to a cache that holds it."
            )
        return ResolvedWeights("hub", spec.name, spec.input_size, hub_handle=handle)
    folder = Path(handle).expanduser()
    if not folder.is_dir():
        raise WeightsUnavailableError(
            f"TF Hub SavedModel folder {folder} does not exist. Pass a folder holding "
            "saved_model.pb (an unpacked TF Hub model) or a TF Hub URL."
        )
    if not (folder / "saved_model.pb").is_file():
        raise WeightsUnavailableError(
            f"{folder} holds no saved_model.pb, so it is not a SavedModel. Unpack the TF Hub "
            "model's .tar.gz into a folder and pass that folder."
        )
    return ResolvedWeights("hub", spec.name, spec.input_size, path=folder.resolve(),
                           hub_handle=handle)


@keras.saving.register_keras_serializable(package="TLStudio")
class HubFeatureVector(keras.layers.Layer):
    """A frozen TF Hub image feature-vector model as a Keras 3 layer.

    hub.KerasLayer is a Keras 2 (tf_keras) layer that Keras 3 rejects; this layer wraps the
    object returned by hub.load() / tf.saved_model.load() instead. Input: float32 images in
    [0, 1] (TF Hub's image convention), output: (batch, feature_dim).

    Saving stores only the handle and sizes (get_config); reloading a saved model loads the
    handle again, so the URL must be reachable (or cached) or the folder present.
    """

    def __init__(self, handle: str, input_size: int = 224, output_dim: int | None = None,
                 **kwargs: Any) -> None:
        kwargs["trainable"] = False
        kwargs["dtype"] = "float32"  # the SavedModel's signature is float32, even under mixed
        super().__init__(**kwargs)
        self.handle = str(handle)
        self.input_size = int(input_size)
        self._module = _load_hub(self.handle)
        self._fn = _hub_callable(self._module)
        if output_dim is None:
            probe = self._fn(tf.zeros([1, self.input_size, self.input_size, 3], tf.float32))
            output_dim = int(probe.shape[-1])
        self.output_dim = int(output_dim)

    def call(self, inputs: Any) -> Any:
        return self._fn(tf.cast(inputs, tf.float32))

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        return (input_shape[0], self.output_dim)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(handle=self.handle, input_size=self.input_size,
                      output_dim=self.output_dim)
        return config


def _load_hub(handle: str) -> Any:
    try:
        if _is_remote(handle):
            import tensorflow_hub as hub  # lazy: it imports tf_keras

            return hub.load(handle)
        return tf.saved_model.load(str(Path(handle).expanduser()))
    except Exception as exc:  # resolution, network and format errors alike
        raise WeightsUnavailableError(
            f"Cannot load the TF Hub model {handle}: {type(exc).__name__}: {exc}. Check the "
            "handle, that it is reachable (or cached), and that it is a TF2 SavedModel."
        ) from exc


def _hub_callable(module: Any) -> Any:
    """The image -> features function of a loaded SavedModel (TF2 call or a signature)."""
    if callable(module):
        return module
    signatures = getattr(module, "signatures", {})
    for name in ("serving_default", "default"):
        if name in signatures:
            sig = signatures[name]
            arg = next(iter(sig.structured_input_signature[1]))

            def run(images: Any, _sig: Any = sig, _arg: str = arg) -> Any:
                outputs = _sig(**{_arg: images})
                return outputs["default"] if "default" in outputs else next(
                    iter(outputs.values()))

            return run
    raise WeightsUnavailableError(
        "The TF Hub model is neither callable nor has a serving signature; use an image "
        "feature-vector model (images in [0, 1] -> [batch, features])."
    )


# --------------------------------------------------------------------------- building


def preprocessing_layers(spec: BackboneSpec) -> list[keras.layers.Layer]:
    """Fresh serialisable layers turning raw RGB 0..255 into what the base expects.

    Empty for bases whose Keras model already preprocesses ("builtin").
    """
    mode = spec.preprocessing_mode
    if mode == "tf":
        return [keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="to_minus1_1")]
    if mode == "torch":
        return [
            keras.layers.Rescaling(1.0 / 255.0, name="to_0_1"),
            keras.layers.Normalization(
                mean=list(_IMAGENET_MEAN_RGB), variance=[s * s for s in _IMAGENET_STD_RGB],
                axis=-1, name="imagenet_mean_std",
            ),
        ]
    if mode == "hub":
        return [keras.layers.Rescaling(1.0 / 255.0, name="to_0_1")]
    return []


def _application(spec: BackboneSpec) -> keras.Model:
    constructor = getattr(keras.applications, spec.constructor)
    size = spec.input_size
    return constructor(include_top=False, weights=None, input_shape=(size, size, 3),
                       pooling="avg", **dict(spec.constructor_kwargs))


def build_base(spec: BackboneSpec, resolved: ResolvedWeights) -> keras.Model:
    """Builds the frozen feature extractor: raw RGB in, pooled features out.

    The returned model takes float32 (S, S, 3) images with values 0..255 and returns the
    global-average-pooled (D,) features. The base's preprocessing is inside as built-in
    Keras layers, so a saved .keras model reloads without custom code (a TF Hub base needs
    `import core.backbones` for its registered layer, and the handle reachable). The pretrained
    network is the one nested keras.Model layer; it is called with training=False, so its
    BatchNorm layers keep their ImageNet statistics even when later unfrozen. The model comes
    back frozen (trainable=False).

    Args:
        spec: The base.
        resolved: Its weights, from resolve_weights.

    Raises:
        WeightsUnavailableError: The weights file does not fit the architecture.
    """
    size = spec.input_size
    inputs = keras.Input((size, size, 3), dtype="float32", name="image")
    x = inputs
    for layer in preprocessing_layers(spec):
        x = layer(x)
    if resolved.kind == "hub":
        handle = str(resolved.path) if resolved.path is not None else str(resolved.hub_handle)
        outputs = HubFeatureVector(handle, input_size=size, name="hub_features")(x)
    else:
        if resolved.spec_name != spec.name:
            raise ConfigError(
                f"These weights were resolved for {resolved.spec_name}, not {spec.name}: "
                "resolve the weights again for this base."
            )
        if resolved.kind == "none":
            # Random init only on request; seeding makes it reproducible.
            keras.utils.set_random_seed(resolved.seed)
        app = _application(spec)
        if resolved.kind in ("imagenet", "file"):
            _load_into(app, spec, resolved)
        outputs = app(x, training=False)
    model = keras.Model(inputs, outputs, name=f"{spec.name}_features")
    model.trainable = False
    return model


def nested_base(model: keras.Model) -> keras.Model:
    """The pretrained network inside build_base's wrapper (the nested model with most layers)."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return max(nested, key=lambda m: len(m.layers)) if nested else model
