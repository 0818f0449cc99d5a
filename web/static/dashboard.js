// cryptocast dashboard: plain JS, no build step. Reads the read-only API and follows the
// prediction WebSocket, resuming from the last id it saw so a reconnect misses nothing.
"use strict";

const CANDLES = 300; // candles on the chart
const PREDICTIONS = 300; // published predictions on the chart
const TABLE_ROWS = 12;

const state = {
  token: sessionStorage.getItem("cryptocast.token") || "",
  series: null,
  timeframeMs: 60000,
  candles: new Map(), // open_time -> candle
  predictions: [], // oldest first
  lastId: null,
  received: 0, // live messages taken from the WebSocket
  ws: null,
  wsGeneration: 0,
  retryMs: 500,
  status: null,
};
window.cryptocast = state; // for the browser test and the curious

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------------
// formatting

function fmtPrice(x) {
  if (x == null || !isFinite(x)) return "—";
  const digits = x >= 1000 ? 2 : x >= 1 ? 4 : 6;
  return x.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}
const fmtPct = (x, d = 1) => (x == null || !isFinite(x) ? "—" : (100 * x).toFixed(d) + "%");
const fmtNum = (x, d = 3) => (x == null || !isFinite(x) ? "—" : Number(x).toPrecision(d));
function fmtTime(ms) {
  if (ms == null) return "—";
  return new Date(ms).toISOString().replace("T", " ").slice(0, 16);
}
function fmtAge(ms) {
  if (ms == null) return "—";
  const s = Math.round(ms / 1000);
  if (s < 90) return s + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  if (s < 172800) return (s / 3600).toFixed(1) + " h ago";
  return (s / 86400).toFixed(1) + " d ago";
}
function setText(id, text, cls) {
  const el = $(id);
  if (el.dataset.base === undefined) el.dataset.base = el.className;
  el.textContent = text;
  el.className = [el.dataset.base, cls].filter(Boolean).join(" ");
}

// ---------------------------------------------------------------------------------------------
// API

function seriesPath(s) {
  return "/api/series/" + encodeURIComponent(s);
}

async function api(path) {
  const headers = state.token ? { Authorization: "Bearer " + state.token } : {};
  const r = await fetch(path, { headers });
  if (r.status === 401) {
    $("auth").hidden = false;
    throw new Error("unauthorized");
  }
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    const err = new Error(body.detail || r.statusText);
    err.status = r.status;
    throw err;
  }
  return r.json();
}

// ---------------------------------------------------------------------------------------------
// chart

const chart = LightweightCharts.createChart($("chart"), {
  autoSize: true,
  layout: { background: { color: "#161b24" }, textColor: "#8893a6", fontSize: 12 },
  grid: { vertLines: { color: "#1e2430" }, horzLines: { color: "#1e2430" } },
  rightPriceScale: { borderColor: "#252c38" },
  timeScale: { borderColor: "#252c38", timeVisible: true, secondsVisible: false, rightOffset: 4 },
  crosshair: { mode: LightweightCharts.CrosshairMode.Normal },
});
const candleSeries = chart.addCandlestickSeries({
  upColor: "#26a69a", downColor: "#ef5350", borderVisible: false,
  wickUpColor: "#26a69a", wickDownColor: "#ef5350",
});
const band = { lineWidth: 1, lineStyle: LightweightCharts.LineStyle.Dotted,
  priceLineVisible: false, lastValueVisible: false, crosshairMarkerVisible: false };
const predLine = chart.addLineSeries({ color: "#f5b942", lineWidth: 2, priceLineVisible: false,
  title: "predicted" });
const predLower = chart.addLineSeries({ ...band, color: "rgba(245,185,66,.55)" });
const predUpper = chart.addLineSeries({ ...band, color: "rgba(245,185,66,.55)" });
const fcLine = chart.addLineSeries({ color: "#5b9cff", lineWidth: 2, priceLineVisible: false,
  lineStyle: LightweightCharts.LineStyle.Dashed, title: "forecast" });
const fcLower = chart.addLineSeries({ ...band, color: "rgba(91,156,255,.5)",
  lineStyle: LightweightCharts.LineStyle.Dashed });
const fcUpper = chart.addLineSeries({ ...band, color: "rgba(91,156,255,.5)",
  lineStyle: LightweightCharts.LineStyle.Dashed });
Object.assign(state, { chart, candleSeries, predLine, fcLine });

const sec = (ms) => Math.floor(ms / 1000);

function drawCandles() {
  const rows = [...state.candles.values()].sort((a, b) => a.open_time - b.open_time);
  const keep = rows.slice(-CANDLES);
  if (keep.length < rows.length) {
    state.candles = new Map(keep.map((c) => [c.open_time, c]));
  }
  candleSeries.setData(keep.map((c) => ({ time: sec(c.open_time), open: c.open, high: c.high,
    low: c.low, close: c.close })));
  const last = keep[keep.length - 1];
  $("price").textContent = last ? fmtPrice(last.close) : "—";
}

function drawPredictions() {
  const ps = state.predictions;
  predLine.setData(ps.map((p) => ({ time: sec(p.target_time), value: p.predicted_close })));
  predLower.setData(ps.map((p) => ({ time: sec(p.target_time), value: p.lower })));
  predUpper.setData(ps.map((p) => ({ time: sec(p.target_time), value: p.upper })));
}

function drawForecast(fc) {
  if (!fc || !fc.points.length) {
    for (const s of [fcLine, fcLower, fcUpper]) s.setData([]);
    return;
  }
  const start = { time: sec(fc.as_of), value: fc.last_close };
  fcLine.setData([start, ...fc.points.map((p) => ({ time: sec(p.time), value: p.predicted_close }))]);
  fcLower.setData([start, ...fc.points.map((p) => ({ time: sec(p.time), value: p.lower }))]);
  fcUpper.setData([start, ...fc.points.map((p) => ({ time: sec(p.time), value: p.upper }))]);
}

// ---------------------------------------------------------------------------------------------
// panels

function renderPrediction() {
  const p = state.predictions[state.predictions.length - 1];
  if (!p) return;
  setText("p-close", fmtPrice(p.predicted_close));
  setText("p-target", fmtTime(p.target_time) + " UTC");
  setText("p-return", fmtPct(Math.expm1(p.predicted_return), 3),
    p.predicted_return >= 0 ? "good" : "poor");
  setText("p-interval", `${fmtPrice(p.lower)} – ${fmtPrice(p.upper)} (${fmtPct(p.interval_level, 0)})`);
  setText("p-latency", p.latency_ms.toFixed(1) + " ms");
  setText("p-id", p.id);
}

function renderTable() {
  const rows = state.predictions.slice(-TABLE_ROWS).reverse();
  const body = $("rows");
  body.replaceChildren();
  rows.forEach((p, i) => {
    const actual = state.candles.get(p.target_time);
    const err = actual ? (p.predicted_close - actual.close) / actual.close : null;
    const tr = document.createElement("tr");
    if (i === 0 && state.received) tr.className = "new";
    const cells = [fmtTime(p.target_time), fmtPrice(p.last_close), fmtPrice(p.predicted_close),
      `${fmtPrice(p.lower)} – ${fmtPrice(p.upper)}`, actual ? fmtPrice(actual.close) : "pending",
      err == null ? "—" : fmtPct(err, 3), p.model.version + (p.stale_model ? " (stale)" : "")];
    for (const c of cells) {
      const td = document.createElement("td");
      td.textContent = c;
      tr.appendChild(td);
    }
    body.appendChild(tr);
  });
}

function renderStatus(h) {
  const banner = $("banner");
  const problems = [...(h.stale_reasons || [])];
  const p = state.predictions[state.predictions.length - 1];
  if (p && p.stale_model) problems.push("the model is past its max age (stale_model)");
  if (h.model && h.model.error) problems.push("model registry: " + h.model.error);
  if (!h.model) problems.push("no model promoted yet: predictions start after the first training");
  const unfillable = (h.holes || []).filter((x) => x.unfillable).length;
  if (h.holes && h.holes.length) problems.push(`${h.holes.length} hole(s) in the history (${unfillable} unfillable)`);
  banner.hidden = problems.length === 0;
  banner.className = "banner" + (h.stale ? " bad" : "");
  banner.textContent = (h.stale ? "STALE — " : "Degraded — ") + problems.join(" · ");

  const s = h.live_score;
  if (s) {
    setText("s-mae", `${fmtNum(s.mae)} / ${fmtNum(s.naive_mae)}`);
    // MAE / naive MAE on the same targets; `mase` is its first name (older forecasters).
    const rel = s.relative_mae ?? s.mase;
    setText("s-rel", fmtNum(rel), rel != null ? (rel < 1 ? "good" : "poor") : "");
    setText("s-dir", fmtPct(s.direction), s.direction != null ? (s.direction > 0.5 ? "good" : "poor") : "");
    setText("s-cov", fmtPct(s.coverage));
    setText("s-n", `${s.n} of ${s.window}`);
  }
  const m = h.model;
  if (m && !m.error) {
    setText("m-version", m.version);
    setText("m-trained", fmtTime(m.trained_at) + " UTC");
    setText("m-skill", m.skill == null ? "—" : fmtPct(m.skill), m.skill > 0 ? "good" : "poor");
    setText("m-age", m.age_candles == null ? "—" : m.age_candles + " candles");
  }
  setText("d-last", fmtTime(h.last_open_time) + " UTC");
  setText("d-age", fmtAge(h.last_candle_age_ms), h.stale ? "poor" : "good");
  setText("d-count", h.candles.toLocaleString("en-US"));
  setText("d-holes", String((h.holes || []).length));
  setText("d-lag", h.prediction_lag_candles == null ? "—" : h.prediction_lag_candles + " candles");
}

// ---------------------------------------------------------------------------------------------
// loading and live updates

async function loadCandles(since) {
  const q = since == null ? `?limit=${CANDLES}` : `?since=${since}&limit=${CANDLES}`;
  const page = await api(seriesPath(state.series) + "/candles" + q);
  for (const c of page.candles) state.candles.set(c.open_time, c);
  drawCandles();
}

async function loadStatus() {
  try {
    const st = await api("/api/status");
    const h = st.series.find((x) => x.series === state.series);
    if (h) {
      state.status = h;
      renderStatus(h);
    }
  } catch (e) {
    console.warn("status", e);
  }
}

// The forecaster stores a candle's multi-step path a moment after its prediction: while the
// stored one is older than the newest prediction (or none is stored yet), ask again, a few times.
const FORECAST_RETRIES = 5;
let forecastTimer = null;
let forecastRetries = 0;
function scheduleForecast(retry = false) {
  clearTimeout(forecastTimer);
  forecastRetries = retry ? forecastRetries + 1 : 0;
  forecastTimer = setTimeout(loadForecast, retry ? 1000 : 250);
}
async function loadForecast() {
  const until = $("until").value;
  const q = until ? `?until=${Date.parse(until + "Z")}` : `?steps=${$("horizon").value}`;
  const newest = state.predictions[state.predictions.length - 1];
  let behind = false;
  try {
    const fc = await api(seriesPath(state.series) + "/forecast" + q);
    state.forecast = fc;
    drawForecast(fc);
    behind = newest != null && fc.as_of < newest.as_of;
  } catch (e) {
    state.forecast = null;
    drawForecast(null);
    behind = newest != null && e.status === 409;
  }
  if (behind && forecastRetries < FORECAST_RETRIES) scheduleForecast(true);
}

function addPrediction(p, live) {
  const last = state.predictions[state.predictions.length - 1];
  if (last && p.as_of <= last.as_of) return; // the stream never repeats; stay safe anyway
  state.predictions.push(p);
  if (state.predictions.length > PREDICTIONS) state.predictions.shift();
  state.lastId = p.id;
  if (live) {
    state.received += 1;
    predLine.update({ time: sec(p.target_time), value: p.predicted_close });
    predLower.update({ time: sec(p.target_time), value: p.lower });
    predUpper.update({ time: sec(p.target_time), value: p.upper });
  }
}

let refreshTimer = null;
function onLivePrediction() {
  // A prediction means a candle closed: fetch it, then the forecast from it. Debounced, so a
  // replayed backlog costs one round of requests.
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(async () => {
    const times = [...state.candles.keys()];
    const newest = times.length ? Math.max(...times) : null;
    try {
      await loadCandles(newest == null ? null : newest + 1);
    } catch (e) {
      console.warn("candles", e);
    }
    renderPrediction();
    renderTable();
    scheduleForecast();
    loadStatus();
  }, 150);
}

function setConn(kind, text) {
  const el = $("conn");
  el.dataset.state = kind;
  el.querySelector("span").textContent = text;
}

function connect() {
  const generation = ++state.wsGeneration;
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const params = new URLSearchParams({ series: state.series });
  // Resume after the last prediction held; with none yet, from the start of the stream, so
  // one published between the page's load and this connection is not missed.
  params.set("since", state.lastId || "0");
  if (state.token) params.set("token", state.token);
  const ws = new WebSocket(`${proto}//${location.host}/api/stream?${params}`);
  state.ws = ws;
  ws.onopen = () => {
    state.retryMs = 500;
    setConn("live", "live");
  };
  ws.onmessage = (ev) => {
    if (generation !== state.wsGeneration) return;
    addPrediction(JSON.parse(ev.data), true);
    onLivePrediction();
  };
  ws.onclose = (ev) => {
    if (generation !== state.wsGeneration) return;
    if (ev.code === 4401) {
      $("auth").hidden = false;
      setConn("down", "token needed");
      return;
    }
    setConn("down", "reconnecting");
    setTimeout(() => generation === state.wsGeneration && connect(), state.retryMs);
    state.retryMs = Math.min(state.retryMs * 2, 10000);
  };
}

async function selectSeries(key) {
  state.series = key;
  state.candles = new Map();
  state.predictions = [];
  state.lastId = null;
  if (state.ws) {
    state.wsGeneration += 1;
    state.ws.close();
  }
  $("title").textContent = key;
  document.title = `${key} — cryptocast`;
  history.replaceState(null, "", "?series=" + encodeURIComponent(key));
  await loadCandles(null);
  const page = await api(seriesPath(key) + `/predictions?limit=${PREDICTIONS}`);
  for (const p of page.predictions) addPrediction(p, false);
  drawPredictions();
  renderPrediction();
  renderTable();
  chart.timeScale().fitContent();
  await Promise.all([loadStatus(), loadForecast()]);
  connect(); // resumes after the last prediction loaded: nothing between the two is lost
}

async function start() {
  let list;
  try {
    list = await api("/api/series");
  } catch (e) {
    setConn("down", e.message);
    return;
  }
  const sel = $("series");
  sel.replaceChildren(...list.map((s) => new Option(s.series, s.series)));
  const wanted = new URLSearchParams(location.search).get("series");
  const first = list.find((s) => s.series === wanted) || list[0];
  if (!first) return;
  sel.value = first.series;
  sel.onchange = () => selectSeries(sel.value);
  $("horizon").onchange = () => {
    $("until").value = "";
    loadForecast();
  };
  $("until").onchange = loadForecast;
  await selectSeries(first.series);
  setInterval(loadStatus, 5000);
}

$("auth").onsubmit = (ev) => {
  ev.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem("cryptocast.token", state.token);
  $("auth").hidden = true;
  start();
};

start();
