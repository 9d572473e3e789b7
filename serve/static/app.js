// The page: fetches /models and /examples once, then posts to /predict and /batch(/csv). Text from the server or
// the user is only ever set with textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let labels = [];

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

const fmt = {
  ms: (v) => (v < 10 ? v.toFixed(2) : v.toFixed(1)) + " ms",
  pct: (v) => (v === null ? "–" : (100 * v).toFixed(1) + "%"),
  x: (v) => (v === null ? "–" : v.toFixed(1) + "×"),
  num: (v, digits) => (v === null ? "–" : v.toFixed(digits)),
  kl: (v) => (v === null ? "–" : v > 0 && v < 1e-3 ? v.toExponential(1) : v.toFixed(4)),
};

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (_) { /* a non-JSON answer is reported by status below */ }
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : `HTTP ${response.status}`;
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return body;
}

function showError(id, error) {
  $(id).textContent = error ? error.message : "";
  $(id).hidden = !error;
}

function selectedModels() {
  return [...document.querySelectorAll("#model-list input:checked")].map((box) => box.value);
}

function modelCell(row) {
  return el("td", {}, [el("strong", { textContent: row.model }), el("br"), el("small", { textContent: row.backend })]);
}

function probabilityBars(probabilities) {
  const top = probabilities.indexOf(Math.max(...probabilities));
  return probabilities.map((p, i) => {
    const bar = el("div", { className: "bar" }, [el("span")]);
    bar.firstChild.style.width = (100 * p).toFixed(1) + "%";
    return el("div", { className: "prob-row" + (i === top ? " top" : "") },
      [el("span", { textContent: labels[i] ?? `class ${i}` }), bar, el("span", { className: "prob", textContent: fmt.pct(p) })]);
  });
}

function agreementClass(agrees, kind) {
  if (kind === "teacher") return "reference";
  return agrees === null ? "" : agrees ? "agree" : "disagree";
}

function renderResults(results) {
  const body = $("results").querySelector("tbody");
  body.replaceChildren(...results.map((r) => el("tr", { className: agreementClass(r.agrees, r.kind) }, [
    modelCell(r),
    el("td", { textContent: r.kind }),
    el("td", { className: "prediction", textContent: r.label }),
    el("td", { className: "probabilities" }, probabilityBars(r.probabilities)),
    el("td", { className: "num latency", textContent: fmt.ms(r.latency_ms) }),
    el("td", { className: "num", textContent: fmt.x(r.speedup) }),
    el("td", { className: "num", textContent: fmt.num(r.cosine, 4) }),
    el("td", { className: "num", textContent: fmt.kl(r.kl) }),
    el("td", { className: "agrees", textContent: r.agrees === null ? "–" : r.agrees ? "yes" : "no" }),
  ])));
  [...body.rows].forEach((tr, i) => { tr.dataset.model = results[i].name; });
  $("results").hidden = false;
}

function renderBatch(results) {
  const body = $("batch-results").querySelector("tbody");
  body.replaceChildren(...results.map((r) => el("tr", { className: r.kind === "teacher" ? "reference" : "" }, [
    modelCell(r),
    el("td", { textContent: r.kind }),
    el("td", { className: "num", textContent: String(r.examples) }),
    el("td", { className: "num accuracy", textContent: fmt.pct(r.accuracy) }),
    el("td", { className: "num agreement", textContent: fmt.pct(r.agreement) }),
    el("td", { className: "num", textContent: fmt.num(r.mean_cosine, 4) }),
    el("td", { className: "num", textContent: fmt.kl(r.mean_kl) }),
    el("td", { className: "num latency", textContent: fmt.ms(r.total_ms) }),
    el("td", { className: "num", textContent: fmt.ms(r.ms_per_example) }),
    el("td", { className: "num", textContent: fmt.x(r.speedup) }),
  ])));
  [...body.rows].forEach((tr, i) => { tr.dataset.model = results[i].name; });
  $("batch-results").hidden = false;
}

async function busy(button, status, work) {
  button.disabled = true;
  $(status).textContent = "running…";
  try { await work(); } finally { button.disabled = false; $(status).textContent = ""; }
}

async function compare(event) {
  event.preventDefault();
  showError("single-error", null);
  await busy($("compare"), "single-status", async () => {
    try {
      const result = await api("/predict", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ text: $("text").value, models: selectedModels() }),
      });
      renderResults(result.results);
    } catch (error) { showError("single-error", error); }
  });
}

async function runBatch(event) {
  event.preventDefault();
  showError("batch-error", null);
  await busy($("run-batch"), "batch-status", async () => {
    try {
      const file = $("csv-file").files[0];
      let result;
      if (file) {
        const form = new FormData();
        form.append("file", file);
        form.append("models", selectedModels().join(","));
        result = await api("/batch/csv", { method: "POST", body: form });
      } else {
        const texts = $("lines").value.split("\n").filter((line) => line.trim());
        result = await api("/batch", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ texts, models: selectedModels() }),
        });
      }
      renderBatch(result.results);
    } catch (error) { showError("batch-error", error); }
  });
}

function showTab(batch) {
  $("single-panel").hidden = batch;
  $("batch-panel").hidden = !batch;
  $("tab-single").setAttribute("aria-selected", String(!batch));
  $("tab-batch").setAttribute("aria-selected", String(batch));
}

async function start() {
  $("single-form").addEventListener("submit", compare);
  $("batch-form").addEventListener("submit", runBatch);
  $("tab-single").addEventListener("click", () => showTab(false));
  $("tab-batch").addEventListener("click", () => showTab(true));
  try {
    const info = await api("/models");
    labels = info.labels;
    $("run-summary").textContent = `Profile ${info.profile || "(none)"}: ${info.models.length} model(s) loaded` +
      (info.teacher ? `, compared with the teacher ${info.teacher}.` : "; no teacher, so no comparisons.");
    $("model-list").replaceChildren(...info.models.map((m) => el("label", {}, [
      el("input", { type: "checkbox", value: m.name, checked: true, disabled: m.name === info.teacher,
                    title: m.name === info.teacher ? "the teacher always runs: it is the reference" : "" }),
      " " + m.name,
    ])));
    $("missing-list").replaceChildren(...info.missing.map((m) => el("li", {}, [
      el("strong", { textContent: m.name }), ": " + m.reason,
    ])));
    $("missing").hidden = info.missing.length === 0;
    $("text").maxLength = info.limits.max_text_chars;
    const examples = await api("/examples");
    $("examples").replaceChildren(el("span", { textContent: "Examples from the test split:" }),
      ...examples.map((e) => el("button", {
        type: "button", className: "example", textContent: e.text, title: `gold label: ${e.label}`,
        onclick: () => { $("text").value = e.text; $("single-form").requestSubmit(); },
      })));
    $("lines").placeholder = examples.map((e) => e.text).join("\n");
  } catch (error) {
    $("run-summary").textContent = "Could not read the model list: " + error.message;
  }
}

start();
