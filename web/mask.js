// Mask arithmetic for the page: upsampling the decoder's 256x256 logits exactly as anymask's Predictor does,
// COCO run-length encodings (compressed strings from the API, uncompressed counts for exports), boxes.
// Masks are Uint8Array(H * W), row-major, 1 inside, 0 outside. Coordinates are pixels, (x, y).

const LOW = 256;

// Per output index along one axis: 4 taps (indices into the 256 low-res samples, weights) reproducing
// torch's bilinear (align_corners=False) 256 -> modelSize, crop to `resized`, then -> `out`.
function axisTaps(out, resized, modelSize) {
  const index = new Int32Array(out * 4);
  const weight = new Float32Array(out * 4);
  const scale2 = resized / out;
  const scale1 = LOW / modelSize;
  for (let o = 0; o < out; o++) {
    let s = (o + 0.5) * scale2 - 0.5;
    if (s < 0) s = 0;
    const i0 = Math.floor(s);
    const i1 = Math.min(i0 + 1, resized - 1);
    const l1 = s - i0;
    const outer = [[i0, 1 - l1], [i1, l1]];
    for (let a = 0; a < 2; a++) {
      const [i, wi] = outer[a];
      let t = (i + 0.5) * scale1 - 0.5;
      if (t < 0) t = 0;
      const j0 = Math.floor(t);
      const j1 = Math.min(j0 + 1, LOW - 1);
      const m1 = t - j0;
      index[o * 4 + a * 2] = j0;
      weight[o * 4 + a * 2] = wi * (1 - m1);
      index[o * 4 + a * 2 + 1] = j1;
      weight[o * 4 + a * 2 + 1] = wi * m1;
    }
  }
  return { index, weight };
}

const tapsCache = new Map();
function taps(out, resized, modelSize) {
  const key = `${out},${resized},${modelSize}`;
  if (!tapsCache.has(key)) tapsCache.set(key, axisTaps(out, resized, modelSize));
  return tapsCache.get(key);
}

// The size of an image resized so that its longer side is `longSide` (SAM's rounding), as [h, w].
export function resizedShape(height, width, longSide) {
  const scale = longSide / Math.max(height, width);
  return [Math.max(1, Math.floor(height * scale + 0.5)), Math.max(1, Math.floor(width * scale + 0.5))];
}

// Low-res logits (Float32Array, 256*256 values starting at `offset`) -> mask Uint8Array(height * width).
export function upsampleMask(logits, offset, height, width, modelSize = 1024, threshold = 0) {
  const [rh, rw] = resizedShape(height, width, modelSize);
  const tx = taps(width, rw, modelSize);
  const ty = taps(height, rh, modelSize);
  const rows = new Float32Array(LOW * width);
  for (let r = 0; r < LOW; r++) {
    const base = offset + r * LOW;
    const outBase = r * width;
    for (let x = 0; x < width; x++) {
      const k = x * 4;
      rows[outBase + x] = tx.weight[k] * logits[base + tx.index[k]] + tx.weight[k + 1] * logits[base + tx.index[k + 1]]
        + tx.weight[k + 2] * logits[base + tx.index[k + 2]] + tx.weight[k + 3] * logits[base + tx.index[k + 3]];
    }
  }
  const mask = new Uint8Array(height * width);
  for (let y = 0; y < height; y++) {
    const k = y * 4;
    const r0 = ty.index[k] * width, r1 = ty.index[k + 1] * width, r2 = ty.index[k + 2] * width, r3 = ty.index[k + 3] * width;
    const w0 = ty.weight[k], w1 = ty.weight[k + 1], w2 = ty.weight[k + 2], w3 = ty.weight[k + 3];
    const outBase = y * width;
    for (let x = 0; x < width; x++) {
      const v = w0 * rows[r0 + x] + w1 * rows[r1 + x] + w2 * rows[r2 + x] + w3 * rows[r3 + x];
      mask[outBase + x] = v > threshold ? 1 : 0;
    }
  }
  return mask;
}

// COCO uncompressed RLE {size: [H, W], counts: [...]} (column-major runs, starting with a run of zeros).
export function encodeRLE(mask, height, width) {
  const counts = [];
  let current = 0, run = 0;
  for (let x = 0; x < width; x++) {
    for (let y = 0; y < height; y++) {
      const v = mask[y * width + x];
      if (v !== current) { counts.push(run); run = 0; current = v; }
      run++;
    }
  }
  counts.push(run);
  return { size: [height, width], counts };
}

// pycocotools' compressed counts string -> array of run lengths.
function countsFromString(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = 1;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      p++; k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

// COCO RLE (compressed string or uncompressed counts) -> mask Uint8Array(H * W), row-major.
export function decodeRLE(rle) {
  const [height, width] = rle.size;
  const counts = typeof rle.counts === 'string' ? countsFromString(rle.counts) : rle.counts;
  const mask = new Uint8Array(height * width);
  let pos = 0, value = 0;
  for (const run of counts) {
    if (value) {
      for (let i = pos; i < pos + run; i++) {
        const x = Math.floor(i / height), y = i - x * height;
        mask[y * width + x] = 1;
      }
    }
    pos += run;
    value ^= 1;
  }
  return mask;
}

// [area, [x, y, w, h]] of a mask (COCO XYWH of the pixel extent, w = x1 - x0 + 1; zeros when empty).
export function areaAndBox(mask, height, width) {
  let area = 0, x0 = width, y0 = height, x1 = -1, y1 = -1;
  for (let y = 0; y < height; y++) {
    const base = y * width;
    for (let x = 0; x < width; x++) {
      if (mask[base + x]) {
        area++;
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
    }
  }
  return area ? [area, [x0, y0, x1 - x0 + 1, y1 - y0 + 1]] : [0, [0, 0, 0, 0]];
}
