// The imageclf page: choose or drop an image, see the prediction, the probabilities and the heatmap.
// Plain browser JavaScript, no libraries: the page must work offline.
"use strict";

const $ = (id) => document.getElementById(id);
let limits = null;
let objectUrls = [];

function formatMB(bytes) {
  return (bytes / 1048576).toFixed(1) + " MB";
}

function percent(p) {
  return (100 * p).toFixed(1) + " %";
}

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = "message " + kind;
  box.hidden = false;
}

function track(url) {
  objectUrls.push(url);
  return url;
}

function reset() {
  objectUrls.forEach((u) => URL.revokeObjectURL(u));
  objectUrls = [];
  $("message").hidden = true;
  $("result").hidden = true;
  $("images").hidden = true;
  $("bars").replaceChildren();
  $("heatmap").hidden = true;
  $("heatmap").removeAttribute("src");
  $("heatmap-note").textContent = "Computing the heatmap\u2026";
  $("heatmap-note").hidden = false;
  $("preview-note").hidden = true;
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch (e) { /* not JSON */ }
  return "the server answered " + response.status + " " + response.statusText;
}

async function loadModel() {
  try {
    const r = await fetch("/model");
    if (!r.ok) throw new Error(await errorText(r));
    const m = await r.json();
    limits = m.limits;
    const metric = m.metrics && (m.metrics.val_accuracy ?? m.metrics.accuracy);
    let line = m.name + " \u00b7 " + m.classes.join(" / ") + " \u00b7 input " +
      m.input.height + "\u00d7" + m.input.width + (m.input.channels === 1 ? " gray" : " RGB") +
      " \u00b7 " + m.backend + " \u00b7 version " + m.version;
    if (typeof metric === "number") line += " \u00b7 validation accuracy " + percent(metric);
    $("model-line").textContent = line;
    $("limits").textContent = "PNG, JPEG or DICOM \u00b7 up to " + formatMB(limits.max_upload_bytes) +
      " and " + (limits.max_pixels / 1e6).toFixed(0) + " megapixels";
  } catch (e) {
    $("model-line").textContent = "The model could not be loaded: " + e.message;
  }
}

function renderBars(probabilities, predicted) {
  const bars = $("bars");
  const entries = Object.entries(probabilities).sort((a, b) => b[1] - a[1]);
  for (const [name, p] of entries) {
    const row = document.createElement("div");
    row.className = "bar-row" + (name === predicted ? " top" : "");
    const label = document.createElement("span");
    label.className = "bar-label";
    label.textContent = name;
    const trackEl = document.createElement("span");
    trackEl.className = "bar-track";
    const fill = document.createElement("span");
    fill.className = "bar-fill";
    fill.style.width = Math.max(0.5, 100 * p).toFixed(1) + "%";
    trackEl.appendChild(fill);
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = percent(p);
    row.append(label, trackEl, value);
    bars.appendChild(row);
  }
}

async function explain(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  const note = $("heatmap-note");
  try {
    const r = await fetch("/explain", { method: "POST", body: form });
    if (!r.ok) {
      note.textContent = "No heatmap: " + (await errorText(r));
      return;
    }
    const img = $("heatmap");
    img.src = track(URL.createObjectURL(await r.blob()));
    img.hidden = false;
    note.hidden = true;
  } catch (e) {
    note.textContent = "No heatmap: the server could not be reached.";
  }
}

async function classify(file) {
  reset();
  if (!file) return;
  if (file.size === 0) {
    showMessage(file.name + ": the file is empty.");
    return;
  }
  if (limits && file.size > limits.max_upload_bytes) {
    showMessage(file.name + ": " + formatMB(file.size) + " is over the server's limit of " +
      formatMB(limits.max_upload_bytes) + ".");
    return;
  }
  const preview = $("preview");
  preview.hidden = false;
  preview.onerror = () => { preview.hidden = true; $("preview-note").hidden = false; };
  preview.src = track(URL.createObjectURL(file));
  $("preview-caption").textContent = file.name;
  showMessage("Classifying " + file.name + "\u2026", "info");

  const form = new FormData();
  form.append("files", file, file.name);
  let r;
  try {
    r = await fetch("/predict", { method: "POST", body: form });
  } catch (e) {
    showMessage("The server could not be reached.");
    return;
  }
  if (!r.ok) {
    showMessage("Rejected: " + (await errorText(r)));
    return;
  }
  const body = await r.json();
  const pred = body.predictions[0];
  $("message").hidden = true;
  $("result-class").textContent = pred["class"];
  $("result-prob").textContent = percent(pred.probability);
  renderBars(pred.probabilities, pred["class"]);
  const rule = body.classes.length === 2
    ? body.classes[1] + " when its probability \u2265 " + body.threshold
    : "the most probable class";
  $("result-note").textContent = "Decision: " + rule + ". Answered in " +
    body.timing_ms.total.toFixed(0) + " ms.";
  $("result").hidden = false;
  $("images").hidden = false;
  await explain(file);
}

function setup() {
  const drop = $("drop");
  const input = $("file-input");
  input.addEventListener("change", () => classify(input.files[0]));
  drop.addEventListener("click", (e) => { if (e.target === drop) input.click(); });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") input.click(); });
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => {
    e.preventDefault();
    drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => {
    e.preventDefault();
    drop.classList.remove("over");
  }));
  drop.addEventListener("drop", (e) => {
    const files = e.dataTransfer.files;
    if (files.length > 1) showMessage("One image at a time, please: using " + files[0].name + ".", "info");
    if (files.length) classify(files[0]);
  });
  loadModel();
}

setup();
