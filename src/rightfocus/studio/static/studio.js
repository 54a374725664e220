// rightfocus studio: queue, inspect, paint, save, retrain. Plain JavaScript, no build step.
// Masks live at the image's own resolution (one byte per pixel, 0/1); the canvas shows them
// scaled up, so what is painted is exactly what is stored.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers["X-Rightfocus-Token"] = token;
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  if (!resp.ok) {
    let detail = resp.statusText;
    try { detail = (await resp.json()).detail || detail; } catch (e) { /* not JSON */ }
    const err = new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
    err.status = resp.status;
    throw err;
  }
  return resp;
}
async function apiJSON(path, options) { return (await api(path, options)).json(); }
async function apiBitmap(path) { return createImageBitmap(await (await api(path)).blob()); }

function b64ToBytes(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
function bytesToB64(bytes) {
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

const state = {
  session: null, queue: [], strategy: "", pos: -1, index: null, info: null,
  W: 0, H: 0, masks: null, version: 0, rightTouched: false,
  image: null, overlay: null, uncertainty: null, segments: null,
  tool: "brush", layer: "dont", undo: [], redo: [], drawing: false, last: null,
  rectStart: null, rectEnd: null, job: null,
};
window.studio = state; // for scripts and tests

const canvas = $("view");
const ctx = canvas.getContext("2d");

function setStatus(text, kind = "") {
  const el = $("status");
  el.textContent = text;
  el.className = kind;
}

// ---- session and queue ------------------------------------------------------------------

function showRun() {
  const s = state.session;
  $("run").textContent = `${s.run} · checkpoint ${s.checkpoint_sha256.slice(0, 10)} · ` +
    `${s.train_images} training images · ${state.annotated.size} annotated`;
}

async function init() {
  const s = await apiJSON("/api/session");
  state.session = s;
  state.annotated = new Set(s.annotated);
  showRun();
  $("who").value = localStorage.getItem("rightfocus-who") || s.who || "";
  for (const name of s.strategies) $("strategy").add(new Option(name, name));
  for (const m of s.methods) $("method").add(new Option(m, m));
  $("method").value = s.methods.includes("saliency") ? "saliency" : s.methods[0];
  for (const g of s.guidance) $("guidance").add(new Option(g, g));
  if (!s.bayesian) {
    $("show-uncertainty").disabled = true;
    [...$("strategy").options].forEach((o) => { if (o.value === "uncertainty") o.disabled = true; });
    [...$("guidance").options].forEach((o) => { if (o.value === "bayes_feedback") o.disabled = true; });
  }
}

async function loadQueue() {
  const strategy = $("strategy").value;
  setStatus(`Scoring the training pool with '${strategy}'…`);
  try {
    const q = await apiJSON(`/api/queue?strategy=${encodeURIComponent(strategy)}` +
      `&per_class=${$("per-class").checked}&k=100&method=${encodeURIComponent($("method").value)}`);
    state.queue = q.items;
    state.strategy = strategy;
    renderQueue();
    setStatus(`${q.items.length} images queued by ${strategy}.`);
    if (q.items.length) await openAt(0);
  } catch (e) { setStatus(e.message, "error"); }
}

function renderQueue() {
  const ol = $("queue");
  ol.innerHTML = "";
  state.queue.forEach((item, k) => {
    const li = document.createElement("li");
    li.textContent = `#${item.index} · label ${item.label} · ${item.score.toFixed(3)}`;
    li.dataset.index = item.index;
    if (item.annotated) li.classList.add("annotated");
    if (k === state.pos) li.classList.add("current");
    li.addEventListener("click", () => openAt(k));
    ol.appendChild(li);
  });
}

// ---- inspect -----------------------------------------------------------------------------

function showTitle(record) {
  $("image-title").textContent = `image #${state.index} · ${state.W}×${state.H} · ` +
    `mask version ${state.version}` + (record ? ` (${record.who || "?"}, ${record.when})` : "");
}

async function openAt(k) {
  if (k < 0 || k >= state.queue.length) return;
  state.pos = k;
  await openImage(state.queue[k].index);
  renderQueue();
}

async function openImage(index) {
  const info = await apiJSON(`/api/images/${index}`);
  state.index = index;
  state.info = info;
  state.W = info.width;
  state.H = info.height;
  state.version = info.version;
  const n = info.width * info.height;
  state.masks = {
    dont: info.mask ? b64ToBytes(info.mask) : new Uint8Array(n),
    right: info.right ? b64ToBytes(info.right) : new Uint8Array(n),
  };
  state.rightTouched = false;
  state.undo = [];
  state.redo = [];
  state.segments = null;
  state.image = await apiBitmap(`/api/images/${index}/image.png`);
  await loadOverlay();
  showTitle(info.record);
  const probs = info.probs.map((p, c) =>
    `<div class="bar${c === info.pred ? " pred" : ""}"><span>${c}</span>` +
    `<span class="fill" style="width:${Math.round(p * 150)}px"></span><span>${p.toFixed(3)}</span></div>`);
  $("prediction").innerHTML = `label <b>${info.label}</b> · prediction <b>${info.pred}</b>` +
    (info.pred === info.label ? "" : " <span style='color:#b00'>(wrong)</span>");
  $("probs").innerHTML = probs.join("");
  if (state.tool === "superpixel") await loadSegments();
  render();
  canvas.focus();
}

async function loadOverlay() {
  if (state.index === null) return;
  const method = encodeURIComponent($("method").value);
  try {
    state.overlay = await apiBitmap(`/api/images/${state.index}/explanation.png?method=${method}`);
    state.uncertainty = $("show-uncertainty").checked
      ? await apiBitmap(`/api/images/${state.index}/uncertainty.png?method=${method}`) : null;
  } catch (e) {
    state.overlay = null;
    setStatus(e.message, "error");
  }
  render();
}

async function loadSegments() {
  const s = await apiJSON(`/api/images/${state.index}/superpixels?n=50`);
  const bytes = b64ToBytes(s.labels);
  state.segments = new Int32Array(bytes.buffer, 0, s.shape[0] * s.shape[1]);
  render();
}

// ---- drawing ----------------------------------------------------------------------------

function maskCanvas() {
  const off = document.createElement("canvas");
  off.width = state.W;
  off.height = state.H;
  const octx = off.getContext("2d");
  const img = octx.createImageData(state.W, state.H);
  const d = state.masks.dont, r = state.masks.right, seg = state.segments;
  for (let i = 0; i < d.length; i++) {
    const o = 4 * i;
    if (d[i]) { img.data[o] = 40; img.data[o + 1] = 90; img.data[o + 2] = 255; img.data[o + 3] = 150; }
    else if (r[i]) { img.data[o] = 30; img.data[o + 1] = 200; img.data[o + 2] = 60; img.data[o + 3] = 140; }
    if (seg && state.tool === "superpixel") {
      const x = i % state.W, y = (i / state.W) | 0;
      const edge = (x + 1 < state.W && seg[i] !== seg[i + 1]) || (y + 1 < state.H && seg[i] !== seg[i + state.W]);
      if (edge) { img.data[o] = 255; img.data[o + 1] = 255; img.data[o + 2] = 255; img.data[o + 3] = 200; }
    }
  }
  octx.putImageData(img, 0, 0);
  return off;
}

function render() {
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!state.image) return;
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(state.image, 0, 0, canvas.width, canvas.height);
  const layer = $("show-uncertainty").checked && state.uncertainty ? state.uncertainty : state.overlay;
  if (layer) {
    ctx.globalAlpha = Number($("opacity").value) / 100;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(layer, 0, 0, canvas.width, canvas.height);
    ctx.globalAlpha = 1;
    ctx.imageSmoothingEnabled = false;
  }
  if ($("show-mask").checked || state.tool === "superpixel") ctx.drawImage(maskCanvas(), 0, 0, canvas.width, canvas.height);
  if (state.rectStart && state.rectEnd) {
    ctx.strokeStyle = "#fff";
    ctx.setLineDash([4, 3]);
    const [a, b] = [toCanvas(state.rectStart), toCanvas(state.rectEnd)];
    ctx.strokeRect(a.x, a.y, b.x - a.x, b.y - a.y);
    ctx.setLineDash([]);
  }
}

// display pixel -> image coordinates (continuous; pixel (i, j) covers [j, j+1) x [i, i+1))
function toImage(ev) {
  const r = canvas.getBoundingClientRect();
  return { x: ((ev.clientX - r.left) / r.width) * state.W, y: ((ev.clientY - r.top) / r.height) * state.H };
}
function toCanvas(p) { return { x: (p.x / state.W) * canvas.width, y: (p.y / state.H) * canvas.height }; }

function snapshot() {
  state.undo.push({ dont: state.masks.dont.slice(), right: state.masks.right.slice() });
  if (state.undo.length > 100) state.undo.shift();
  state.redo = [];
}
function active() { if (state.layer === "right") state.rightTouched = true; return state.masks[state.layer]; }

// Brush: every pixel whose centre lies within the radius of the point, and the pixel under it.
function stamp(p, value) {
  const m = active();
  const rad = (Number($("size").value) / 2) * (state.W / canvas.width);
  const x0 = Math.max(0, Math.floor(p.x - rad - 1)), x1 = Math.min(state.W - 1, Math.ceil(p.x + rad + 1));
  const y0 = Math.max(0, Math.floor(p.y - rad - 1)), y1 = Math.min(state.H - 1, Math.ceil(p.y + rad + 1));
  for (let i = y0; i <= y1; i++) {
    for (let j = x0; j <= x1; j++) {
      const dx = j + 0.5 - p.x, dy = i + 0.5 - p.y;
      if (dx * dx + dy * dy <= rad * rad) m[i * state.W + j] = value;
    }
  }
  const pi = Math.floor(p.y), pj = Math.floor(p.x);
  if (pi >= 0 && pi < state.H && pj >= 0 && pj < state.W) m[pi * state.W + pj] = value;
}
function strokeTo(p, value) {
  const a = state.last || p;
  const dist = Math.hypot(p.x - a.x, p.y - a.y);
  const steps = Math.max(1, Math.ceil(dist / 0.25));
  for (let s = 1; s <= steps; s++) stamp({ x: a.x + ((p.x - a.x) * s) / steps, y: a.y + ((p.y - a.y) * s) / steps }, value);
  state.last = p;
}
function fillRect(a, b) {
  const m = active();
  const [xa, xb] = [Math.min(a.x, b.x), Math.max(a.x, b.x)];
  const [ya, yb] = [Math.min(a.y, b.y), Math.max(a.y, b.y)];
  for (let i = 0; i < state.H; i++) {
    for (let j = 0; j < state.W; j++) {
      if (j + 0.5 >= xa && j + 0.5 <= xb && i + 0.5 >= ya && i + 0.5 <= yb) m[i * state.W + j] = 1;
    }
  }
}
function toggleSegment(p) {
  if (!state.segments) return;
  const m = active();
  const j = Math.floor(p.x), i = Math.floor(p.y);
  if (i < 0 || j < 0 || i >= state.H || j >= state.W) return;
  const id = state.segments[i * state.W + j];
  let on = 0, total = 0;
  for (let k = 0; k < m.length; k++) if (state.segments[k] === id) { total++; on += m[k]; }
  const value = on * 2 >= total ? 0 : 1;
  for (let k = 0; k < m.length; k++) if (state.segments[k] === id) m[k] = value;
}

canvas.addEventListener("pointerdown", (ev) => {
  if (!state.masks) return;
  canvas.setPointerCapture(ev.pointerId);
  const p = toImage(ev);
  snapshot();
  if (state.tool === "rect") { state.rectStart = p; state.rectEnd = p; }
  else if (state.tool === "superpixel") { toggleSegment(p); }
  else { state.drawing = true; state.last = null; strokeTo(p, state.tool === "eraser" ? 0 : 1); }
  render();
});
canvas.addEventListener("pointermove", (ev) => {
  if (!state.masks) return;
  const p = toImage(ev);
  if (state.drawing) { strokeTo(p, state.tool === "eraser" ? 0 : 1); render(); }
  else if (state.rectStart) { state.rectEnd = p; render(); }
});
function endPointer(ev) {
  if (state.rectStart) { fillRect(state.rectStart, toImage(ev)); state.rectStart = state.rectEnd = null; }
  state.drawing = false;
  state.last = null;
  render();
}
canvas.addEventListener("pointerup", endPointer);
canvas.addEventListener("pointercancel", endPointer);

function undo() {
  const s = state.undo.pop();
  if (!s) return;
  state.redo.push({ dont: state.masks.dont.slice(), right: state.masks.right.slice() });
  state.masks = s;
  render();
}
function redo() {
  const s = state.redo.pop();
  if (!s) return;
  state.undo.push({ dont: state.masks.dont.slice(), right: state.masks.right.slice() });
  state.masks = s;
  render();
}

async function suggest() {
  if (state.index === null) return;
  const s = await apiJSON(`/api/images/${state.index}/suggest?method=${encodeURIComponent($("method").value)}`);
  snapshot();
  active().set(b64ToBytes(s.mask));
  render();
  setStatus("Mask set from the thresholded explanation (top 10 %); edit it, then save.");
}

async function setTool(tool) {
  state.tool = tool;
  document.querySelectorAll(".tool").forEach((b) => b.classList.toggle("active", b.dataset.tool === tool));
  if (tool === "superpixel" && state.index !== null && !state.segments) await loadSegments();
  render();
}

// ---- save -----------------------------------------------------------------------------

async function save() {
  if (state.index === null) return;
  const who = $("who").value.trim();
  localStorage.setItem("rightfocus-who", who);
  const body = {
    mask: bytesToB64(state.masks.dont),
    right: state.rightTouched ? bytesToB64(state.masks.right) : null,
    shape: [state.H, state.W], dtype: "uint8", base_version: state.version,
    who, strategy: state.strategy || "manual",
  };
  try {
    const rec = await apiJSON(`/api/images/${state.index}/mask`, {
      method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    state.version = rec.version;
    state.annotated.add(state.index);
    showTitle(rec);
    showRun();
    const item = state.queue.find((q) => q.index === state.index);
    if (item) item.annotated = true;
    renderQueue();
    setStatus(`Saved version ${rec.version} of image #${state.index}.`, "ok");
  } catch (e) {
    setStatus((e.status === 409 ? "Not saved — conflict: " : "Not saved: ") + e.message, "error");
  }
}

// ---- retrain -----------------------------------------------------------------------------

async function retrain() {
  const lam = $("lam").value.trim(), epochs = $("epochs").value.trim();
  const body = { guidance: $("guidance").value };
  if (lam) body.lam = Number(lam);
  if (epochs) body.epochs = Number(epochs);
  const el = $("retrain-status");
  el.className = "";
  try {
    const job = await apiJSON("/api/retrain", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    state.job = job.job;
    el.textContent = `Started ${job.job}`;
    poll();
  } catch (e) { el.textContent = e.message; el.className = "error"; }
}

async function poll() {
  const el = $("retrain-status");
  try {
    const s = await apiJSON(`/api/retrain/${encodeURIComponent(state.job)}`);
    $("progress").value = s.progress;
    if (s.state === "done") {
      const q = token ? `&token=${encodeURIComponent(token)}` : "";
      el.innerHTML = `Finished in ${s.seconds} s. <a id="compare-link" href="/compare?job=${encodeURIComponent(s.job)}${q}">Compare before / after</a>`;
      return;
    }
    if (s.state === "failed") { el.textContent = s.message; el.className = "error"; return; }
    el.textContent = `${s.state}… ${Math.round(100 * s.progress)} % (${s.seconds} s)`;
  } catch (e) { el.textContent = e.message; el.className = "error"; return; }
  setTimeout(poll, 500);
}

// ---- wiring ----------------------------------------------------------------------------

$("load-queue").addEventListener("click", loadQueue);
$("method").addEventListener("change", loadOverlay);
$("show-uncertainty").addEventListener("change", loadOverlay);
$("opacity").addEventListener("input", render);
$("show-mask").addEventListener("change", render);
$("size").addEventListener("input", () => { $("size-value").textContent = $("size").value; });
$("layer").addEventListener("change", () => { state.layer = $("layer").value; });
$("undo").addEventListener("click", undo);
$("redo").addEventListener("click", redo);
$("clear").addEventListener("click", () => { if (state.masks) { snapshot(); active().fill(0); render(); } });
$("suggest").addEventListener("click", suggest);
$("save").addEventListener("click", save);
$("retrain").addEventListener("click", retrain);
document.querySelectorAll(".tool").forEach((b) => b.addEventListener("click", () => setTool(b.dataset.tool)));

document.addEventListener("keydown", (ev) => {
  if (ev.target.tagName === "INPUT" && ev.target.type !== "range" && ev.target.type !== "checkbox") return;
  const ctrl = ev.ctrlKey || ev.metaKey;
  if (ctrl && ev.key.toLowerCase() === "z") { ev.preventDefault(); ev.shiftKey ? redo() : undo(); }
  else if (ctrl && ev.key.toLowerCase() === "y") { ev.preventDefault(); redo(); }
  else if (ctrl && ev.key.toLowerCase() === "s") { ev.preventDefault(); save(); }
  else if (ctrl) return;
  else if (ev.key === "ArrowRight" || ev.key === "n") { ev.preventDefault(); openAt(state.pos + 1); }
  else if (ev.key === "ArrowLeft" || ev.key === "p") { ev.preventDefault(); openAt(state.pos - 1); }
  else if (ev.key === "b") setTool("brush");
  else if (ev.key === "e") setTool("eraser");
  else if (ev.key === "r") setTool("rect");
  else if (ev.key === "s") setTool("superpixel");
  else if (ev.key === "]" || ev.key === "[") {
    const s = $("size");
    s.value = Math.max(2, Math.min(120, Number(s.value) + (ev.key === "]" ? 4 : -4)));
    $("size-value").textContent = s.value;
  }
});

init().catch((e) => setStatus(e.message, "error"));
