// Comparison page: metrics before/after a studio retrain and the same images' explanations.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token");
const job = params.get("job");
const q = token ? `token=${encodeURIComponent(token)}` : "";

async function getJSON(path) {
  const resp = await fetch(path, { headers: token ? { "X-Rightfocus-Token": token } : {} });
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.detail || resp.statusText);
  return body;
}
const fmt = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(4));

function showPairs(c, method) {
  const pairs = document.getElementById("pairs");
  pairs.innerHTML = "";
  for (const im of c.images) {
    const row = document.createElement("div");
    row.className = "pair";
    const base = `/api/images/${im.index}/image.png?${q}`;
    const side = (which) =>
      `<figure class="stack"><img src="${base}"><img class="overlay" src="/api/compare/${encodeURIComponent(job)}/${which}/${im.index}/explanation.png?method=${encodeURIComponent(method)}&${q}"></figure>`;
    row.innerHTML = `<p>#${im.index} · label ${im.label} · prediction ${im.pred_before} → ${im.pred_after}</p>` +
      `${side("before")} ${side("after")}`;
    pairs.appendChild(row);
  }
}

async function main() {
  if (token) document.getElementById("back").href = `/?${q}`;
  const c = await getJSON(`/api/compare/${encodeURIComponent(job)}`);
  document.getElementById("title").textContent = `${c.before_run} → ${c.after_run} (${c.settings.guidance}, λ ${c.settings.lam ?? "default"}, ${c.settings.epochs} epochs)`;
  const tbody = document.querySelector("#metrics tbody");
  const keys = ["accuracy", "balanced_accuracy", "ece", "overlap"];
  const rows = keys.map((k) => `<tr><td>${k}</td><td>${fmt(c.before && c.before[k])}</td><td>${fmt(c.after && c.after[k])}</td></tr>`);
  rows.push(`<tr><td>overlap on annotated training images</td><td>${fmt(c.annotated_overlap.before)}</td><td>${fmt(c.annotated_overlap.after)}</td></tr>`);
  tbody.innerHTML = rows.join("");
  const s = await getJSON("/api/session");
  const sel = document.getElementById("method");
  for (const m of s.methods) sel.add(new Option(m, m));
  sel.value = "saliency";
  sel.addEventListener("change", () => showPairs(c, sel.value));
  showPairs(c, sel.value);
  document.body.dataset.ready = "1";
}
main().catch((e) => { document.getElementById("title").textContent = e.message; });
