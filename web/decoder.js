// Two ways to turn prompts into masks, with one interface:
//   BrowserDecoder: the model's decoder in onnxruntime-web (wasm), as two graphs (the image side once per image,
//                   then each prompt), fed the embedding that the server computed once: no round trip per click.
//   ServerDecoder:  POST /v1/images/{id}/segment for every prompt (the fallback when the browser cannot).
// decode({points: [{x, y, label}], box: [x0, y0, x1, y1] | null}) resolves to
//   {scores: [...], mask(i) -> Uint8Array(H * W), best: index of the top score, source}.

import { upsampleMask, decodeRLE } from './mask.js';

function candidates(scores, makeMask, source, steps = {}) {
  const cache = new Map();
  let best = 0;
  scores.forEach((s, i) => { if (s > scores[best]) best = i; });
  return {
    scores, best, source, steps,
    mask(i) {
      if (!cache.has(i)) cache.set(i, makeMask(i));
      return cache.get(i);
    },
  };
}

// A single click without a box is ambiguous: offer SAM's three candidates; else one mask.
function wantsMultimask(prompt) {
  return !prompt.box && prompt.points.length === 1;
}

export class BrowserDecoder {
  static async create(model) {
    const ort = await import('./vendor/ort.wasm.min.mjs');
    ort.env.wasm.wasmPaths = new URL('./vendor/', import.meta.url).href;
    const threads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
    ort.env.wasm.numThreads = threads;
    // The decoder in two parts, without mask input (the page sends no mask prompt): `prepare` computes the first
    // block's image side once per image, `session` decodes each prompt with it (the same masks as the one-part
    // graph, fewer multiply-adds per click).
    const load = async (url) => {
      const response = await fetch(url);
      if (!response.ok) throw new Error(`decoder graph: HTTP ${response.status}`);
      return ort.InferenceSession.create(new Uint8Array(await response.arrayBuffer()), {
        executionProviders: ['wasm'], graphOptimizationLevel: 'all',
      });
    };
    const [prepare, session] = await Promise.all([load(model.decoder_prepare_url), load(model.decoder_prepared_url)]);
    return new BrowserDecoder(ort, prepare, session, model, threads);
  }

  constructor(ort, prepare, session, model, threads) {
    this.ort = ort;
    this.prepare = prepare;
    this.session = session;
    this.model = model;
    this.threads = threads;
    this.kind = 'browser';
    this.image = null;
  }

  async setImage(info) {
    const response = await fetch(`${info.embedding.url}?dtype=float32`);
    if (!response.ok) throw new Error(`embedding: HTTP ${response.status}`);
    const shape = response.headers.get('X-Embedding-Shape').split(',').map(Number);
    const data = new Float32Array(await response.arrayBuffer());
    const embedding = new this.ort.Tensor('float32', data, shape);
    const started = performance.now();
    const prepared = await this.prepare.run({ image_embeddings: embedding });
    this.image = {
      info,
      embedding,
      prepared,  // keys, key_pe, block_keys, block_values, block_queries, upscale_base_0, upscale_base_1
      prepare_ms: performance.now() - started,
      size: new this.ort.Tensor('int64', BigInt64Array.from([BigInt(info.height), BigInt(info.width)]), [2]),
    };
  }

  async decode(prompt) {
    const { ort, image } = this;
    const coords = [], labels = [];
    for (const p of prompt.points) { coords.push(p.x, p.y); labels.push(p.label); }
    if (prompt.box) {
      coords.push(prompt.box[0], prompt.box[1], prompt.box[2], prompt.box[3]);
      labels.push(2, 3);
    } else {
      coords.push(0, 0);
      labels.push(-1);
    }
    const n = labels.length;
    const started = performance.now();
    const feeds = {
      image_embeddings: image.embedding,
      point_coords: new ort.Tensor('float32', Float32Array.from(coords), [1, n, 2]),
      point_labels: new ort.Tensor('float32', Float32Array.from(labels), [1, n]),
      orig_im_size: image.size,
      ...image.prepared,
    };
    const out = await this.session.run(feeds);
    const steps = { run: performance.now() - started };
    const logits = out.low_res_masks.data;  // (1, 4, 256, 256): token 0 the single mask, 1-3 the candidates
    const iou = out.iou_predictions.data;
    const tokens = wantsMultimask(prompt) ? [1, 2, 3] : [0];
    const { height, width } = image.info;
    const size = this.model.image_size, threshold = this.model.mask_threshold;
    return candidates(tokens.map((t) => iou[t]),
      (i) => upsampleMask(logits, tokens[i] * 256 * 256, height, width, size, threshold), 'browser', steps);
  }
}

export class ServerDecoder {
  constructor() {
    this.kind = 'server';
    this.image = null;
  }

  async setImage(info) {
    this.image = { info };
  }

  async decode(prompt) {
    const body = {
      points: prompt.points.map((p) => [p.x, p.y]),
      labels: prompt.points.map((p) => p.label),
      multimask: wantsMultimask(prompt),
    };
    if (!body.points.length) { delete body.points; delete body.labels; }
    if (prompt.box) body.box = prompt.box;
    const started = performance.now();
    const response = await fetch(`/v1/images/${this.image.info.id}/segment`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error ? answer.error.message : `HTTP ${response.status}`);
    const steps = { request: performance.now() - started, server_decode: answer.decode_ms };
    return candidates(answer.masks.map((m) => m.score), (i) => decodeRLE(answer.masks[i].segmentation), 'server',
      steps);
  }
}
