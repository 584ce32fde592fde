// The live camera's resize of a video frame to the model's S x S input (a module of its own,
// so a test can run it in Chromium against its Python copy, tests/video_helpers.py).
// ---- Preprocessing: the studio's (Pillow's antialiased bilinear resize of the whole frame
// to S x S, RGB 0..255 as float; the model holds the base's own scaling). ----
function weights(inSize, outSize) {
  const scale = inSize / outSize, support = Math.max(scale, 1);
  const table = [];
  for (let o = 0; o < outSize; o++) {
    const center = (o + 0.5) * scale;
    const lo = Math.max(0, Math.floor(center - support + 0.5));
    const hi = Math.min(inSize, Math.floor(center + support + 0.5));
    const w = [];
    let sum = 0;
    for (let i = lo; i < hi; i++) {
      const x = (i - center + 0.5) / support;
      const v = Math.max(0, 1 - Math.abs(x));
      w.push(v); sum += v;
    }
    table.push({lo, w: w.map((v) => (sum ? v / sum : 0))});
  }
  return table;
}
const weightCache = new Map();
function cachedWeights(inSize, outSize) {
  const key = inSize + "x" + outSize;
  if (!weightCache.has(key)) weightCache.set(key, weights(inSize, outSize));
  return weightCache.get(key);
}
const clamp8 = (v) => (v < 0 ? 0 : v > 255 ? 255 : Math.round(v));

export function squash(rgba, width, height, size) {
  const wx = cachedWeights(width, size), wy = cachedWeights(height, size);
  const mid = new Float32Array(height * size * 3);  // horizontal pass, rounded like Pillow's
  for (let y = 0; y < height; y++) {
    const row = y * width * 4;
    for (let o = 0; o < size; o++) {
      const {lo, w} = wx[o];
      let r = 0, g = 0, b = 0;
      for (let k = 0; k < w.length; k++) {
        const p = row + (lo + k) * 4;
        r += rgba[p] * w[k]; g += rgba[p + 1] * w[k]; b += rgba[p + 2] * w[k];
      }
      const q = (y * size + o) * 3;
      mid[q] = clamp8(r); mid[q + 1] = clamp8(g); mid[q + 2] = clamp8(b);
    }
  }
  const out = new Float32Array(size * size * 3);
  for (let o = 0; o < size; o++) {
    const {lo, w} = wy[o];
    for (let x = 0; x < size; x++) {
      let r = 0, g = 0, b = 0;
      for (let k = 0; k < w.length; k++) {
        const q = ((lo + k) * size + x) * 3;
        r += mid[q] * w[k]; g += mid[q + 1] * w[k]; b += mid[q + 2] * w[k];
      }
      const t = (o * size + x) * 3;
      out[t] = clamp8(r); out[t + 1] = clamp8(g); out[t + 2] = clamp8(b);
    }
  }
  return out;
}
