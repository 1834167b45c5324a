// Downloads of the page's results: the mask PNG (white object on black, image size), the RGBA cut-out
// (cropped to the object) and a COCO JSON of the kept objects (uncompressed RLE, XYWH bbox, area, score).
// `page` is the page's state (app.js): image {width, height}, bitmap, fileName, mask, kept.

import { areaAndBox } from './mask.js';

function stem(page) { return (page.fileName || 'image').replace(/\.[^.]+$/, ''); }

function save(blob, name) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob); a.download = name;
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

function canvasBlob(canvas) { return new Promise((resolve) => canvas.toBlob(resolve, 'image/png')); }

export async function downloadMask(page) {
  if (!page.mask) return;
  const { width, height } = page.image;
  const canvas = document.createElement('canvas');
  canvas.width = width; canvas.height = height;
  const ctx = canvas.getContext('2d');
  const out = ctx.createImageData(width, height);
  const pixels = new Uint32Array(out.data.buffer);
  for (let i = 0; i < pixels.length; i++) pixels[i] = page.mask[i] ? 0xffffffff : 0xff000000;
  ctx.putImageData(out, 0, 0);
  save(await canvasBlob(canvas), `${stem(page)}_mask.png`);
}

export async function downloadCutout(page) {
  if (!page.mask) return;
  const { width, height } = page.image;
  const [area, [x, y, w, h]] = areaAndBox(page.mask, height, width);
  if (!area) return;
  const full = document.createElement('canvas');
  full.width = width; full.height = height;
  const ctx = full.getContext('2d');
  ctx.drawImage(page.bitmap, 0, 0, width, height);
  const pixels = ctx.getImageData(0, 0, width, height);
  for (let i = 0; i < page.mask.length; i++) if (!page.mask[i]) pixels.data[i * 4 + 3] = 0;
  const cut = document.createElement('canvas');
  cut.width = w; cut.height = h;
  cut.getContext('2d').putImageData(pixels, -x, -y, x, y, w, h);
  save(await canvasBlob(cut), `${stem(page)}_cutout.png`);
}

export function downloadCoco(page) {
  const coco = {
    info: { description: 'anymask web page', date_created: new Date().toISOString() },
    images: [{ id: 1, file_name: page.fileName, width: page.image.width, height: page.image.height }],
    categories: [{ id: 1, name: 'object' }],
    annotations: page.kept.map((o, i) => ({ id: i + 1, image_id: 1, category_id: 1, segmentation: o.rle,
      area: o.area, bbox: o.bbox, iscrowd: 0, score: o.score })),
  };
  save(new Blob([JSON.stringify(coco)], { type: 'application/json' }), `${stem(page)}_coco.json`);
}
