// Which decoder the page uses for an image: the browser's (onnxruntime-web, no round trip) or the server's
// (POST /segment). Neither is always faster: the browser's wasm decoder is several times slower than the
// server's native one on the same CPU, while the server costs a round trip (small on 127.0.0.1, large over a
// network). So the page measures both on the first prompts after an image loads and keeps the faster one.
//
// A probe decodes one prompt with both decoders, one after the other (the order alternates so neither always
// runs on a cold cache); its time is the decode plus the shown mask's upsampling, in milliseconds. After
// `probes` probes per decoder the one with the lower median wins. `?decode=browser|server` forces one.

export const PROBES = 3;

export function median(values) {
  const sorted = values.slice().sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

// samples {browser: [ms, ...], server: [ms, ...]} -> 'browser' | 'server', or null while either has fewer than
// `probes` samples. Ties go to the browser (it frees the server for other users).
export function pickFaster(samples, probes = PROBES) {
  if ((samples.browser || []).length < probes || (samples.server || []).length < probes) return null;
  return median(samples.browser) <= median(samples.server) ? 'browser' : 'server';
}

export class DecoderChoice {
  // decoders: {browser: BrowserDecoder | null, server: ServerDecoder}; forced: 'browser' | 'server' | null.
  constructor(decoders, { forced = null, probes = PROBES } = {}) {
    this.decoders = decoders;
    this.probes = probes;
    this.forced = forced && decoders[forced] ? forced : null;
    this.reset();
  }

  // A new image: measure again (the image size changes both sides' cost).
  reset() {
    this.samples = { browser: [], server: [] };
    this.count = 0;
    this.chosen = this.forced || (this.decoders.browser ? null : 'server');
  }

  get probing() { return this.chosen === null; }

  // The decoder in use: the chosen one, or while probing the one that answers first.
  get current() { return this.decoders[this.chosen || this.order()[0]]; }

  // While probing: [first, second] kinds for the next probe (alternating).
  order() { return this.count % 2 ? ['server', 'browser'] : ['browser', 'server']; }

  // One probe's two times (ms); returns the chosen kind once decided, else null.
  record(times) {
    for (const kind of ['browser', 'server']) if (Number.isFinite(times[kind])) this.samples[kind].push(times[kind]);
    this.count += 1;
    this.chosen = pickFaster(this.samples, this.probes);
    return this.chosen;
  }

  // The browser decoder failed: the server decodes from now on, also for later images.
  dropBrowser() {
    this.decoders.browser = null;
    if (this.forced === 'browser') this.forced = null;
    this.chosen = 'server';
  }

  // What the page shows and exposes: {mode, kind, probing, browser_ms, server_ms, probes}.
  summary() {
    const ms = (kind) => (this.samples[kind].length ? Math.round(median(this.samples[kind]) * 10) / 10 : null);
    return { mode: this.forced ? 'forced' : 'auto', kind: this.chosen || this.order()[0], probing: this.probing,
      browser_ms: ms('browser'), server_ms: ms('server'), probes: this.count };
  }
}
