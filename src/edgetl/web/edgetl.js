// edgetl's web runtime: predict with an edgetl bundle in the browser and keep
// learning on the device, on plain onnxruntime-web (no training framework).
//
//   import * as edgetl from './edgetl.js';
//   const m = await edgetl.load('./');              // restores the saved state, if any
//   const top = await m.predict(imageOrFile, {topK: 3});  // [{label, probability, index}]
//   await m.addExamples(files, 'mug');              // only features are kept, never the photos
//   await m.fit({epochs: 20, onEpoch: (e) => console.log(e.loss)});
//   await m.save();                                 // IndexedDB; a tab killed mid-save keeps the old state
//
// The numbers are Python's (edgetl.runtime.Personalizer): the same
// preprocessing (preprocess.js reproduces Pillow), the same imprinting of a
// new class, the same class-balanced order of examples (rng.js), the same
// gradient step (the bundle's train_step.onnx), the same learning rate.

import * as ort from './ort/ort.wasm.min.mjs';
import { EdgetlError, decodeImage, toTensor } from './preprocess.js';
import { Mulberry32, balancedOrder } from './rng.js';

export { EdgetlError, ort };
export const STATE_FORMAT = 'edgetl.personal/1';
export const WEB_FORMAT = 'edgetl.web/1';
const EMBED_BATCH = 8; // images per feature-model run: a batch's activations are most of the memory
const DB_NAME = 'edgetl';

ort.env.wasm.wasmPaths = new URL('./ort/', import.meta.url).href;
ort.env.logLevel = 'error';
// Threads need a cross-origin isolated page (SharedArrayBuffer); up to 4, as
// many as the cores (onnxruntime-web's own default takes half of them).
ort.env.wasm.numThreads = globalThis.crossOriginIsolated ? Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1)) : 1;

// ------------------------------------------------------------------ safetensors

function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

function typedArray(dtype, bytes) {
  if (dtype === 'F32') return new Float32Array(bytes);
  if (dtype === 'F16') return Float32Array.from(new Uint16Array(bytes), halfToFloat);
  if (dtype === 'I64') return Int32Array.from(new BigInt64Array(bytes), Number);
  if (dtype === 'I32') return new Int32Array(bytes);
  throw new EdgetlError(`unsupported safetensors dtype ${dtype}`);
}

/** {arrays: {name: {shape, data}}, metadata} of a safetensors file (ArrayBuffer). */
export function readSafetensors(buffer, name = 'file') {
  try {
    const size = Number(new DataView(buffer).getBigUint64(0, true));
    if (size <= 0 || 8 + size > buffer.byteLength) throw new Error('header');
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 8, size)));
    const arrays = {};
    for (const [key, t] of Object.entries(header)) {
      if (key === '__metadata__') continue;
      const [start, end] = t.data_offsets;
      if (!(0 <= start && start <= end && 8 + size + end <= buffer.byteLength)) throw new Error('offsets');
      arrays[key] = { shape: t.shape, data: typedArray(t.dtype, buffer.slice(8 + size + start, 8 + size + end)) };
    }
    return { arrays, metadata: header.__metadata__ || {} };
  } catch (err) {
    if (err instanceof EdgetlError) throw err;
    throw new EdgetlError(`${name} is not a readable safetensors file; choose a state exported by edgetl`);
  }
}

/** A safetensors file (Blob) of float32 / int64 arrays and string metadata. */
export function writeSafetensors(arrays, metadata) {
  const header = { __metadata__: metadata };
  const parts = [];
  let offset = 0;
  for (const [key, { dtype, shape, data }] of Object.entries(arrays)) {
    const bytes = dtype === 'I64' ? BigInt64Array.from(data, (v) => BigInt(v)) : Float32Array.from(data);
    header[key] = { dtype, shape, data_offsets: [offset, offset + bytes.byteLength] };
    parts.push(bytes);
    offset += bytes.byteLength;
  }
  let text = JSON.stringify(header);
  text += ' '.repeat((8 - ((new TextEncoder().encode(text).length) % 8)) % 8);
  const head = new TextEncoder().encode(text);
  const size = new Uint8Array(8);
  new DataView(size.buffer).setBigUint64(0, BigInt(head.length), true);
  return new Blob([size, head, ...parts], { type: 'application/octet-stream' });
}

// ------------------------------------------------------------------ IndexedDB: write new, then switch

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = tx.onabort = () => reject(tx.error || new Error('IndexedDB transaction aborted'));
  });
}

function openDb() {
  const req = indexedDB.open(DB_NAME, 1);
  req.onupgradeneeded = () => {
    req.result.createObjectStore('states'); // key: scope@time-random -> a complete state
    req.result.createObjectStore('current'); // key: scope -> the key of its state
  };
  return request(req).catch(() => {
    throw new EdgetlError('this browser does not allow storage for this page (private mode?); the state cannot be saved');
  });
}

async function readSaved(scope) {
  const db = await openDb();
  try {
    const tx = db.transaction(['states', 'current'], 'readonly');
    const key = await request(tx.objectStore('current').get(scope));
    return key === undefined ? null : (await request(tx.objectStore('states').get(key))) ?? null;
  } finally {
    db.close();
  }
}

/** Store `record` under a new key (one transaction), then point the scope at
 * it and drop the old one (a second): a tab closed during the first leaves the
 * pointer on the previous state, and each transaction is all or nothing. */
async function writeSaved(scope, record) {
  const db = await openDb();
  try {
    const key = `${scope}@${Date.now()}-${Math.random().toString(36).slice(2)}`;
    const write = db.transaction('states', 'readwrite', { durability: 'strict' });
    write.objectStore('states').put(record, key);
    await done(write);
    const swap = db.transaction(['states', 'current'], 'readwrite', { durability: 'strict' });
    const old = await request(swap.objectStore('current').get(scope));
    // A sweep (this page's load, another tab) between the two transactions sees the new record unnamed
    // and removes it: then it is written again here, so the pointer never names a missing state.
    if ((await request(swap.objectStore('states').getKey(key))) === undefined) swap.objectStore('states').put(record, key);
    swap.objectStore('current').put(key, scope);
    if (old !== undefined) swap.objectStore('states').delete(old);
    await done(swap);
  } finally {
    db.close();
  }
}

/** Remove this scope's states that no pointer names (left by a tab closed mid-save). */
async function sweepSaved(scope) {
  const db = await openDb();
  try {
    const tx = db.transaction(['states', 'current'], 'readwrite');
    const current = await request(tx.objectStore('current').get(scope));
    const range = IDBKeyRange.bound(`${scope}@`, `${scope}@\uffff`);
    const keys = await request(tx.objectStore('states').getAllKeys(range));
    for (const key of keys) if (key !== current) tx.objectStore('states').delete(key);
    await done(tx);
  } finally {
    db.close();
  }
}

async function deleteSaved(scope) {
  const db = await openDb();
  try {
    const tx = db.transaction(['states', 'current'], 'readwrite');
    tx.objectStore('current').delete(scope);
    tx.objectStore('states').delete(IDBKeyRange.bound(`${scope}@`, `${scope}@\uffff`));
    await done(tx);
  } finally {
    db.close();
  }
}

// ------------------------------------------------------------------ the model

async function fetchChecked(url, kind) {
  let res;
  try {
    res = await fetch(url);
  } catch {
    throw new EdgetlError(`cannot fetch ${url} (offline before the first visit?); open the app once while online`);
  }
  if (!res.ok) throw new EdgetlError(`${url}: HTTP ${res.status}; serve the whole folder 'edgetl export --format web' wrote`);
  return kind === 'json' ? res.json() : res.arrayBuffer();
}

function controlCharacters(text) {
  return /[\u0000-\u001f\u007f-\u009f]/.test(text);
}

function isFiniteArray(a) {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return false;
  return true;
}

function median(values) {
  const s = Float64Array.from(values).sort();
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function softmaxRow(logits) {
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  const e = logits.map((v) => Math.exp(v - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

// Imprinting a new class (Personalizer._imprint in personalize.py: the same steps, the same constants,
// whose reasons are written there).
const SHRINK = 10;
const FOLDS = 5;
const OLD_LOSS_BUDGET = 0.01;
const Z_NEW_CLASS_RECALL = 1.6448536269514722; // the normal quantile of NEW_CLASS_RECALL = 0.95
const Z_OLD_LOSS_BUDGET = 2.3263478740408408; // the normal quantile of 1 - OLD_LOSS_BUDGET
const BISECTIONS = 100;

/** solve(x) = (S + a I)^-1 (x - centre) (_shrinkage_solve): S the within-class
 * scatter of the rows `rows` of the standardised features z (n x d), a =
 * SHRINK tr(S)/d, centre the mean of the class means; by the Woodbury identity
 * (one Cholesky of an m x m matrix, m = rows.length). */
function shrinkageSolver(z, labels, rows, d) {
  const m = rows.length;
  const classes = [...new Set(rows.map((i) => labels[i]))].sort((a, b) => a - b);
  const slot = new Map(classes.map((cls, i) => [cls, i]));
  const means = classes.map(() => new Float64Array(d));
  const counts = new Float64Array(classes.length);
  for (const i of rows) {
    const s = slot.get(labels[i]);
    counts[s] += 1;
    for (let j = 0; j < d; j++) means[s][j] += z[i * d + j];
  }
  means.forEach((mean, s) => { for (let j = 0; j < d; j++) mean[j] /= counts[s]; });
  const centre = new Float64Array(d);
  for (const mean of means) for (let j = 0; j < d; j++) centre[j] += mean[j];
  for (let j = 0; j < d; j++) centre[j] /= means.length;
  const dev = new Float64Array(m * d);
  rows.forEach((i, r) => {
    const mean = means[slot.get(labels[i])];
    for (let j = 0; j < d; j++) dev[r * d + j] = z[i * d + j] - mean[j];
  });
  const L = new Float64Array(m * m);
  let trace = 0;
  for (let i = 0; i < m; i++) {
    for (let k = 0; k <= i; k++) {
      let s = 0;
      for (let j = 0; j < d; j++) s += dev[i * d + j] * dev[k * d + j];
      L[i * m + k] = s;
    }
    trace += L[i * m + i];
  }
  trace /= m;
  if (!(trace > 0)) return (x) => Float64Array.from(x, (v, j) => v - centre[j]);
  const a = (SHRINK * trace) / d;
  for (let i = 0; i < m; i++) L[i * m + i] += m * a;
  for (let j = 0; j < m; j++) { // Cholesky, lower triangle in place
    let s = L[j * m + j];
    for (let k = 0; k < j; k++) s -= L[j * m + k] ** 2;
    const diag = Math.sqrt(s);
    L[j * m + j] = diag;
    for (let i = j + 1; i < m; i++) {
      let t = L[i * m + j];
      for (let k = 0; k < j; k++) t -= L[i * m + k] * L[j * m + k];
      L[i * m + j] = t / diag;
    }
  }
  return (x) => {
    const rhs = Float64Array.from(x, (v, j) => v - centre[j]);
    const y = new Float64Array(m);
    for (let i = 0; i < m; i++) {
      let s = 0;
      for (let j = 0; j < d; j++) s += dev[i * d + j] * rhs[j];
      for (let k = 0; k < i; k++) s -= L[i * m + k] * y[k];
      y[i] = s / L[i * m + i];
    }
    for (let i = m - 1; i >= 0; i--) {
      let s = y[i];
      for (let k = i + 1; k < m; k++) s -= L[k * m + i] * y[k];
      y[i] = s / L[i * m + i];
    }
    for (let i = 0; i < m; i++) for (let j = 0; j < d; j++) rhs[j] -= dev[i * d + j] * y[i];
    return rhs.map((v) => v / a);
  };
}

/** Phi(x) through erf by Abramowitz & Stegun 7.1.26 (_normal_cdf). */
function normalCdf(x) {
  const y = Math.abs(x) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * y);
  const poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  const erf = 1 - poly * Math.exp(-y * y);
  return 0.5 * (1 + (x < 0 ? -erf : erf));
}

/** Student's t quantile with nu degrees of freedom at the normal quantile z (Cornish-Fisher, _student_quantile). */
function studentQuantile(nu, z) {
  return z + (z ** 3 + z) / (4 * nu) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * nu ** 2);
}

/** The bias at which the new class takes OLD_LOSS_BUDGET of an old class's
 * photos on average over the classes, each class's thresholds taken as normal,
 * the spread widened by Student's t over the normal quantile (_budget_bias);
 * null when no class has two examples that differ. */
function budgetBias(tOld, labels) {
  const mus = [];
  const sds = [];
  for (const cls of [...new Set(labels)].sort((a, b) => a - b)) {
    const t = [];
    for (let i = 0; i < tOld.length; i++) if (labels[i] === cls) t.push(tOld[i]);
    if (t.length < 2) continue;
    const mu = t.reduce((a, b) => a + b, 0) / t.length;
    const sd = Math.sqrt(t.reduce((a, v) => a + (v - mu) ** 2, 0) / (t.length - 1)) * Math.sqrt(1 + 1 / t.length)
      * studentQuantile(t.length - 1, Z_OLD_LOSS_BUDGET) / Z_OLD_LOSS_BUDGET;
    if (sd > 0) { mus.push(mu); sds.push(sd); }
  }
  if (!mus.length) return null;
  let lo = Math.min(...mus.map((mu, i) => mu - 10 * sds[i]));
  let hi = Math.max(...mus.map((mu, i) => mu + 10 * sds[i]));
  for (let it = 0; it < BISECTIONS; it++) {
    const mid = 0.5 * (lo + hi);
    let share = 0;
    for (let i = 0; i < mus.length; i++) share += normalCdf((mid - mus[i]) / sds[i]);
    if (share / mus.length > OLD_LOSS_BUDGET) hi = mid;
    else lo = mid;
  }
  return lo;
}

/** The balanced-accuracy threshold between the new examples' tNew (won when
 * bias > t) and the stored ones' tOld, the middle of the best interval (_separating_bias). */
function separatingBias(tNew, tOld) {
  tNew = Float64Array.from(tNew).sort();
  tOld = Float64Array.from(tOld).sort();
  const cuts = [...new Set([...tNew, ...tOld])].sort((a, b) => a - b);
  const mids = [cuts[0] - 1];
  for (let i = 0; i + 1 < cuts.length; i++) mids.push((cuts[i] + cuts[i + 1]) / 2);
  mids.push(cuts[cuts.length - 1] + 1);
  const scores = [];
  let iNew = 0;
  let iOld = 0;
  for (const mid of mids) {
    while (iNew < tNew.length && tNew[iNew] < mid) iNew++;
    while (iOld < tOld.length && tOld[iOld] < mid) iOld++;
    const kept = tOld.length ? (tOld.length - iOld) / tOld.length : 1;
    scores.push(iNew / tNew.length + kept);
  }
  const top = Math.max(...scores);
  const best = mids.filter((_, i) => scores[i] === top);
  return best[best.length >> 1];
}

/** Each row's part: its rank among the rows of its class, modulo FOLDS (fold_of). */
function foldOf(labels) {
  const seen = new Map();
  return Int32Array.from(labels, (cls) => {
    const r = seen.get(cls) ?? 0;
    seen.set(cls, r + 1);
    return r % FOLDS;
  });
}

export class Model {
  constructor(base, info, session, head) {
    this.base = base;
    this.info = info;
    this.spec = info.input_spec;
    this.dim = info.feature_dim;
    this.l2 = info.l2;
    this.scope = new URL(base).href;
    this._session = session;
    this._step = null;
    this._mean = head.arrays.mean.data;
    this._scale = head.arrays.scale.data;
    this._head = head;
    this.stateNote = null; // why a saved state was not restored, if it was not
    this._fromBundle();
  }

  _fromBundle() {
    const a = this._head.arrays;
    this._labels = [...this.info.labels];
    this.weight = Float32Array.from(a.weight.data);
    this.bias = Float32Array.from(a.bias.data);
    this._features = Float32Array.from(a.exemplar_features.data);
    this._featureLabels = Int32Array.from(a.exemplar_labels.data);
    this.numAdded = 0;
    this.history = [];
  }

  /** The class names, in the head's order. */
  get labels() {
    return [...this._labels];
  }

  get numStored() {
    return this._featureLabels.length;
  }

  /** Stored examples per class (the bundle's exemplars included). */
  counts() {
    const out = Object.fromEntries(this._labels.map((l) => [l, 0]));
    for (const c of this._featureLabels) out[this._labels[c]] += 1;
    return out;
  }

  // -- images -> features

  async _tensors(images, names) {
    const size = this.spec.image_size;
    const channels = this.spec.channels === 'L' ? 1 : 3;
    const per = channels * size * size;
    const batch = new Float32Array(images.length * per);
    for (let i = 0; i < images.length; i++) {
      const decoded = await decodeImage(images[i], names[i]);
      toTensor(decoded, this.spec, batch.subarray(i * per, (i + 1) * per));
    }
    return new ort.Tensor('float32', batch, [images.length, channels, size, size]);
  }

  /** Raw features (n x dim, Float32Array) of images, EMBED_BATCH at a time. */
  async embed(images, names = null, onProgress = null) {
    images = Array.from(images);
    names = names || images.map((img, i) => img?.name || `image ${i + 1}`);
    const out = new Float32Array(images.length * this.dim);
    for (let start = 0; start < images.length; start += EMBED_BATCH) {
      const input = await this._tensors(images.slice(start, start + EMBED_BATCH), names.slice(start, start + EMBED_BATCH));
      const result = await this._session.run({ input });
      out.set(result.features.data, start * this.dim);
      input.dispose?.();
      result.features.dispose?.();
      if (onProgress) await onProgress(Math.min(start + EMBED_BATCH, images.length), images.length);
    }
    if (!isFiniteArray(out)) {
      throw new EdgetlError('the feature model computed values that are not numbers; export the web app again');
    }
    return out;
  }

  _standardise(features) {
    const z = new Float32Array(features.length);
    for (let i = 0; i < features.length; i++) {
      const j = i % this.dim;
      z[i] = Math.fround(Math.fround(features[i] - this._mean[j]) / this._scale[j]);
    }
    return z;
  }

  _logits(z, n) {
    const c = this._labels.length;
    const out = new Float64Array(n * c);
    for (let i = 0; i < n; i++) {
      for (let k = 0; k < c; k++) {
        let s = this.bias[k];
        const row = k * this.dim;
        const zi = i * this.dim;
        for (let j = 0; j < this.dim; j++) s += z[zi + j] * this.weight[row + j];
        out[i * c + k] = s;
      }
    }
    return out;
  }

  /** Class probabilities (one array per image) for a list of images. */
  async predictProba(images) {
    images = Array.from(images);
    const z = this._standardise(await this.embed(images));
    const c = this._labels.length;
    const logits = this._logits(z, images.length);
    return images.map((_, i) => softmaxRow(Array.from(logits.subarray(i * c, (i + 1) * c))));
  }

  /** The topK labels of one image, best first: [{label, probability, index}]. */
  async predict(image, { topK = 3 } = {}) {
    const [proba] = await this.predictProba([image]);
    return proba
      .map((probability, index) => ({ label: this._labels[index], probability, index }))
      .sort((a, b) => b.probability - a.probability || a.index - b.index)
      .slice(0, Math.max(1, topK));
  }

  // -- learning

  /** Embed `images` as examples of `label` (a new label becomes a class at
   * once, imprinted); keeps their features only. All or nothing: one bad
   * image refuses the call and nothing is stored. Returns the number added;
   * `onProgress(done, total)` is called as the photos are embedded. */
  async addExamples(images, label, { onProgress = null } = {}) {
    label = String(label ?? '').trim();
    if (!label) throw new EdgetlError('the label is empty; type a name for the class');
    if (controlCharacters(label)) throw new EdgetlError('the label contains control characters; a label is one line of plain text');
    images = Array.from(images ?? []);
    if (!images.length) throw new EdgetlError(`no images given for '${label}'; add at least one photo`);
    const feats = await this.embed(images, null, onProgress);
    if (!this._labels.includes(label)) {
      this._imprint(this._standardise(feats), images.length);
      this._labels.push(label);
    }
    const index = this._labels.indexOf(label);
    const all = new Float32Array(this._features.length + feats.length);
    all.set(this._features);
    all.set(feats, this._features.length);
    this._features = all;
    const labels = new Int32Array(this._featureLabels.length + images.length);
    labels.set(this._featureLabels);
    labels.fill(index, this._featureLabels.length);
    this._featureLabels = labels;
    this.numAdded += images.length;
    return images.length;
  }

  /** A new class row from its examples alone (Personalizer._imprint): a
   * shrinkage discriminant direction at the median length of the other rows;
   * the bias set on honest numbers (the stored examples scored out of fold,
   * their best logits less the bundle's exemplar_optimism, the new examples
   * leave-one-out): at most the new class's NEW_CLASS_RECALL bound and the
   * OLD_LOSS_BUDGET bias (budgetBias); with one example the balanced-accuracy
   * threshold (separatingBias) within the same budget. */
  _imprint(zNew, k) {
    const d = this.dim;
    const c = this._labels.length;
    const n = this._featureLabels.length;
    const labels = Array.from(this._featureLabels);
    const norms = [];
    for (let r = 0; r < c; r++) {
      let s = 0;
      for (let j = 0; j < d; j++) s += this.weight[r * d + j] ** 2;
      norms.push(Math.fround(Math.sqrt(s)));
    }
    const length = median(norms);
    const row = (v) => {
      let norm = 0;
      for (let j = 0; j < d; j++) norm += v[j] * v[j];
      norm = Math.max(Math.sqrt(norm), 1e-12);
      return v.map((x) => (length * x) / norm);
    };
    const dot = (z, i, v) => {
      let s = 0;
      for (let j = 0; j < d; j++) s += z[i * d + j] * v[j];
      return s;
    };
    const zOld = this._standardise(this._features);
    const centreNew = new Float64Array(d);
    for (let i = 0; i < k; i++) for (let j = 0; j < d; j++) centreNew[j] += zNew[i * d + j];
    for (let j = 0; j < d; j++) centreNew[j] /= k;
    const all = labels.map((_, i) => i);
    const solveAll = shrinkageSolver(zOld, labels, all, d);
    const w = Float32Array.from(row(solveAll(centreNew)));
    // The stored examples' honest thresholds: each part scored by the row built from the others.
    const folds = foldOf(labels);
    const scoreOld = new Float64Array(n);
    for (let f = 0; f < FOLDS; f++) {
      const inside = all.filter((i) => folds[i] !== f);
      if (inside.length === n || !inside.length) continue;
      const v = row(shrinkageSolver(zOld, labels, inside, d)(centreNew));
      for (let i = 0; i < n; i++) if (folds[i] === f) scoreOld[i] = dot(zOld, i, v);
    }
    const top = (z, m) => {
      const logits = this._logits(z, m);
      const out = new Float64Array(m);
      for (let i = 0; i < m; i++) {
        let best = -Infinity;
        for (let r = 0; r < c; r++) best = Math.max(best, logits[i * c + r]);
        out[i] = best;
      }
      return out;
    };
    const topOld = top(zOld, n);
    const optimism = this._head.arrays.exemplar_optimism?.data;
    const bundleLabels = this._head.arrays.exemplar_labels.data;
    const nb = bundleLabels.length;
    if (optimism && n >= nb && labels.slice(0, nb).every((cls, i) => cls === Number(bundleLabels[i]))) {
      for (let i = 0; i < nb; i++) topOld[i] -= optimism[i];
    }
    const tOld = Float64Array.from(topOld, (t, i) => t - scoreOld[i]);
    const topNew = top(zNew, k);
    const budget = budgetBias(tOld, labels);
    let newBias = null;
    if (k >= 2) {
      const tLoo = new Float64Array(k);
      for (let i = 0; i < k; i++) {
        const others = Float64Array.from(centreNew, (v, j) => (k * v - zNew[i * d + j]) / (k - 1));
        tLoo[i] = topNew[i] - dot(zNew, i, row(solveAll(others)));
      }
      let m = 0;
      for (const t of tLoo) m += t;
      m /= k;
      let ss = 0;
      for (const t of tLoo) ss += (t - m) ** 2;
      const s = Math.sqrt(ss / (k - 1)) * Math.sqrt(1 + 1 / k);
      if (s > 0 && Number.isFinite(s)) newBias = m + studentQuantile(k - 1, Z_NEW_CLASS_RECALL) * s;
    }
    if (newBias === null) newBias = separatingBias(Float64Array.from(topNew, (t, i) => t - dot(zNew, i, w)), tOld);
    if (budget !== null) newBias = Math.min(newBias, budget);
    const weight = new Float32Array(this.weight.length + d);
    weight.set(this.weight);
    weight.set(w, this.weight.length);
    this.weight = weight;
    const bias = new Float32Array(this.bias.length + 1);
    bias.set(this.bias);
    bias[this.bias.length] = newBias;
    this.bias = bias;
  }

  /** 1 / the largest eigenvalue of the stored features' second moment
   * (power iteration from the start vector Python uses). */
  defaultLearningRate() {
    const z = this._standardise(this._features);
    const n = this._featureLabels.length;
    const d = this.dim;
    const start = new Mulberry32(0);
    let v = Float64Array.from({ length: d }, () => Math.fround(start.uniform() - 0.5));
    let top = 0;
    for (let it = 0; it < 30; it++) {
      const u = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        let s = 0;
        for (let j = 0; j < d; j++) s += z[i * d + j] * v[j];
        u[i] = s;
      }
      const next = new Float64Array(d);
      for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) next[j] += z[i * d + j] * u[i];
      let norm = 0;
      for (let j = 0; j < d; j++) {
        next[j] /= n;
        norm += next[j] ** 2;
      }
      top = Math.sqrt(norm);
      v = next.map((x) => x / Math.max(top, 1e-12));
    }
    return 1 / Math.max(top, 1e-6);
  }

  /** Train the head on every stored feature through train_step.onnx, with the
   * class-balanced order of Personalizer.fit. Returns the per-epoch mean loss
   * records ({epoch, loss, examples, classes}), also kept in `history`;
   * `onEpoch(record)` is called after each epoch. */
  async fit({ epochs = 20, learningRate = null, batchSize = 32, l2 = null, seed = 0, onEpoch = null } = {}) {
    if (!(Number.isInteger(epochs) && epochs >= 1)) throw new EdgetlError(`epochs must be a whole number >= 1, got ${epochs}`);
    if (new Set(this._featureLabels).size < 2) {
      throw new EdgetlError('training needs examples of at least two classes; add photos of another class');
    }
    if (!this._step) {
      this._step = await ort.InferenceSession.create(new URL(this.info.train_step, this.base).href, { executionProviders: ['wasm'] });
    }
    const lr = Math.fround(learningRate ?? this.defaultLearningRate());
    const lrT = new ort.Tensor('float32', Float32Array.of(lr), []);
    const l2T = new ort.Tensor('float32', Float32Array.of(l2 ?? this.l2), []);
    const rng = new Mulberry32(seed);
    const d = this.dim;
    const c = this._labels.length;
    let weight = this.weight;
    let bias = this.bias;
    const records = [];
    for (let e = 0; e < epochs; e++) {
      const order = balancedOrder(this._featureLabels, rng);
      let total = 0;
      for (let start = 0; start < order.length; start += batchSize) {
        const rows = order.subarray(start, start + batchSize);
        const features = new Float32Array(rows.length * d);
        rows.forEach((r, i) => features.set(this._features.subarray(r * d, (r + 1) * d), i * d));
        const out = await this._step.run({
          weight: new ort.Tensor('float32', weight, [c, d]),
          bias: new ort.Tensor('float32', bias, [c]),
          features: new ort.Tensor('float32', features, [rows.length, d]),
          labels: new ort.Tensor('int64', BigInt64Array.from(rows, (r) => BigInt(this._featureLabels[r])), [rows.length]),
          learning_rate: lrT,
          l2: l2T,
        });
        weight = out.weight_out.data;
        bias = out.bias_out.data;
        total += out.loss.data[0] * rows.length;
      }
      const loss = total / order.length;
      if (!(Number.isFinite(loss) && isFiniteArray(weight) && isFiniteArray(bias))) {
        throw new EdgetlError(`training diverged at epoch ${records.length + 1} (loss ${loss}); the head was left as it was: fit with a smaller learning rate (it was ${lr})`);
      }
      const record = { epoch: this.history.length + records.length + 1, loss, examples: this.numStored, classes: c };
      records.push(record);
      if (onEpoch) await onEpoch(record);
    }
    this.weight = Float32Array.from(weight);
    this.bias = Float32Array.from(bias);
    this.history.push(...records);
    return records;
  }

  // -- state

  _record() {
    return {
      format: STATE_FORMAT,
      featuresSha256: this.info.features_sha256,
      labels: [...this._labels],
      weight: Float32Array.from(this.weight),
      bias: Float32Array.from(this.bias),
      features: Float32Array.from(this._features),
      featureLabels: Int32Array.from(this._featureLabels),
      numAdded: this.numAdded,
      history: this.history.map((h) => ({ ...h })),
      savedAt: new Date().toISOString(),
    };
  }

  _apply(record, source) {
    const c = record.labels.length;
    const n = record.featureLabels.length;
    const ok = record.format === STATE_FORMAT && Array.isArray(record.labels) && c >= 1
      && record.labels.every((l) => typeof l === 'string') && record.weight.length === c * this.dim
      && record.bias.length === c && record.features.length === n * this.dim
      && record.featureLabels.every((k) => Number.isInteger(k) && k >= 0 && k < c)
      && isFiniteArray(record.weight) && isFiniteArray(record.bias) && isFiniteArray(record.features);
    if (!ok) throw new EdgetlError(`${source} does not fit this app's model (damaged, or from another app); reset or import another state`);
    if (record.featuresSha256 !== this.info.features_sha256) {
      throw new EdgetlError(`${source} was made with another feature model; its examples do not fit this app: reset, or add them again`);
    }
    this._labels = [...record.labels];
    this.weight = Float32Array.from(record.weight);
    this.bias = Float32Array.from(record.bias);
    this._features = Float32Array.from(record.features);
    this._featureLabels = Int32Array.from(record.featureLabels);
    this.numAdded = record.numAdded | 0;
    this.history = Array.isArray(record.history) ? record.history : [];
  }

  /** Keep the state (head, stored features, labels) in IndexedDB: written
   * under a new key, then switched to; the previous state survives a tab
   * closed at any moment. */
  async save() {
    await writeSaved(this.scope, this._record());
  }

  /** Forget what was learned here: back to the bundle's head and exemplars. */
  async reset() {
    await deleteSaved(this.scope);
    this._fromBundle();
  }

  /** The state as a file (safetensors, the layout of Python's personal.safetensors). */
  exportState() {
    const n = this._featureLabels.length;
    const c = this._labels.length;
    return writeSafetensors({
      weight: { dtype: 'F32', shape: [c, this.dim], data: this.weight },
      bias: { dtype: 'F32', shape: [c], data: this.bias },
      features: { dtype: 'F32', shape: [n, this.dim], data: this._features },
      labels: { dtype: 'I64', shape: [n], data: this._featureLabels },
    }, {
      format: STATE_FORMAT,
      run_dir: this.scope,
      int8: this.info.precision === 'int8' ? '1' : '0',
      labels: JSON.stringify(this._labels),
      features_sha256: this.info.features_sha256,
      num_added: String(this.numAdded),
      history: JSON.stringify(this.history),
    });
  }

  /** Replace the state by one exported with exportState() (not saved until save()). */
  async importState(file) {
    const name = file?.name || 'the state file';
    const { arrays, metadata } = readSafetensors(await new Response(file).arrayBuffer(), name);
    let labels;
    let history;
    try {
      labels = JSON.parse(metadata.labels);
      history = JSON.parse(metadata.history || '[]');
    } catch {
      throw new EdgetlError(`${name} is not an edgetl state (no labels); choose a file exported by this app`);
    }
    if (!(arrays.weight && arrays.bias && arrays.features && arrays.labels)) {
      throw new EdgetlError(`${name} is not an edgetl state (arrays missing); choose a file exported by this app`);
    }
    this._apply({
      format: metadata.format, featuresSha256: metadata.features_sha256, labels,
      weight: arrays.weight.data, bias: arrays.bias.data, features: arrays.features.data,
      featureLabels: arrays.labels.data, numAdded: Number(metadata.num_added) || 0, history,
    }, name);
  }
}

/** What the page runs on: onnxruntime-web's version, its wasm threads (more
 * than 1 only when the page is cross-origin isolated) and the precision. */
export function runtimeInfo(model = null) {
  return {
    onnxruntimeWeb: ort.env.versions?.web ?? null,
    threads: ort.env.wasm.numThreads,
    crossOriginIsolated: globalThis.crossOriginIsolated === true,
    precision: model?.info?.precision ?? null,
  };
}

/** Load the web bundle at `baseUrl` (the folder holding bundle/), restoring
 * the state saved in this browser, if any (`{restore: false}` starts from the
 * bundle). */
export async function load(baseUrl = new URL('./', import.meta.url).href, { restore = true } = {}) {
  const base = new URL(baseUrl, location.href).href.replace(/\/?$/, '/');
  const info = await fetchChecked(new URL('bundle/bundle.json', base).href, 'json');
  if (info.format !== WEB_FORMAT) throw new EdgetlError(`${base} holds no edgetl web bundle (format ${info.format}); export it with 'edgetl export RUN_DIR --format web'`);
  const [headBytes, modelBytes] = await Promise.all([
    fetchChecked(new URL(info.head, base).href),
    fetchChecked(new URL(info.features, base).href),
  ]);
  const head = readSafetensors(headBytes, info.head);
  const session = await ort.InferenceSession.create(new Uint8Array(modelBytes), { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
  const model = new Model(base, info, session, head);
  if (restore) {
    try {
      const saved = await readSaved(model.scope);
      if (saved) model._apply(saved, 'the saved state');
      await sweepSaved(model.scope);
    } catch (err) {
      model.stateNote = err.message;
    }
  }
  return model;
}
