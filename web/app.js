// The anymask page: upload an image (the server encodes it once), then segment it by clicks, boxes and hover.
// Prompts are decoded in the browser (onnxruntime-web) or by the server, whichever measured faster on the first
// prompts after the image loaded (choice.js); `?decode=browser|server` forces one.
// window.anymaskPage exposes the state for tests and scripts (see docs/web.md).

import { BrowserDecoder, ServerDecoder } from './decoder.js';
import { DecoderChoice } from './choice.js';
import { encodeRLE, decodeRLE, areaAndBox } from './mask.js';
import { downloadMask, downloadCutout, downloadCoco } from './downloads.js';

const $ = (id) => document.getElementById(id);
const imageCanvas = $('image'), maskCanvas = $('mask'), uiCanvas = $('ui');
const COLORS = { click: [30, 144, 255, 140], hover: [30, 144, 255, 80] };

const page = {
  choice: null, model: null, image: null, bitmap: null, fileName: null,
  points: [], box: null, history: [], result: null, selected: 0, mask: null,
  kept: [], everything: null, timings: [], busy: false, pending: null, cursor: null, hoverKey: null,
};
// the decoder in use (the chosen one; while probing, the one that answers first)
Object.defineProperty(page, 'decoder', { get: () => (page.choice ? page.choice.current : null) });
window.anymaskPage = {
  page,
  timings: page.timings,
  // how the decoder was chosen: {mode: auto | forced, kind, probing, browser_ms, server_ms, probes}
  choice: () => (page.choice ? page.choice.summary() : null),
  // the mask currently drawn, read back from the mask canvas: COCO uncompressed RLE {size, counts}
  canvasMaskRLE() {
    const { width, height } = maskCanvas;
    const rgba = maskCanvas.getContext('2d').getImageData(0, 0, width, height).data;
    const mask = new Uint8Array(width * height);
    for (let i = 0; i < mask.length; i++) mask[i] = rgba[i * 4 + 3] > 0 ? 1 : 0;
    return encodeRLE(mask, height, width);
  },
  maskRLE: () => (page.mask ? encodeRLE(page.mask, page.image.height, page.image.width) : null),
};

function status(text) { $('status').textContent = text; }

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
  return body;
}

async function start() {
  const models = await api('/v1/models');
  page.model = models.models[0];
  let forced = new URLSearchParams(location.search).get('decode');
  if (!['browser', 'server'].includes(forced)) forced = null;
  let browser = null;
  if (models.browser_decoding && forced !== 'server') {
    try {
      browser = await BrowserDecoder.create(page.model);
    } catch (error) {
      console.warn('browser decoding unavailable, the server decodes instead:', error);
    }
  }
  page.choice = new DecoderChoice({ browser, server: new ServerDecoder() }, { forced });
  showDecoder();
  document.body.dataset.ready = '1';
  updateButtons();
}

// The badge: where prompts are decoded, and why (forced, measured, or still measuring).
function showDecoder(note = '') {
  const c = page.choice.summary();
  const browser = page.choice.decoders.browser;
  const threads = browser && browser.threads ? ` (${browser.threads} thread${browser.threads > 1 ? 's' : ''})` : '';
  let text;
  if (c.probing) text = `measuring browser${threads} and server decoding…`;
  else if (c.mode === 'forced') text = `decoding in the ${c.kind}${c.kind === 'browser' ? threads : ''} (forced)`;
  else if (c.browser_ms === null) text = 'decoding in the server';
  else text = `decoding in the ${c.kind}${c.kind === 'browser' ? threads : ''}: faster here ` +
    `(browser ${Math.round(c.browser_ms)} ms, server ${Math.round(c.server_ms)} ms)`;
  $('decoder').textContent = `${page.model.name} · ${text}${note}`;
  document.body.dataset.decoder = c.kind;
  document.body.dataset.choice = c.probing ? 'probing' : c.mode;
}

// ------------------------------------------------------------------------------------------------ image

async function openFile(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith('image/')) { status(`${file.name} is not an image.`); return; }
  status(`Uploading ${file.name}; the server encodes it once…`);
  document.body.dataset.imageReady = '';
  try {
    const form = new FormData();
    form.append('file', file);
    const [info, bitmap] = await Promise.all([
      api('/v1/images', { method: 'POST', body: form }),
      createImageBitmap(file, { imageOrientation: 'from-image' }),
    ]);
    const { browser, server } = page.choice.decoders;
    await Promise.all([server.setImage(info), browser ? browser.setImage(info) : null]);
    page.choice.reset();
    showDecoder();
    page.image = info; page.bitmap = bitmap; page.fileName = file.name;
    page.kept = []; page.everything = null;
    for (const canvas of [imageCanvas, maskCanvas, uiCanvas]) { canvas.width = info.width; canvas.height = info.height; }
    imageCanvas.getContext('2d').drawImage(bitmap, 0, 0, info.width, info.height);
    $('drop').hidden = true; $('layers').hidden = false;
    resetPrompts(false);
    status(`${file.name}: ${info.width}×${info.height}, encoded in ${Math.round(info.encode_ms)} ms` +
      `${info.cached ? ' (cached)' : ''}. Move the pointer over an object, click to select it.`);
    document.body.dataset.imageReady = '1';
    uiCanvas.focus();
  } catch (error) {
    status(`Could not open ${file.name}: ${error.message}`);
  }
}

// ------------------------------------------------------------------------------------- prompts + decoding

function snapshot() { return { points: page.points.slice(), box: page.box ? page.box.slice() : null }; }

function pushPrompt(change) {
  page.history.push(snapshot());
  change();
  page.everything = null;
  schedule('click', performance.now());
}

function resetPrompts(keepHistory = true) {
  if (keepHistory && (page.points.length || page.box)) page.history.push(snapshot());
  else if (!keepHistory) page.history = [];
  page.points = []; page.box = null; page.result = null; page.mask = null; page.everything = null;
  showCandidates(); draw();
}

function undo() {
  if (!page.history.length) return;
  const previous = page.history.pop();
  page.points = previous.points; page.box = previous.box;
  if (page.points.length || page.box) schedule('click', performance.now());
  else { page.result = null; page.mask = null; showCandidates(); draw(); }
}

// The browser decoder failing (e.g. out of memory) hands over to the server for the rest of the session.
async function decodeWith(decoder, prompt) {
  try {
    return await decoder.decode(prompt);
  } catch (error) {
    if (decoder.kind !== 'browser') throw error;
    console.warn('browser decoding failed, the server decodes from now on:', error);
    page.choice.dropBrowser();
    showDecoder(' (browser decoding failed)');
    return page.choice.decoders.server.decode(prompt);
  }
}

// A decode and the shown mask's upsampling (what a probe compares), timed in ms.
async function timedDecode(decoder, prompt) {
  const started = performance.now();
  const result = await decodeWith(decoder, prompt);
  result.mask(result.best);
  return { result, ms: performance.now() - started };
}

// One decode at a time; at most one waits (a click replaces a waiting hover, never the other way round).
function schedule(kind, since, hoverPoint = null) {
  const job = { kind, since, hoverPoint, prompt: hoverPoint ? { points: [hoverPoint], box: null } : snapshot() };
  if (page.busy) {
    if (kind === 'click' || !page.pending || page.pending.kind === 'hover') page.pending = job;
    return;
  }
  run(job);
}

async function run(job) {
  page.busy = true;
  job.started = performance.now();
  try {
    const key = JSON.stringify(job.prompt);
    let result, decoded = true, probe = null;
    if (job.kind === 'click' && page.hoverKey === key && page.hoverResult) {
      result = page.hoverResult; decoded = false;  // the hover already decoded exactly this prompt
    } else if (job.prompt.points.length || job.prompt.box) {
      if (page.choice.probing) {  // the first decoder answers now; the other one runs after the mask is drawn
        const [first, second] = page.choice.order();
        const answer = await timedDecode(page.choice.decoders[first], job.prompt);
        result = answer.result;
        probe = { [first]: answer.ms, second, image: page.image };
      } else {
        result = await decodeWith(page.decoder, job.prompt);
      }
    }
    if (job.kind === 'hover') {
      page.hoverKey = key; page.hoverResult = result;
      if (!page.points.length && !page.box && !page.everything) {
        page.mask = result.mask(result.best); page.result = null;
        draw('hover');
      }
    } else if (JSON.stringify(snapshot()) === key) {  // still the current prompt
      const decodedAt = performance.now();
      page.result = result || null; page.selected = result ? result.best : 0;
      page.mask = result ? result.mask(page.selected) : null;
      const maskAt = performance.now();
      draw('click');
      const ms = performance.now() - job.since;
      showCandidates();
      const steps = { wait: job.started - job.since, decode: decodedAt - job.started, mask: maskAt - decodedAt,
        draw: job.since + ms - maskAt, ...(decoded && result ? result.steps : {}) };
      page.timings.push({ ms, decoded, decoder: result ? result.source : null, steps });
      status(`Mask in ${ms.toFixed(1)} ms (${decoded ? `decoded in the ${result.source}` : 'from the hover'}).`);
    }
    if (probe) await finishProbe(probe, job.prompt);
  } catch (error) {
    status(`Segmentation failed: ${error.message}`);
  } finally {
    page.busy = false;
    const next = page.pending;
    page.pending = null;
    if (next) run(next);
  }
}

// The second half of a probe: the other decoder on the same prompt, timed; the choice is made after enough.
async function finishProbe(probe, prompt) {
  const decoder = page.choice.decoders[probe.second];
  if (decoder) {
    try {
      probe[probe.second] = (await timedDecode(decoder, prompt)).ms;
    } catch (error) {
      console.warn(`${probe.second} decoding failed while measuring:`, error);
    }
  }
  if (page.choice.probing && probe.image === page.image) page.choice.record(probe);  // not if a new image came
  showDecoder();
}

// ---------------------------------------------------------------------------------------------- drawing

// One RGBA buffer per image size, cleared and refilled for every mask (no allocation per draw).
let maskPixels = null;
function draw(kind = 'click') {
  const { width, height } = maskCanvas;
  const ctx = maskCanvas.getContext('2d');
  if (!maskPixels || maskPixels.image.width !== width || maskPixels.image.height !== height) {
    const image = ctx.createImageData(width, height);
    maskPixels = { image, pixels: new Uint32Array(image.data.buffer) };
  }
  const { image: out, pixels } = maskPixels;
  pixels.fill(0);
  if (page.everything) {
    page.everything.slice().sort((a, b) => b.area - a.area).forEach((m) => {  // small objects on top
      const [r, g, b] = m.color;
      const value = (140 << 24) | (b << 16) | (g << 8) | r;
      for (let i = 0; i < pixels.length; i++) if (m.mask[i]) pixels[i] = value;
    });
  } else if (page.mask) {
    const [r, g, b, a] = COLORS[kind] || COLORS.click;
    const value = ((a << 24) | (b << 16) | (g << 8) | r) >>> 0;
    const mask = page.mask;
    for (let i = 0; i < pixels.length; i++) if (mask[i]) pixels[i] = value;
  }
  ctx.putImageData(out, 0, 0);
  drawPrompts();
}

function drawPrompts(dragBox = null) {
  const ctx = uiCanvas.getContext('2d');
  ctx.clearRect(0, 0, uiCanvas.width, uiCanvas.height);
  const unit = Math.max(2, uiCanvas.width / uiCanvas.clientWidth || 1);
  ctx.lineWidth = 2 * unit;
  const box = dragBox || page.box;
  if (box) { ctx.strokeStyle = '#ffd400'; ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]); }
  for (const p of page.points) {
    ctx.beginPath(); ctx.arc(p.x, p.y, 5 * unit, 0, 2 * Math.PI);
    ctx.fillStyle = p.label ? '#18b418' : '#e02020'; ctx.fill();
    ctx.strokeStyle = '#fff'; ctx.stroke();
  }
  if (page.cursor) {
    const { x, y } = page.cursor;
    ctx.strokeStyle = '#ff00ff';
    ctx.beginPath(); ctx.moveTo(x - 8 * unit, y); ctx.lineTo(x + 8 * unit, y);
    ctx.moveTo(x, y - 8 * unit); ctx.lineTo(x, y + 8 * unit); ctx.stroke();
  }
}

function showCandidates() {
  const list = $('candidate-list');
  list.textContent = '';
  const result = page.result;
  $('candidates').hidden = !(result && result.scores.length > 1);
  if (result && result.scores.length > 1) {
    result.scores.forEach((score, i) => {
      const label = document.createElement('label');
      const input = document.createElement('input');
      input.type = 'radio'; input.name = 'candidate'; input.value = i; input.checked = i === page.selected;
      input.addEventListener('change', () => selectCandidate(i));
      label.append(input, ` ${i + 1}: score ${score.toFixed(3)}`);
      list.append(label, document.createElement('br'));
    });
  }
  updateButtons();
}

function selectCandidate(i) {
  if (!page.result || i >= page.result.scores.length) return;
  page.selected = i; page.mask = page.result.mask(i);
  draw(); showCandidates();
}

function updateButtons() {
  const hasImage = Boolean(page.image);
  $('undo').disabled = !page.history.length;
  $('reset').disabled = !hasImage;
  $('everything').disabled = !hasImage;
  $('keep').disabled = !(page.mask && page.result);
  $('download-mask').disabled = !(page.mask && page.result);
  $('download-cutout').disabled = !(page.mask && page.result);
  $('download-coco').disabled = !(page.kept.length || (page.mask && page.result));
  $('kept').textContent = `Kept: ${page.kept.length} object${page.kept.length === 1 ? '' : 's'}`;
}

// ---------------------------------------------------------------------------------------------- pointer

function imagePoint(event) {
  const rect = uiCanvas.getBoundingClientRect();
  const x = ((event.clientX - rect.left) / rect.width) * uiCanvas.width;
  const y = ((event.clientY - rect.top) / rect.height) * uiCanvas.height;
  return { x: Math.min(Math.max(x, 0), uiCanvas.width), y: Math.min(Math.max(y, 0), uiCanvas.height) };
}

let drag = null;
uiCanvas.addEventListener('contextmenu', (e) => e.preventDefault());
uiCanvas.addEventListener('pointerdown', (e) => {
  if (!page.image) return;
  uiCanvas.setPointerCapture(e.pointerId);
  drag = { start: imagePoint(e), screen: [e.clientX, e.clientY], moved: false, button: e.button, shift: e.shiftKey };
});
uiCanvas.addEventListener('pointermove', (e) => {
  if (!page.image) return;
  const p = imagePoint(e);
  if (drag) {
    if (Math.hypot(e.clientX - drag.screen[0], e.clientY - drag.screen[1]) > 5) drag.moved = true;
    if (drag.moved) drawPrompts(boxFrom(drag.start, p));
    return;
  }
  if (!page.points.length && !page.box && !page.everything) schedule('hover', e.timeStamp, { x: p.x, y: p.y, label: 1 });
});
uiCanvas.addEventListener('pointerup', (e) => {
  if (!drag) return;
  const p = imagePoint(e), d = drag;
  drag = null;
  const since = e.timeStamp;
  if (d.moved) {
    const box = boxFrom(d.start, p);
    if (box[2] - box[0] < 1 || box[3] - box[1] < 1) return;
    page.history.push(snapshot()); page.box = box; page.everything = null; schedule('click', since);
  } else {
    const label = d.button === 2 || d.shift ? 0 : 1;
    page.history.push(snapshot()); page.points.push({ x: d.start.x, y: d.start.y, label });
    page.everything = null; schedule('click', since);
  }
});
uiCanvas.addEventListener('pointerleave', () => {
  if (!page.points.length && !page.box && !page.everything && !drag) { page.mask = null; draw(); }
});

function boxFrom(a, b) { return [Math.min(a.x, b.x), Math.min(a.y, b.y), Math.max(a.x, b.x), Math.max(a.y, b.y)]; }

// --------------------------------------------------------------------------------------------- keyboard

uiCanvas.addEventListener('keydown', (e) => {
  if (!page.image) return;
  const step = (e.shiftKey ? 0.05 : 0.01) * Math.max(page.image.width, page.image.height);
  const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
  if (moves[e.key]) {
    e.preventDefault();
    const c = page.cursor || { x: page.image.width / 2, y: page.image.height / 2 };
    page.cursor = { x: Math.min(Math.max(c.x + moves[e.key][0], 0), page.image.width),
      y: Math.min(Math.max(c.y + moves[e.key][1], 0), page.image.height) };
    drawPrompts();
    if (!page.points.length && !page.box && !page.everything) schedule('hover', e.timeStamp, { ...page.cursor, label: 1 });
  } else if (e.key === 'Enter') {
    e.preventDefault();
    const c = page.cursor || { x: page.image.width / 2, y: page.image.height / 2 };
    pushPrompt(() => page.points.push({ x: c.x, y: c.y, label: e.shiftKey ? 0 : 1 }));
  }
});

document.addEventListener('keydown', (e) => {
  if (e.target instanceof HTMLInputElement || !page.image) return;
  const key = e.key.toLowerCase();
  if ((e.ctrlKey || e.metaKey) && key === 'z') { e.preventDefault(); undo(); } else if (e.ctrlKey || e.metaKey || e.altKey) return;
  else if (key === 'u') undo();
  else if (key === 'r' || key === 'escape') resetPrompts();
  else if (key === 'k') keep();
  else if (key === 'e') everything();
  else if (key === 'd') downloadMask(page);
  else if (['1', '2', '3'].includes(key)) selectCandidate(Number(key) - 1);
});

// ----------------------------------------------------------------------------------- keep, everything

function keep() {
  if (!page.mask || !page.result) return;
  const [area, bbox] = areaAndBox(page.mask, page.image.height, page.image.width);
  page.kept.push({ rle: encodeRLE(page.mask, page.image.height, page.image.width), area, bbox,
    score: page.result.scores[page.selected] });
  status(`Kept object ${page.kept.length} (${area} pixels). Reset (R) to select the next one.`);
  updateButtons();
}

async function everything() {
  if (!page.image) return;
  const button = $('everything');
  button.disabled = true;
  status('Finding every object (16×16 grid of clicks on the server; this takes a while on a CPU)…');
  try {
    const answer = await api(`/v1/images/${page.image.id}/everything`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ points_per_side: 16 }),
    });
    page.points = []; page.box = null; page.result = null; page.mask = null;
    page.everything = answer.masks.map((m, i) => ({
      mask: decodeRLE(m.segmentation), rle: m.segmentation, area: m.area, score: m.predicted_iou,
      color: [(i * 97) % 200 + 40, (i * 57) % 200 + 40, (i * 151) % 200 + 40],
    }));
    draw();
    page.kept = page.everything.map((m) => {
      const [area, bbox] = areaAndBox(m.mask, page.image.height, page.image.width);
      return { rle: encodeRLE(m.mask, page.image.height, page.image.width), area, bbox, score: m.score };
    });
    status(`${answer.masks.length} objects in ${(answer.elapsed_ms / 1000).toFixed(1)} s; all kept for the COCO JSON.`);
  } catch (error) {
    status(`Everything failed: ${error.message}`);
  } finally {
    button.disabled = false;
    updateButtons();
  }
}

// ------------------------------------------------------------------------------------------------ wiring

$('file').addEventListener('change', (e) => openFile(e.target.files[0]));
$('undo').addEventListener('click', undo);
$('reset').addEventListener('click', () => resetPrompts());
$('keep').addEventListener('click', keep);
$('everything').addEventListener('click', everything);
$('download-mask').addEventListener('click', () => downloadMask(page));
$('download-cutout').addEventListener('click', () => downloadCutout(page));
$('download-coco').addEventListener('click', () => { if (!page.kept.length) keep(); downloadCoco(page); });
const stage = $('stage');
stage.addEventListener('dragover', (e) => { e.preventDefault(); stage.classList.add('dragover'); });
stage.addEventListener('dragleave', () => stage.classList.remove('dragover'));
stage.addEventListener('drop', (e) => {
  e.preventDefault(); stage.classList.remove('dragover');
  openFile(e.dataTransfer.files[0]);
});

start().catch((error) => status(`Could not start: ${error.message}`));
