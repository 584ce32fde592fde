"""What hardware TensorFlow sees, and the strategy, precision and batch size that fit it."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import keras
import tensorflow as tf

log = logging.getLogger(__name__)

_NO_GPU_BUILD = (
    "This TensorFlow build has no GPU support; install the GPU build "
    "(pip install 'tensorflow[and-cuda]') on a machine with an NVIDIA GPU."
)
_NO_GPU_FOUND = (
    "TensorFlow found no GPU (CUDA build not installed or no driver): on a machine with an "
    "NVIDIA GPU and driver, install the GPU build with pip install 'tensorflow[and-cuda]'."
)
_GPUS_HIDDEN = "CUDA_VISIBLE_DEVICES={value!r} hides every GPU from TensorFlow."


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as TensorFlow sees it.

    Attributes:
        device: TensorFlow device name, e.g. "/physical_device:GPU:0".
        name: Marketing name, e.g. "NVIDIA A10G", when TensorFlow reports it.
        memory_mb: Total memory in MB (from nvidia-smi), None when unknown.
        memory_used_mb: Memory TensorFlow currently holds on it, None when unknown.
        compute_capability: (major, minor), None when unknown.
    """

    device: str
    name: str
    memory_mb: int | None = None
    memory_used_mb: int | None = None
    compute_capability: tuple[int, int] | None = None


@dataclass(frozen=True)
class DeviceInfo:
    """Where computation runs.

    Attributes:
        kind: "gpu" when TensorFlow sees at least one GPU, else "cpu".
        gpus: The GPUs, in TensorFlow's order.
        reason: Why there is no GPU (empty on GPU machines).
        tensorflow_version: TensorFlow's version.
        keras_version: Keras' version.
        cpu_count: Logical CPU cores.
    """

    kind: str
    gpus: tuple[GpuInfo, ...] = ()
    reason: str = ""
    tensorflow_version: str = field(default_factory=lambda: tf.__version__)
    keras_version: str = field(default_factory=lambda: keras.__version__)
    cpu_count: int = field(default_factory=lambda: os.cpu_count() or 1)

    def summary(self) -> str:
        """One line for people, e.g. for the home page's device banner."""
        versions = f"TensorFlow {self.tensorflow_version}, Keras {self.keras_version}"
        if self.kind == "gpu":
            parts = []
            for gpu in self.gpus:
                memory = f" ({gpu.memory_mb / 1024:.0f} GB)" if gpu.memory_mb else ""
                parts.append(f"{gpu.name}{memory}")
            return f"GPU: {', '.join(parts)}; {versions}"
        return f"CPU only ({self.cpu_count} cores): {self.reason} {versions}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict, with the summary."""
        data = asdict(self)
        data["gpus"] = [
            {**asdict(g), "compute_capability": list(g.compute_capability)
             if g.compute_capability else None}
            for g in self.gpus
        ]
        data["summary"] = self.summary()
        return data


def _nvidia_smi_memory() -> list[int]:
    """Total memory per GPU in MB from nvidia-smi, [] when it is missing or fails."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout
        return [int(float(line)) for line in out.split() if line.strip()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return []


def _gpu_info(index: int, device: Any, totals: list[int]) -> GpuInfo:
    name = device.name
    capability = None
    try:
        details = tf.config.experimental.get_device_details(device)
        name = details.get("device_name", name)
        if details.get("compute_capability"):
            capability = tuple(int(v) for v in details["compute_capability"])
    except (ValueError, RuntimeError, TypeError) as exc:
        log.debug("No details for %s: %s", device.name, exc)
    used = None
    try:
        used = int(tf.config.experimental.get_memory_info(f"GPU:{index}")["current"] // 2**20)
    except (ValueError, RuntimeError) as exc:
        log.debug("No memory info for GPU:%d: %s", index, exc)
    total = totals[index] if index < len(totals) else None
    return GpuInfo(device=device.name, name=name, memory_mb=total, memory_used_mb=used,
                   compute_capability=capability)


def _no_gpu_reason() -> str:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in {"", "-1"}:
        return _GPUS_HIDDEN.format(value=visible)
    if not tf.test.is_built_with_cuda():
        return _NO_GPU_BUILD
    return _NO_GPU_FOUND


def detect() -> DeviceInfo:
    """Looks at the GPUs TensorFlow can use.

    Returns:
        DeviceInfo with GPU names, total memory (via nvidia-smi when present) and memory in use
        (tf.config.experimental.get_memory_info), or on a CPU-only machine the reason.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return DeviceInfo(kind="cpu", reason=_no_gpu_reason())
    totals = _nvidia_smi_memory()
    return DeviceInfo(kind="gpu", gpus=tuple(_gpu_info(i, d, totals) for i, d in enumerate(gpus)))


def distribution_strategy(info: DeviceInfo | None = None, *,
                          devices: Sequence[str] | None = None) -> tf.distribute.Strategy:
    """The tf.distribute strategy to build and run models under.

    Args:
        info: From detect(); detected now when None.
        devices: Force a MirroredStrategy over these logical devices (e.g. ["/cpu:0",
            "/cpu:1"] after splitting the CPU, as the tests do).

    Returns:
        MirroredStrategy over all GPUs when there are several, OneDeviceStrategy on the one
        GPU, otherwise TensorFlow's default strategy (CPU).
    """
    if devices:
        return tf.distribute.MirroredStrategy(devices=list(devices))
    info = info or detect()
    if info.kind == "gpu" and len(info.gpus) > 1:
        return tf.distribute.MirroredStrategy()
    if info.kind == "gpu":
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    return tf.distribute.get_strategy()


def use_mixed_precision(info: DeviceInfo | None = None) -> bool:
    """Whether to compute in float16 (Keras "mixed_float16"): on GPU only.

    The model's last layer must still output float32 (a softmax in float16 loses precision
    and can overflow): that is the head's job, e.g. Dense(..., dtype="float32").
    """
    info = info or detect()
    return info.kind == "gpu"


def precision_policy(info: DeviceInfo | None = None) -> str:
    """The Keras dtype policy name matching use_mixed_precision: mixed_float16 or float32."""
    return "mixed_float16" if use_mixed_precision(info) else "float32"


def suggest_batch_size(info: DeviceInfo | None = None, input_size: int = 224, *,
                       training: bool = True, default: int = 32) -> int:
    """A batch size that fits the device's memory (a rule of thumb, not a promise).

    About 16 images per GB at 224 px when fine-tuning in float32 (activations kept for the
    backward pass), twice that with mixed precision, eight times that for inference only;
    scaled by pixel count and rounded down to a power of two between 8 and 256. Uses the
    smallest GPU, keeps a quarter of its memory free. CPU or unknown memory: default.
    """
    info = info or detect()
    memories = [g.memory_mb for g in info.gpus if g.memory_mb]
    if info.kind != "gpu" or not memories:
        return default
    usable_gb = min(memories) * 0.75 / 1024
    per_gb = 16.0 * (224.0 / input_size) ** 2
    if use_mixed_precision(info):
        per_gb *= 2
    if not training:
        per_gb *= 8
    fits = max(1, int(usable_gb * per_gb))
    batch = 1 << (fits.bit_length() - 1)
    return max(8, min(256, batch))
