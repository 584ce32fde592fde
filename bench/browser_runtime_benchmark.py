"""Which runtime runs the model in the browser: LiteRT.js vs ONNX Runtime Web, in headless Chromium.

MobileNetV2 at 224 (ImageNet weights from ../shared/assets, a 5-class head), one photo per call,
on the CPU (WebAssembly, one thread: Streamlit sends no cross-origin isolation headers, so no
threads). Needs the npm tarballs in --packages:

    npm pack @litertjs/core@2.5.3 @litertjs/wasm-utils@2.5.3 onnxruntime-web@1.31.1

and, for ONNX Runtime Web, tf2onnx importable (pip install --target DIR tf2onnx onnx; pass
--onnx-path DIR). Prints JSON: load time, median time per call, answers per second, and the
largest difference from the Keras model's probabilities.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
WEIGHTS = (REPO.parent / "shared" / "assets" / "weights"
           / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5")

_RUN = """
  const data = new Float32Array(224*224*3); for (let i=0;i<data.length;i++) data[i]=(i*37)%256;
  const times=[]; let first;
  for (let i=0;i<25;i++) { const s=performance.now(); const p = await once(data);
    times.push(performance.now()-s); if (!first) first = Array.from(p); }
  times.sort((a,b)=>a-b);
  out.textContent = JSON.stringify({ok:true, load_ms: t1-t0, median_ms: times[12],
                                    per_second: 1000/times[12], probabilities: first});
"""
LITERT = """<!doctype html><script type="importmap">{"imports": {"@litertjs/wasm-utils":
"./litertjs-wasm-utils/package/dist/index.js"}}</script><pre id="out">running</pre>
<script type="module">
import {loadLiteRt, loadAndCompile, Tensor} from "./litertjs-core/package/dist/index.js";
const out = document.getElementById("out");
try {
  const t0 = performance.now();
  await loadLiteRt("./litertjs-core/package/wasm/");
  const model = await loadAndCompile(new URLSearchParams(location.search).get("model"),
                                     {accelerator: "wasm"});
  const t1 = performance.now();
  const once = async (data) => { const t = new Tensor(data, [1,224,224,3]);
    const r = await model.run([t]); const p = r[0].toTypedArray().slice();
    t.delete(); r.forEach(x => x.delete()); return p; };
  %RUN%
} catch (e) { out.textContent = JSON.stringify({ok:false, error: String(e)}); }
</script>"""
ORT = """<!doctype html><pre id="out">running</pre><script type="module">
import * as ort from "./onnxruntime-web/package/dist/ort.wasm.min.mjs";
const out = document.getElementById("out");
try {
  ort.env.wasm.wasmPaths = new URL("./onnxruntime-web/package/dist/", location.href).href;
  const t0 = performance.now();
  const s = await ort.InferenceSession.create("model.onnx", {executionProviders: ["wasm"]});
  const t1 = performance.now();
  const once = async (data) => { const r = await s.run({images: new ort.Tensor("float32", data,
    [1,224,224,3])}); return r[s.outputNames[0]].data.slice(); };
  %RUN%
} catch (e) { out.textContent = JSON.stringify({ok:false, error: String(e)}); }
</script>"""


def model() -> object:
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((224, 224, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    base = keras.applications.MobileNetV2(include_top=False, weights=str(WEIGHTS),
                                          input_shape=(224, 224, 3), pooling="avg")
    return keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(base(x)))


def write_files(net, folder: Path, onnx: bool) -> None:
    from core.export import browser
    from core.export.tflite_files import tflite_bytes

    browser.write(net, 224, folder / "b1_float32.tflite")
    with tempfile.TemporaryDirectory() as scratch:
        browser.write_conversion_source(net, 224, Path(scratch) / "src")
        (folder / "b1_float16.tflite").write_bytes(
            tflite_bytes(Path(scratch) / "src", 224, "float16", None))
    if onnx:
        import tensorflow as tf
        import tf2onnx

        spec = (tf.TensorSpec([1, 224, 224, 3], tf.float32, name="images"),)
        fn = tf.function(lambda images: net(images, training=False), input_signature=spec)
        tf2onnx.convert.from_function(fn, input_signature=spec, opset=17,
                                      output_path=str(folder / "model.onnx"))


def drive(url: str) -> dict:
    from live_helpers import chromium

    with chromium(None) as driver:
        driver.get(url)
        for _ in range(600):
            text = driver.find_element("id", "out").text
            if text != "running":
                return json.loads(text)
            time.sleep(0.5)
    return {"ok": False, "error": "no answer in 300 s"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packages", type=Path, required=True)
    parser.add_argument("--onnx-path", type=Path, default=None)
    args = parser.parse_args()
    if args.onnx_path:
        sys.path.insert(0, str(args.onnx_path))
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="tl-runtime-bench-") as work_dir:
        work = Path(work_dir)
        for tgz in args.packages.glob("*.tgz"):
            name = tgz.name.rsplit("-", 1)[0]
            with tarfile.open(tgz) as archive:
                archive.extractall(work / name, filter="data")
        net = model()
        try:
            import tf2onnx  # noqa: F401
            onnx = (work / "onnxruntime-web").is_dir()
        except ImportError:
            onnx = False
        write_files(net, work, onnx)
        x = (np.arange(224 * 224 * 3) * 37 % 256).astype(np.float32).reshape(1, 224, 224, 3)
        keras_p = np.asarray(net(x))[0]
        (work / "litert.html").write_text(LITERT.replace("%RUN%", _RUN))
        (work / "ort.html").write_text(ORT.replace("%RUN%", _RUN))
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(work))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        pages = {"litert_float32": "litert.html?model=b1_float32.tflite",
                 "litert_float16": "litert.html?model=b1_float16.tflite"}
        if onnx:
            pages["onnxruntime_web"] = "ort.html"
        for name, page in pages.items():
            found = drive(f"{base}/{page}")
            if found.get("ok"):
                found["max_difference_from_keras"] = float(
                    np.abs(np.array(found.pop("probabilities")) - keras_p).max())
            out[name] = found
        server.shutdown()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
