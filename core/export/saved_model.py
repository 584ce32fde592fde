"""SavedModel files of an export: the served one, and the source the TFLite files convert from."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_saved_model(model: Any, size: int, target: Path) -> None:
    """A SavedModel with one signature, serving_default: images -> {"probabilities"}.

    A plain tf.Module holding the model: Keras' ExportArchive stored every variable twice
    (MobileNetV2: 19.7 MB against 10.6 MB).
    """
    import tensorflow as tf

    spec = tf.TensorSpec([None, size, size, 3], tf.float32, name="images")

    class Serving(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.model_variables = list(model.variables)

        @tf.function(input_signature=[spec])
        def serve(self, images: Any) -> dict[str, Any]:
            return {"probabilities": self.model(images, training=False)}

    module = Serving()
    tf.saved_model.save(module, str(target), signatures={"serving_default": module.serve})


def write_conversion_source(model: Any, size: int, target: Path) -> None:
    """The SavedModel the TFLite files are converted from, written by Keras' ExportArchive.

    The converter reads its variables as constants; from the plain tf.Module's SavedModel
    it kept them as variables the interpreter never initialised (non-finite outputs).
    """
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = tf.TensorSpec([None, size, size, 3], tf.float32, name="images")
    archive.add_endpoint(
        name="serving_default", input_signature=[spec],
        fn=lambda images: {"probabilities": model(images, training=False)},
    )
    archive.write_out(str(target), verbose=False)
