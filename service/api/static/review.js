// mcdrop review page: lists pending referrals and sends a reviewer's answers to the review API.
// Plain DOM code, no build step. Every value from the server goes in through textContent (never
// innerHTML), so model names, feature names and notes cannot inject markup.
"use strict";

const KEY_ITEM = "mcdrop.apiKey"; // sessionStorage: forgotten when the tab closes
const REVIEWER_ITEM = "mcdrop.reviewer";
const PAGE_SIZE = 20;
const pager = { offset: 0, total: 0 };

const byId = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else if (k.startsWith("data-") || k.startsWith("aria-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) if (c) node.append(c);
  return node;
}

function fmt(x) {
  if (typeof x !== "number") return String(x);
  if (x === 0) return "0";
  const a = Math.abs(x);
  return a >= 1e4 || a < 1e-3 ? x.toExponential(3) : x.toPrecision(4).replace(/\.?0+$/, "");
}

function setStatus(text, isError = false) {
  const s = byId("status");
  s.textContent = text;
  s.className = isError ? "error" : "";
}

async function api(path, body) {
  const headers = {};
  const key = sessionStorage.getItem(KEY_ITEM);
  if (key) headers["X-API-Key"] = key;
  const init = { headers };
  if (body !== undefined) {
    init.method = "POST";
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  let data = null;
  try { data = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) {
    const msg = (data && data.error) || r.statusText;
    const hint = r.status === 401 || r.status === 403 ? " (check the API key)" : "";
    throw new Error(`${r.status}: ${msg}${hint}`);
  }
  return data;
}

// ---------------------------------------------------------------- input rendering

function flatten(x, out = []) {
  if (Array.isArray(x)) for (const v of x) flatten(v, out);
  else out.push(Number(x));
  return out;
}

// [channels, height, width] when the input is an image: a shape of 2+ dimensions, or flat
// features named pixel_<row>_<col>. Null for tabular inputs.
function imageGeometry(r) {
  const s = r.input_shape;
  if (s.length === 2) return [1, s[0], s[1]];
  if (s.length === 3) return [s[0], s[1], s[2]];
  const names = r.feature_names || [];
  const m = names.map((n) => /^pixel_(\d+)_(\d+)$/.exec(n));
  if (names.length && m.every(Boolean)) {
    const h = 1 + Math.max(...m.map((g) => Number(g[1])));
    const w = 1 + Math.max(...m.map((g) => Number(g[2])));
    if (h * w === names.length) return [1, h, w];
  }
  return null;
}

// Grey levels as the data has them: the model's raw input range when it is known (pixels
// 0..255 for a model that scales by 1/255), else 0 (or the lowest value) up to the highest, so
// an all-zero image is plainly black, not blank. The model says whether 0 is black or white.
function imageCanvas(values, [c, h, w], display) {
  const scale = Math.max(2, Math.floor(168 / Math.max(h, w)));
  const canvas = el("canvas", { class: "input-image", width: w, height: h });
  canvas.style.width = `${w * scale}px`;
  canvas.style.height = `${h * scale}px`;
  canvas.setAttribute("aria-label", `input image ${h}×${w}`);
  const [lo, hi] = display.range || [Math.min(0, ...values), Math.max(0, ...values)];
  const span = hi > lo ? hi - lo : 1;
  const zeroIsWhite = display.zero === "white";
  canvas.dataset.zero = zeroIsWhite ? "white" : "black";
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  for (let p = 0; p < h * w; p++) {
    for (let k = 0; k < 3; k++) {
      const v = Math.min(1, Math.max(0, (values[(c === 3 ? k : 0) * h * w + p] - lo) / span));
      img.data[4 * p + k] = Math.round(255 * (zeroIsWhite && c !== 3 ? 1 - v : v));
    }
    img.data[4 * p + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  return canvas;
}

// How each model's images are drawn, from GET /v1/models; a model missing there (removed
// since the referral) is drawn with the defaults.
const displays = new Map();

async function loadDisplays() {
  try {
    const list = await api("v1/models");
    displays.clear();
    for (const m of list.models) displays.set(m.name, { range: m.input_range, zero: m.image_zero });
  } catch (_) { /* the listing still works; images use the defaults */ }
}

function inputSection(r) {
  const section = el("section", { class: "input" }, el("h3", { text: "Input" }));
  if (r.input === null) {
    section.append(el("p", { class: "meta", text: `not stored; SHA-256 ${r.input_sha256}` }));
    return section;
  }
  const values = flatten(r.input);
  const geometry = imageGeometry(r);
  if (geometry && values.length === geometry[0] * geometry[1] * geometry[2]) {
    section.append(imageCanvas(values, geometry, displays.get(r.model) || {}));
    return section;
  }
  const names = r.feature_names || values.map((_, i) => `x${i}`);
  const body = el("tbody");
  values.forEach((v, i) => body.append(el("tr", {},
    el("th", { text: names[i] ?? `x${i}` }), el("td", { class: "num", text: fmt(v) }))));
  section.append(el("div", { class: "features" }, el("table", { class: "feature-table" }, body)));
  return section;
}

// ---------------------------------------------------------------- prediction rendering

const SCALARS = ["uncertainty", "predictive_entropy", "mutual_information", "variation_ratio"];
const VECTORS = ["mean", "std", "variance", "epistemic_variance", "aleatoric_variance"];

function breakdownSection(r) {
  const p = r.prediction;
  const body = el("tbody");
  const row = (k, v) => body.append(el("tr", {}, el("th", { text: k }),
    el("td", { class: "num", text: v })));
  row("metric", `${r.uncertainty_metric} = ${fmt(r.uncertainty)} > threshold ${fmt(r.threshold)}`);
  for (const k of SCALARS) if (k in p && k !== "uncertainty") row(k, fmt(p[k]));
  if (r.task === "regression") {
    for (const k of VECTORS) if (k in p) row(k, p[k].map(fmt).join(", "));
  } else {
    row("model's label", p.class_label ?? String(p.label));
  }
  row("T (samples)", String(r.samples));
  row("seed", String(r.seed));
  const section = el("section", { class: "breakdown" }, el("h3", { text: "Uncertainty" }),
    el("table", {}, body));
  if (r.task === "classification") section.append(probabilityBars(r));
  return section;
}

function className(r, i) {
  return (r.class_labels && r.class_labels[i]) ?? String(i);
}

function probabilityBars(r) {
  const probs = r.prediction.probabilities || [];
  const box = el("div", { class: "probabilities", "aria-label": "class probabilities" },
    el("h3", { text: "Class probabilities" }));
  probs.forEach((q, i) => {
    const fill = el("div");
    fill.style.width = `${(100 * q).toFixed(1)}%`;
    box.append(el("div", { class: i === r.prediction.label ? "bar-row predicted" : "bar-row" },
      el("span", { text: className(r, i) }), el("div", { class: "bar" }, fill),
      el("span", { class: "num", text: `${(100 * q).toFixed(1)}%` })));
  });
  return box;
}

// ---------------------------------------------------------------- answering

// The model's answer to the nearest digit its own spread makes meaningful: one more decimal
// than the first significant digit of the standard deviation (152 ± 48, 1.23 ± 0.23).
function rounded(mean, std) {
  if (!(std > 0) || !Number.isFinite(std)) return fmt(mean);
  const decimals = Math.min(6, Math.max(0, 1 - Math.floor(Math.log10(std))));
  return `${mean.toFixed(decimals)} ± ${std.toFixed(decimals)}`;
}

// The answer fields start empty and the model's suggestion sits beside them: a reviewer types
// or picks their own answer instead of accepting the model's with one click.
function answerForm(r, card) {
  const form = el("form", { class: "answer" });
  let read;
  const suggestion = (text) => el("span", { class: "suggestion", text: `model: ${text}` });
  if (r.task === "classification") {
    const select = el("select", { name: "label", "aria-label": "label", required: true });
    select.append(el("option", { value: "", text: "choose…", disabled: true, selected: true }));
    (r.prediction.probabilities || []).forEach((q, i) => select.append(el("option",
      { value: String(i), text: className(r, i) })));
    const p = r.prediction;
    const share = (100 * (p.probabilities || [])[p.label]).toFixed(0);
    form.append(el("label", { text: "Label " }, select),
      suggestion(`${className(r, p.label)} (${share}%)`));
    read = () => ({ label: Number(select.value) });
  } else {
    const outputs = r.output_names || r.prediction.mean.map((_, i) => `y${i}`);
    const std = r.prediction.std || [];
    const inputs = outputs.map((name, i) => el("input", {
      type: "number", step: "any", required: true, name: `value-${i}`, "aria-label": name,
    }));
    inputs.forEach((inp, i) => form.append(el("label", { text: `${outputs[i]} ` }, inp),
      suggestion(rounded(r.prediction.mean[i], std[i]))));
    read = () => ({ value: inputs.map((inp) => Number(inp.value)) });
  }
  const note = el("textarea", { name: "note", maxLength: 2000, "aria-label": "note" });
  const claim = el("button", { type: "button", class: "secondary claim", text: "Claim" });
  const submit = el("button", { type: "submit", class: "submit", text: "Submit" });
  form.append(el("label", { text: "Note " }, note), claim, submit);

  claim.addEventListener("click", async () => {
    try {
      const c = await api(`v1/referrals/${encodeURIComponent(r.id)}/claim`, { reviewer: reviewer() });
      setStatus(`Claimed until ${new Date(c.claim_expires_at).toLocaleTimeString()}.`);
    } catch (e) { setStatus(e.message, true); }
  });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    try {
      const body = { reviewer: reviewer(), ...read() };
      if (note.value.trim()) body.note = note.value.trim();
      await api(`v1/referrals/${encodeURIComponent(r.id)}/resolve`, body);
      card.remove();
      pager.total = Math.max(0, pager.total - 1);
      showPageInfo();
      setStatus(`Resolved ${r.id}. Thank you.`);
    } catch (e) {
      setStatus(e.message, true);
      submit.disabled = false;
    }
  });
  return form;
}

function reviewer() {
  const name = byId("reviewer").value.trim();
  if (!name) throw new Error("enter your name as reviewer first");
  return name;
}

function card(r) {
  const when = new Date(r.created_at).toLocaleString();
  const article = el("article", { class: "referral", "data-referral-id": r.id },
    el("h2", { text: `${r.model} v${r.model_version} · ${r.task}` }),
    el("p", { class: "meta", text: `${when} · referral ${r.id} · request ${r.request_id}` +
      (r.claimed_by ? ` · claimed by ${r.claimed_by}` : "") }),
    el("div", { class: "columns" }, inputSection(r), breakdownSection(r)));
  article.append(answerForm(r, article));
  return article;
}

// ---------------------------------------------------------------- listing

function showPageInfo() {
  const first = pager.total ? pager.offset + 1 : 0;
  const last = Math.min(pager.offset + PAGE_SIZE, pager.total);
  byId("page-info").textContent = `${first}–${last} of ${pager.total} pending`;
  byId("newer").disabled = pager.offset === 0;
  byId("older").disabled = pager.offset + PAGE_SIZE >= pager.total;
}

// ---------------------------------------------------------------- calibration watch

// A model whose live uncertainty no longer looks like its calibration data: its threshold's
// guarantee is void, and the items referred (or not) may be a different population.
async function showWatch() {
  const banner = byId("watch-banner");
  let shifted = [];
  try {
    const list = await api("v1/models");
    shifted = list.models.filter((m) => m.calibration_watch && m.calibration_watch.status === "shifted");
  } catch (_) { /* the listing's own error is shown by load() */ }
  banner.hidden = !shifted.length;
  banner.replaceChildren(...shifted.map((m) => {
    const w = m.calibration_watch;
    return el("p", { text: `Calibration shifted for model ${m.name} (version ${m.version}): live ` +
      `uncertainty no longer looks like the data its threshold was calibrated on ` +
      `(test martingale ${fmt(w.martingale)} ≥ ${fmt(w.alarm_level)} since ${w.shifted_at}). ` +
      `Referral rates and errors may exceed what was certified.` });
  }));
}

async function load() {
  showWatch();
  const params = new URLSearchParams({ status: "pending", order: "newest",
    limit: String(PAGE_SIZE), offset: String(pager.offset) });
  const model = byId("model-filter").value.trim();
  if (model) params.set("model", model);
  const who = byId("reviewer").value.trim();
  if (who) params.set("reviewer", who); // also show the items I have claimed
  setStatus("Loading…");
  try {
    const [page] = await Promise.all([api(`v1/referrals?${params}`), loadDisplays()]);
    pager.total = page.total;
    const items = byId("items");
    items.replaceChildren(...page.items.map(card));
    if (!page.items.length) items.append(el("p", { class: "empty", text: "Nothing to review." }));
    showPageInfo();
    setStatus(`Loaded ${page.items.length} item(s).`);
  } catch (e) {
    setStatus(e.message, true);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  byId("api-key").value = sessionStorage.getItem(KEY_ITEM) || "";
  byId("reviewer").value = sessionStorage.getItem(REVIEWER_ITEM) || "";
  byId("settings").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = byId("api-key").value.trim();
    if (key) sessionStorage.setItem(KEY_ITEM, key); else sessionStorage.removeItem(KEY_ITEM);
    sessionStorage.setItem(REVIEWER_ITEM, byId("reviewer").value.trim());
    pager.offset = 0;
    load();
  });
  byId("newer").addEventListener("click", () => { pager.offset = Math.max(0, pager.offset - PAGE_SIZE); load(); });
  byId("older").addEventListener("click", () => { pager.offset += PAGE_SIZE; load(); });
  load();
});
