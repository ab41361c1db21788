// The imageclf page: choose or drop an image, see the prediction, the probabilities and the heatmap.
// Plain browser JavaScript, no libraries: the page must work offline.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "imageclf-token";
let limits = null;
let objectUrls = [];
// Asked for once (when the server answers 401) and kept for this tab only.
let token = sessionStorage.getItem(TOKEN_KEY);

// fetch() with the access token, if one was given; a 401 asks for it (again) and gives null.
async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers["Authorization"] = "Bearer " + token;
  const r = await fetch(path, Object.assign({}, options, { headers }));
  if (r.status === 401) {
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    askForToken();
    return null;
  }
  return r;
}

function askForToken() {
  $("token-form").hidden = false;
  $("model-line").textContent = "This server needs an access token.";
  $("token-input").focus();
}

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
    const r = await api("/model");
    if (!r) return;
    if (!r.ok) throw new Error(await errorText(r));
    const m = await r.json();
    limits = m.limits;
    $("card-link").hidden = !m.card;
    const metric = m.metrics && (m.metrics.val_accuracy ?? m.metrics.accuracy);
    let line = m.name + " \u00b7 " + m.classes.join(" / ") + " \u00b7 input " +
      m.input.height + "\u00d7" + m.input.width + (m.input.channels === 1 ? " gray" : " RGB") +
      " \u00b7 " + m.backend + " \u00b7 version " + m.version;
    if (typeof metric === "number") line += " \u00b7 validation accuracy " + percent(metric);
    line += m.ood ? " \u00b7 refuses unfamiliar images" : " \u00b7 no out-of-distribution check";
    if (m.ood && m.ood.mode === "flag") line = line.replace("refuses", "flags");
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
    const r = await api("/explain", { method: "POST", body: form });
    if (!r) {
      note.textContent = "No heatmap: the access token was refused.";
      return;
    }
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
    r = await api("/predict", { method: "POST", body: form });
  } catch (e) {
    showMessage("The server could not be reached.");
    return;
  }
  if (!r) {
    showMessage("The server needs an access token: enter it above, then choose the image again.");
    return;
  }
  if (!r.ok) {
    showMessage("Rejected: " + (await errorText(r)));
    return;
  }
  const body = await r.json();
  const pred = body.predictions[0];
  $("message").hidden = true;
  showVerdict(pred, body.ood);
  const rule = body.classes.length === 2
    ? body.classes[1] + " when its probability \u2265 " + body.threshold
    : "the most probable class";
  $("result-note").textContent = "Decision: " + rule + ". Answered in " +
    body.timing_ms.total.toFixed(0) + " ms.";
  $("result").hidden = false;
  $("images").hidden = false;
  await explain(file);
}

// The class and its probability; or, for an image unlike the training images, the refusal
// (no class) or the flag (a class, with a warning), saying the score and the threshold.
function showVerdict(pred, ood) {
  const result = $("result");
  const note = $("ood-note");
  result.classList.toggle("refused", pred.refused);
  result.classList.toggle("flagged", pred.outside && !pred.refused);
  note.hidden = !pred.outside;
  $("result-label").textContent = pred.refused ? "Answer" : "Predicted class";
  if (pred.refused) {
    $("result-class").textContent = "Outside what this model was trained on";
    $("result-prob").textContent = "\u2014";
    note.textContent = "This image is unlike the images the model learned from (out-of-distribution score " +
      pred.ood_score.toPrecision(4) + ", threshold " + ood.threshold.toPrecision(4) + "), so it gives no " +
      "class. The probabilities below are only what the network computed, not an answer.";
  } else {
    $("result-class").textContent = pred["class"];
    $("result-prob").textContent = percent(pred.probability);
    if (pred.outside) {
      note.textContent = "Flagged: this image is unlike the images the model learned from " +
        "(out-of-distribution score " + pred.ood_score.toPrecision(4) + ", threshold " +
        ood.threshold.toPrecision(4) + "); do not trust the class.";
    }
  }
  renderBars(pred.probabilities, pred.refused ? null : pred["class"]);
}

function setup() {
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("token-input").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token-input").value = "";
    $("token-form").hidden = true;
    loadModel();
  });
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
