"""TF Hub bases: handle resolution (URL, cache, SavedModel folder) and a Keras 3 layer."""

from __future__ import annotations

import hashlib
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from core.errors import WeightsUnavailableError


def is_remote(handle: str) -> bool:
    """Whether the handle is a URL (else a local SavedModel folder)."""
    return "://" in handle


def host_of(handle: str) -> str:
    """The host a remote handle is downloaded from."""
    return urllib.parse.urlparse(handle).hostname or "tfhub.dev"


def is_cached(handle: str) -> bool:
    """Whether tensorflow_hub already holds this handle in its cache (no download needed)."""
    from tensorflow_hub import resolver  # lazy: importing tensorflow_hub also loads tf_keras

    cache = resolver.tfhub_cache_dir(use_temp=True)
    module_dir = Path(cache) / hashlib.sha1(handle.encode("utf8")).hexdigest()
    return (module_dir / "saved_model.pb").is_file()


def resolve_handle(handle: str, reachable: Callable[[str], bool]) -> Path | None:
    """Checks a handle before any work: the local SavedModel folder, or None for a URL.

    Args:
        handle: A TF Hub URL or a local SavedModel folder.
        reachable: reachable(host) tells whether a host can be reached (a bounded check).

    Raises:
        WeightsUnavailableError: An empty handle, a URL neither cached nor reachable, or a
            folder that is missing or holds no saved_model.pb; each says what to do.
    """
    handle = handle.strip()
    if not handle:
        raise WeightsUnavailableError(
            "A TF Hub base needs a handle: a TF Hub URL or a local SavedModel folder."
        )
    if is_remote(handle):
        if not (is_cached(handle) or reachable(host_of(handle))):
            raise WeightsUnavailableError(
                f"The TF Hub model {handle} is not in the TF Hub cache and {host_of(handle)} is "
                "not reachable. Download it on a connected machine and pass its SavedModel "
                "folder instead, or set TFHUB_CACHE_DIR to a cache that holds it."
            )
        return None
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
    return folder.resolve()


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
        self._module = load(self.handle)
        self._fn = features_function(self._module)
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


def load(handle: str) -> Any:
    """The loaded SavedModel of a handle; WeightsUnavailableError saying what to check."""
    try:
        if is_remote(handle):
            import tensorflow_hub as hub  # lazy: it imports tf_keras

            return hub.load(handle)
        return tf.saved_model.load(str(Path(handle).expanduser()))
    except Exception as exc:  # resolution, network and format errors alike
        raise WeightsUnavailableError(
            f"Cannot load the TF Hub model {handle}: {type(exc).__name__}: {exc}. Check the "
            "handle, that it is reachable (or cached), and that it is a TF2 SavedModel."
        ) from exc


def features_function(module: Any) -> Any:
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
