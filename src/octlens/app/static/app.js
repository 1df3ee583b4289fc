// octlens web app: upload scans, show every run's answer and maps. No external scripts; every
// text from the server or a file name goes into the page as text (textContent), never as HTML.
"use strict";

const state = { files: [], results: [], selected: 0, classes: [] };
const $ = (id) => document.getElementById(id);

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (className) node.className = className;
  return node;
}

const percent = (value) => `${Math.round(100 * value)}%`;

async function loadRuns() {
  const response = await fetch("/api/runs");
  const info = await response.json();
  state.classes = info.classes;
  for (const name of info.classes) $("target").append(new Option(name, name));
  for (const example of info.examples) {
    $("example").append(new Option(`${example.class}: ${example.name}`, example.id));
  }
  for (const run of info.runs) $("runs").append(runCard(run));
}

function runCard(run) {
  const card = element("article", null, "run-card");
  card.append(element("h2", `${run.name} (${run.model}, ${run.img_size} px)`));
  if (run.test) {
    const auc = run.test.macro_auc === null ? "" : `, macro AUC ${run.test.macro_auc.toFixed(3)}`;
    card.append(element("p", `test accuracy ${run.test.accuracy.toFixed(3)} on ${run.test.n} scans${auc}`));
  } else if (run.test_error) {
    card.append(element("p", run.test_error));
  }
  if (run.audit) {
    const verdict = run.audit.flagged ? "audit: FLAGGED" : "audit: not flagged";
    card.append(element("p", `${verdict} (${run.audit.split} split, ${run.audit.n_scans} scans)`,
      run.audit.flagged ? "flagged" : "clear"));
    const list = element("ul");
    for (const line of run.audit.verdict.slice(0, 4)) list.append(element("li", line));
    card.append(list);
  } else {
    card.append(element("p", run.audit_error || "no audit in this run's folder (run 'octlens audit')"));
  }
  card.append(element("p", `methods: ${run.methods.join(", ")}`));
  return card;
}

async function analyse(files) {
  if (!files.length) return;
  state.files = files;
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  if ($("target").value) form.append("target", $("target").value);
  form.append("raw", "true");
  $("error").textContent = "";
  $("status").textContent = `Analysing ${files.length} scan${files.length > 1 ? "s" : ""}…`;
  $("progress").hidden = false;
  $("result").setAttribute("aria-busy", "true");
  try {
    const response = await fetch("/api/explain", { method: "POST", body: form });
    const body = await response.json().catch(() => ({ detail: `server answered ${response.status}` }));
    if (!response.ok) {
      showError(body.detail || `server answered ${response.status}`);
      return;
    }
    state.results = body.files;
    state.selected = Math.max(0, state.results.findIndex((entry) => !entry.error));
    render();
    $("status").textContent = `Done: ${state.results.length} scan${state.results.length > 1 ? "s" : ""}.`;
  } catch (problem) {
    showError(`the server could not be reached (${problem})`);
  } finally {
    $("progress").hidden = true;
    $("result").removeAttribute("aria-busy");
  }
}

function showError(message) {
  $("error").textContent = typeof message === "string" ? message : JSON.stringify(message);
  $("status").textContent = "";
}

function render() {
  renderTable();
  renderSelected();
}

function renderTable() {
  const head = $("table-head");
  while (head.children.length > 1) head.lastChild.remove();
  const runs = (state.results.find((entry) => !entry.error) || { runs: [] }).runs;
  for (const run of runs) head.append(element("th", run.run));
  head.append(element("th", "notes"));
  const body = $("table-body");
  body.replaceChildren();
  state.results.forEach((entry, index) => {
    const row = element("tr");
    row.tabIndex = 0;
    row.append(element("td", entry.name));
    if (entry.error) {
      row.append(element("td", entry.error));
    } else {
      for (const run of entry.runs) {
        row.append(element("td", `${run.predicted} ${percent(run.probabilities[run.predicted])}`));
      }
      row.append(element("td", entry.not_oct.length ? "does not look like an OCT B-scan" : ""));
    }
    if (index === state.selected) row.classList.add("selected");
    const choose = () => { state.selected = index; render(); body.children[index].focus(); };
    row.addEventListener("click", choose);
    row.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); choose(); }
    });
    body.append(row);
  });
  $("table").hidden = state.results.length === 0;
}

function renderSelected() {
  const result = $("result");
  result.replaceChildren();
  const entry = state.results[state.selected];
  if (!entry) return;
  result.append(element("h2", entry.name));
  if (entry.error) {
    result.append(element("p", entry.error, "warning"));
    return;
  }
  if (entry.not_oct.length) {
    result.append(element("p",
      `This does not look like an OCT B-scan: ${entry.not_oct.join("; ")}. ` +
      "The models answer anyway; do not trust these answers.", "warning"));
  }
  const row = element("div", null, "runs-row");
  for (const run of entry.runs) row.append(runAnswer(entry, run));
  result.append(row);
}

function runAnswer(entry, run) {
  const box = element("section", null, "run-answer");
  box.append(element("h3", `${run.run}: ${run.predicted} (${percent(run.probabilities[run.predicted])})`));
  const probs = element("div", null, "probs");
  for (const [name, value] of Object.entries(run.probabilities)) {
    const bar = element("div", null, "bar");
    bar.style.width = `${Math.max(1, 100 * value)}%`;
    const track = element("div");
    track.append(bar);
    probs.append(element("span", name), track, element("span", value.toFixed(3)));
  }
  box.append(probs);
  box.append(element("p", `maps explain: ${run.target}`));
  const panels = element("div", null, "panels");
  for (const map of run.maps) panels.append(panel(entry, run, map));
  box.append(panels);
  return box;
}

function panel(entry, run, map) {
  const figure = element("figure");
  const canvas = element("canvas");
  canvas.dataset.method = map.method;
  canvas.dataset.run = run.run;
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", `${map.method} map of ${run.run} for ${run.target}`);
  figure.append(canvas);
  const caption = element("figcaption");
  caption.append(element("strong", map.method));
  if (map.shares) {  // null for an empty map, whose warning says so
    caption.append(element("div",
      `off the retina ${percent(map.shares.off_retina)} (area ${percent(run.area_shares.off_retina)}), ` +
      `corners ${percent(map.shares.corners)} (area ${percent(run.area_shares.corners)})`));
  }
  if (map.warning) caption.append(element("div", map.warning, "warning"));
  const stem = `${entry.name.replace(/\.[^.]*$/, "")}_${run.run}_${map.method}`;
  const overlay = element("button", "overlay PNG");
  overlay.type = "button";
  overlay.addEventListener("click", () => canvas.toBlob((blob) => download(blob, `${stem}.png`)));
  const raw = element("button", "raw map .npy");
  raw.type = "button";
  raw.addEventListener("click", () => {
    const bytes = Uint8Array.from(atob(map.raw_npy), (c) => c.charCodeAt(0));
    download(new Blob([bytes], { type: "application/octet-stream" }), `${stem}.npy`);
  });
  caption.append(overlay, raw);
  figure.append(caption);
  Promise.all([image(run.scan_png), image(map.heatmap_png), image(run.retina_png)]).then(
    ([scan, heat, outline]) => {
      canvas.octlens = { scan, heat, outline };
      draw(canvas);
    });
  return figure;
}

function image(source) {
  return new Promise((resolve, reject) => {
    const picture = new Image();
    picture.onload = () => resolve(picture);
    picture.onerror = reject;
    picture.src = source;
  });
}

// The scan, the colour map with alpha = value x opacity (the server's overlay blend), the outline.
function draw(canvas) {
  const layers = canvas.octlens;
  if (!layers) return;
  canvas.width = layers.scan.width;
  canvas.height = layers.scan.height;
  const context = canvas.getContext("2d");
  context.globalAlpha = 1;
  context.drawImage(layers.scan, 0, 0);
  context.globalAlpha = Number($("opacity").value);
  context.drawImage(layers.heat, 0, 0);
  context.globalAlpha = 1;
  if ($("outline").checked) context.drawImage(layers.outline, 0, 0);
  canvas.dataset.drawn = String(Number(canvas.dataset.drawn || 0) + 1);
}

function download(blob, name) {
  const link = element("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

function redrawAll() {
  for (const canvas of document.querySelectorAll("canvas")) draw(canvas);
}

async function useExample(id) {
  if (id === "") return;
  const response = await fetch(`/api/examples/${id}`);
  if (!response.ok) { showError(`example ${id}: server answered ${response.status}`); return; }
  const name = $("example").selectedOptions[0].textContent.split(": ").pop();
  analyse([new File([await response.blob()], name)]);
}

function setUp() {
  const drop = $("drop");
  const input = $("files");
  drop.addEventListener("click", () => input.click());
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); input.click(); }
  });
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    analyse([...event.dataTransfer.files]);
  });
  input.addEventListener("change", () => { analyse([...input.files]); input.value = ""; });
  $("example").addEventListener("change", (event) => useExample(event.target.value));
  $("opacity").addEventListener("input", redrawAll);
  $("outline").addEventListener("change", redrawAll);
  $("target").addEventListener("change", () => analyse(state.files));
  loadRuns().catch((problem) => showError(`could not read the runs (${problem})`));
}

document.addEventListener("DOMContentLoaded", setUp);
