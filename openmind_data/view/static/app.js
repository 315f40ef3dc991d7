// The QC browser's page: the list of images from /api/images, one image from /api/images/ID,
// its planes as PNGs drawn by the server, ratings posted back. No framework, no build step.
"use strict";

const state = {
  sort: "image_quality_score",
  order: "asc",
  rows: [],
  current: null,   // the open image's details
  index: {},       // plane -> slice index
  window: null,    // [low, high]
  masks: new Set(),
  info: null,
};

const $ = (selector) => document.querySelector(selector);

function element(tag, text, attributes) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  return node;
}

async function getJson(url, options) {
  const response = await fetch(url, options);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function query(extra) {
  const params = new URLSearchParams();
  for (const [name, value] of new FormData($("#filters"))) if (value !== "") params.set(name, value);
  params.set("sort", state.sort);
  params.set("order", state.order);
  for (const [name, value] of Object.entries(extra || {})) params.set(name, value);
  return params;
}

function format(value, digits) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(digits || 3);
  if (Array.isArray(value)) return value.map((v) => format(v, digits)).join(", ");
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

// -- the list ------------------------------------------------------------------------------
async function loadFacets() {
  state.info = await getJson("/api/facets");
  $("#dataset").textContent = `${state.info.dataset}: ${state.info.images} images`;
  for (const [name, values] of Object.entries(state.info.facets)) {
    const select = $(`#filters [name=${name}]`);
    for (const value of values) select.append(element("option", value, { value }));
  }
  const masks = $("#masks");
  for (const [name, colour] of Object.entries(state.info.masks)) {
    const box = element("input", null, { type: "checkbox", id: `mask-${name}`, value: name });
    box.checked = true;
    state.masks.add(name);
    box.addEventListener("change", () => {
      if (box.checked) state.masks.add(name); else state.masks.delete(name);
      drawAll();
    });
    const label = element("label", null, { style: `color: ${colour}` });
    label.append(box, ` ${name}`);
    masks.append(label);
  }
}

async function loadList() {
  const found = await getJson(`/api/images?${query({ limit: 1000 })}`);
  state.rows = found.rows;
  $("#count").textContent = `${found.total} images` + (found.total > found.rows.length ? ` (first ${found.rows.length} shown)` : "");
  const body = $("#images tbody");
  body.replaceChildren();
  for (const row of found.rows) {
    const line = element("tr", null, { "data-id": row.image_id });
    const rating = row.rating ? `${row.rating.rating}${row.rating.verdict ? " " + row.rating.verdict : ""}` : "";
    for (const value of [row.image_id, row.modality, row.dataset_id, row.split, row.license,
      row.defacing, format(row.image_quality_score, 2), format(row.qc_flags), rating]) {
      line.append(element("td", value));
    }
    if (state.current && row.image_id === state.current.image_id) line.classList.add("current");
    line.addEventListener("click", () => openImage(row.image_id));
    body.append(line);
  }
  for (const header of document.querySelectorAll("#images th")) {
    header.classList.toggle("sorted", header.dataset.sort === state.sort);
    header.classList.toggle("desc", header.dataset.sort === state.sort && state.order === "desc");
  }
  updateProgress();
}

function updateProgress() {
  const rated = state.rows.filter((row) => row.rating).length;
  $("#progress").textContent = `rated here: ${rated} of ${state.rows.length} · ratings file ${state.info.ratings_file}`;
}

// -- one image -----------------------------------------------------------------------------
async function openImage(imageId) {
  const details = await getJson(`/api/images/${encodeURIComponent(imageId)}`);
  state.current = details;
  const grid = details.grid;
  state.window = grid.window.slice();
  $("#viewer").hidden = false;
  $("#title").textContent = `${imageId} · ${details.fields.modality} · ${details.fields.dataset_id}`;
  const planes = $("#planes");
  planes.replaceChildren();
  state.info.planes.forEach((plane, axis) => {
    state.index[plane] = grid.centre[axis];
    const figure = element("figure", null, { "data-plane": plane });
    const picture = element("img", null, { id: `plane-${plane}`, alt: plane });
    const slider = element("input", null, {
      id: `slider-${plane}`, type: "range", min: 0, max: grid.shape[axis] - 1, step: 1,
    });
    slider.value = grid.centre[axis];
    const caption = element("figcaption");
    slider.addEventListener("input", () => {
      state.index[plane] = Number(slider.value);
      draw(plane);
    });
    figure.append(picture, slider, caption);
    planes.append(figure);
  });
  const [low, high] = grid.range;
  const level = $("#level"), width = $("#window");
  level.min = low; level.max = high;
  width.min = (high - low) / 200 || 1e-6; width.max = high - low || 1;
  setWindowSliders();
  drawAll();
  showDetails(details);
  for (const line of document.querySelectorAll("#images tbody tr")) {
    line.classList.toggle("current", line.dataset.id === imageId);
  }
  history.replaceState(null, "", `#image=${encodeURIComponent(imageId)}`);
}

function setWindowSliders() {
  const [low, high] = state.window;
  $("#level").value = (low + high) / 2;
  $("#window").value = high - low;
}

function windowFromSliders() {
  const level = Number($("#level").value), width = Number($("#window").value);
  state.window = [level - width / 2, level + width / 2];
  drawAll();
}

function draw(plane) {
  const id = encodeURIComponent(state.current.image_id);
  const params = new URLSearchParams({
    low: state.window[0], high: state.window[1], masks: [...state.masks].join(","),
  });
  const index = state.index[plane];
  $(`#plane-${plane}`).src = `/api/images/${id}/planes/${plane}/${index}.png?${params}`;
  const axis = state.info.planes.indexOf(plane);
  document.querySelector(`figure[data-plane=${plane}] figcaption`).textContent =
    `${plane} ${index + 1} / ${state.current.grid.shape[axis]}`;
}

function drawAll() {
  if (!state.current) return;
  for (const plane of state.info.planes) draw(plane);
}

function showDetails(details) {
  const quality = details.quality;
  let text = `IQS ${format(quality.score, 2)} from ${quality.model || "no model"}`;
  if (quality.explained_by) {
    text += ` · intercept ${format(quality.intercept, 2)} · recomputed ${format(quality.recomputed, 2)}`;
  } else if (quality.score !== null) {
    text += " · contributions need that model's file (openmind view --model)";
  }
  $("#iqs").textContent = text;
  const metrics = $("#metrics tbody");
  metrics.replaceChildren();
  const largest = Math.max(1e-9, ...quality.metrics.map((m) => m.contribution || 0));
  for (const metric of quality.metrics) {
    const line = element("tr");
    line.append(element("td", metric.metric), element("td", format(metric.value)),
      element("td", format(metric.z, 2)));
    const share = element("td", format(metric.contribution, 2) + " ");
    if (metric.contribution) {
      share.append(element("span", null, { class: "share", style: `width: ${40 * metric.contribution / largest}px` }));
    }
    line.append(share);
    metrics.append(line);
  }
  fillList($("#fields"), { ...details.fields, qc_flags: details.qc_flags });
  fillList($("#source"), details.source);
  const provenance = $("#provenance");
  provenance.replaceChildren();
  for (const step of details.provenance) {
    provenance.append(element("li", `${step.step}: ${step.method}` + (step.parameters ? ` ${format(step.parameters)}` : "")));
  }
  showRating(details.rating);
}

function fillList(list, values) {
  list.replaceChildren();
  for (const [name, value] of Object.entries(values)) {
    list.append(element("dt", name), element("dd", format(value)));
  }
}

function showRating(rating) {
  $("#rated").textContent = rating ? `rated ${rating.rating}${rating.verdict ? " (" + rating.verdict + ")" : ""}` : "not rated";
  for (const button of document.querySelectorAll("#rating button")) {
    const chosen = rating && (button.dataset.verdict === rating.verdict || (!rating.verdict && button.dataset.rating === String(rating.rating)));
    button.classList.toggle("chosen", Boolean(chosen));
  }
}

// -- rating --------------------------------------------------------------------------------
async function rate(body) {
  if (!state.current) return;
  const id = state.current.image_id;
  const rating = await getJson(`/api/images/${encodeURIComponent(id)}/rating`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  state.current.rating = rating;
  showRating(rating);
  await loadList();
}

async function nextUnrated() {
  const after = state.current ? state.current.image_id : "";
  const found = await getJson(`/api/next?${query({ after })}`);
  if (found.image_id) await openImage(found.image_id);
  else $("#rated").textContent = "every image of this selection is rated";
}

function step(offset) {
  if (!state.rows.length) return;
  const at = state.current ? state.rows.findIndex((row) => row.image_id === state.current.image_id) : -1;
  const next = Math.min(Math.max(at + offset, 0), state.rows.length - 1);
  openImage(state.rows[next].image_id);
}

function onKey(event) {
  const tag = event.target.tagName;
  if ((tag === "INPUT" && event.target.type !== "range" && event.target.type !== "checkbox") || tag === "SELECT" || event.ctrlKey || event.metaKey || event.altKey) return;
  const verdicts = { a: "accept", d: "doubtful", x: "exclude" };
  if (verdicts[event.key]) rate({ verdict: verdicts[event.key] });
  else if ("12345".includes(event.key) && event.key.length === 1) rate({ rating: Number(event.key) });
  else if (event.key === "n") nextUnrated();
  else if (event.key === "j") step(1);
  else if (event.key === "k") step(-1);
  else return;
  event.preventDefault();
}

async function start() {
  await loadFacets();
  const scores = document.querySelector("#rating .scores");
  for (let value = 1; value <= 5; value += 1) {
    const button = element("button", String(value), { type: "button", "data-rating": String(value) });
    button.addEventListener("click", () => rate({ rating: value }));
    scores.append(button);
  }
  for (const button of document.querySelectorAll("#rating button[data-verdict]")) {
    button.addEventListener("click", () => rate({ verdict: button.dataset.verdict }));
  }
  $("#next").addEventListener("click", nextUnrated);
  $("#filters").addEventListener("change", loadList);
  $("#level").addEventListener("input", windowFromSliders);
  $("#window").addEventListener("input", windowFromSliders);
  $("#reset").addEventListener("click", () => {
    state.window = state.current.grid.window.slice();
    setWindowSliders();
    drawAll();
  });
  for (const header of document.querySelectorAll("#images th")) {
    header.addEventListener("click", () => {
      state.order = state.sort === header.dataset.sort && state.order === "asc" ? "desc" : "asc";
      state.sort = header.dataset.sort;
      loadList();
    });
  }
  document.addEventListener("keydown", onKey);
  await loadList();
  const wanted = new URLSearchParams(location.hash.slice(1)).get("image");
  if (wanted) await openImage(wanted);
  document.body.dataset.ready = "true";
}

start().catch((error) => {
  document.body.dataset.error = error.message;
  $("#count").textContent = `error: ${error.message}`;
});
