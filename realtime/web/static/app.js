// Face gender web page: uploads (images → gallery, videos → jobs with progress) and the webcam.
// Talks only to the server that served it (see the Content-Security-Policy header).
"use strict";

const $ = (selector) => document.querySelector(selector);
let info = null; // GET /api/info
const liveJobs = new Set(); // video jobs whose files are still on the server

// --- small DOM helpers -------------------------------------------------------------------------
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "style") Object.assign(node.style, value); // CSSOM: allowed by the CSP
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

const pct = (x) => `${Math.round(x * 100)}%`;
const conf = (c) => (c == null ? "–" : c.toFixed(2));
const mb = (bytes) => `${(bytes / 1048576).toFixed(1)} MB`;

function colourOf(label) {
  const colours = (info && info.colours) || {};
  return colours[label || "pending"] || colours.uncertain || "#aaaaaa";
}

// An uncertain face shows which way it leans: "male? 0.70" (0.70 is its probability of male).
function leaning(f) {
  return f.lean ? `${f.lean}? ${conf(f.confidence)}` : conf(f.confidence);
}

function labelCell(label) {
  return el("td", {}, el("span", { class: "chip", style: { background: colourOf(label) } }), label || "…");
}

function facesTable(headings, rows) {
  return el("div", { class: "table-wrap" }, el("table", { class: "faces" },
    el("thead", {}, el("tr", {}, ...headings.map((h) => el("th", { text: h })))),
    el("tbody", {}, ...rows)));
}

function message(text, kind = "") {
  return el("div", { class: `message ${kind}`.trim(), text });
}

// --- info and tabs -------------------------------------------------------------------------------
async function loadInfo() {
  try {
    const resp = await fetch("/api/info");
    info = await resp.json();
  } catch (err) {
    $("#limits").textContent = "The server does not answer.";
    return;
  }
  $("#model-info").textContent = `Model: ${info.model} (${info.input_size} px).`;
  const exts = [...info.image_extensions, ...info.video_extensions];
  $("#files").accept = ["image/*", "video/*", ...exts].join(",");
  $("#limits").textContent =
    `Images: ${info.image_extensions.join(" ")} · videos: ${info.video_extensions.join(" ")} · ` +
    `up to ${info.max_upload_mb} MB per file, videos up to ${info.max_video_seconds} s`;
}

function showTab(name) {
  for (const tab of ["upload", "webcam"]) {
    $(`#tab-${tab}`).setAttribute("aria-selected", String(tab === name));
    $(`#panel-${tab}`).hidden = tab !== name;
  }
  if (name !== "webcam") stopCam();
}

// --- uploads ---------------------------------------------------------------------------------------
function newCard(name) {
  const card = el("article", { class: "card" }, el("h2", { text: name, title: name }));
  const body = el("div", { class: "body" }, el("div", { class: "meta", text: "Uploading…" }));
  card.append(body);
  $("#results").append(card);
  $("#toolbar").hidden = false;
  return body;
}

function showError(body, text) {
  body.closest(".card").classList.add("error");
  body.replaceChildren(message(text, "error"));
}

function blurOn() {
  const box = document.querySelector("#blur");
  return Boolean(box && box.checked);
}

async function uploadFiles(files) {
  for (const file of files) {
    const body = newCard(file.name);
    if (info && file.size > info.max_upload_bytes) {
      showError(body, `${file.name} is ${mb(file.size)}; uploads are limited to ${info.max_upload_mb} MB.`);
      continue;
    }
    const form = new FormData();
    form.append("files", file, file.name);
    let resp;
    let data;
    try {
      resp = await fetch(`/api/upload?blur=${blurOn() ? 1 : 0}`, { method: "POST", body: form });
      data = await resp.json();
    } catch (err) {
      showError(body, "The server did not answer (is it still running?).");
      continue;
    }
    const item = data.items ? data.items[0] : null;
    if (!item || item.error) {
      showError(body, (item && item.error) || data.error || `Upload failed (HTTP ${resp.status}).`);
    } else if (item.kind === "image") {
      renderImage(body, item);
    } else {
      renderJob(body, item);
    }
  }
  updateSummary();
}

function updateSummary() {
  const cards = document.querySelectorAll("#results .card");
  const faces = document.querySelectorAll("#results table.faces tbody tr").length;
  $("#summary").textContent = `${cards.length} file${cards.length === 1 ? "" : "s"}, ${faces} face${faces === 1 ? "" : "s"}`;
}

function renderImage(body, item) {
  const n = item.faces.length;
  const img = el("img", { src: item.image, alt: `${item.name} with ${n} labelled face${n === 1 ? "" : "s"}` });
  const stem = item.name.replace(/\.[^.]+$/, "");
  const links = el("div", { class: "links" },
    el("span", { class: "meta", text: `${item.width} × ${item.height} px · ${n} face${n === 1 ? "" : "s"}` }),
    el("a", { href: item.image, download: `${stem}.labelled.jpg`, text: "Download image" }));
  body.replaceChildren(img, links);
  if (n === 0) {
    body.append(message(item.message || "No faces found in this image."));
    return;
  }
  const rows = item.faces.map((f, i) => el("tr", {},
    el("td", { text: String(i + 1) }),
    labelCell(f.label),
    el("td", { text: leaning(f) }),
    el("td", { text: f.box.join(", ") }),
    el("td", { text: f.detector_score.toFixed(2) })));
  body.append(facesTable(["#", "Label", "Confidence", "Box x, y, w, h", "Detector"], rows));
}

// --- video jobs ---------------------------------------------------------------------------------
function renderJob(body, job) {
  liveJobs.add(job.id);
  const bar = el("progress", { max: 1, value: 0 });
  const text = el("div", { class: "meta", text: "Waiting for the video worker…" });
  body.replaceChildren(bar, text);
  const poll = async () => {
    let status;
    try {
      const resp = await fetch(`/api/jobs/${job.id}`);
      status = await resp.json();
      if (!resp.ok) throw new Error(status.error || `HTTP ${resp.status}`);
    } catch (err) {
      liveJobs.delete(job.id);
      showError(body, `Lost the video job: ${err.message}`);
      return;
    }
    if (status.state === "queued" || status.state === "running") {
      if (status.progress != null) bar.value = status.progress;
      else bar.removeAttribute("value");
      text.textContent = status.state === "queued" ? "Queued behind another video…"
        : `Processing: frame ${status.frames}${status.total ? ` of ${status.total} (${pct(status.progress)})` : ""}`;
      setTimeout(poll, 400);
    } else if (status.state === "done") {
      renderJobResult(body, status);
    } else {
      liveJobs.delete(job.id);
      showError(body, status.error || "The video could not be processed.");
    }
  };
  poll();
}

function renderJobResult(body, job) {
  const parts = [];
  if (job.playable) {
    parts.push(el("video", { src: job.video_url, controls: true, preload: "metadata", muted: true }));
  } else {
    parts.push(message(`This server's OpenCV writes ${job.video_format}, which browsers cannot play: ` +
      "download the video and open it in a player such as VLC."));
  }
  const stem = job.name.replace(/\.[^.]+$/, "");
  const del = el("button", { type: "button", text: "Delete from server" });
  parts.push(el("div", { class: "links" },
    el("a", { href: job.download_url, download: "", text: `Download video (${job.video_format})` }),
    el("a", { href: job.jsonl_url, download: `${stem}.faces.jsonl`, text: "Download JSONL" }),
    del));
  parts.push(el("div", { class: "meta", text:
    `${job.frames} frames in ${job.seconds} s · ${job.tracks.length} tracked face${job.tracks.length === 1 ? "" : "s"}` +
    ` · deleted from the server in ${Math.ceil(job.expires_in_s / 60)} min, or when you leave this page` }));
  if (job.warning) parts.push(message(job.warning, "warning"));
  if (job.tracks.length === 0) {
    parts.push(message("No faces found in this video."));
  } else {
    const rows = job.tracks.map((t) => el("tr", {},
      el("td", { text: String(t.track_id) }),
      labelCell(t.label),
      el("td", { text: conf(t.confidence) }),
      el("td", { text: `${t.first_s.toFixed(1)}–${t.last_s.toFixed(1)} s` }),
      el("td", { text: String(t.frames) })));
    parts.push(facesTable(["Track", "Label", "Confidence", "Seen", "Frames"], rows));
  }
  body.replaceChildren(...parts);
  del.addEventListener("click", async () => {
    await fetch(`/api/jobs/${job.id}`, { method: "DELETE" }).catch(() => null);
    liveJobs.delete(job.id);
    body.replaceChildren(message("Deleted from the server."));
  });
  updateSummary();
}

// Leaving the page deletes the results that are still on the server.
window.addEventListener("pagehide", () => {
  for (const id of liveJobs) navigator.sendBeacon(`/api/jobs/${id}/delete`);
});

// --- webcam ----------------------------------------------------------------------------------------
const cam = { stream: null, ws: null, running: false, times: [], grab: document.createElement("canvas") };

function camStatus(text, isError = false) {
  const node = $("#cam-status");
  node.textContent = text;
  node.classList.toggle("error", isError);
}

async function startCam() {
  if (cam.running) return;
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    camStatus("This browser allows the webcam only on https:// pages or http://localhost / 127.0.0.1.", true);
    return;
  }
  try {
    cam.stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
  } catch (err) {
    camStatus(`No webcam: ${err.message || err.name}`, true);
    return;
  }
  const video = $("#cam-video");
  video.srcObject = cam.stream;
  await video.play();
  $("#cam-stage").hidden = false;
  cam.running = true;
  cam.times = [];
  $("#cam-start").disabled = true;
  $("#cam-stop").disabled = false;
  camStatus("Connecting…");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/api/live?blur=${blurOn() ? 1 : 0}`);
  cam.ws = ws;
  ws.onopen = () => { camStatus("Live"); sendFrame(); };
  ws.onmessage = (event) => {
    if (cam.ws !== ws) return;
    const reply = JSON.parse(event.data);
    if (reply.error) camStatus(reply.error, true);
    else showLive(reply);
    sendFrame();
  };
  ws.onclose = (event) => {
    if (cam.ws !== ws) return; // an earlier session
    if (cam.running) camStatus(`Disconnected${event.reason ? `: ${event.reason}` : ""}`, true);
    stopCam(false);
  };
}

function sendFrame() {
  const video = $("#cam-video");
  if (!cam.running || !cam.ws || cam.ws.readyState !== WebSocket.OPEN || !video.videoWidth) {
    if (cam.running) setTimeout(sendFrame, 50);
    return;
  }
  const scale = Math.min(1, 640 / video.videoWidth);
  cam.grab.width = Math.round(video.videoWidth * scale);
  cam.grab.height = Math.round(video.videoHeight * scale);
  cam.grab.getContext("2d").drawImage(video, 0, 0, cam.grab.width, cam.grab.height);
  cam.grab.toBlob((blob) => {
    if (blob && cam.running && cam.ws.readyState === WebSocket.OPEN) cam.ws.send(blob);
  }, "image/jpeg", 0.8);
}

function showLive(reply) {
  const now = performance.now();
  cam.times.push(now);
  while (cam.times.length > 1 && now - cam.times[0] > 2000) cam.times.shift();
  const fps = cam.times.length > 1 ? (cam.times.length - 1) / ((now - cam.times[0]) / 1000) : 0;
  $("#cam-fps").textContent = `${fps.toFixed(1)} FPS · server ${reply.ms.toFixed(0)} ms`;

  const video = $("#cam-video");
  const canvas = $("#cam-overlay");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  const k = video.videoWidth / reply.width;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const fontPx = Math.max(14, Math.round(canvas.height / 28));
  ctx.font = `600 ${fontPx}px system-ui, sans-serif`;
  ctx.lineWidth = Math.max(2, canvas.height / 240);
  for (const face of reply.faces) {
    const [x, y, w, h] = face.box.map((v) => v * k);
    const colour = colourOf(face.pending ? null : face.label);
    ctx.strokeStyle = colour;
    ctx.strokeRect(x, y, w, h);
    const text = face.caption;
    const tw = ctx.measureText(text).width + 8;
    const ty = y - fontPx - 6 >= 0 ? y - fontPx - 6 : y + h;
    ctx.fillStyle = colour;
    ctx.fillRect(x, ty, tw, fontPx + 6);
    ctx.fillStyle = "#000";
    ctx.fillText(text, x + 4, ty + fontPx);
  }
  const table = $("#cam-faces");
  table.hidden = false;
  table.tBodies[0].replaceChildren(...reply.faces.map((f) => el("tr", {},
    el("td", { text: String(f.track_id) }), labelCell(f.pending ? null : f.label), el("td", { text: leaning(f) }),
    el("td", { text: f.box.join(", ") }))));
}

function stopCam(closeSocket = true) {
  const wasRunning = cam.running;
  cam.running = false;
  if (closeSocket && cam.ws) cam.ws.close();
  cam.ws = null;
  if (cam.stream) cam.stream.getTracks().forEach((track) => track.stop());
  cam.stream = null;
  $("#cam-start").disabled = false;
  $("#cam-stop").disabled = true;
  if (wasRunning && closeSocket) camStatus("Stopped");
}

// --- wiring ----------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  loadInfo();
  $("#tab-upload").addEventListener("click", () => showTab("upload"));
  $("#tab-webcam").addEventListener("click", () => showTab("webcam"));
  $("#files").addEventListener("change", (event) => {
    const files = [...event.target.files];
    event.target.value = "";
    uploadFiles(files);
  });
  const drop = $("#drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    uploadFiles([...event.dataTransfer.files]);
  });
  $("#clear").addEventListener("click", () => {
    for (const id of liveJobs) fetch(`/api/jobs/${id}`, { method: "DELETE" }).catch(() => null);
    liveJobs.clear();
    $("#results").replaceChildren();
    $("#toolbar").hidden = true;
  });
  $("#cam-start").addEventListener("click", startCam);
  $("#cam-stop").addEventListener("click", () => stopCam());
});
