"""Registry of pretrained bases, and building one (raw RGB in, pooled features out).

Where a base's weights come from (Keras cache, a file, TF Hub) is core.features.weights.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import keras

import core.features.keras_fixes  # noqa: F401  applied before any model is saved or loaded
from core.errors import ConfigError
from core.features import hub  # also registers HubFeatureVector, so saved TF Hub models load

DEFAULT_BACKBONE = "mobilenet_v2"
HUB_BACKBONE = "tfhub"
# Bump when build_base changes what a given base + weights computes, so feature caches renew.
BUILD_VERSION = 1

_KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)

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
        top_blocks: Top blocks worth training on cached activations (TrainConfig's
            tune_top_blocks when a page suggests it); the cut below them is computed from the
            Keras graph (core.features.activations.boundary_layer).
        top_blocks_measured: Whether top_blocks was measured on real photos
            (docs/benchmarks.md) rather than only computed from the graph.
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
    top_blocks: int = 1
    top_blocks_measured: bool = False

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
# relative_speed: images/s of the CPU feature path (TFLite/XNNPACK) relative to mobilenet_v2,
# from bench/feature_extraction.py --relative-speed (figures in docs/benchmarks.md).
BACKBONES: Mapping[str, BackboneSpec] = types.MappingProxyType({
    s.name: s for s in (
        _spec(name="mobilenet_v2", display_name="MobileNetV2 (default)", input_size=224,
              feature_dim=1280, params=2_257_984, depth=155,
              weights_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
              weights_url=_KERAS_APPS + "mobilenet_v2/"
              "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
              weights_hash=None, weights_mb=9.4, relative_speed=1.0, preprocessing_mode="tf",
              constructor="MobileNetV2", keras_module="mobilenet_v2",
              # Block 16 + Conv_1 on cached block_15_add outputs (7x7x160, 15 KB a photo):
              # 2 blocks were no more accurate on flower_photos_300 (docs/benchmarks.md).
              top_blocks=1, top_blocks_measured=True),
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
                mean=list(IMAGENET_MEAN_RGB), variance=[s * s for s in IMAGENET_STD_RGB],
                axis=-1, name="imagenet_mean_std",
            ),
        ]
    if mode == "hub":
        return [keras.layers.Rescaling(1.0 / 255.0, name="to_0_1")]
    return []


def application(spec: BackboneSpec) -> keras.Model:
    """The keras.applications no-top model of a registry base, pooled, without weights."""
    constructor = getattr(keras.applications, spec.constructor)
    size = spec.input_size
    return constructor(include_top=False, weights=None, input_shape=(size, size, 3),
                       pooling="avg", **dict(spec.constructor_kwargs))


def build_base(spec: BackboneSpec, resolved: Any) -> keras.Model:
    """Builds the frozen feature extractor: raw RGB in, pooled features out.

    The returned model takes float32 (S, S, 3) images with values 0..255 and returns the
    global-average-pooled (D,) features. The base's preprocessing is inside as built-in
    Keras layers, so a saved .keras model reloads without custom code (a TF Hub base needs
    `import core.features.backbones` for its registered layer, and the handle reachable). The pretrained
    network is the one nested keras.Model layer; it is called with training=False, so its
    BatchNorm layers keep their ImageNet statistics even when later unfrozen. The model comes
    back frozen (trainable=False).

    Args:
        spec: The base.
        resolved: Its weights, a core.features.weights.ResolvedWeights (not imported here:
            base_weights builds on this module).

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
        outputs = hub.HubFeatureVector(handle, input_size=size, name="hub_features")(x)
    else:
        if resolved.spec_name != spec.name:
            raise ConfigError(
                f"These weights were resolved for {resolved.spec_name}, not {spec.name}: "
                "resolve the weights again for this base."
            )
        if resolved.kind == "none":
            # Random init only on request; seeding makes it reproducible.
            keras.utils.set_random_seed(resolved.seed)
        app = application(spec)
        if resolved.kind in ("imagenet", "file"):
            resolved.load_into(app, spec)
        outputs = app(x, training=False)
    model = keras.Model(inputs, outputs, name=f"{spec.name}_features")
    model.trainable = False
    return model


def nested_base(model: keras.Model) -> keras.Model:
    """The pretrained network inside a model: the nested keras.Model with the most layers.

    build_base wraps the pretrained network (one nested model) between its preprocessing
    layers and the pooled output; a trained classifier nests that wrapper in turn. Fine-tuning
    unfreezes layers of this network, Grad-CAM reads its last convolution, export inspects it.

    Args:
        model: build_base's model, or any model holding it.

    Returns:
        The nested model with the most layers, searched at any depth; the model itself when
        it nests none.
    """
    found = model
    best = -1
    stack = [model]
    while stack:
        current = stack.pop()
        for layer in current.layers:
            if isinstance(layer, keras.Model):
                stack.append(layer)
                if len(layer.layers) > best:
                    found, best = layer, len(layer.layers)
    return found
