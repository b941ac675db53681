// The edgetl web app: predict from a photo or the live camera, teach new
// classes, train the head, all in this browser (edgetl.js). Everything a
// person typed or chose (labels, file names) reaches the page through
// textContent / attributes only, never as HTML.

const $ = (id) => document.getElementById(id);
const SVG = 'http://www.w3.org/2000/svg';
const TOP_K = 3;

let edgetl = null; // the module, once imported
let model = null; // the loaded Model
let busy = false;
let lastImage = null; // {blob, name}: the last photo predicted (kept in memory only, for "Add the last photo")
let previewUrl = null;
let stream = null; // the live camera's MediaStream
let chosenExamples = []; // the Files chosen for Teach
let trainingCurve = null; // losses of the fit in progress, drawn after the saved history
let lastFitLength = 0; // epochs of the last fit of this visit (drawn in colour, earlier ones in grey)

// ------------------------------------------------------------------ messages, busy state

function say(text, kind = '') {
  const el = $('message');
  el.textContent = text;
  el.className = kind;
}

function showError(err) {
  if (edgetl && err instanceof edgetl.EdgetlError) {
    say(err.message, 'error');
  } else {
    // Not a problem with the input: still shown, and logged with its stack.
    console.error(err);
    say(`Unexpected error: ${err?.message || String(err)}`, 'error');
  }
}

function setBusy(on) {
  busy = on;
  if (on) document.body.dataset.busy = '1';
  else delete document.body.dataset.busy;
  const ready = model !== null;
  for (const el of document.querySelectorAll('main button, main input')) {
    if (el.id === 'camera-stop') continue; // the camera can always be switched off
    el.disabled = on || !ready;
  }
  if (!on && ready) {
    $('camera-snap').disabled = stream === null;
    $('add-last-button').disabled = lastImage === null;
  }
  for (const label of document.querySelectorAll('label.file-button')) {
    label.classList.toggle('disabled', on || !ready);
  }
}

/** Run one user action: buttons disabled meanwhile, every error shown. */
async function task(working, fn) {
  if (busy) return;
  setBusy(true);
  if (working) say(working, 'working');
  try {
    await fn();
  } catch (err) {
    showError(err);
  } finally {
    setBusy(false);
  }
}

// ------------------------------------------------------------------ header, counts, labels

function renderModel() {
  const info = model.info;
  $('model-name').textContent = info.name;
  document.title = `edgetl: ${info.name}`;
  $('model-precision').textContent = info.precision;
  const n = model.labels.length;
  $('model-classes').textContent = `${n} ${n === 1 ? 'class' : 'classes'}`;
  const rt = edgetl.runtimeInfo ? edgetl.runtimeInfo(model) : {};
  const threads = rt.threads ? `, ${rt.threads} ${rt.threads === 1 ? 'thread' : 'threads'}` : '';
  $('ort-version').textContent = `onnxruntime-web ${rt.onnxruntimeWeb || info.onnxruntime_web}${threads}`;

  const counts = model.counts();
  const fromBundle = new Set(info.labels);
  const list = $('counts');
  list.replaceChildren();
  const options = $('label-options');
  options.replaceChildren();
  for (const label of model.labels) {
    const li = document.createElement('li');
    li.dataset.label = label;
    li.dataset.count = String(counts[label]);
    const name = document.createElement('span');
    name.className = 'count-label';
    name.textContent = label;
    if (!fromBundle.has(label)) {
      const tag = document.createElement('span');
      tag.className = 'tag';
      tag.textContent = 'new';
      name.append(' ', tag);
    }
    const count = document.createElement('span');
    count.className = 'count-value';
    count.textContent = String(counts[label]);
    li.append(name, count);
    list.append(li);
    const opt = document.createElement('option');
    opt.value = label;
    options.append(opt);
  }
  drawLoss();
}

// ------------------------------------------------------------------ predict

function showPreview(blob, name) {
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(blob);
  const img = $('preview');
  img.onload = () => img.classList.toggle('pixelated', img.naturalWidth < 160 || img.naturalHeight < 160);
  img.src = previewUrl;
  $('preview-name').textContent = name;
}

function clearResult() {
  $('result').hidden = true;
  $('predictions').replaceChildren();
  $('latency').textContent = '–';
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = null;
  $('preview').removeAttribute('src');
  $('preview-name').textContent = '';
}

function percent(p) {
  if (p > 0 && p < 0.001) return '<0.1%';
  if (p < 1 && p > 0.999) return '>99.9%';
  return `${(p * 100).toFixed(1)}%`;
}

function renderPredictions(top, ms) {
  const list = $('predictions');
  list.replaceChildren();
  for (const { label, probability } of top) {
    const li = document.createElement('li');
    li.dataset.label = label;
    li.dataset.probability = probability.toFixed(4);
    const name = document.createElement('span');
    name.className = 'pred-label';
    name.textContent = label;
    const pct = document.createElement('span');
    pct.className = 'pred-value';
    pct.textContent = percent(probability);
    const bar = document.createElement('span');
    bar.className = 'bar';
    const fill = document.createElement('span');
    fill.className = 'fill';
    fill.style.width = `${Math.max(0, Math.min(100, probability * 100)).toFixed(1)}%`;
    bar.append(fill);
    li.append(name, pct, bar);
    list.append(li);
  }
  $('latency').textContent = `${Math.round(ms)} ms`;
  $('result').hidden = false;
}

/** Predict `image` (File/Blob or canvas); `blob` is what the preview shows and
 * what "Add the last photo" adds. Nothing is shown for an image refused. */
async function predictImage(image, blob, name) {
  const t0 = performance.now();
  let top;
  try {
    top = await model.predict(image, { topK: TOP_K });
  } catch (err) {
    clearResult();
    lastImage = null;
    throw err;
  }
  const ms = performance.now() - t0;
  lastImage = { blob, name };
  showPreview(blob, name);
  renderPredictions(top, ms);
  say(`${top[0].label}: ${percent(top[0].probability)}`, 'ok');
}

/** After the head changed, predict the last photo again (what changed shows at once). */
async function repredict() {
  if (!lastImage) return;
  const t0 = performance.now();
  const top = await model.predict(lastImage.blob, { topK: TOP_K });
  renderPredictions(top, performance.now() - t0);
}

function onPredictFile(input) {
  const file = input.files[0];
  input.value = '';
  if (!file) return;
  task('Predicting…', () => predictImage(file, file, file.name));
}

// ------------------------------------------------------------------ camera

async function startCamera() {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new edgetl.EdgetlError('the live camera needs the app served over HTTPS (or from localhost); use "Take photo" instead');
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      video: { facingMode: { ideal: 'environment' }, width: { ideal: 1280 }, height: { ideal: 720 } },
      audio: false,
    });
  } catch (err) {
    stream = null;
    const why = {
      NotAllowedError: 'camera access was refused; allow it in the browser\'s site settings, or use "Take photo"',
      NotFoundError: 'no camera was found on this device; use "Pick image" instead',
      NotReadableError: 'the camera is in use by another app; close it and try again',
      OverconstrainedError: 'the camera cannot give a usable picture; use "Take photo" instead',
    }[err?.name];
    if (why) throw new edgetl.EdgetlError(why);
    throw err;
  }
  const video = $('camera-video');
  video.srcObject = stream;
  $('camera').hidden = false;
  await video.play();
  for (const track of stream.getVideoTracks()) track.addEventListener('ended', stopCamera);
  say('Camera on: point it at something and press "Snap & predict".', 'ok');
}

function stopCamera() {
  if (stream) for (const track of stream.getTracks()) track.stop();
  stream = null;
  const video = $('camera-video');
  video.srcObject = null;
  $('camera').hidden = true;
  if (!busy) $('camera-snap').disabled = true;
}

async function snap() {
  const video = $('camera-video');
  if (!stream || !video.videoWidth) {
    throw new edgetl.EdgetlError('the camera has no picture yet; wait a moment and snap again');
  }
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext('2d').drawImage(video, 0, 0);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, 'image/png'));
  if (!blob) throw new Error('the camera frame could not be encoded');
  const name = `camera ${new Date().toLocaleTimeString()}`;
  await predictImage(canvas, blob, name);
}

// ------------------------------------------------------------------ teach

function chooseExamples(input) {
  chosenExamples = Array.from(input.files);
  input.value = '';
  const n = chosenExamples.length;
  $('examples-chosen').textContent = n ? `${n} ${n === 1 ? 'photo' : 'photos'} chosen.` : 'No photos chosen.';
  if (n && !$('label-input').value.trim()) say('Now type a label and press "Add examples".', 'ok');
}

async function persist(what) {
  await model.save();
  // Ask the browser not to evict the state under storage pressure (ignored when refused).
  navigator.storage?.persist?.().catch(() => {});
  return what;
}

async function addExamples(files, label) {
  const isNew = !model.labels.includes(label.trim());
  const added = await model.addExamples(files, label, {
    onProgress: (done, total) => say(`Reading photos: ${done} of ${total}…`, 'working'),
  });
  chosenExamples = [];
  $('examples-chosen').textContent = 'No photos chosen.';
  await persist();
  renderModel();
  await repredict();
  const shown = label.trim();
  say(`Added ${added} ${added === 1 ? 'photo' : 'photos'} to '${shown}'${isNew ? ' (a new class)' : ''}; ` +
      'saved on this device. Train to fold them in.', 'ok');
}

// ------------------------------------------------------------------ train, loss chart

function drawLoss() {
  const svg = $('loss-chart');
  svg.replaceChildren();
  const losses = [...model.history.map((h) => h.loss), ...(trainingCurve || [])];
  const W = 320;
  const H = 150;
  const left = 40;
  const right = 10;
  const top = 10;
  const bottom = 24;
  const el = (name, attrs, text) => {
    const e = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    svg.append(e);
    return e;
  };
  el('line', { x1: left, y1: H - bottom, x2: W - right, y2: H - bottom, class: 'axis' });
  el('line', { x1: left, y1: top, x2: left, y2: H - bottom, class: 'axis' });
  if (!losses.length) {
    el('text', { x: (left + W - right) / 2, y: (top + H - bottom) / 2 + 4, class: 'empty', 'text-anchor': 'middle' },
      'No training yet');
    $('loss-value').textContent = '–';
    return;
  }
  const max = Math.max(...losses) * 1.05 || 1;
  const n = losses.length;
  const x = (i) => left + (n === 1 ? 0.5 : i / (n - 1)) * (W - left - right);
  const y = (v) => top + (1 - v / max) * (H - top - bottom);
  for (const f of [0.5, 1]) {
    el('line', { x1: left, y1: y(max * f), x2: W - right, y2: y(max * f), class: 'grid' });
  }
  el('text', { x: left - 4, y: y(max) + 4, 'text-anchor': 'end', class: 'tick' }, max.toPrecision(2));
  el('text', { x: left - 4, y: y(max / 2) + 4, 'text-anchor': 'end', class: 'tick' }, (max / 2).toPrecision(2));
  el('text', { x: left - 4, y: H - bottom + 4, 'text-anchor': 'end', class: 'tick' }, '0');
  el('text', { x: left, y: H - 6, 'text-anchor': 'start', class: 'tick' }, 'epoch 1');
  el('text', { x: W - right, y: H - 6, 'text-anchor': 'end', class: 'tick' }, `${n}`);
  // Earlier fits in grey, the one in progress (or the last one) in colour.
  const current = trainingCurve ? model.history.length : Math.max(0, n - (lastFitLength || n));
  const points = (from, to) => losses.slice(from, to).map((v, i) => `${x(from + i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
  if (current > 0) el('polyline', { points: points(0, current + 1), class: 'line old' });
  el('polyline', { points: points(current, n), class: 'line' });
  const last = losses[n - 1];
  el('circle', { cx: x(n - 1), cy: y(last), r: 3.5, class: 'dot' });
  $('loss-value').textContent = last.toFixed(4);
}

async function train() {
  const epochs = Number($('epochs').value);
  if (!(Number.isInteger(epochs) && epochs >= 1 && epochs <= 1000)) {
    throw new edgetl.EdgetlError('epochs must be a whole number from 1 to 1000');
  }
  trainingCurve = [];
  const first = [];
  try {
    await model.fit({
      epochs,
      onEpoch: async (r) => {
        trainingCurve.push(r.loss);
        if (!first.length) first.push(r.loss);
        $('epoch-value').textContent = `epoch ${trainingCurve.length}/${epochs}`;
        drawLoss();
        // Let the page paint between epochs (a timer, not requestAnimationFrame: that
        // one stops while the tab is hidden, and training goes on then).
        await new Promise((resolve) => setTimeout(resolve, 0));
      },
    });
    lastFitLength = epochs;
  } finally {
    trainingCurve = null;
    $('epoch-value').textContent = '';
    drawLoss();
  }
  await persist();
  renderModel();
  $('epoch-value').textContent = `${epochs} epochs, ${model.numStored} examples`;
  await repredict();
  const end = model.history[model.history.length - 1].loss;
  say(`Trained ${epochs} epochs: loss ${first[0].toFixed(3)} → ${end.toFixed(3)}. Saved on this device.`, 'ok');
}

// ------------------------------------------------------------------ your data

function exportState() {
  const blob = model.exportState();
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  const day = new Date().toISOString().slice(0, 10);
  a.href = url;
  a.download = `${model.info.name}-state-${day}.safetensors`.replace(/[^\w.-]+/g, '_');
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  say(`Exported the state (${model.labels.length} classes, ${model.numStored} examples) as ${a.download}.`, 'ok');
}

async function importState(input) {
  const file = input.files[0];
  input.value = '';
  if (!file) return;
  await model.importState(file);
  await persist();
  lastFitLength = 0;
  renderModel();
  await repredict();
  say(`Imported ${file.name}: ${model.labels.length} classes, ${model.numStored} examples; saved on this device.`, 'ok');
}

async function reset() {
  await model.reset();
  lastFitLength = 0;
  renderModel();
  $('epoch-value').textContent = '';
  await repredict();
  say('Reset: back to the model as it was exported; what was learned here is forgotten.', 'ok');
}

// ------------------------------------------------------------------ start

function wire() {
  $('predict-file').addEventListener('change', (e) => onPredictFile(e.target));
  $('predict-pick').addEventListener('change', (e) => onPredictFile(e.target));
  $('camera-start').addEventListener('click', () => task('Starting the camera…', startCamera));
  $('camera-snap').addEventListener('click', () => task('Predicting…', snap));
  $('camera-stop').addEventListener('click', () => {
    stopCamera();
    say('Camera off.', 'ok');
  });
  $('examples-file').addEventListener('change', (e) => chooseExamples(e.target));
  $('examples-pick').addEventListener('change', (e) => chooseExamples(e.target));
  $('add-button').addEventListener('click', () => {
    const n = chosenExamples.length;
    task(`Reading ${n} ${n === 1 ? 'photo' : 'photos'}…`, () => addExamples(chosenExamples, $('label-input').value));
  });
  $('add-last-button').addEventListener('click', () => task('Adding the last photo…', () => {
    const { blob, name } = lastImage;
    return addExamples([new File([blob], name, { type: blob.type })], $('label-input').value);
  }));
  $('label-input').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && chosenExamples.length) $('add-button').click();
  });
  $('train-button').addEventListener('click', () => task('Training…', train));
  $('export-state').addEventListener('click', () => task('', async () => exportState()));
  $('import-state').addEventListener('change', (e) => task('Importing…', () => importState(e.target)));
  $('reset-button').addEventListener('click', () => {
    const ok = window.confirm('Forget every class and example taught on this device, and the training? '
      + 'Export the state first to keep a copy.');
    if (ok) task('Resetting…', reset);
  });
  // A hidden page does not hold the camera (battery, privacy).
  document.addEventListener('visibilitychange', () => {
    if (document.hidden && stream) stopCamera();
  });
  window.addEventListener('unhandledrejection', (e) => showError(e.reason));
  window.addEventListener('error', (e) => showError(e.error || e.message));
}

async function main() {
  wire();
  setBusy(true);
  try {
    edgetl = await import('./edgetl.js');
    window.edgetl = edgetl;
    model = await edgetl.load(new URL('./', location.href).href);
    window.app = model;
  } catch (err) {
    showError(err);
    document.body.dataset.failed = '1';
    setBusy(false);
    return;
  }
  renderModel();
  setBusy(false);
  if (model.stateNote) {
    say(`Started from the exported model: ${model.stateNote}`, 'error');
  } else if (model.numAdded || model.history.length) {
    say(`Ready. Restored what was learned here: ${model.numAdded} examples added, ${model.history.length} epochs trained.`, 'ok');
  } else {
    say('Ready. Take a photo to predict, or teach it something new.', 'ok');
  }
  document.body.dataset.ready = '1';
}

// The service worker is registered once the model has loaded: its precache
// then finds the files in the HTTP cache instead of downloading the big ones
// a second time beside the page (measured: the 13 MB fp32 model twice).
main().finally(() => {
  if ('serviceWorker' in navigator) {
    navigator.serviceWorker.register('sw.js').catch(() => {}); // offline use is a bonus, not a requirement
  }
});
