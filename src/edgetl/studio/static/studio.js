// edgetl studio: the page. A client of the studio's HTTP API
// (docs/studio-api.md) and of edgetl's web runtime (/webrt/edgetl.js).
//
// Rules kept throughout: every request goes through api() (it sends the
// X-Edgetl-Token header); user-supplied text (class names, file names,
// messages) reaches the page only through textContent and DOM attributes,
// never innerHTML; no inline styles in the HTML (element.style from here).

const TOKEN = document.querySelector('meta[name="edgetl-token"]')?.getAttribute('content') ?? '';
const UPLOAD_BATCH_FILES = 50; // files per request (the server allows up to limits.max_files)
const UPLOAD_BATCH_BYTES = 64e6; // bytes per request (the server allows 500 MB)
const REPORT_MAX_ITEMS = 1000; // refused/duplicate lines kept in the DOM
const LOG_MAX_LINES = 300;
const FIGURES_MAX = 200; // images of one confusion-matrix cell shown at once

const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));
const NUM = new Intl.NumberFormat('en');

const state = {
  project: null,
  options: null,
  limits: { max_file_mb: 25, max_files: 1000, page: 200 },
  readOnly: false,
  tab: 'gather',
  // gather
  currentClass: null,
  offset: 0,
  pageRequest: 0,
  uploading: false,
  webcamStream: null,
  // train
  events: null,
  eventsSeen: 0,
  trainStatus: 'idle',
  trainRun: null,
  epochs: [],
  bestCandidate: null,
  // results
  run: null, // the selected run id (results, preview, export)
  runDetail: null,
  runRequest: 0,
  // preview
  edgetl: null,
  previewRun: null,
  previewLoading: null,
  models: { int8: null, fp32: null },
  previewStream: null,
};

// ------------------------------------------------------------------ helpers

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
  }
}

function oneLine(text) {
  const s = String(text ?? '').trim();
  return (s.split(/\r?\n/)[0] || 'something went wrong').slice(0, 500);
}

function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) p.set(k, String(v));
  return p.toString();
}

/** fetch with the token header; JSON in and out; {error} answers become ApiError. */
async function api(path, { method = 'GET', json, body } = {}) {
  const headers = { 'X-Edgetl-Token': TOKEN, Accept: 'application/json' };
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  }
  let res;
  try {
    res = await fetch(path, { method, headers, body, credentials: 'same-origin', cache: 'no-store' });
  } catch {
    throw new ApiError('the studio server does not answer: is edgetl studio still running?', 0);
  }
  let data = null;
  if ((res.headers.get('content-type') || '').includes('json')) {
    try {
      data = await res.json();
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    if (res.status === 401) throw new ApiError('not signed in: open the URL printed by edgetl studio', 401);
    const reason = data && typeof data.error === 'string' ? data.error : `${method} ${path} answered HTTP ${res.status}`;
    throw new ApiError(oneLine(reason), res.status);
  }
  return data;
}

function showMessage(text, kind = 'info') {
  const m = $('#message');
  m.textContent = oneLine(text);
  m.dataset.kind = kind;
}

function showError(err) {
  showMessage(err?.message ?? String(err), 'error');
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') node.textContent = String(v);
    else if (k === 'className') node.className = v;
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (v === true) node.setAttribute(k, '');
    else node.setAttribute(k, String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function pct(v, digits = 1) {
  return typeof v === 'number' && Number.isFinite(v) ? `${(100 * v).toFixed(digits)}\u00a0%` : '–';
}

function fixed(v, digits = 3) {
  return typeof v === 'number' && Number.isFinite(v) ? v.toFixed(digits) : '–';
}

function count(n, word, plural = word.endsWith('s') ? `${word}es` : `${word}s`) {
  return `${NUM.format(n)} ${n === 1 ? word : plural}`;
}

function bigNumber(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '–';
  if (Math.abs(n) >= 1e9) return `${(n / 1e9).toFixed(2)} G`;
  if (Math.abs(n) >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  if (Math.abs(n) >= 1e3) return `${(n / 1e3).toFixed(1)} k`;
  return String(n);
}

function duration(seconds) {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds)) return '–';
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${r}` : `${m}:${r}`;
}

function thumbUrl(cls, name, size = 'thumb') {
  return `/api/image?${qs({ class: cls, name, size })}`;
}

function runPath(run, rest = '') {
  return `/api/runs/${encodeURIComponent(run)}${rest}`;
}

function setBusy(button, busy, busyText) {
  if (busy) {
    button.dataset.label ??= button.textContent;
    button.textContent = busyText;
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
  } else {
    if (button.dataset.label !== undefined) button.textContent = button.dataset.label;
    delete button.dataset.label;
    button.disabled = false;
    button.removeAttribute('aria-busy');
  }
}

const READ_ONLY_REASON = 'read-only project: it reads a --from folder the studio never writes into; change the files there';

// ------------------------------------------------------------------ tabs

const TABS = ['gather', 'train', 'results', 'preview', 'export'];

function showTab(name) {
  if (!TABS.includes(name)) return;
  state.tab = name;
  for (const t of TABS) {
    const tab = $(`#tab-${t}`);
    tab.setAttribute('aria-selected', String(t === name));
    tab.tabIndex = t === name ? 0 : -1;
    $(`#${t}`).hidden = t !== name;
  }
  if (name === 'train') drawLoss();
  if (name === 'results' && state.run && !state.runDetail) loadRun(state.run);
  if (name === 'preview') ensurePreview();
  if (name === 'export') renderExport();
}

function wireTabs() {
  for (const t of TABS) {
    const tab = $(`#tab-${t}`);
    tab.addEventListener('click', () => showTab(t));
    tab.addEventListener('keydown', (e) => {
      const i = TABS.indexOf(t);
      let j = null;
      if (e.key === 'ArrowRight') j = (i + 1) % TABS.length;
      else if (e.key === 'ArrowLeft') j = (i + TABS.length - 1) % TABS.length;
      else if (e.key === 'Home') j = 0;
      else if (e.key === 'End') j = TABS.length - 1;
      if (j === null) return;
      e.preventDefault();
      showTab(TABS[j]);
      $(`#tab-${TABS[j]}`).focus();
    });
  }
}

// ------------------------------------------------------------------ project

async function refreshProject() {
  const p = await api('/api/project');
  state.project = p;
  if (p.limits && typeof p.limits === 'object') state.limits = { ...state.limits, ...p.limits };
  state.readOnly = Boolean(p.read_only);
  renderProject();
  return p;
}

function renderProject() {
  const p = state.project;
  $('#project-name').textContent = p.name ?? '';
  document.title = `edgetl studio: ${p.name ?? ''}`;
  $('#project-total').textContent = count(p.total ?? 0, 'image');
  $('#project-version').textContent = `data v${p.data_version ?? '–'}`;
  $('#read-only-chip').hidden = !state.readOnly;
  if (state.readOnly && p.source) $('#read-only-chip').title = `reads ${p.source}; the studio never writes into it`;
  $('#read-only-note').hidden = !state.readOnly;
  $('#training-chip').hidden = !p.training;
  applyReadOnly();
  renderClasses();
  renderRuns();
}

function applyReadOnly() {
  const ro = state.readOnly;
  for (const sel of ['#new-class-name', '#new-class-button', '#upload-files', '#upload-folder', '#webcam-start', '#webcam-capture']) {
    const node = $(sel);
    node.disabled = ro || (sel === '#webcam-capture' && !state.webcamStream);
    if (ro) node.title = READ_ONLY_REASON;
    else node.removeAttribute('title');
  }
  for (const label of $$('.file-button', $('#dropzone'))) label.classList.toggle('disabled', ro);
  $('#dropzone').classList.toggle('disabled', ro);
  $('#dropzone').title = ro ? READ_ONLY_REASON : '';
}

// ------------------------------------------------------------------ gather: classes

function renderClasses() {
  const classes = state.project?.classes ?? [];
  const names = classes.map((c) => c.name);
  if (state.currentClass !== null && !names.includes(state.currentClass)) {
    state.currentClass = null;
  }
  if (state.currentClass === null && names.length) {
    state.currentClass = names[0];
    state.offset = 0;
  }
  const list = $('#classes');
  list.replaceChildren(
    ...classes.map((c) => {
      const selected = c.name === state.currentClass;
      const li = el('li', { className: selected ? 'selected' : '', tabindex: '0', 'aria-current': selected ? 'true' : null });
      li.dataset.class = c.name;
      const rename = el('button', { className: 'rename icon-button', type: 'button', title: `Rename ${c.name}`, 'aria-label': `Rename ${c.name}`, text: '✎' });
      const del = el('button', { className: 'delete icon-button', type: 'button', title: `Delete ${c.name}`, 'aria-label': `Delete ${c.name}`, text: '✕' });
      if (state.readOnly) {
        rename.disabled = true;
        del.disabled = true;
        rename.title = del.title = READ_ONLY_REASON;
      }
      li.append(el('span', { className: 'name', text: c.name }), el('span', { className: 'count', text: NUM.format(c.count ?? 0) }), rename, del);
      return li;
    }),
  );
  $('#classes-empty').hidden = classes.length > 0;
  renderCurrentClass();
}

function renderCurrentClass() {
  const c = (state.project?.classes ?? []).find((x) => x.name === state.currentClass);
  $('#current-class').textContent = c ? c.name : '–';
  $('#current-count').textContent = c ? count(c.count ?? 0, 'image') : '';
  if (!c) {
    $('#thumbs').replaceChildren();
    $('#page-info').textContent = state.project?.classes?.length ? 'select a class' : 'add a class first';
    $('#page-prev').disabled = true;
    $('#page-next').disabled = true;
  }
}

function selectClass(name) {
  if (name === state.currentClass) return;
  state.currentClass = name;
  state.offset = 0;
  for (const li of $$('#classes li')) {
    const on = li.dataset.class === name;
    li.classList.toggle('selected', on);
    if (on) li.setAttribute('aria-current', 'true');
    else li.removeAttribute('aria-current');
  }
  renderCurrentClass();
  loadPage();
}

async function createClass() {
  const input = $('#new-class-name');
  const name = input.value.trim();
  if (!name) {
    showMessage('type the new class name first', 'error');
    input.focus();
    return;
  }
  try {
    const res = await api('/api/classes', { method: 'POST', json: { name } });
    input.value = '';
    state.currentClass = res?.name ?? name;
    state.offset = 0;
    await refreshProject();
    loadPage();
    showMessage(`added the class ${state.currentClass}: now add its images`, 'ok');
  } catch (err) {
    showError(err);
  }
}

async function renameClass(name) {
  const next = window.prompt(`New name for the class ${name}`, name);
  if (next === null) return;
  const newName = next.trim();
  if (!newName || newName === name) return;
  try {
    const res = await api(`/api/classes/${encodeURIComponent(name)}`, { method: 'PATCH', json: { name: newName } });
    const renamed = res?.name ?? newName;
    if (state.currentClass === name) state.currentClass = renamed;
    await refreshProject();
    loadPage();
    showMessage(`renamed ${name} to ${renamed}`, 'ok');
  } catch (err) {
    showError(err);
  }
}

async function deleteClass(name) {
  const c = (state.project?.classes ?? []).find((x) => x.name === name);
  const n = c?.count ?? 0;
  if (!window.confirm(`Delete the class ${name} and its ${count(n, 'image')}? The folder goes to .studio/trash/ (nothing is lost).`)) return;
  try {
    const res = await api(`/api/classes/${encodeURIComponent(name)}`, { method: 'DELETE' });
    if (state.currentClass === name) state.currentClass = null;
    await refreshProject();
    loadPage();
    showMessage(`deleted the class ${name} (${count(res?.deleted ?? n, 'image')} moved to .studio/trash/)`, 'ok');
  } catch (err) {
    showError(err);
  }
}

function wireClasses() {
  $('#new-class-form').addEventListener('submit', (e) => {
    e.preventDefault();
    createClass();
  });
  const list = $('#classes');
  list.addEventListener('click', (e) => {
    const li = e.target.closest('li[data-class]');
    if (!li) return;
    const name = li.dataset.class;
    if (e.target.closest('.rename')) renameClass(name);
    else if (e.target.closest('.delete')) deleteClass(name);
    else selectClass(name);
  });
  list.addEventListener('keydown', (e) => {
    const li = e.target.closest('li[data-class]');
    if (!li || e.target !== li) return;
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      selectClass(li.dataset.class);
    }
  });
}

// ------------------------------------------------------------------ gather: thumbnails

function pageSize() {
  const page = Number(state.limits.page) || 200;
  return Math.max(1, Math.min(page, 200));
}

async function loadPage() {
  const cls = state.currentClass;
  if (cls === null) {
    renderCurrentClass();
    return;
  }
  const ticket = ++state.pageRequest;
  let data;
  try {
    data = await api(`/api/images?${qs({ class: cls, offset: state.offset, limit: pageSize() })}`);
  } catch (err) {
    if (ticket === state.pageRequest) showError(err);
    return;
  }
  if (ticket !== state.pageRequest || cls !== state.currentClass) return; // a newer request won
  const total = Number(data.total) || 0;
  if (state.offset > 0 && state.offset >= total) {
    // the class shrank under the current page: go to its last page
    state.offset = Math.max(0, Math.floor((total - 1) / pageSize()) * pageSize());
    loadPage();
    return;
  }
  renderThumbs(cls, data.images ?? [], total);
}

function renderThumbs(cls, images, total) {
  const frag = document.createDocumentFragment();
  for (const im of images) {
    const dup = Array.isArray(im.duplicate_of) && im.duplicate_of.length > 0;
    const img = el('img', {
      src: thumbUrl(cls, im.name),
      alt: im.name,
      loading: 'lazy',
      decoding: 'async',
      width: '96',
      height: '96',
    });
    img.dataset.name = im.name;
    img.addEventListener('error', () => img.classList.add('broken'), { once: true });
    const title = `${im.name}${typeof im.bytes === 'number' ? ` · ${bigNumber(im.bytes)}B` : ''}${dup ? ` · the same image as ${im.duplicate_of.join(', ')}` : ''}`;
    const link = el('a', { className: `thumb${dup ? ' duplicate' : ''}`, href: thumbUrl(cls, im.name, 'full'), target: '_blank', rel: 'noopener', title }, img);
    if (dup) link.append(el('span', { className: 'badge', text: 'duplicate' }));
    frag.append(link);
  }
  $('#thumbs').replaceChildren(frag);
  const first = images.length ? state.offset + 1 : 0;
  const last = state.offset + images.length;
  $('#page-info').textContent = total ? `${NUM.format(first)}–${NUM.format(last)} of ${NUM.format(total)}` : 'no image yet';
  $('#page-prev').disabled = state.offset <= 0;
  $('#page-next').disabled = last >= total;
  // keep the class's count in step with the server's
  const li = $$('#classes li').find((x) => x.dataset.class === cls);
  if (li) $('.count', li).textContent = NUM.format(total);
  $('#current-count').textContent = count(total, 'image');
}

function wirePager() {
  $('#page-prev').addEventListener('click', () => {
    state.offset = Math.max(0, state.offset - pageSize());
    loadPage();
  });
  $('#page-next').addEventListener('click', () => {
    state.offset += pageSize();
    loadPage();
  });
}

// ------------------------------------------------------------------ gather: uploads

function isHiddenPath(path) {
  return path.split('/').some((part) => part.startsWith('.') && part !== '.' && part !== '..');
}

function fileEntryFile(entry) {
  return new Promise((resolve, reject) => entry.file(resolve, reject));
}

function readAllEntries(dirEntry) {
  const reader = dirEntry.createReader();
  const all = [];
  return new Promise((resolve, reject) => {
    const next = () =>
      reader.readEntries((batch) => {
        if (!batch.length) resolve(all);
        else {
          all.push(...batch);
          next();
        }
      }, reject);
    next();
  });
}

async function walkEntry(entry, out) {
  if (entry.name.startsWith('.')) return;
  if (entry.isFile) {
    try {
      out.push(await fileEntryFile(entry));
    } catch {
      out.skipped = (out.skipped ?? 0) + 1;
    }
  } else if (entry.isDirectory) {
    for (const child of await readAllEntries(entry)) await walkEntry(child, out);
  }
}

/** The files of a drop, walking dropped folders (webkitGetAsEntry). */
async function filesFromDrop(dataTransfer) {
  const entries = [];
  const loose = [];
  // every entry must be taken before the first await: the list empties after the event
  for (const item of Array.from(dataTransfer.items ?? [])) {
    if (item.kind !== 'file') continue;
    const entry = item.webkitGetAsEntry?.();
    if (entry) entries.push(entry);
    else {
      const f = item.getAsFile();
      if (f) loose.push(f);
    }
  }
  if (!entries.length && !loose.length) loose.push(...Array.from(dataTransfer.files ?? []));
  const out = [];
  for (const entry of entries) await walkEntry(entry, out);
  return [...loose, ...out];
}

function reportItem(kind, text) {
  const list = $('#upload-report');
  const shown = list.querySelectorAll('li.refused, li.duplicate').length;
  if (kind !== 'summary' && shown >= REPORT_MAX_ITEMS) {
    let more = $('li.more', list);
    if (!more) {
      more = el('li', { className: 'more' });
      more.dataset.n = '0';
      list.append(more);
    }
    more.dataset.n = String(Number(more.dataset.n) + 1);
    more.textContent = `… and ${NUM.format(Number(more.dataset.n))} more (not listed)`;
    return;
  }
  const li = el('li', { className: kind, text });
  if (kind === 'summary') list.prepend(li);
  else list.append(li);
}

function batches(files) {
  const maxFiles = Math.max(1, Math.min(UPLOAD_BATCH_FILES, Number(state.limits.max_files) || UPLOAD_BATCH_FILES));
  const maxBytes = Math.min(UPLOAD_BATCH_BYTES, 0.9e6 * (Number(state.limits.max_request_mb) || 500));
  const out = [];
  let cur = [];
  let bytes = 0;
  for (const f of files) {
    if (cur.length && (cur.length >= maxFiles || bytes + f.size > maxBytes)) {
      out.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(f);
    bytes += f.size;
  }
  if (cur.length) out.push(cur);
  return out;
}

async function uploadFiles(fileList, { source = 'files' } = {}) {
  const cls = state.currentClass;
  if (state.readOnly) {
    showMessage(READ_ONLY_REASON, 'error');
    return;
  }
  if (cls === null) {
    showMessage('add or select a class first: the images go into the selected class', 'error');
    return;
  }
  if (state.uploading) {
    showMessage('an upload is running: wait for it to finish', 'error');
    return;
  }
  const all = Array.from(fileList);
  const files = all.filter((f) => !isHiddenPath(f.webkitRelativePath || f.name));
  const hidden = all.length - files.length;
  if (!files.length) {
    showMessage(hidden ? 'only hidden files (names starting with .) there: nothing to upload' : 'no file to upload', 'error');
    return;
  }
  const maxBytes = (Number(state.limits.max_file_mb) || 25) * 1e6;
  const report = $('#upload-report');
  report.replaceChildren();
  const tooBig = files.filter((f) => f.size > maxBytes);
  const toSend = files.filter((f) => f.size <= maxBytes);
  for (const f of tooBig) {
    reportItem('refused', `${f.name}: ${(f.size / 1e6).toFixed(1)} MB is over the ${state.limits.max_file_mb} MB limit per image; shrink it`);
  }
  const groups = batches(toSend);
  const bar = $('#upload-bar');
  const line = $('#upload-line');
  $('#upload-progress').hidden = false;
  bar.max = Math.max(1, toSend.length);
  bar.value = 0;
  let sent = 0;
  let added = 0;
  let refused = tooBig.length;
  let duplicates = 0;
  let failed = null;
  state.uploading = true;
  const t0 = performance.now();
  try {
    for (let i = 0; i < groups.length; i++) {
      const group = groups[i];
      line.textContent = `Uploading to ${cls}: ${NUM.format(sent)} of ${count(toSend.length, 'file')} (batch ${i + 1} of ${groups.length}) · ${NUM.format(added)} added · ${NUM.format(refused)} refused`;
      const form = new FormData();
      for (const f of group) form.append('files', f, f.name);
      let res;
      try {
        res = await api(`/api/images?${qs({ class: cls })}`, { method: 'POST', body: form });
      } catch (err) {
        if (err.status === 0 || err.status === 401 || err.status === 403 || err.status === 404) {
          failed = err;
          break;
        }
        for (const f of group) reportItem('refused', `${f.name}: ${err.message}`);
        refused += group.length;
        sent += group.length;
        bar.value = sent;
        continue;
      }
      for (const r of res?.refused ?? []) reportItem('refused', `${r.name}: ${r.reason}`);
      for (const d of res?.duplicates ?? []) reportItem('duplicate', `${d.name}: the same image as ${d.same_as}`);
      added += res?.added?.length ?? 0;
      refused += res?.refused?.length ?? 0;
      duplicates += res?.duplicates?.length ?? 0;
      sent += group.length;
      bar.value = sent;
    }
  } finally {
    state.uploading = false;
  }
  const secs = (performance.now() - t0) / 1000;
  const summary = `${cls}: ${count(added, 'image')} added, ${NUM.format(refused)} refused, ${count(duplicates, 'duplicate')} across classes`
    + (hidden ? `, ${count(hidden, 'hidden file')} skipped` : '')
    + ` (${source}, ${secs.toFixed(1)} s)`;
  line.textContent = failed ? `Stopped after ${NUM.format(sent)} of ${count(toSend.length, 'file')}: ${failed.message}` : `Done: ${summary}`;
  reportItem('summary', summary);
  if (failed) showError(failed);
  else showMessage(summary, refused ? 'error' : 'ok');
  try {
    await refreshProject();
  } catch (err) {
    showError(err);
  }
  loadPage();
  if (duplicates) loadDuplicates();
}

function wireUploads() {
  const files = $('#upload-files');
  files.addEventListener('change', () => {
    const list = Array.from(files.files ?? []);
    files.value = '';
    if (list.length) uploadFiles(list, { source: 'files' });
  });
  const folder = $('#upload-folder');
  folder.addEventListener('change', () => {
    const list = Array.from(folder.files ?? []);
    folder.value = '';
    if (list.length) uploadFiles(list, { source: 'folder' });
  });

  const zone = $('#dropzone');
  let depth = 0;
  zone.addEventListener('dragenter', (e) => {
    e.preventDefault();
    depth++;
    zone.classList.add('over');
  });
  zone.addEventListener('dragleave', () => {
    depth = Math.max(0, depth - 1);
    if (!depth) zone.classList.remove('over');
  });
  zone.addEventListener('dragover', (e) => {
    e.preventDefault();
    if (e.dataTransfer) e.dataTransfer.dropEffect = state.readOnly ? 'none' : 'copy';
  });
  zone.addEventListener('drop', async (e) => {
    e.preventDefault();
    e.stopPropagation();
    depth = 0;
    zone.classList.remove('over');
    if (state.readOnly) {
      showMessage(READ_ONLY_REASON, 'error');
      return;
    }
    showMessage('reading the dropped files…');
    let list;
    try {
      list = await filesFromDrop(e.dataTransfer);
    } catch (err) {
      showMessage(`cannot read the dropped files (${err?.message ?? err}); use the file or folder picker`, 'error');
      return;
    }
    uploadFiles(list, { source: 'drop' });
  });
  zone.addEventListener('keydown', (e) => {
    if (e.target === zone && (e.key === 'Enter' || e.key === ' ')) {
      e.preventDefault();
      $('#upload-files').click();
    }
  });
  // a file dropped next to the zone must not make the browser leave the page
  window.addEventListener('dragover', (e) => e.preventDefault());
  window.addEventListener('drop', (e) => {
    if (!zone.contains(e.target)) {
      e.preventDefault();
      if (e.dataTransfer?.files?.length) showMessage('drop the images on the dashed area of step 1');
    }
  });
}

// ------------------------------------------------------------------ webcam (gather and preview)

async function openCamera(video) {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new Error('this browser gives no camera here (it needs localhost or https and a camera)');
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 1280 }, height: { ideal: 720 } }, audio: false });
  } catch (err) {
    const why = err?.name === 'NotAllowedError' ? 'the camera permission was refused' : err?.name === 'NotFoundError' ? 'no camera found' : (err?.message || String(err));
    throw new Error(`cannot start the webcam: ${why}`);
  }
  video.srcObject = stream;
  video.hidden = false;
  await video.play().catch(() => {});
  if (!video.videoWidth) {
    await new Promise((resolve) => {
      const done = () => resolve();
      video.addEventListener('loadeddata', done, { once: true });
      setTimeout(done, 3000);
    });
  }
  return stream;
}

function closeCamera(stream, video) {
  for (const track of stream?.getTracks?.() ?? []) track.stop();
  if (video) {
    video.srcObject = null;
  }
}

/** The current frame of `video` as a JPEG File. */
function captureFrame(video, prefix) {
  const w = video.videoWidth;
  const h = video.videoHeight;
  if (!w || !h) return Promise.reject(new Error('the webcam gives no picture yet: wait a second and try again'));
  const canvas = document.createElement('canvas');
  canvas.width = w;
  canvas.height = h;
  canvas.getContext('2d').drawImage(video, 0, 0, w, h);
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => {
      if (!blob) reject(new Error('cannot encode the webcam frame'));
      else {
        const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
        const ms = String(Date.now() % 1000).padStart(3, '0');
        resolve(new File([blob], `${prefix}-${stamp}-${ms}.jpg`, { type: 'image/jpeg' }));
      }
    }, 'image/jpeg', 0.92);
  });
}

function wireWebcam() {
  const video = $('#webcam-video');
  let captured = 0;
  $('#webcam-start').addEventListener('click', async () => {
    if (state.webcamStream) return;
    try {
      state.webcamStream = await openCamera(video);
      $('#webcam').hidden = false;
      $('#webcam-capture').disabled = state.readOnly;
      $('#webcam-start').disabled = true;
      showMessage(`webcam on: each capture goes to ${state.currentClass ?? 'the selected class'}`);
    } catch (err) {
      showError(err);
    }
  });
  $('#webcam-capture').addEventListener('click', async () => {
    if (!state.webcamStream) return;
    try {
      const file = await captureFrame(video, 'webcam');
      await uploadFiles([file], { source: 'webcam' });
      captured++;
      $('#webcam-count').textContent = `${count(captured, 'capture')} this session`;
    } catch (err) {
      showError(err);
    }
  });
  $('#webcam-stop').addEventListener('click', () => {
    closeCamera(state.webcamStream, video);
    state.webcamStream = null;
    $('#webcam').hidden = true;
    $('#webcam-capture').disabled = true;
    $('#webcam-start').disabled = state.readOnly;
  });
}

// ------------------------------------------------------------------ gather: duplicates

async function loadDuplicates() {
  const list = $('#duplicates');
  try {
    const res = await api('/api/duplicates');
    const groups = res?.groups ?? [];
    if (!groups.length) {
      list.replaceChildren(el('li', { className: 'none', text: 'No image is in two classes.' }));
      return;
    }
    const items = groups.slice(0, REPORT_MAX_ITEMS).map((g) => el('li', { className: 'duplicate', text: g.join('  =  ') }));
    if (groups.length > REPORT_MAX_ITEMS) items.push(el('li', { className: 'more', text: `… and ${NUM.format(groups.length - REPORT_MAX_ITEMS)} more groups` }));
    list.replaceChildren(...items);
  } catch (err) {
    list.replaceChildren(el('li', { className: 'refused', text: err.message }));
  }
}

// ------------------------------------------------------------------ train: settings

function fillOptions(options) {
  state.options = options ?? {};
  const backbones = Array.isArray(options?.backbones) ? options.backbones : [];
  const bb = $('#backbone');
  const current = bb.value;
  bb.replaceChildren(el('option', { value: '', text: 'default' }));
  for (const b of backbones) {
    const name = typeof b === 'string' ? b : b?.name ?? b?.id;
    if (!name) continue;
    const extra = typeof b === 'object' && b?.description ? ` (${b.description})` : '';
    bb.append(el('option', { value: name, text: `${name}${extra}` }));
  }
  if ([...bb.options].some((o) => o.value === current)) bb.value = current;

  const strategies = Array.isArray(options?.strategies) && options.strategies.length ? options.strategies : ['head'];
  const st = $('#strategy');
  const chosen = st.value || 'head';
  st.replaceChildren(...strategies.map((s) => el('option', { value: s, text: s === 'head' ? 'head (fast: only the classifier learns)' : s })));
  st.value = strategies.includes(chosen) ? chosen : strategies.includes('head') ? 'head' : strategies[0];

  // budget presets beyond the four known ones go before "custom"
  const budget = $('#budget');
  for (const name of Object.keys(options?.budgets ?? {})) {
    if (![...budget.options].some((o) => o.value === name)) budget.insertBefore(el('option', { value: name, text: name }), budget.querySelector('option[value="custom"]'));
  }
  renderBudget();
}

const BUDGET_FIELDS = [
  ['max_latency_ms', '#max-latency-ms', (v) => `${v} ms`],
  ['max_macs', '#max-macs', (v) => (typeof v === 'number' ? `${bigNumber(v).replace(' ', '')} MACs` : `${v} MACs`)],
  ['max_model_mb', '#max-model-mb', (v) => `${v} MB`],
];

function renderBudget() {
  const name = $('#budget').value;
  const preset = name === 'custom' ? null : state.options?.budgets?.[name] ?? {};
  const parts = [];
  for (const [key, sel, fmt] of BUDGET_FIELDS) {
    const v = preset?.[key];
    const input = $(sel);
    if (preset === null) input.placeholder = key === 'max_macs' ? 'e.g. 60M' : 'no limit';
    else input.placeholder = v === undefined || v === null ? 'no limit' : String(v);
    if (v !== undefined && v !== null) parts.push(`≤ ${fmt(v)}`);
  }
  let note;
  if (name === 'custom') note = 'Custom: only the limits you type (empty: no limit).';
  else if (name === 'none') note = 'No budget: the most accurate candidate wins. A number typed here still applies.';
  else note = `${name}: ${parts.length ? parts.join(', ') : 'the preset'}. A number typed here overrides the preset's.`;
  $('#budget-note').textContent = note;
}

/** The settings of POST /api/plan and /api/train; throws on a bad number. */
function readSettings() {
  const s = {};
  const budget = $('#budget').value;
  s.budget = budget === 'custom' ? 'none' : budget;
  const lat = $('#max-latency-ms').value.trim();
  if (lat) {
    const v = Number(lat);
    if (!(v > 0)) throw new Error('max latency: give a positive number of milliseconds, e.g. 20');
    s.max_latency_ms = v;
  }
  const macs = $('#max-macs').value.trim();
  if (macs) {
    if (!/^\d+(\.\d+)?\s*[kKmMgG]?$/.test(macs) || !(parseFloat(macs) > 0)) throw new Error('max MACs: give a count like 60M, 0.5G or 400000');
    s.max_macs = macs.replace(/\s+/g, '');
  }
  const mb = $('#max-model-mb').value.trim();
  if (mb) {
    const v = Number(mb);
    if (!(v > 0)) throw new Error('max model size: give a positive number of MB, e.g. 5');
    s.max_model_mb = v;
  }
  const backbone = $('#backbone').value;
  if (backbone) s.backbone = backbone;
  const strategy = $('#strategy').value;
  if (strategy) s.strategy = strategy;
  return s;
}

async function plan() {
  let settings;
  try {
    settings = readSettings();
  } catch (err) {
    showError(err);
    return;
  }
  const button = $('#plan-button');
  setBusy(button, true, 'Planning…');
  showMessage('planning the training memory (the worker measures the backbone)…');
  try {
    const res = await api('/api/plan', { method: 'POST', json: settings });
    renderPlan(res, settings);
    showMessage('plan ready: the memory figures are in the table', 'ok');
  } catch (err) {
    showError(err);
  } finally {
    setBusy(button, false);
  }
}

function renderPlan(res, settings) {
  $('#plan-box').hidden = false;
  const bits = [];
  if (res?.backbone) bits.push(`backbone ${res.backbone}`);
  if (res?.image_size) bits.push(`input ${res.image_size} px`);
  if (typeof res?.idle_mb === 'number') bits.push(`Python + torch idle ${res.idle_mb.toFixed(0)} MB (not counted below)`);
  if (typeof res?.num_images === 'number') bits.push(`${count(res.num_images, 'image')}, ${count(res.num_classes ?? 0, 'class')}`);
  $('#plan-info').textContent = bits.join(' · ');
  const rows = (res?.plans ?? []).map((p) => {
    const tr = el('tr', { className: p.strategy === settings.strategy ? 'chosen' : '' });
    tr.dataset.strategy = p.strategy ?? '';
    const fits = p.fits === true ? 'yes' : p.fits === false ? 'no' : '–';
    tr.append(
      el('td', { text: p.strategy ?? '–' }),
      el('td', { text: p.batch_size ?? '–' }),
      el('td', { text: typeof p.estimated_mb === 'number' ? p.estimated_mb.toFixed(1) : '–' }),
      el('td', { className: `fits-${fits}`, text: fits }),
      el('td', { text: bigNumber(p.trainable_params) }),
      el('td', { text: bigNumber(p.total_params) }),
    );
    return tr;
  });
  if (!rows.length) rows.push(el('tr', {}, el('td', { colspan: '6', className: 'muted', text: 'no plan' })));
  $('#plan tbody').replaceChildren(...rows);
}

// ------------------------------------------------------------------ train: start, cancel, events

function setTrainStatus(status, text) {
  const node = $('#train-status');
  if (status) {
    state.trainStatus = status;
    node.dataset.status = status;
    node.classList.remove('refused');
  }
  node.textContent = text ?? status ?? node.textContent;
  const running = state.trainStatus === 'running';
  $('#cancel-button').disabled = !running;
  $('#training-chip').hidden = !running;
}

async function startTraining() {
  let settings;
  try {
    settings = readSettings();
  } catch (err) {
    showError(err);
    return;
  }
  const button = $('#train-button');
  button.disabled = true;
  try {
    const res = await api('/api/train', { method: 'POST', json: settings });
    resetProgress();
    state.trainRun = res?.run ?? null;
    setTrainStatus('running', `running ${state.trainRun ?? ''}`.trim());
    $('#progress-stage').textContent = `starting ${state.trainRun ?? 'the run'}…`;
    showMessage(`training ${state.trainRun ?? ''} started: follow it here`.replace('  ', ' '), 'ok');
    connectEvents();
    refreshProject().catch(showError);
  } catch (err) {
    showError(err);
    // a refused second run leaves the running one's status; the text says why
    setTrainStatus(null, err.message);
    $('#train-status').classList.add('refused');
  } finally {
    button.disabled = false;
  }
}

async function cancelTraining() {
  const button = $('#cancel-button');
  button.disabled = true;
  try {
    const res = await api('/api/train/cancel', { method: 'POST' });
    showMessage(`cancelling ${res?.cancelled ?? 'the run'}: the extracted features stay cached for the next run`);
    if (!state.events) connectEvents(-1);
  } catch (err) {
    showError(err);
    button.disabled = state.trainStatus !== 'running';
  }
}

function resetProgress() {
  state.epochs = [];
  state.bestCandidate = null;
  $('#candidates').replaceChildren();
  $('#train-log').replaceChildren();
  $('#extract-progress').value = 0;
  $('#extract-progress').max = 1;
  $('#extract-count').textContent = '–';
  $('#extract-rate').textContent = '– images/s';
  $('#extract-eta').textContent = 'ETA –';
  $('#epoch-line').textContent = '–';
  $('#train-status').classList.remove('refused');
  drawLoss();
}

function closeEvents() {
  if (state.events) state.events.close();
  state.events = null;
}

/** Follow the current (or last) job's events; EventSource resumes with Last-Event-ID by itself. */
function connectEvents(after = -1, { quiet = false } = {}) {
  closeEvents();
  const es = new EventSource(`/api/train/events?${qs({ after })}`);
  state.events = es;
  state.quietReplay = quiet;
  let seen = 0;
  es.addEventListener('message', (e) => {
    seen++;
    let ev;
    try {
      ev = JSON.parse(e.data);
    } catch {
      return;
    }
    handleEvent(ev);
  });
  es.addEventListener('error', () => {
    if (state.events !== es) return;
    // no job (or nothing more to say): stop instead of reconnecting forever
    if (es.readyState === EventSource.CLOSED || seen === 0) {
      es.close();
      if (state.events === es) state.events = null;
    }
  });
}

function handleEvent(ev) {
  switch (ev?.event) {
    case 'start':
      resetProgress();
      state.trainRun = ev.run ?? state.trainRun;
      setTrainStatus('running', `running ${state.trainRun ?? ''}`.trim());
      $('#progress-stage').textContent = `${state.trainRun ?? 'the run'} started`;
      break;
    case 'log': {
      const msg = String(ev.message ?? '');
      $('#progress-stage').textContent = msg;
      const log = $('#train-log');
      log.append(el('li', { className: `level-${String(ev.level ?? 'info').replace(/[^a-z]/g, '')}`, text: msg }));
      while (log.childElementCount > LOG_MAX_LINES) log.firstElementChild.remove();
      break;
    }
    case 'extract': {
      const total = Number(ev.total) || 0;
      const done = Number(ev.done) || 0;
      const cached = Number(ev.cached) || 0;
      const bar = $('#extract-progress');
      bar.max = Math.max(1, total);
      bar.value = total ? Math.min(done, total) : 1; // nothing to extract: all from the cache
      $('#extract-count').textContent = total
        ? `${NUM.format(done)} / ${NUM.format(total)} images${cached ? ` (+${NUM.format(cached)} from the cache)` : ''}`
        : `all ${NUM.format(cached)} images from the cache`;
      $('#extract-rate').textContent = typeof ev.rate === 'number' ? `${ev.rate.toFixed(1)} images/s` : '– images/s';
      $('#extract-eta').textContent = typeof ev.eta_s === 'number' ? `ETA ${duration(ev.eta_s)}` : 'ETA –';
      $('#progress-stage').textContent = done >= total ? (total ? 'features extracted' : 'features read from the cache') : `extracting features: ${NUM.format(done)} of ${NUM.format(total)}`;
      break;
    }
    case 'candidate': {
      const tr = el('tr');
      tr.dataset.tap = String(ev.tap ?? '');
      tr.dataset.head = String(ev.head ?? '');
      tr.dataset.imageSize = String(ev.image_size ?? '');
      tr.append(
        el('td', { text: ev.image_size ? `${ev.image_size} px` : '–' }),
        el('td', { text: ev.tap ?? '–' }),
        el('td', { text: ev.head ?? '–' }),
        el('td', { text: pct(ev.val_accuracy) }),
      );
      const tbody = $('#candidates');
      tbody.append(tr);
      if (typeof ev.val_accuracy === 'number' && (!state.bestCandidate || ev.val_accuracy > state.bestCandidate.acc)) {
        state.bestCandidate?.tr.classList.remove('best');
        tr.classList.add('best');
        state.bestCandidate = { acc: ev.val_accuracy, tr };
      }
      const wrap = tbody.closest('.table-wrap');
      if (wrap) wrap.scrollTop = wrap.scrollHeight; // the newest row in view, without moving the page
      $('#progress-stage').textContent = `searching: ${ev.tap}@${ev.image_size}px/${ev.head} scored ${pct(ev.val_accuracy)}`;
      break;
    }
    case 'epoch': {
      const last = state.epochs[state.epochs.length - 1];
      if (last && Number(ev.epoch) <= Number(last.epoch)) state.epochs = []; // a new fit starts
      state.epochs.push(ev);
      const bits = [`epoch ${ev.epoch}`];
      if (typeof ev.train_loss === 'number') bits.push(`train loss ${ev.train_loss.toFixed(3)}`);
      if (typeof ev.val_loss === 'number') bits.push(`val loss ${ev.val_loss.toFixed(3)}`);
      if (typeof ev.val_accuracy === 'number') bits.push(`val accuracy ${pct(ev.val_accuracy)}`);
      $('#epoch-line').textContent = bits.join(' · ');
      $('#progress-stage').textContent = `training: ${bits.join(', ')}`;
      drawLoss();
      break;
    }
    case 'done': {
      const run = ev.run ?? state.trainRun;
      setTrainStatus('done', `done: ${run ?? ''} · val accuracy ${pct(ev.val_accuracy)}`);
      $('#progress-stage').textContent = `${run ?? 'the run'} finished`;
      if (!state.quietReplay) showMessage(`${run ?? 'the run'} done: validation accuracy ${pct(ev.val_accuracy)}; see step 3`, 'ok');
      closeEvents();
      finishedRun(state.quietReplay ? null : run);
      break;
    }
    case 'error': {
      const msg = oneLine(ev.message ?? 'the run failed');
      setTrainStatus('failed', msg);
      $('#progress-stage').textContent = 'failed';
      if (!state.quietReplay) showMessage(msg, 'error');
      closeEvents();
      finishedRun(null);
      break;
    }
    case 'cancelled':
      setTrainStatus('cancelled', 'cancelled');
      $('#progress-stage').textContent = 'cancelled: the extracted features stay cached for the next run';
      if (!state.quietReplay) showMessage(`${state.trainRun ?? 'the run'} cancelled`);
      closeEvents();
      finishedRun(null);
      break;
    default:
      break;
  }
}

async function finishedRun(run) {
  try {
    await refreshProject();
  } catch (err) {
    showError(err);
    return;
  }
  if (run && (state.project?.runs ?? []).some((r) => r.id === run)) {
    selectRun(run);
  }
}

// the loss chart: train and validation loss per epoch of the current fit
function drawLoss() {
  const canvas = $('#loss-chart');
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (!width || !height) return; // not visible: drawn when its step opens
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const css = getComputedStyle(document.documentElement);
  const ink = css.getPropertyValue('--muted').trim() || '#555';
  const line = css.getPropertyValue('--line').trim() || '#ddd';
  ctx.font = '11px system-ui, sans-serif';
  const data = state.epochs;
  const series = [
    ['train_loss', 'train loss', css.getPropertyValue('--accent').trim() || '#2563eb'],
    ['val_loss', 'val loss', css.getPropertyValue('--orange').trim() || '#d97706'],
  ].filter(([k]) => data.some((d) => typeof d[k] === 'number'));
  const L = 44;
  const R = 10;
  const T = 18;
  const B = 24;
  const w = width - L - R;
  const h = height - T - B;
  if (!data.length || !series.length) {
    ctx.fillStyle = ink;
    ctx.textAlign = 'center';
    ctx.fillText('the loss per epoch appears here while the head trains', width / 2, height / 2);
    return;
  }
  const xs = data.map((d) => Number(d.epoch));
  const xMin = Math.min(...xs);
  const xMax = Math.max(...xs, xMin + 1);
  let yMax = 0;
  for (const d of data) for (const [k] of series) if (typeof d[k] === 'number') yMax = Math.max(yMax, d[k]);
  yMax = yMax > 0 ? yMax * 1.1 : 1;
  const X = (e) => L + ((e - xMin) / (xMax - xMin)) * w;
  const Y = (v) => T + h - (v / yMax) * h;
  ctx.strokeStyle = line;
  ctx.fillStyle = ink;
  ctx.lineWidth = 1;
  ctx.textAlign = 'right';
  ctx.textBaseline = 'middle';
  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4;
    const y = Math.round(Y(v)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(L, y);
    ctx.lineTo(L + w, y);
    ctx.stroke();
    ctx.fillText(v.toFixed(v < 1 ? 2 : 1), L - 6, y);
  }
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  const step = Math.max(1, Math.ceil((xMax - xMin) / 8));
  for (let e = xMin; e <= xMax; e += step) ctx.fillText(String(e), X(e), T + h + 6);
  for (const [k, , colour] of series) {
    ctx.strokeStyle = colour;
    ctx.fillStyle = colour;
    ctx.lineWidth = 2;
    ctx.beginPath();
    let started = false;
    for (const d of data) {
      if (typeof d[k] !== 'number') continue;
      const x = X(Number(d.epoch));
      const y = Y(d[k]);
      if (started) ctx.lineTo(x, y);
      else ctx.moveTo(x, y);
      started = true;
    }
    ctx.stroke();
    if (data.length <= 40) {
      for (const d of data) {
        if (typeof d[k] !== 'number') continue;
        ctx.beginPath();
        ctx.arc(X(Number(d.epoch)), Y(d[k]), 2.5, 0, Math.PI * 2);
        ctx.fill();
      }
    }
  }
  // legend
  ctx.textAlign = 'left';
  ctx.textBaseline = 'middle';
  let lx = L;
  for (const [, label, colour] of series) {
    ctx.fillStyle = colour;
    ctx.fillRect(lx, 4, 14, 3);
    ctx.fillStyle = ink;
    ctx.fillText(label, lx + 18, 6);
    lx += ctx.measureText(label).width + 36;
  }
  ctx.textAlign = 'right';
  ctx.fillText('epoch', L + w, 6);
}

function wireTrain() {
  $('#budget').addEventListener('change', renderBudget);
  $('#train-form').addEventListener('submit', (e) => e.preventDefault());
  $('#plan-button').addEventListener('click', plan);
  $('#train-button').addEventListener('click', startTraining);
  $('#cancel-button').addEventListener('click', cancelTraining);
  if (typeof ResizeObserver === 'function') new ResizeObserver(() => drawLoss()).observe($('#loss-chart'));
}

// ------------------------------------------------------------------ results

function runLabel(r) {
  const bits = [r.id, r.status];
  if (typeof r.val_accuracy === 'number') bits.push(pct(r.val_accuracy));
  if (r.stale) bits.push('stale');
  return bits.join(' · ');
}

function renderRuns() {
  const runs = [...(state.project?.runs ?? [])].sort((a, b) => String(b.id).localeCompare(String(a.id), 'en', { numeric: true }));
  const select = $('#run-select');
  select.replaceChildren(...runs.map((r) => el('option', { value: r.id, text: runLabel(r) })));
  $('#no-runs').hidden = runs.length > 0;
  select.hidden = runs.length === 0;
  if (!runs.length) {
    state.run = null;
    state.runDetail = null;
    clearRunView();
    renderExport();
    return;
  }
  if (!runs.some((r) => r.id === state.run)) {
    const done = runs.find((r) => r.status === 'done');
    state.run = (done ?? runs[0]).id;
    state.runDetail = null;
    if (state.tab === 'results') loadRun(state.run);
  }
  select.value = state.run;
  // the stale flag can change with the data: keep the banner in step
  const summary = runs.find((r) => r.id === state.run);
  if (summary && state.runDetail && state.runDetail.id === summary.id) {
    state.runDetail.stale = Boolean(summary.stale) || state.runDetail.stale;
    renderStale(state.runDetail);
  }
  renderExport();
}

function selectRun(id) {
  state.run = id;
  state.runDetail = null;
  $('#run-select').value = id;
  loadRun(id);
  renderExport();
  if (state.tab === 'preview') ensurePreview();
}

function clearRunView() {
  $('#stale-banner').hidden = true;
  $('#run-error').hidden = true;
  const acc = $('#val-accuracy');
  acc.textContent = '–';
  delete acc.dataset.value;
  for (const id of ['#train-accuracy', '#run-backbone', '#run-chosen', '#run-size', '#run-counts']) $(id).textContent = '–';
  $('#baselines tbody').replaceChildren();
  $('#per-class').replaceChildren();
  $('#confusion').replaceChildren();
  $('#cell-images').replaceChildren();
  $('#cell-title').hidden = true;
  $('#move-note').hidden = true;
  $('#worst').replaceChildren();
  const plot = $('#search-plot');
  plot.hidden = true;
  plot.removeAttribute('src');
  $('#search-plot-none').hidden = true;
}

function renderStale(run) {
  const banner = $('#stale-banner');
  banner.hidden = !run.stale;
  banner.textContent = run.stale
    ? `The data changed since ${run.id} was trained: its figures describe the old data. Train again (step 2) to include the changes.`
    : '';
}

async function loadRun(id) {
  const ticket = ++state.runRequest;
  let run;
  try {
    run = await api(runPath(id));
  } catch (err) {
    if (ticket === state.runRequest) showError(err);
    return;
  }
  if (ticket !== state.runRequest || id !== state.run) return;
  state.runDetail = run;
  clearRunView();
  renderStale(run);
  if (run.status === 'failed' || run.status === 'cancelled' || run.status === 'running') {
    const err = $('#run-error');
    err.hidden = false;
    err.textContent = run.status === 'failed' ? `${run.id} failed: ${oneLine(run.error ?? 'no reason recorded')}` : run.status === 'running' ? `${run.id} is still training: its results appear when it is done.` : `${run.id} was cancelled.`;
    err.classList.toggle('error', run.status === 'failed');
  }
  const m = run.metrics;
  if (!m || typeof m !== 'object') return;
  renderMetrics(run, m);
  loadWorst(id);
}

function renderMetrics(run, m) {
  const acc = $('#val-accuracy');
  acc.textContent = pct(m.val_accuracy);
  if (typeof m.val_accuracy === 'number') acc.dataset.value = String(m.val_accuracy);
  $('#train-accuracy').textContent = pct(m.train_accuracy);
  $('#run-backbone').textContent = m.backbone ?? '–';
  const c = m.chosen;
  $('#run-chosen').textContent = c ? `${c.tap ?? '?'} @ ${c.image_size ?? '?'} px · ${c.head ?? '?'}` : '–';
  const size = m.model_mb;
  $('#run-size').textContent = size && typeof size.fp32 === 'number' ? `${size.fp32.toFixed(2)} / ${typeof size.int8 === 'number' ? size.int8.toFixed(2) : '–'} MB` : '–';
  const counts = m.counts;
  $('#run-counts').textContent = counts ? `${NUM.format(counts.train ?? 0)} / ${NUM.format(counts.val ?? 0)}` : '–';

  // baselines
  const rows = [];
  const base = m.baselines && typeof m.baselines === 'object' ? m.baselines : {};
  const describe = { raw_pixels: 'raw pixels (linear)', final_layer: 'final layer (the naive recipe)' };
  for (const [name, b] of Object.entries(base)) {
    if (!b || typeof b !== 'object' || typeof b.val_accuracy !== 'number') continue;
    const tr = el('tr');
    tr.dataset.baseline = name;
    tr.append(el('td', { text: describe[name] ?? name.replace(/_/g, ' ') }), el('td', { text: pct(b.val_accuracy) }));
    rows.push(tr);
  }
  const mine = el('tr', { className: 'this-model' });
  mine.append(el('td', { text: 'this model' }), el('td', { text: pct(m.val_accuracy) }));
  rows.push(mine);
  $('#baselines tbody').replaceChildren(...rows);

  // per class
  const labels = Array.isArray(m.labels) ? m.labels.map(String) : Object.keys(m.per_class ?? {});
  const per = m.per_class ?? {};
  $('#per-class').replaceChildren(
    ...labels.map((label) => {
      const p = per[label] ?? {};
      const tr = el('tr');
      tr.dataset.label = label;
      tr.append(el('td', { text: label }), el('td', { text: fixed(p.precision) }), el('td', { text: fixed(p.recall) }), el('td', { text: fixed(p.f1) }), el('td', { text: p.support ?? '–' }));
      return tr;
    }),
  );

  // search plot: search.png, else the report's plot
  const plot = $('#search-plot');
  const sources = [runPath(run.id, `/file?${qs({ name: 'search.png' })}`), runPath(run.id, `/file?${qs({ name: 'plots/accuracy_vs_macs.png' })}`)];
  let i = 0;
  plot.onerror = () => {
    i++;
    if (i < sources.length) plot.src = sources[i];
    else {
      plot.hidden = true;
      $('#search-plot-none').hidden = false;
    }
  };
  plot.onload = () => {
    plot.hidden = false;
  };
  plot.src = sources[0];

  renderConfusion(labels, m.confusion_matrix);
}

function renderConfusion(labels, matrix) {
  const table = $('#confusion');
  if (!Array.isArray(matrix) || !matrix.length) {
    table.replaceChildren(el('caption', { text: 'no confusion matrix in this run' }));
    return;
  }
  const head = el('tr', {}, el('th', { className: 'corner', scope: 'col', text: 'true ↓ predicted →' }));
  for (const label of labels) head.append(el('th', { scope: 'col', className: 'pred', title: `predicted ${label}`, text: label }));
  const body = el('tbody');
  matrix.forEach((row, i) => {
    const tr = el('tr', {}, el('th', { scope: 'row', text: labels[i] ?? String(i) }));
    const total = row.reduce((a, b) => a + (Number(b) || 0), 0) || 1;
    row.forEach((value, j) => {
      const n = Number(value) || 0;
      const td = el('td', { className: `cell${i === j ? ' diagonal' : ''}${n ? '' : ' zero'}`, text: String(n), tabindex: n ? '0' : null });
      td.dataset.true = labels[i] ?? String(i);
      td.dataset.pred = labels[j] ?? String(j);
      td.title = `${n} validation image${n === 1 ? '' : 's'} of ${td.dataset.true} predicted ${td.dataset.pred}`;
      if (n) {
        const share = n / total;
        const alpha = 0.12 + 0.78 * share;
        td.style.backgroundColor = i === j ? `rgba(22, 101, 52, ${alpha.toFixed(3)})` : `rgba(185, 28, 28, ${Math.min(0.9, 0.2 + alpha).toFixed(3)})`;
        if (alpha > 0.5 || i !== j) td.classList.add('light-text');
      }
      tr.append(td);
    });
    body.append(tr);
  });
  table.replaceChildren(el('thead', {}, head), body);
}

async function loadCell(trueLabel, predLabel) {
  const run = state.run;
  if (!run) return;
  for (const td of $$('#confusion td.cell.active')) td.classList.remove('active');
  const cell = $$('#confusion td.cell').find((td) => td.dataset.true === trueLabel && td.dataset.pred === predLabel);
  cell?.classList.add('active');
  const title = $('#cell-title');
  title.hidden = false;
  title.textContent = `True ${trueLabel}, predicted ${predLabel}: loading…`;
  try {
    const res = await api(runPath(run, `/cell?${qs({ true: trueLabel, pred: predLabel })}`));
    if (run !== state.run) return;
    const images = Array.isArray(res) ? res : res?.images ?? [];
    title.textContent = `True ${trueLabel}, predicted ${predLabel}: ${count(images.length, 'validation image')}${images.length > FIGURES_MAX ? ` (the first ${FIGURES_MAX} shown)` : ''}`;
    $('#cell-images').replaceChildren(...images.slice(0, FIGURES_MAX).map(imageFigure));
    renderMoveNote();
  } catch (err) {
    title.textContent = `True ${trueLabel}, predicted ${predLabel}`;
    showError(err);
  }
}

async function loadWorst(run) {
  try {
    const res = await api(runPath(run, `/worst?${qs({ limit: 24 })}`));
    if (run !== state.run) return;
    const images = Array.isArray(res) ? res : res?.images ?? [];
    const box = $('#worst');
    if (!images.length) box.replaceChildren(el('p', { className: 'muted', text: 'No validation image recorded for this run.' }));
    else box.replaceChildren(...images.map(imageFigure));
    renderMoveNote();
  } catch (err) {
    $('#worst').replaceChildren(el('p', { className: 'muted', text: err.message }));
  }
}

function renderMoveNote() {
  const note = $('#move-note');
  note.hidden = !state.readOnly;
  note.textContent = state.readOnly ? `Moving images is off: ${READ_ONLY_REASON}.` : '';
}

/** A validation image: thumbnail, predicted label and probability, "move to class". */
function imageFigure(im) {
  const cls = String(im.class ?? im.label ?? '');
  const name = String(im.name ?? '');
  const right = im.label !== undefined && im.predicted !== undefined && String(im.label) === String(im.predicted);
  const fig = el('figure', { className: `result-figure ${right ? 'right' : 'wrong'}` });
  fig.dataset.class = cls;
  fig.dataset.name = name;
  const img = el('img', { src: thumbUrl(cls, name), alt: `${cls}/${name}`, loading: 'lazy', decoding: 'async', width: '120', height: '120' });
  img.addEventListener('error', () => img.classList.add('broken'), { once: true });
  const link = el('a', { href: thumbUrl(cls, name, 'full'), target: '_blank', rel: 'noopener', title: `${cls}/${name}` }, img);
  const caption = el(
    'figcaption',
    {},
    el('span', { className: 'predicted', text: `predicted ${im.predicted ?? '?'} · ${pct(im.probability)}` }),
    el('span', { className: 'truth', text: `true: ${im.label ?? cls}` }),
    el('span', { className: 'file', text: name, title: name }),
  );
  const select = el('select', { className: 'move-to', 'aria-label': `move ${name} to the class` });
  const button = el('button', { className: 'move-button button small', type: 'button', text: 'Move', title: `move ${name} to the chosen class` });
  fillMoveOptions(select, cls, im.predicted);
  if (state.readOnly) {
    select.disabled = true;
    button.disabled = true;
    select.title = button.title = READ_ONLY_REASON;
  }
  button.addEventListener('click', () => moveImage(fig, select.value, button));
  fig.append(link, caption, el('div', { className: 'move' }, select, button));
  return fig;
}

function fillMoveOptions(select, cls, predicted) {
  const classes = (state.project?.classes ?? []).map((c) => c.name).filter((n) => n !== cls);
  select.replaceChildren(...classes.map((n) => el('option', { value: n, text: n })));
  if (predicted !== undefined && classes.includes(String(predicted))) select.value = String(predicted);
  if (!classes.length) select.append(el('option', { value: '', text: 'no other class' }));
}

async function moveImage(fig, to, button) {
  if (state.readOnly) {
    showMessage(READ_ONLY_REASON, 'error');
    return;
  }
  if (!to) return;
  const from = fig.dataset.class;
  const name = fig.dataset.name;
  button.disabled = true;
  try {
    const res = await api('/api/images/move', { method: 'POST', json: { class: from, name, to } });
    const newClass = res?.class ?? to;
    const newName = res?.name ?? name;
    // every figure of that image (cell and worst lists) follows it
    for (const f of $$('figure[data-class][data-name]')) {
      if (f.dataset.class !== from || f.dataset.name !== name) continue;
      f.dataset.class = newClass;
      f.dataset.name = newName;
      f.classList.add('moved');
      $('.truth', f).textContent = `moved to ${newClass}`;
      $('.file', f).textContent = newName;
      const img = $('img', f);
      img.src = thumbUrl(newClass, newName);
      img.alt = `${newClass}/${newName}`;
      $('a', f).href = thumbUrl(newClass, newName, 'full');
      fillMoveOptions($('select.move-to', f), newClass);
    }
    if (state.runDetail) {
      state.runDetail.stale = true;
      renderStale(state.runDetail);
    }
    showMessage(`moved ${name} from ${from} to ${newClass}: ${state.run ?? 'the run'} is now stale, train again to use it`, 'ok');
    await refreshProject();
    if (state.currentClass === from || state.currentClass === newClass) loadPage();
  } catch (err) {
    showError(err);
  } finally {
    button.disabled = state.readOnly;
  }
}

function wireResults() {
  $('#run-select').addEventListener('change', (e) => selectRun(e.target.value));
  const table = $('#confusion');
  table.addEventListener('click', (e) => {
    const td = e.target.closest('td.cell');
    if (td) loadCell(td.dataset.true, td.dataset.pred);
  });
  table.addEventListener('keydown', (e) => {
    const td = e.target.closest('td.cell');
    if (td && (e.key === 'Enter' || e.key === ' ')) {
      e.preventDefault();
      loadCell(td.dataset.true, td.dataset.pred);
    }
  });
}

// ------------------------------------------------------------------ preview

function previewCard(precision) {
  return $(`#preview-${precision}`);
}

function previewTarget() {
  const runs = state.project?.runs ?? [];
  const selected = runs.find((r) => r.id === state.run);
  if (selected?.status === 'done') return selected.id;
  const done = [...runs].filter((r) => r.status === 'done').sort((a, b) => String(b.id).localeCompare(String(a.id), 'en', { numeric: true }));
  return done[0]?.id ?? null;
}

function releaseModels() {
  for (const p of ['int8', 'fp32']) {
    try {
      state.models[p]?.session?.release?.();
    } catch {
      // a session already gone
    }
    state.models[p] = null;
  }
}

/** Load the int8 and fp32 models of the selected run (once per run). */
function ensurePreview() {
  const run = previewTarget();
  $('#preview-run').textContent = run ?? '–';
  if (!run) {
    for (const p of ['int8', 'fp32']) {
      $('.model-state', previewCard(p)).textContent = 'no finished run yet: train one in step 2';
    }
    return Promise.resolve();
  }
  if (state.previewRun === run && state.previewLoading) return state.previewLoading;
  state.previewRun = run;
  releaseModels();
  for (const p of ['int8', 'fp32']) {
    $('.predictions', previewCard(p)).replaceChildren();
    $('.latency', previewCard(p)).textContent = '–';
  }
  state.previewLoading = (async () => {
    try {
      state.edgetl ??= await import('/webrt/edgetl.js');
    } catch (err) {
      for (const p of ['int8', 'fp32']) $('.model-state', previewCard(p)).textContent = `cannot load the web runtime: ${err?.message ?? err}`;
      showMessage(`cannot load the web runtime (/webrt/edgetl.js): ${err?.message ?? err}`, 'error');
      state.previewLoading = null;
      return;
    }
    for (const p of ['int8', 'fp32']) {
      const status = $('.model-state', previewCard(p));
      status.textContent = 'loading…';
      status.dataset.state = 'loading';
      const t0 = performance.now();
      try {
        const model = await state.edgetl.load(`/preview/${encodeURIComponent(run)}/${p}/`, { restore: false });
        if (state.previewRun !== run) return;
        state.models[p] = model;
        const spec = model.spec ?? {};
        status.textContent = `ready in ${((performance.now() - t0) / 1000).toFixed(1)} s · ${count(model.info?.labels?.length ?? 0, 'class')}` + (spec.image_size ? ` · ${spec.image_size} px input` : '');
        status.dataset.state = 'ready';
      } catch (err) {
        status.textContent = `cannot load: ${oneLine(err?.message ?? err)}`;
        status.dataset.state = 'error';
        showMessage(`${p} model: ${oneLine(err?.message ?? err)}`, 'error');
      }
    }
    if (!state.models.int8 && !state.models.fp32 && state.previewRun === run) state.previewLoading = null; // try again next time
  })();
  return state.previewLoading;
}

async function predictPreview(file) {
  const img = $('#preview-image');
  if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
  const url = URL.createObjectURL(file);
  img.dataset.url = url;
  img.src = url;
  img.hidden = false;
  $('#preview-image-none').hidden = true;
  await ensurePreview();
  const run = state.previewRun;
  let any = false;
  for (const p of ['int8', 'fp32']) {
    const card = previewCard(p);
    const model = state.models[p];
    const list = $('.predictions', card);
    if (!model) {
      list.replaceChildren();
      continue;
    }
    try {
      const t0 = performance.now();
      const top = await model.predict(file, { topK: 3 });
      const ms = performance.now() - t0;
      if (run !== state.previewRun) return;
      $('.latency', card).textContent = `${ms.toFixed(1)} ms`;
      $('.latency', card).dataset.ms = ms.toFixed(3);
      list.replaceChildren(
        ...top.map((t) => {
          const li = el('li');
          li.dataset.label = String(t.label);
          li.dataset.probability = String(t.probability);
          const bar = el('span', { className: 'bar' });
          bar.style.width = `${Math.max(0, Math.min(100, 100 * t.probability)).toFixed(1)}%`;
          li.append(el('span', { className: 'label', text: String(t.label) }), el('span', { className: 'probability', text: pct(t.probability) }), el('span', { className: 'bar-track' }, bar));
          return li;
        }),
      );
      any = true;
    } catch (err) {
      list.replaceChildren();
      $('.latency', card).textContent = '–';
      showMessage(`${p}: ${oneLine(err?.message ?? err)}`, 'error');
      return;
    }
  }
  if (any) {
    const a = state.models.int8 && $('#preview-int8 li')?.dataset.label;
    const b = state.models.fp32 && $('#preview-fp32 li')?.dataset.label;
    showMessage(a && b ? (a === b ? `both models say ${a}` : `int8 says ${a}, fp32 says ${b}`) : `predicted ${a || b}`, 'ok');
  } else if (run) {
    showMessage('no model is loaded: see the cards below', 'error');
  } else {
    showMessage('no finished run to preview yet: train one in step 2', 'error');
  }
}

function wirePreview() {
  const input = $('#preview-file');
  input.addEventListener('change', () => {
    const file = input.files?.[0];
    input.value = '';
    if (file) predictPreview(file).catch(showError);
  });
  const video = $('#preview-video');
  $('#preview-webcam').addEventListener('click', async () => {
    try {
      if (!state.previewStream) {
        state.previewStream = await openCamera(video);
        $('#preview-webcam-stop').hidden = false;
        $('#preview-webcam').textContent = 'Snap & predict';
      }
      const file = await captureFrame(video, 'preview');
      await predictPreview(file);
    } catch (err) {
      showError(err);
    }
  });
  $('#preview-webcam-stop').addEventListener('click', () => {
    closeCamera(state.previewStream, video);
    state.previewStream = null;
    video.hidden = true;
    $('#preview-webcam-stop').hidden = true;
    $('#preview-webcam').textContent = 'Webcam: snap & predict';
  });
}

// ------------------------------------------------------------------ export

const FORMAT_NAMES = { tflite: 'TFLite', coreml: 'Core ML', web: 'Web app' };

function exportRun() {
  const run = (state.project?.runs ?? []).find((r) => r.id === state.run);
  return run?.status === 'done' ? run.id : null;
}

function renderExport() {
  const run = exportRun();
  $('#export-run').textContent = state.run ? (run ? run : `${state.run} (not finished)`) : '–';
  const link = $('#download-bundle');
  if (run) {
    link.href = runPath(run, '/bundle.zip');
    link.setAttribute('download', `${run}-bundle.zip`);
    link.classList.remove('disabled');
    link.removeAttribute('aria-disabled');
  } else {
    link.removeAttribute('href');
    link.classList.add('disabled');
    link.setAttribute('aria-disabled', 'true');
  }
  for (const f of Object.keys(FORMAT_NAMES)) {
    const b = $(`#export-${f}`);
    if (!b.hasAttribute('aria-busy')) b.disabled = !run;
  }
  if (!run) $('#export-message').textContent = state.run ? `${state.run} did not finish: choose a finished run in step 3` : 'No finished run yet: train one in step 2.';
  else if ($('#export-message').dataset.run !== run) {
    $('#export-message').textContent = '';
    $('#export-links').replaceChildren();
  }
}

async function exportFormat(format) {
  const run = exportRun();
  if (!run) return;
  const button = $(`#export-${format}`);
  const msg = $('#export-message');
  msg.dataset.run = run;
  msg.dataset.kind = 'info';
  msg.textContent = `exporting ${run} as ${FORMAT_NAMES[format]}… (a converter can take a minute)`;
  setBusy(button, true, 'Exporting…');
  try {
    const res = await api(runPath(run, `/export/${encodeURIComponent(format)}`), { method: 'POST' });
    const href = res?.download ?? runPath(run, `/export/${format}.zip`);
    msg.dataset.kind = 'ok';
    msg.textContent = `${FORMAT_NAMES[format]} export of ${run} ready: download it below.`;
    const a = el('a', { href, download: `${run}-${format}.zip`, className: 'download result', id: `download-${format}`, text: `${run}-${format}.zip` });
    exportLine(format, a, false);
    showMessage(`${FORMAT_NAMES[format]} export ready`, 'ok');
  } catch (err) {
    msg.dataset.kind = 'error';
    msg.textContent = err.message;
    exportLine(format, el('span', { className: 'result', text: err.message }), true);
    showError(err);
  } finally {
    setBusy(button, false);
    button.disabled = !exportRun();
  }
}

/** One line per format in #export-links: its download link or why it failed. */
function exportLine(format, content, failed) {
  const links = $('#export-links');
  for (const old of $$(`li[data-format="${format}"]`, links)) old.remove();
  const li = el('li', { className: failed ? 'failed' : 'ready' }, el('span', { className: 'format', text: FORMAT_NAMES[format] }), content);
  li.dataset.format = format;
  const order = Object.keys(FORMAT_NAMES);
  const next = $$('li[data-format]', links).find((x) => order.indexOf(x.dataset.format) > order.indexOf(format));
  links.insertBefore(li, next ?? null);
}

function wireExport() {
  for (const f of Object.keys(FORMAT_NAMES)) $(`#export-${f}`).addEventListener('click', () => exportFormat(f));
  $('#download-bundle').addEventListener('click', (e) => {
    if (!exportRun()) {
      e.preventDefault();
      showMessage('no finished run to download yet: train one in step 2', 'error');
    }
  });
}

// ------------------------------------------------------------------ start

async function init() {
  wireTabs();
  wireClasses();
  wirePager();
  wireUploads();
  wireWebcam();
  wireTrain();
  wireResults();
  wirePreview();
  wireExport();
  $('#duplicates-refresh').addEventListener('click', loadDuplicates);
  renderBudget();
  drawLoss();

  const options = api('/api/options').then(fillOptions, (err) => showMessage(`cannot read the training options: ${err.message}`, 'error'));
  try {
    await refreshProject();
    showMessage(state.readOnly ? `Project ${state.project.name}: read-only (reads ${state.project.source ?? 'a --from folder'}).` : `Project ${state.project.name}: ${count(state.project.total ?? 0, 'image')} in ${count(state.project.classes?.length ?? 0, 'class')}.`);
  } catch (err) {
    showError(err);
    document.body.dataset.ready = '1';
    return;
  }
  document.body.dataset.ready = '1';
  loadPage();
  loadDuplicates();
  await options;
  const training = state.project.training;
  if (training) {
    state.trainRun = training.run ?? training.id ?? null;
    setTrainStatus('running', `running ${state.trainRun ?? ''}`.trim());
    connectEvents();
  }
  setInterval(pollTraining, 4000);
}

/** Without an event stream (a proxy cut it, the server restarted), a running
 * job's end still shows: the project's `training` goes back to null. */
async function pollTraining() {
  if (state.trainStatus !== 'running' || state.events || document.hidden) return;
  try {
    await refreshProject();
  } catch {
    return;
  }
  const training = state.project.training;
  if (training) {
    connectEvents(-1);
    return;
  }
  const run = (state.project.runs ?? []).find((r) => r.id === state.trainRun);
  if (!run || run.status === 'running') return;
  if (run.status === 'failed') {
    const msg = oneLine(run.error ?? 'the run failed');
    setTrainStatus('failed', msg);
    showMessage(msg, 'error');
  } else if (run.status === 'done') {
    setTrainStatus('done', `done: ${run.id} · val accuracy ${pct(run.val_accuracy)}`);
    selectRun(run.id);
  } else {
    setTrainStatus(run.status, run.status);
  }
}

window.addEventListener('pagehide', () => {
  closeEvents();
  closeCamera(state.webcamStream);
  closeCamera(state.previewStream);
});

init();
