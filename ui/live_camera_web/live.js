// The live camera: the run's model (LiteRT.js, vendored) classifies camera frames in this
// browser. Nothing is sent to the server per frame. Class names are data: textContent only.
import {loadLiteRt, loadAndCompile, Tensor} from "./vendor/litertjs-core/index.js";
import {squash} from "./resize.js";

const $ = (id) => document.getElementById(id);
const video = $("video"), message = $("message"), answer = $("answer");
const startButton = $("start"), pauseButton = $("pause"), switchButton = $("switch");
const TOP = 3;

const state = {
  args: null, modelUrl: null, model: null, modelPromise: null, stream: null,
  facing: "environment", deviceIds: [], deviceIndex: -1, running: false, paused: false,
  openedAt: performance.now(), firstAnswerMs: null, frames: 0, fpsSince: 0,
  canvas: null, ctx: null,
  familiarity: null,  // "none of these": {reference, rows, dim, k, ...} once loaded, else null
  familiarityNote: "",
};

// ---- Streamlit's component protocol (postMessage), written out: no npm build step. ----
function send(type, data) {
  window.parent.postMessage({isStreamlitMessage: true, type, ...data}, "*");
}
let lastHeight = 0;
function fitHeight() {
  const height = Math.ceil(document.documentElement.scrollHeight);
  if (height !== lastHeight) { lastHeight = height; send("streamlit:setFrameHeight", {height}); }
}
new ResizeObserver(fitHeight).observe(document.body);
window.addEventListener("message", (event) => {
  if (event.data && event.data.type === "streamlit:render") onRender(event.data.args || {}, event.data.theme);
});
send("streamlit:componentReady", {apiVersion: 1});

function applyTheme(theme) {
  if (!theme) return;
  const root = document.documentElement.style;
  if (theme.textColor) root.setProperty("--fg", theme.textColor);
  if (theme.backgroundColor) root.setProperty("--bg", theme.backgroundColor);
  if (theme.primaryColor) root.setProperty("--accent", theme.primaryColor);
}

function onRender(args, theme) {
  applyTheme(theme);
  const first = state.args === null;
  state.args = args;
  buildBars(args.labels || []);
  const wanted = args.model_url + "|" + (args.familiarity ? args.familiarity.reference_url : "");
  if (wanted !== state.modelUrl) {  // a new run, model or reference: load it (once)
    state.modelUrl = wanted;
    if (state.model) state.model.delete();
    state.model = null;
    state.modelPromise = null;
    if (state.running) loadModel();
  }
  if (first) {
    showMessage(args.autostart ? "Starting the camera…"
                               : "Press “Start the live camera”: the browser asks to use the camera.");
    if (args.autostart) start();
  }
  fitHeight();
}

// ---- Messages: never a blank box. ----
function showMessage(text) { message.textContent = text; message.hidden = false; fitHeight(); }
function hideMessage() { message.hidden = true; }

function cameraProblem(error) {
  const name = error && error.name;
  if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    return "This browser allows the camera only on an https address or on this computer " +
      "(localhost). Open the studio's https address (README: “Showing a run to others”), " +
      "or take or upload a photo below.";
  }
  if (name === "NotAllowedError" || name === "SecurityError") {
    return "The camera is blocked for this page. Allow it in the browser's site settings " +
      "(the camera or lock icon next to the address), then press “Start the live camera”. " +
      "Taking or uploading a photo below still works.";
  }
  if (name === "NotFoundError" || name === "OverconstrainedError" || name === "DevicesNotFoundError") {
    return "No camera was found on this device. Upload a photo below instead.";
  }
  if (name === "NotReadableError" || name === "AbortError" || name === "TrackStartError") {
    return "The camera is in use by another app or browser tab (or the system refused it). " +
      "Close the other app, then press “Start the live camera” again.";
  }
  return `The camera could not be started (${name || "error"}: ${error && error.message || error}). ` +
    "Taking or uploading a photo below still works.";
}

// ---- The model. ----
let runtimePromise = null;
function loadRuntime() {
  if (!runtimePromise) {
    if (typeof WebAssembly !== "object") {
      return Promise.reject(new Error("this browser has no WebAssembly"));
    }
    runtimePromise = loadLiteRt(new URL("./vendor/litertjs-core/wasm/", location.href).href);
  }
  return runtimePromise;
}

async function modelBytes(url) {
  // Cache Storage keeps the file across visits (its address changes with its content).
  let cache = null;
  try { cache = window.caches ? await caches.open("tl-live-models") : null; } catch (e) { cache = null; }
  let response = cache ? await cache.match(url) : undefined;
  if (!response) {
    response = await fetch(url);
    if (!response.ok) throw new Error(`the model file answered ${response.status}`);
    if (cache) { try { await cache.put(url, response.clone()); } catch (e) { /* full: skip */ } }
  }
  return new Uint8Array(await response.arrayBuffer());
}

function loadModel() {
  if (!state.modelPromise) {
    const url = new URL(state.args.model_url, location.href).href;
    const fam = state.args.familiarity;
    state.modelPromise = (async () => {
      await loadRuntime();
      const bytes = await modelBytes(url);
      const model = await loadAndCompile(bytes, {accelerator: "wasm"});
      state.outputs = outputPlaces(model);
      state.familiarity = null;
      state.familiarityNote = "";
      if (fam && state.outputs.features < 0) {
        state.familiarityNote = "This model file cannot tell “None of these” in the browser " +
          "(it gives no feature vector): the live answer is always one of the classes. " +
          "Uploading a photo below answers it.";
      } else if (fam) {
        try {
          state.familiarity = await loadFamiliarity(fam);
        } catch (error) {
          state.familiarityNote = "“None of these” is not available in this browser (" +
            (error && error.message || error) + "): the live answer is always one of the classes.";
        }
      }
      state.model = model;
      return model;
    })();
    state.modelPromise.catch(() => { state.modelPromise = null; });
  }
  return state.modelPromise;
}

// Which output is which, by the names of the file's signature: "probabilities" (the first in
// files made by the studio) and, in files made since "none of these" reached the browser,
// "similarity_features" (the pooled feature vector the head reads).
function outputPlaces(model) {
  let names = [];
  try { names = Array.from(model.getOutputDetails(), (d) => d.name); } catch (e) { names = []; }
  const probabilities = names.indexOf("probabilities");
  return {probabilities: probabilities < 0 ? 0 : probabilities,
          features: names.indexOf("similarity_features")};
}

// ---- "None of these": the run's reference vectors (float16, rows L2-normalised), scored as
// core.training.familiarity scores on the server: the cosine similarity to the k-th nearest
// reference vector, against the threshold of the nearest vector's class. ----
let halfTable = null;
function halfToFloat() {
  if (!halfTable) {
    halfTable = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) {
      const sign = h & 0x8000 ? -1 : 1, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
      halfTable[h] = exp === 0 ? sign * frac * 2 ** -24
        : exp === 31 ? (frac ? NaN : sign * Infinity)
        : sign * (1 + frac / 1024) * 2 ** (exp - 15);
    }
  }
  return halfTable;
}

async function loadFamiliarity(fam) {
  const bytes = await modelBytes(new URL(fam.reference_url, location.href).href);
  const [rows, dim] = fam.shape;
  if (bytes.length !== rows * dim * 2) {
    throw new Error(`the reference file has ${bytes.length} bytes, not ${rows * dim * 2}`);
  }
  const table = halfToFloat(), view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const reference = new Float32Array(rows * dim);
  for (let i = 0; i < reference.length; i++) reference[i] = table[view.getUint16(2 * i, true)];
  return {reference, rows, dim, k: Math.max(1, Math.min(fam.k, rows)),
          labels: Int32Array.from(fam.reference_labels), thresholds: fam.class_thresholds,
          heading: fam.heading, words: fam.words};
}

// (score, the threshold that applies) of one feature vector, or null without a reference.
function familiarity(features) {
  const fam = state.familiarity;
  if (!fam || !features || features.length !== fam.dim) return null;
  let norm = 0;
  for (let j = 0; j < fam.dim; j++) norm += features[j] * features[j];
  norm = Math.max(Math.sqrt(norm), 1e-12);
  const top = new Float64Array(fam.k).fill(-Infinity);  // the k largest, descending
  let best = -Infinity, nearest = 0;
  for (let r = 0; r < fam.rows; r++) {
    let dot = 0;
    const at = r * fam.dim;
    for (let j = 0; j < fam.dim; j++) dot += fam.reference[at + j] * features[j];
    dot /= norm;
    if (dot > best) { best = dot; nearest = r; }
    if (dot > top[fam.k - 1]) {
      let i = fam.k - 1;
      while (i > 0 && top[i - 1] < dot) { top[i] = top[i - 1]; i--; }
      top[i] = dot;
    }
  }
  return {score: top[fam.k - 1], threshold: fam.thresholds[fam.labels[nearest]]};
}

// ---- The camera. ----
async function openCamera() {
  if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw Object.assign(new Error("no camera API"), {name: "InsecureContext"});
  }
  stopCamera();
  const deviceId = state.deviceIndex >= 0 ? state.deviceIds[state.deviceIndex] : null;
  const video_ = deviceId ? {deviceId: {exact: deviceId}} : {facingMode: {ideal: state.facing}};
  state.stream = await navigator.mediaDevices.getUserMedia({video: video_, audio: false});
  video.srcObject = state.stream;
  await video.play().catch(() => {});
  try {
    const devices = await navigator.mediaDevices.enumerateDevices();
    state.deviceIds = devices.filter((d) => d.kind === "videoinput").map((d) => d.deviceId);
  } catch (e) { state.deviceIds = []; }
  switchButton.hidden = state.deviceIds.length < 2;
}

function stopCamera() {
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  state.stream = null;
}

async function start() {
  startButton.disabled = true;
  showMessage("Starting the camera…");
  try {
    await openCamera();
  } catch (error) {
    startButton.disabled = false;
    showMessage(cameraProblem(error));
    return;
  }
  showMessage("Loading the model into this browser…");
  try {
    await loadModel();
  } catch (error) {
    startButton.disabled = false;
    stopCamera();
    showMessage("This browser cannot run the model here (" + (error && error.message || error) +
      "). Taking or uploading a photo below still works: the studio answers those.");
    return;
  }
  hideMessage();
  $("note").textContent = state.familiarityNote;
  $("note").hidden = !state.familiarityNote;
  startButton.hidden = true;
  pauseButton.hidden = false;
  state.running = true;
  state.paused = false;
  loop();
}

function togglePause() {
  state.paused = !state.paused;
  pauseButton.textContent = state.paused ? "Resume" : "Pause";
  $("status").textContent = state.paused ? "Paused: the picture and the answer stay as they are." : "";
  if (state.paused) video.pause();
  else { video.play().catch(() => {}); loop(); }
}

async function switchCamera() {
  if (state.deviceIds.length > 1) {
    const current = state.stream && state.stream.getVideoTracks()[0].getSettings().deviceId;
    const at = Math.max(state.deviceIds.indexOf(current), state.deviceIndex);
    state.deviceIndex = (at + 1) % state.deviceIds.length;
  } else {
    state.facing = state.facing === "environment" ? "user" : "environment";
  }
  try { await openCamera(); } catch (error) { showMessage(cameraProblem(error)); }
}

startButton.addEventListener("click", start);
pauseButton.addEventListener("click", togglePause);
switchButton.addEventListener("click", switchCamera);
document.addEventListener("visibilitychange", () => {  // no work while the tab is hidden
  if (!document.hidden && state.running && !state.paused) loop();
});

function frameInput(size) {
  const width = video.videoWidth, height = video.videoHeight;
  if (!width || !height) return null;
  if (!state.canvas) {
    state.canvas = document.createElement("canvas");
    state.ctx = state.canvas.getContext("2d", {willReadFrequently: true});
  }
  if (state.canvas.width !== width || state.canvas.height !== height) {
    state.canvas.width = width; state.canvas.height = height;
  }
  state.ctx.drawImage(video, 0, 0, width, height);
  return squash(state.ctx.getImageData(0, 0, width, height).data, width, height, size);
}

// A short summary of the pixels the model saw (4 x 4 block means), so a test can tell which
// frame an answer belongs to.
function signature(input, size) {
  const cells = [], step = size / 4;
  for (let by = 0; by < 4; by++) for (let bx = 0; bx < 4; bx++) for (let c = 0; c < 3; c++) {
    let sum = 0, n = 0;
    for (let y = Math.floor(by * step); y < Math.floor((by + 1) * step); y++)
      for (let x = Math.floor(bx * step); x < Math.floor((bx + 1) * step); x++) { sum += input[(y * size + x) * 3 + c]; n++; }
    cells.push(Math.round(sum / Math.max(n, 1)));
  }
  return cells.join(",");
}

async function classify(input, size) {
  const tensor = new Tensor(input, [1, size, size, 3]);
  let outputs;
  try {
    outputs = await state.model.run([tensor]);
  } finally {
    tensor.delete();
  }
  const places = state.outputs || {probabilities: 0, features: -1};
  const probs = Float32Array.from(outputs[places.probabilities].toTypedArray());
  const features = places.features >= 0 ? Float32Array.from(outputs[places.features].toTypedArray())
                                         : null;
  outputs.forEach((t) => t.delete());
  return {probs, features};
}

// ---- The answer: top class in large letters, top 3 bars. ----
function buildBars(labels) {
  const bars = $("bars");
  const rows = Math.min(TOP, labels.length);
  if (bars.children.length === rows) return;
  bars.replaceChildren();
  for (let i = 0; i < rows; i++) {
    const li = document.createElement("li");
    const name = document.createElement("div"); name.className = "bar-name";
    const label = document.createElement("span"), pct = document.createElement("span");
    name.append(label, pct);
    const track = document.createElement("div"); track.className = "bar-track";
    const fill = document.createElement("div"); fill.className = "bar-fill";
    track.append(fill);
    li.append(name, track);
    bars.append(li);
  }
}

function show(probs, features, sig) {
  const labels = state.args.labels;
  const order = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a]);
  const best = order[0], p = probs[best];
  const unsure = p < state.args.threshold;  // as core.results.prediction.Predictor decides
  const scored = familiarity(features);
  const unknown = scored ? scored.score < scored.threshold : null;  // "none of these"
  const label = labels[best];
  const pct = Math.round(p * 100) + "%";
  // The server's order: "none of these" first (the closest class second), then "not sure".
  const heading = unknown ? state.familiarity.heading : unsure ? "Not sure" : label;
  const detail = unknown ? `Closest: ${label} (${pct}). ${state.familiarity.words[best]}`
    : unsure ? `maybe ${label} (${pct}), below the ${Math.round(state.args.threshold * 100)}% it needs`
    : `${pct} sure`;
  // The live region holds only the answer and changes only when it does: a screen reader
  // hears a new answer, not every frame's percentage (that is beside it, outside the region).
  if ($("answer-label").textContent !== heading) $("answer-label").textContent = heading;
  $("answer-detail").textContent = detail;
  answer.dataset.label = label;
  answer.dataset.unsure = String(unsure);
  answer.dataset.unknown = unknown === null ? "" : String(unknown);
  answer.dataset.familiarity = scored ? scored.score.toFixed(6) : "";
  answer.dataset.familiarityThreshold = scored ? scored.threshold.toFixed(6) : "";
  answer.dataset.probability = p.toFixed(6);
  answer.dataset.signature = sig;
  answer.dataset.count = String((Number(answer.dataset.count) || 0) + 1);
  const rows = $("bars").children;
  for (let i = 0; i < rows.length; i++) {
    const k = order[i];
    const [name, pctNode] = rows[i].firstChild.children;
    name.textContent = labels[k];
    pctNode.textContent = Math.round(probs[k] * 100) + "%";
    rows[i].lastChild.firstChild.style.width = (probs[k] * 100).toFixed(1) + "%";
  }
}

let looping = false;
async function loop() {
  if (looping) return;
  looping = true;
  try {
    while (state.running && !state.paused && !document.hidden) {
      const size = state.args.size;
      const input = frameInput(size);
      if (input && state.model) {
        const {probs, features} = await classify(input, size);
        show(probs, features, signature(input, size));
        count();
      }
      await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
    }
  } catch (error) {
    state.running = false;
    showMessage("The model stopped with an error in this browser (" + (error && error.message || error) +
      "). Reload the page; taking or uploading a photo below still works.");
  } finally {
    looping = false;
  }
}

function count() {
  const now = performance.now(), status = $("status");
  if (state.firstAnswerMs === null) {
    state.firstAnswerMs = now - state.openedAt;
    status.dataset.firstAnswerMs = state.firstAnswerMs.toFixed(0);
    state.fpsSince = now;
    state.frames = 0;
    return;
  }
  state.frames += 1;
  if (now - state.fpsSince >= 2000) {
    const fps = (state.frames * 1000) / (now - state.fpsSince);
    status.dataset.fps = fps.toFixed(2);
    if (!state.paused) status.textContent = `${fps.toFixed(1)} answers per second`;
    state.frames = 0;
    state.fpsSince = now;
  }
}
