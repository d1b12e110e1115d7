// harx serve: the page. Plain JS, no build step. Every id (run, sample, annotated video) comes
// from the server; the page never sends a path.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token");
const $ = (id) => document.getElementById(id);
const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
                 "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3", "#808000", "#000075"];

function url(path, params = {}) {
  const q = new URLSearchParams(params);
  if (TOKEN) q.set("token", TOKEN);
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

async function api(path, params) {
  const r = await fetch(url(path, params));
  const body = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return body;
}

const pct = (v) => (v === null || v === undefined ? "—" : `${(100 * v).toFixed(1)} %`);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

function show(view) {
  for (const v of ["runs", "run", "classify", "live"]) $(`view-${v}`).hidden = v !== view;
}

// ---------------------------------------------------------------- runs

let RUNS = [];

async function loadRuns() {
  RUNS = (await api("/api/runs")).runs;
  const body = $("runs-table").querySelector("tbody");
  body.innerHTML = "";
  for (const r of RUNS) {
    const tr = document.createElement("tr");
    tr.className = "clickable";
    tr.dataset.run = r.id;
    tr.innerHTML = `<td>${esc(r.name)}</td><td>${esc(r.head)}</td><td>${esc(r.streams)}</td><td>${esc(r.seed ?? "")}</td>` +
      `<td>${esc(r.cache)}</td><td>${pct(r.val_accuracy)}</td><td>${pct(r.test_accuracy)}</td><td>${esc(r.unit || "")}</td>`;
    tr.onclick = () => { location.hash = `#run/${r.id}`; };
    body.appendChild(tr);
  }
  $("runs-empty").hidden = RUNS.length > 0;
  const options = RUNS.map((r) => `<option value="${r.id}">${esc(r.name)} (${esc(r.cache)})</option>`).join("");
  $("classify-run").innerHTML = options;
  $("live-run").innerHTML = options;
}

async function openRun(rid) {
  show("run");
  const d = await api(`/api/runs/${encodeURIComponent(rid)}`);
  $("run-title").textContent = `${d.name} — ${d.head} on ${d.streams}, seed ${d.seed}`;
  const m = d.metrics;
  const p = d.protocol || {};
  $("run-metrics").innerHTML = `<p class="metrics">test accuracy <b>${pct(m.test.accuracy)}</b> per ${esc(d.unit || "sample")}` +
    (d.video_accuracy !== undefined && d.video_accuracy !== null ? `, <b>${pct(d.video_accuracy)}</b> per video` : "") +
    `; mean class accuracy ${pct(m.test.mean_class_accuracy)}; macro-F1 ${pct(m.test.macro_f1)}; val ${pct(m.val.accuracy)}</p>` +
    `<p class="hint">${esc(p.split_protocol || "")}; trained on ${esc(p.trained_on || "train")}, ` +
    `${esc(p.frame_aggregation || "")}</p>`;
  $("run-protocol").querySelector("pre").textContent = JSON.stringify({ protocol: d.protocol, calibration: d.calibration, training: d.training }, null, 1);
  $("run-pictures").innerHTML = d.pictures.map((n) =>
    `<img alt="${esc(n)}" src="${esc(url(`/api/runs/${encodeURIComponent(rid)}/pictures/${encodeURIComponent(n)}`))}">`).join("");
  drawConfusion(rid, d);
  $("mistakes").hidden = true;
  $("player").hidden = true;
  $("run-compare").innerHTML = d.compare_reports.map((c) =>
    `<details><summary>compare report: ${esc(c.name)}</summary><pre>${esc(c.markdown)}</pre></details>`).join("");
}

function drawConfusion(rid, d) {
  const t = $("confusion");
  const cm = d.confusion || [];
  const classes = d.classes || [];
  const used = classes.map((_, i) => cm[i].some((v) => v > 0) || cm.some((row) => row[i] > 0));
  const idx = classes.map((_, i) => i).filter((i) => used[i]);
  let html = `<tr><th>true \\ predicted</th>${idx.map((j) => `<th>${esc(classes[j])}</th>`).join("")}</tr>`;
  for (const i of idx) {
    const total = cm[i].reduce((a, b) => a + b, 0) || 1;
    html += `<tr><th>${esc(classes[i])}</th>` + idx.map((j) => {
      const v = cm[i][j];
      const shade = Math.round(255 - 180 * v / total);
      const cls = v > 0 ? (i === j ? "cell right" : "cell wrong") : "cell";
      return `<td class="${cls}" style="background: rgb(${shade},${shade},255)" data-true="${esc(classes[i])}" ` +
        `data-predicted="${esc(classes[j])}">${esc(v)}</td>`;
    }).join("") + "</tr>";
  }
  t.innerHTML = html;
  for (const td of t.querySelectorAll("td.cell")) {
    td.onclick = () => listSamples(rid, td.dataset.true, td.dataset.predicted);
  }
}

async function listSamples(rid, truth, predicted) {
  const rows = (await api(`/api/runs/${rid}/samples`, { true: truth, predicted })).samples;
  $("mistakes").hidden = false;
  $("mistakes-title").textContent = `${rows.length} test sample(s): ${truth} → ${predicted}`;
  $("mistakes-list").innerHTML = rows.map((s) =>
    `<li><a href="#" data-k="${s.index}">${esc(s.sample_id)}</a> — ${esc(s.predicted)} ${pct(s.confidence)}</li>`).join("");
  for (const a of $("mistakes-list").querySelectorAll("a")) {
    a.onclick = (e) => { e.preventDefault(); openSample(rid, Number(a.dataset.k), a.textContent); };
  }
}

async function openSample(rid, k, name) {
  $("player").hidden = false;
  $("player-title").textContent = name;
  $("player-note").textContent = "classifying the video…";
  const video = $("player-video");
  video.src = url(`/api/runs/${rid}/samples/${k}/video`);
  try {
    const doc = await api(`/api/runs/${rid}/samples/${k}/timeline`);
    const range = doc.sample_frames;
    $("player-note").textContent = `video: ${doc.label} ${pct(doc.confidence)}` +
      (range ? `; this test sample is frames ${range[0] + 1}-${range[1]} (marked)` : "");
    attachTimeline($("player-timeline"), video, doc, range);
  } catch (err) {
    $("player-note").textContent = `error: ${err.message}`;
  }
}

// ---------------------------------------------------------------- the timeline

function classColors(names) {
  const colors = {};
  names.forEach((n, i) => { colors[n] = PALETTE[i % PALETTE.length]; });
  return colors;
}

// Per window, each class's probability stacked as a bar; a cursor follows playback.
function attachTimeline(canvas, video, doc, range) {
  const names = Object.keys(doc.probabilities || {});
  const colors = classColors(names);
  const fps = (doc.video && doc.video.fps) || 25;
  const total = Math.max(1, (doc.video && doc.video.n_frames) || 1);
  const windows = doc.timeline || [];
  const centres = windows.map((t) => (t.start_frame + t.stop_frame) / 2);
  const nearest = (frame) => {     // the window whose centre is nearest (overlapping windows: as harx annotates)
    let best = -1, dist = Infinity;
    centres.forEach((c, i) => { const d = Math.abs(c - frame); if (d < dist) { dist = d; best = i; } });
    return windows[best];
  };
  const draw = () => {
    const ctx = canvas.getContext("2d");
    const band = range ? 6 : 0;
    const w = canvas.width, h = canvas.height - 16 - band;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (range) {                  // the test sample's frames: a band above
      ctx.fillStyle = "#d4a000";
      ctx.fillRect(range[0] / total * w, 0, Math.max(2, (range[1] - range[0]) / total * w), band - 1);
    }
    for (let x = 0; x < w && windows.length; x++) {
      const win = nearest((x + 0.5) / w * total);
      if (!win || (x + 0.5) / w * total > win.stop_frame) continue;
      let y = band + h;
      for (const n of names) {    // every class's probability, stacked
        const p = (win.probabilities || {})[n] ?? (n === win.label ? win.confidence : 0);
        ctx.fillStyle = colors[n];
        ctx.fillRect(x, y - p * h, 1, p * h);
        y -= p * h;
      }
    }
    const x = (video.currentTime * fps) / total * w;
    ctx.fillStyle = "#000";
    ctx.fillRect(x - 1, 0, 2, band + h);
    const now = windows.length ? nearest(video.currentTime * fps) : null;
    ctx.font = "12px sans-serif";
    let lx = 4;
    for (const n of names) {
      ctx.fillStyle = colors[n];
      ctx.fillRect(lx, band + h + 4, 10, 10);
      ctx.fillStyle = "#222";
      ctx.fillText(n, lx + 13, band + h + 13);
      lx += ctx.measureText(n).width + 24;
    }
    if (now) {
      ctx.fillText(`now: ${now.label} ${pct(now.confidence)}`, Math.max(lx, w - 160), band + h + 13);
    }
    canvas.dataset.label = now ? now.label : "";
  };
  video.ontimeupdate = draw;
  video.onseeked = draw;
  draw();
}

// ---------------------------------------------------------------- classify

function classify(file) {
  const form = new FormData();
  form.append("video", file);
  const run = $("classify-run").value;
  if (run) form.append("run", run);
  const bar = $("classify-progress");
  const status = $("classify-status");
  bar.hidden = false;
  bar.value = 0;
  $("classify-result").hidden = true;
  status.className = "status";
  status.textContent = `uploading ${file.name}…`;
  const xhr = new XMLHttpRequest();
  xhr.open("POST", url("/api/predict"));
  xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = 100 * e.loaded / e.total; };
  xhr.upload.onload = () => { status.textContent = "decoding, embedding and classifying…"; bar.removeAttribute("value"); };
  xhr.onload = () => {
    bar.hidden = true;
    let doc;
    try { doc = JSON.parse(xhr.responseText); } catch (e) { doc = { error: `HTTP ${xhr.status}` }; }
    if (xhr.status !== 200 || doc.error) {
      status.className = "status error";
      status.textContent = `error: ${doc.error || `HTTP ${xhr.status}`}`;
      return;
    }
    status.textContent = "";
    showResult(doc);
  };
  xhr.onerror = () => { bar.hidden = true; status.className = "status error"; status.textContent = "error: the server did not answer"; };
  xhr.send(form);
}

function showResult(doc) {
  $("classify-result").hidden = false;
  $("classify-label").textContent = doc.label;
  $("classify-confidence").textContent = pct(doc.confidence);
  $("classify-unfamiliar").hidden = !doc.unfamiliar;
  $("classify-json").textContent = JSON.stringify(doc, null, 1);
  const link = $("classify-annotated");
  const video = $("classify-video");
  if (doc.annotated) {
    link.href = url(doc.annotated);
    link.hidden = false;
    video.src = url(doc.annotated);
  } else {
    link.hidden = true;
  }
  attachTimeline($("classify-timeline"), video, doc, null);
}

function setUpClassify() {
  $("classify-file").onchange = (e) => { if (e.target.files[0]) classify(e.target.files[0]); };
  const drop = $("drop");
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove("over"); if (e.dataTransfer.files[0]) classify(e.dataTransfer.files[0]); };
}

// ---------------------------------------------------------------- live

const LIVE = { ws: null, stream: null, timer: null, sent: 0, answers: [] };

async function startLive() {
  stopLive();
  const status = $("live-stats");
  status.className = "status";
  try {
    LIVE.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: false });
  } catch (err) {
    status.className = "status error";
    status.textContent = `error: no camera (${err.message})`;
    return;
  }
  const video = $("live-video");
  video.srcObject = LIVE.stream;
  await video.play().catch(() => {});
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}${url("/api/live", { run: $("live-run").value })}`);
  ws.binaryType = "arraybuffer";
  LIVE.ws = ws;
  LIVE.answers = [];
  ws.onmessage = (e) => {
    const a = JSON.parse(e.data);
    if (a.error) { status.className = "status error"; status.textContent = `error: ${a.error}`; return; }
    const now = performance.now();
    LIVE.answers.push({ at: now, latency: now - a.t });
    LIVE.answers = LIVE.answers.filter((x) => x.at > now - 3000);
    const rate = LIVE.answers.length / 3;
    const lat = LIVE.answers.map((x) => x.latency).sort((x, y) => x - y);
    const p50 = lat[Math.floor(lat.length / 2)];
    $("live-overlay").textContent = `${a.label} ${pct(a.confidence)}`;
    $("live-overlay").dataset.label = a.label;
    status.textContent = `${rate.toFixed(1)} labels/s; latency ${Math.round(now - a.t)} ms (median ${Math.round(p50)} ms over 3 s); ` +
      `window ${a.frames_in_window} frames; server ${a.server_ms} ms per frame; frames dropped while busy: ${a.dropped}`;
    $("live-stats").dataset.rate = rate.toFixed(2);
    $("live-stats").dataset.latency = String(Math.round(p50));
  };
  ws.onclose = (e) => {
    if (LIVE.ws !== ws) return;
    if (!LIVE.answers.length) {      // closed before any label: say so, do not wait in silence
      status.className = "status error";
      status.textContent = `error: the live connection closed (code ${e.code}) before any label`;
    } else {
      status.textContent += " (connection closed)";
    }
  };
  const canvas = document.createElement("canvas");
  const send = () => {
    if (ws.readyState !== WebSocket.OPEN || !video.videoWidth || ws.bufferedAmount > 1 << 20) return;
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    const t = performance.now();
    canvas.toBlob(async (blob) => {
      if (!blob || ws.readyState !== WebSocket.OPEN) return;
      const body = new Uint8Array(8 + blob.size);
      new DataView(body.buffer).setFloat64(0, t, true);
      body.set(new Uint8Array(await blob.arrayBuffer()), 8);
      ws.send(body);
      LIVE.sent += 1;
    }, "image/jpeg", 0.8);
  };
  LIVE.timer = setInterval(send, 1000 / Math.max(1, Number($("live-fps").value) || 10));
  $("live-start").disabled = true;
  $("live-stop").disabled = false;
}

function stopLive() {
  if (LIVE.timer) clearInterval(LIVE.timer);
  if (LIVE.ws) LIVE.ws.close();
  if (LIVE.stream) LIVE.stream.getTracks().forEach((t) => t.stop());
  LIVE.timer = LIVE.ws = LIVE.stream = null;
  $("live-start").disabled = false;
  $("live-stop").disabled = true;
}

// ---------------------------------------------------------------- routing

async function route() {
  const h = location.hash || "#runs";
  try {
    if (h.startsWith("#run/")) await openRun(h.slice(5));
    else if (h === "#classify") show("classify");
    else if (h === "#live") show("live");
    else { show("runs"); await loadRuns(); }
  } catch (err) {
    document.querySelector("main").insertAdjacentHTML("afterbegin", `<p class="status error">error: ${esc(err.message)}</p>`);
  }
}

window.addEventListener("hashchange", () => { if (location.hash !== "#live") stopLive(); route(); });
setUpClassify();
$("live-start").onclick = startLive;
$("live-stop").onclick = stopLive;
loadRuns().then(route);
