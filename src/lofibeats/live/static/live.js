// lofibeats live: the page. Opens /ws, hands audio frames to the AudioWorklet (worklet.js),
// forwards the worklet's playback position to the server (its pacing signal), sends knob
// changes, and draws the spectrogram, level, real-time factor and buffer health.
// Everything it measures is in `window.lofi` (the browser tests read it from there).
"use strict";

const $ = (id) => document.getElementById(id);
const HEADER_BYTES = 16; // take u32, rev u32, position f64 (see protocol.py)
const KNOB_SEND_MS = 80; // a dragged slider sends at most this often
const PING_MS = 20000; // a paused page says it is still there (the server frees silent ones)

const lofi = (window.lofi = {
  hello: null, // the server's limits
  take: null, // the take message of what is playing
  stats: null, // the server's last stats (rtf, cpu, ahead)
  status: null, // the worklet's last status (position, buffered, underruns, level)
  playing: false,
  started: false, // a start was sent on this connection
  clickedAt: null,
  firstAudioMs: null, // press play -> first sample played
  underruns: [], // {seconds: audio played before it, take}
  knobLatencies: [], // ms from a knob change to the first sample generated with it
  errors: [],
  notes: [],
  framesReceived: 0,
  maxRms: 0,
  closed: null, // {code, reason} once the socket closed
});

let audio = null; // {ctx, node, analyser}
let ws = null;
let checkpoints = [];
let queued = []; // frames that arrived before the worklet was ready
const knobTimes = new Map(); // set-message id -> time sent
const pendingRevs = new Map(); // knob revision -> time its change was sent
let nextKnobId = 1;

// ------------------------------------------------------------------ audio graph
async function ensureAudio(rate) {
  if (audio && (!rate || audio.ctx.sampleRate === rate)) {
    await audio.ready;
    return audio;
  }
  if (audio) {
    audio.ctx.close();
    audio = null;
  }
  const ctx = rate ? new AudioContext({ sampleRate: rate, latencyHint: "playback" })
    : new AudioContext({ latencyHint: "playback" });
  const ready = (async () => {
    await ctx.audioWorklet.addModule("/static/worklet.js");
    const node = new AudioWorkletNode(ctx, "lofibeats-live", {
      numberOfInputs: 0,
      outputChannelCount: [1],
      processorOptions: { reportSeconds: 0.05 }, // the rest comes with the server's hello
    });
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 1024;
    analyser.smoothingTimeConstant = 0;
    node.connect(ctx.destination);
    node.connect(analyser);
    node.port.onmessage = (e) => onWorklet(e.data);
    return { ctx, node, analyser };
  })();
  audio = { ctx, ready };
  Object.assign(audio, await ready);
  configureWorklet();
  for (const f of queued) postFrame(f);
  queued = [];
  return audio;
}

// The server's buffer settings, for the worklet (before any frame: it sizes its ring then).
function configureWorklet() {
  if (!audio || !audio.node || !lofi.hello) return;
  const h = lofi.hello;
  audio.node.port.postMessage({
    type: "config",
    startSeconds: h.start_seconds,
    capacitySeconds: 2 * h.ahead_seconds + 2,
    historySeconds: h.history_seconds,
  });
}

function postFrame(f) {
  if (!audio || !audio.node) {
    queued.push(f);
    return;
  }
  audio.node.port.postMessage(f, [f.pcm.buffer]);
}

// ------------------------------------------------------------------ the socket
function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  ws = new WebSocket(`${scheme}://${location.host}/ws`);
  ws.binaryType = "arraybuffer";
  ws.onmessage = (e) => (typeof e.data === "string" ? onMessage(JSON.parse(e.data)) : onFrame(e.data));
  ws.onclose = (e) => {
    ws = null;
    lofi.hello = null;
    lofi.started = false;
    lofi.closed = { code: e.code, reason: e.reason };
    lofi.take = null;
    if (lofi.playing) stopPlaying();
    if (e.code !== 1000 && e.code !== 1013 && !e.reason) show("error", "the connection to the server closed");
    $("new-take").disabled = true;
  };
}

function send(message) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
}

function onFrame(buffer) {
  const view = new DataView(buffer);
  const frame = {
    type: "frame",
    take: view.getUint32(0, true),
    rev: view.getUint32(4, true),
    position: view.getFloat64(8, true),
    pcm: new Int16Array(buffer, HEADER_BYTES),
  };
  lofi.framesReceived += 1;
  postFrame(frame);
}

async function onMessage(m) {
  if (m.type === "hello") {
    lofi.hello = m;
    configureWorklet();
    startIfReady();
  } else if (m.type === "take") {
    lofi.take = m;
    lofi.stats = null;
    showTake(m);
    showKnobs(m.knobs);
    await ensureAudio(m.sr);
    if (lofi.playing && audio.ctx.state !== "running") await audio.ctx.resume();
  } else if (m.type === "knobs") {
    const sent = knobTimes.get(m.id);
    knobTimes.delete(m.id);
    if (sent !== undefined) pendingRevs.set(m.rev, sent);
  } else if (m.type === "stats") {
    lofi.stats = m;
    if (audio && audio.node) {
      // a model slower than real time: gather most of the buffer before playing again
      const ahead = (lofi.hello && lofi.hello.ahead_seconds) || 1.5;
      const start = (lofi.hello && lofi.hello.start_seconds) || 0.3;
      audio.node.port.postMessage({ type: "threshold", seconds: m.keeping_up ? start : 0.9 * ahead });
    }
  } else if (m.type === "error" || m.type === "busy" || m.type === "closing") {
    lofi.errors.push(m.message);
    show("error", m.message);
  } else if (m.type === "note") {
    lofi.notes.push(m.message);
    show("note", m.message);
  }
}

// ------------------------------------------------------------------ the worklet
function onWorklet(m) {
  if (m.type === "status") {
    lofi.status = m;
    if (m.take >= 0) send({ type: "played", take: m.take, position: m.position, playing: m.playing });
    if (m.samplesPlayed > 0 && lofi.firstAudioMs === null && lofi.clickedAt !== null) {
      lofi.firstAudioMs = performance.now() - lofi.clickedAt;
    }
    if (m.samplesPlayed > 0) lofi.maxRms = Math.max(lofi.maxRms, m.rms);
    for (const [rev, sent] of pendingRevs) {
      if (m.rev >= rev) {
        lofi.knobLatencies.push(performance.now() - sent);
        pendingRevs.delete(rev);
      }
    }
  } else if (m.type === "underrun") {
    const sr = audio ? audio.ctx.sampleRate : 1;
    lofi.underruns.push({ seconds: m.played / sr, take: lofi.take && lofi.take.take });
  } else if (m.type === "history") {
    saveWav(m.audio, m.sampleRate);
  }
}

// ------------------------------------------------------------------ controls
// The first take starts with the server's knobs (python live.py temperature=...) once play
// is pressed and the server said hello.
function startIfReady() {
  if (lofi.playing && lofi.hello && !lofi.started) {
    lofi.started = true;
    send({ type: "start", checkpoint: $("checkpoint").value || undefined });
  }
}

// Before play is pressed: open the socket and build the audio graph (suspended until the
// click), so pressing play only has to resume them and wait for the first audio.
async function prepare() {
  if (!ws) connect();
  const chosen = checkpoints.find((c) => c.id === $("checkpoint").value);
  if (chosen) await ensureAudio(chosen.sr);
}

async function togglePlay() {
  if (lofi.playing) {
    stopPlaying();
    send({ type: "pause" });
    return;
  }
  lofi.clickedAt = performance.now();
  lofi.firstAudioMs = null;
  lofi.playing = true;
  $("play").textContent = "\u275A\u275A Pause";
  $("play").setAttribute("aria-pressed", "true");
  const chosen = checkpoints.find((c) => c.id === $("checkpoint").value);
  const graph = ensureAudio(chosen ? chosen.sr : null); // resumed inside the click: may play
  if (!ws) connect();
  else if (lofi.started) send({ type: "resume" });
  else startIfReady();
  const a = await graph;
  if (a.ctx.state !== "running") await a.ctx.resume();
  $("new-take").disabled = false;
  $("download").disabled = false;
}

function stopPlaying() {
  lofi.playing = false;
  $("play").textContent = "\u25B6 Play";
  $("play").setAttribute("aria-pressed", "false");
  if (audio && audio.ctx) audio.ctx.suspend();
}

function knobValues() {
  const topP = Number($("top-p").value);
  const knobs = { temperature: Number($("temperature").value), top_p: topP >= 1 ? null : topP };
  if (lofi.take && lofi.take.lookback) knobs.loop = Number($("loop").value);
  if (lofi.take && lofi.take.plan) knobs.beat_prior = Number($("beat-prior").value);
  if (lofi.take && lofi.take.latent) knobs.creativity = Number($("creativity").value);
  return knobs;
}

function sendKnobs(knobs, movedAt = performance.now()) {
  const id = nextKnobId++;
  knobTimes.set(id, movedAt);
  send({ type: "set", id, ...knobs });
}

function slider(id, format, knob) {
  // the first movement is sent at once; while the slider is dragged, the latest value at most
  // every KNOB_SEND_MS (a knob's latency counts from the movement it sends)
  let timer = null;
  let sentAt = -Infinity;
  let movedAt = 0;
  const input = $(id);
  const flush = () => {
    timer = null;
    sentAt = performance.now();
    sendKnobs(knob(Number(input.value)), movedAt);
  };
  input.addEventListener("input", () => {
    $(`${id}-value`).textContent = format(Number(input.value));
    if (timer) return;
    movedAt = performance.now();
    const wait = sentAt + KNOB_SEND_MS - movedAt;
    if (wait <= 0) flush();
    else timer = setTimeout(flush, wait);
  });
}

const FORMATS = {
  temperature: (v) => v.toFixed(2),
  "top-p": (v) => (v >= 1 ? "off" : v.toFixed(2)),
  loop: (v) => v.toFixed(2),
  "beat-prior": (v) => v.toFixed(0),
  creativity: (v) => v.toFixed(2),
};
slider("temperature", FORMATS.temperature, (v) => ({ temperature: v }));
slider("top-p", FORMATS["top-p"], (v) => ({ top_p: v >= 1 ? null : v }));
slider("loop", FORMATS.loop, (v) => ({ loop: v }));
slider("beat-prior", FORMATS["beat-prior"], (v) => ({ beat_prior: v }));
slider("creativity", FORMATS.creativity, (v) => ({ creativity: v }));

function showKnobs(knobs) {
  const values = { temperature: knobs.temperature, "top-p": knobs.top_p == null ? 1 : knobs.top_p };
  if (knobs.loop != null) values.loop = knobs.loop;
  if (knobs.beat_prior != null) values["beat-prior"] = knobs.beat_prior;
  if (knobs.creativity != null) values.creativity = knobs.creativity;
  for (const [id, value] of Object.entries(values)) {
    $(id).value = String(value);
    $(`${id}-value`).textContent = FORMATS[id](Number(value));
  }
}
$("style").addEventListener("change", () => sendKnobs({ style: $("style").value || "prime" }));
$("play").addEventListener("click", togglePlay);
$("new-take").addEventListener("click", () => send({ type: "new_take" }));
$("checkpoint").addEventListener("change", () => {
  // playing: a new take of the chosen model, with the knobs as they are; else just get ready
  if (lofi.started) send({ type: "start", checkpoint: $("checkpoint").value, ...knobValues() });
  else prepare();
});
$("download").addEventListener("click", () => {
  if (audio && audio.node) audio.node.port.postMessage({ type: "history", seconds: Number($("seconds").value) });
});
$("upload").addEventListener("change", async () => {
  const file = $("upload").files[0];
  if (!file) return;
  const response = await fetch(`/api/upload?name=${encodeURIComponent(file.name)}`, { method: "POST", body: file });
  const text = await response.text();
  let result;
  try {
    result = JSON.parse(text);
  } catch {
    result = { error: text || `upload failed (HTTP ${response.status})` };
  }
  if (!response.ok) {
    lofi.errors.push(result.error);
    show("error", result.error);
    return;
  }
  const option = new Option(`${result.name} (${result.seconds} s)`, result.id);
  $("style").add(option);
  $("style").value = result.id;
  sendKnobs({ style: result.id });
});

function showTake(m) {
  const latent = m.latent;
  for (const el of document.querySelectorAll(".latent")) el.hidden = !latent;
  for (const el of document.querySelectorAll(".lookback")) el.hidden = !m.lookback;
  for (const el of document.querySelectorAll(".plan")) el.hidden = !m.plan;
  $("top-p").disabled = m.head !== "mulaw";
  if (latent) {
    const style = $("style");
    const current = style.value;
    style.length = 1;
    for (const t of m.style_targets) style.add(new Option(t.name, t.id));
    style.value = [...style.options].some((o) => o.value === current) ? current : "";
  }
  const c = m.checkpoint;
  $("take").textContent = `${m.take} (seed ${m.seed})`;
  $("info").textContent = `${c.name} \u00B7 ${m.family}, ${m.sr} Hz \u00B7 ${m.engine} engine, ${m.carry} carry \u00B7 continues ${m.prime}`;
  if ($("checkpoint").value !== c.id) $("checkpoint").value = c.id;
}

function show(kind, text) {
  const el = $("message");
  el.textContent = text;
  el.className = kind === "note" ? "message note" : "message";
  el.hidden = false;
  clearTimeout(show.timer);
  show.timer = setTimeout(() => (el.hidden = true), 8000);
}

// ------------------------------------------------------------------ checkpoints
async function loadCheckpoints() {
  const response = await fetch("/api/checkpoints");
  const data = await response.json();
  checkpoints = data.checkpoints;
  const select = $("checkpoint");
  for (const c of checkpoints) {
    const bits = c.bits_per_sample == null ? "" : `, ${c.bits_per_sample.toFixed(2)} bits/sample`;
    const tier = c.frame_size > 1 ? ` frame ${c.frame_size}` : "";
    select.add(new Option(`${c.name} \u2014 ${c.family}${tier}, ${c.sr / 1000} kHz${bits}`, c.id));
  }
  if (data.default) select.value = data.default;
  if (!checkpoints.length) show("error", "no trained model under outputs/: run python train.py first");
}

// ------------------------------------------------------------------ WAV download
function saveWav(samples, rate) {
  const bytes = new ArrayBuffer(44 + samples.length * 2);
  const v = new DataView(bytes);
  const text = (at, s) => [...s].forEach((ch, i) => v.setUint8(at + i, ch.charCodeAt(0)));
  text(0, "RIFF");
  v.setUint32(4, 36 + samples.length * 2, true);
  text(8, "WAVEfmt ");
  v.setUint32(16, 16, true);
  v.setUint16(20, 1, true); // PCM
  v.setUint16(22, 1, true); // mono
  v.setUint32(24, rate, true);
  v.setUint32(28, rate * 2, true);
  v.setUint16(32, 2, true);
  v.setUint16(34, 16, true);
  text(36, "data");
  v.setUint32(40, samples.length * 2, true);
  for (let i = 0; i < samples.length; i++) {
    v.setInt16(44 + 2 * i, Math.max(-1, Math.min(1, samples[i])) * 32767, true);
  }
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([bytes], { type: "audio/wav" }));
  link.download = `lofibeats-live-take${lofi.take ? lofi.take.take : ""}.wav`;
  lofi.lastDownload = { samples: samples.length, rate, bytes: bytes.byteLength };
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

// ------------------------------------------------------------------ drawing
// The spectrogram scrolls one 2-px column per tick, ~30 ticks/s; colours are packed RGBA words
// looked up from a magma-like table, written into one reused column.
const canvas = $("spectrogram");
const g = canvas.getContext("2d");
const DRAW_MS = 40; // 25 columns a second: a steady scroll at a fraction of the CPU of 60
const MAGMA = [[0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109], [252, 253, 191]];
const STEP = 2;
const column = g.createImageData(STEP, canvas.height);
const pixels = new Uint32Array(column.data.buffer);
const little = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
const COLOURS = Uint32Array.from({ length: 256 }, (_, i) => {
  const t = (i / 255) * (MAGMA.length - 1);
  const k = Math.min(Math.floor(t), MAGMA.length - 2);
  const [r, gr, b] = MAGMA[k].map((c, j) => Math.round(c + (t - k) * (MAGMA[k + 1][j] - c)));
  return little ? ((255 << 24) | (b << 16) | (gr << 8) | r) >>> 0 : ((r << 24) | (gr << 16) | (b << 8) | 255) >>> 0;
});
let rows = null;
let bins = null;
let wave = null;

let statsAt = 0;

function draw() {
  const now = performance.now();
  if (now - statsAt > 250) {
    statsAt = now;
    updateStats();
  }
  if (!audio || !audio.analyser || audio.ctx.state !== "running") return;
  const analyser = audio.analyser;
  const h = canvas.height;
  if (!bins || bins.length !== analyser.frequencyBinCount) {
    bins = new Float32Array(analyser.frequencyBinCount);
    wave = new Float32Array(analyser.fftSize);
    const nyquist = audio.ctx.sampleRate / 2;
    const low = 40;
    rows = Int32Array.from({ length: h }, (_, y) => {
      const freq = low * Math.pow(nyquist / low, (h - 1 - y) / (h - 1)); // log frequency
      return Math.min(bins.length - 1, Math.round((freq / nyquist) * bins.length));
    });
  }
  analyser.getFloatFrequencyData(bins);
  for (let y = 0; y < h; y++) {
    const level = Math.max(0, Math.min(255, Math.round(((bins[rows[y]] + 100) / 80) * 255)));
    pixels.fill(COLOURS[level], y * STEP, (y + 1) * STEP);
  }
  g.drawImage(canvas, -STEP, 0);
  g.putImageData(column, canvas.width - STEP, 0);
  analyser.getFloatTimeDomainData(wave);
  let sum = 0;
  let peak = 0;
  for (let i = 0; i < wave.length; i++) {
    sum += wave[i] * wave[i];
    peak = Math.max(peak, Math.abs(wave[i]));
  }
  drawLevel(10 * Math.log10(sum / wave.length + 1e-12), 20 * Math.log10(peak + 1e-12));
}

// The level meter: RMS as a bar (green to red over -60..0 dBFS), peak as a line, RMS in dB.
const meter = $("level").getContext("2d");
const meterFill = meter.createLinearGradient(0, $("level").height, 0, 0);
meterFill.addColorStop(0, "#7fc8a9");
meterFill.addColorStop(0.75, "#f2a65a");
meterFill.addColorStop(1, "#e36f6f");

function drawLevel(rmsDb, peakDb) {
  const { width, height } = meter.canvas;
  const y = (db) => height * (1 - Math.max(0, Math.min(1, (db + 60) / 60)));
  meter.fillStyle = "#000";
  meter.fillRect(0, 0, width, height);
  meter.fillStyle = meterFill;
  meter.fillRect(4, y(rmsDb), width - 8, height);
  meter.fillStyle = "#ece4d8";
  meter.fillRect(4, y(peakDb), width - 8, 2);
  meter.font = "10px sans-serif";
  meter.textAlign = "center";
  meter.fillText(rmsDb < -99 ? "-inf" : rmsDb.toFixed(0), width / 2, 12);
}

function setText(id, text) {
  const el = $(id);
  if (el.textContent !== text) el.textContent = text;
}

function updateStats() {
  const s = lofi.stats;
  const w = lofi.status;
  const ahead = (lofi.hello && lofi.hello.ahead_seconds) || 1.5;
  if (s && s.rtf != null) {
    setText("rtf", `${s.rtf.toFixed(2)}x`);
    $("rtf").style.color = s.keeping_up ? "" : "var(--bad)";
    setText("cpu", `${Math.round(s.cpu * 100)}% of a core`);
  }
  if (w) {
    setText("buffer", `${w.buffered.toFixed(2)} s`);
    $("buffer-bar").style.width = `${Math.round(Math.min(100, (w.buffered / ahead) * 100))}%`;
    $("buffer-bar").className = w.buffered < 0.25 ? "low" : "";
    setText("underruns", String(w.underruns));
  }
  setText("status", statusLine(s, w));
}

function statusLine(s, w) {
  if (lofi.closed && !ws) return lofi.closed.reason || "disconnected: press play to reconnect";
  if (!lofi.playing) return lofi.take ? "paused" : "press play";
  if (!lofi.take) return "starting\u2026";
  if (s && !s.keeping_up) {
    const wait = (lofi.hello ? lofi.hello.ahead_seconds : 1.5) * 0.9;
    return `the model runs at ${s.rtf.toFixed(2)}x real time on this machine: it plays in bursts, ` +
      `buffering ${wait.toFixed(1)} s between them, rather than stutter`;
  }
  if (w && !w.playing) return "buffering\u2026";
  return `playing take ${lofi.take.take}`;
}

loadCheckpoints()
  .then(prepare)
  .catch((e) => show("error", `cannot list the checkpoints: ${e}`));
setInterval(() => {
  if (!lofi.playing) send({ type: "ping" });
}, PING_MS);
setInterval(draw, DRAW_MS);
