// bitsd homepage: keeps the server-rendered page live.
// Websocket first, then Server-Sent Events, then polling /data; reconnects
// with backoff and says when the data may be stale. No framework, no build.
// Its words and thresholds come from the page (#home-words), where the
// server put the same table it rendered the page with.
(function () {
  "use strict";

  var debug = !!document.querySelector('meta[name="mode"][content="debug"]');
  function log() {
    if (debug) console.log.apply(console, ["[bits]"].concat([].slice.call(arguments)));
  }

  var $ = function (id) { return document.getElementById(id); };
  var table = $("home-words") && parse($("home-words").textContent);
  if (!table) return;
  var WORDS = table.words;
  var TIMES = table.times;
  var THRESHOLDS = table.thresholds;
  var SENSORS = table.sensors;
  var CLOSING_SOON = table.closing_soon_minutes;
  var NAMES = ($("sensor-names") && parse($("sensor-names").textContent)) || {};
  var SPACE = ($("status") && $("status").dataset.space) || "";

  var state = { status: null, tempint: null, message: null, tempinthist: [], device_offline_since: null, sensors: {} };
  var lastData = null; // when the page last heard from the server

  // A phrase with each {name} replaced by values[name], in one pass.
  function fill(phrase, values) {
    return phrase.replace(/\{(\w+)\}/g, function (whole, name) {
      return Object.prototype.hasOwnProperty.call(values, name) ? String(values[name]) : whole;
    });
  }

  // Local times ("YYYY-MM-DD HH:MM:SS" in the server's zone) as if they
  // were UTC: only their differences count. `skew` is the browser's clock
  // less the server's, from the time the server wrote into the page.
  function millis(timestamp) {
    var t = String(timestamp);
    return Date.UTC(+t.slice(0, 4), +t.slice(5, 7) - 1, +t.slice(8, 10),
      +t.slice(11, 13), +t.slice(14, 16), +t.slice(17, 19), +(t.slice(20, 23) || 0));
  }
  var since = $("status-since");
  var skew = since && since.dataset.now ? Date.now() - millis(since.dataset.now) : 0;

  // How long ago (negative: how long from now), as the server words it:
  // whole units, down for the past, up for the future.
  function agoSeconds(seconds) {
    if (Math.abs(seconds) < 60) return TIMES.just_now;
    var future = seconds < 0;
    var s = Math.abs(seconds);
    var unit = s < 3600 ? 60 : s < 86400 ? 3600 : 86400;
    var count = future ? Math.ceil(s / unit) : Math.floor(s / unit);
    if (unit === 60 && count === 60) { unit = 3600; count = 1; }
    if (unit === 3600 && count === 24) { unit = 86400; count = 1; }
    // Each word by its name, so that a test finds every one the script reads.
    var words = {
      60: future ? [TIMES.in_minute, TIMES.in_minutes] : [TIMES.minute_ago, TIMES.minutes_ago],
      3600: future ? [TIMES.in_hour, TIMES.in_hours] : [TIMES.hour_ago, TIMES.hours_ago],
      86400: future ? [TIMES.in_day, TIMES.in_days] : [TIMES.day_ago, TIMES.days_ago],
    }[unit];
    return count === 1 ? words[0] : fill(words[1], { count: count });
  }

  // The day of a time ("YYYY-MM-DD..."), with its year when not the year
  // of `now` (the server's clock, in milliseconds).
  function dateText(t, now) {
    var d = new Date(Date.UTC(+t.slice(0, 4), +t.slice(5, 7) - 1, +t.slice(8, 10)));
    var year = d.getUTCFullYear();
    return fill(year === new Date(now).getUTCFullYear() ? TIMES.date : TIMES.date_year, {
      weekday: TIMES.weekdays[(d.getUTCDay() + 6) % 7],
      day: d.getUTCDate(),
      month: TIMES.months[d.getUTCMonth()],
      year: year,
    });
  }

  // Whether a time is of the server's today.
  function isToday(t) {
    return t.slice(0, 10) === new Date(Date.now() - skew).toISOString().slice(0, 10);
  }

  // A time as every page writes it: "18:02 (3 hours ago)", with its date
  // when not today.
  function moment(timestamp) {
    var t = String(timestamp);
    var now = Date.now() - skew;
    var time = t.slice(11, 16);
    if (!isToday(t)) time = fill(TIMES.dated, { date: dateText(t, now), time: time });
    return fill(TIMES.moment, { time: time, ago: agoSeconds(Math.trunc((now - millis(t)) / 1000)) });
  }

  // A <time> element for a stored time, as the server writes it.
  function timeElement(timestamp, element) {
    var el = element || document.createElement("time");
    el.dateTime = String(timestamp).slice(0, 19).replace(" ", "T");
    el.textContent = moment(timestamp);
    return el;
  }

  // A phrase around a time, as the server words it: the phrase of today
  // or of an earlier day, the time in its own element; `parts` fill the
  // rest ("since 18:02 (3 hours ago), set by the device").
  function renderAround(el, today, before, timestamp, parts) {
    var phrase = isToday(String(timestamp)) ? today : before;
    var at = phrase.indexOf("{time}");
    el.textContent = "";
    el.append(fill(phrase.slice(0, at), parts), timeElement(timestamp),
      fill(phrase.slice(at + "{time}".length), parts));
  }

  // "Since" a change: when, by whom.
  function renderSince(el, timestamp, by) {
    renderAround(el, WORDS.since, WORDS.since_before, timestamp, { by: by });
  }

  // A number with `decimals` decimals and the language's decimal point.
  function number(value, decimals) {
    return Number(value).toFixed(decimals).replace(".", WORDS.decimal_point);
  }

  // ---- rendering --------------------------------------------------------

  function unescapeHtml(text) {
    // The server escapes message text for old clients that insert HTML.
    return new DOMParser().parseFromString(String(text), "text/html").documentElement.textContent;
  }

  function renderStatus() {
    var s = state.status;
    var open = !!s && s.value === "open";
    // Before any status: neither open nor closed. A server before the
    // three states sent `value` alone.
    var kind = !s ? "unknown" : s.state || (open ? "open" : "closed");
    var box = $("status");
    if (box) box.className = "status " + kind;
    var text = $("status-text");
    if (text) {
      text.textContent = {
        open: WORDS.status_open, members: WORDS.status_members,
        closed: WORDS.status_closed, unknown: WORDS.status_unknown,
      }[kind];
    }
    var since = $("status-since");
    if (since) {
      if (s) renderSince(since, s.timestamp, s.modifiedby === "web" ? WORDS.by_web : WORDS.by_device);
      else since.textContent = WORDS.no_status;
    }
    // "Open until 22:30", "Closing soon, at 22:30" in its last minutes.
    var until = $("status-until");
    if (until) {
      var at = s && (kind === "open" || kind === "members") ? s.until : null;
      until.hidden = !at;
      if (at) {
        var left = (millis(at) - (Date.now() - skew)) / 60000;
        until.textContent = fill(left < CLOSING_SOON ? WORDS.closing_soon : WORDS.open_until,
          { time: String(at).slice(11, 16) });
      } else {
        until.textContent = "";
      }
    }
    var title = {
      open: WORDS.title_open, members: WORDS.title_members,
      closed: WORDS.title_closed, unknown: WORDS.title_unknown,
    }[kind];
    document.title = fill(title, { space: SPACE });
    var icon = $("favicon");
    if (icon) icon.href = icon.href.replace(/(open|members|closed|unknown)\.svg/, kind + ".svg");
    // A member's toggle asks for the other status.
    var wanted = $("toggle-status");
    var button = $("toggle-button");
    if (wanted && button) {
      wanted.value = open ? "closed" : "open";
      button.textContent = open ? button.dataset.close : button.dataset.open;
    }
    renderDevice();
  }

  function renderDevice() {
    var notice = $("device-offline");
    if (!notice) return;
    var since = state.device_offline_since;
    notice.hidden = !since;
    if (since) renderAround(notice, WORDS.device_offline, WORDS.device_offline_before, since, {});
    else notice.textContent = "";
  }

  function renderSensors() {
    var list = $("sensors");
    if (!list) return;
    var latest = {};
    var previous = {};
    state.tempinthist.forEach(function (t) {
      if (!(t.sensor in latest)) latest[t.sensor] = t;
      else if (!(t.sensor in previous)) previous[t.sensor] = t;
    });
    var ids = Object.keys(latest).map(Number).sort(function (a, b) { return a - b; });
    var none = $("sensors-none");
    if (none) none.hidden = ids.length > 0;
    list.textContent = "";
    ids.forEach(function (id, n) {
      var t = latest[id];
      var p = previous[id];
      var li = document.createElement("li");
      li.dataset.sensor = id;
      li.style.setProperty("--series", COLOURS[n % COLOURS.length]);
      var label = document.createElement("span");
      label.className = "label";
      label.textContent = Object.prototype.hasOwnProperty.call(NAMES, id) ? NAMES[id] : fill(WORDS.sensor, { sensor: id });
      var value = document.createElement("strong");
      value.className = "value";
      value.textContent = fill(WORDS.degrees, { value: number(t.value, THRESHOLDS.decimals) });
      var trend = document.createElement("span");
      trend.className = "trend";
      var shown = WORDS.steady;
      if (p && t.value - p.value > THRESHOLDS.trend_step) shown = WORDS.rising;
      if (p && p.value - t.value > THRESHOLDS.trend_step) shown = WORDS.falling;
      trend.textContent = shown.arrow;
      trend.title = shown.words;
      trend.setAttribute("aria-label", shown.words);
      var time = timeElement(t.timestamp);
      li.append(label, " ", value, " ", trend, " ", time);
      list.appendChild(li);
    });
    renderChart();
  }

  // The sensors beyond temperature, in the server's order: by kind, then id.
  var KINDS = ["humidity", "carbondioxide", "power_consumption", "barometer", "door_locked"];

  function readingValue(kind, value) {
    if (kind === "door_locked") return Number(value) !== 0 ? SENSORS.locked : SENSORS.unlocked;
    var unit = {
      humidity: SENSORS.percent,
      carbondioxide: SENSORS.ppm,
      power_consumption: SENSORS.watts,
      barometer: SENSORS.hectopascals,
    }[kind];
    return fill(unit, { value: number(value, THRESHOLDS.sensor_decimals) });
  }

  function renderReadings() {
    var list = $("readings");
    if (!list) return;
    var kindNames = {
      humidity: SENSORS.humidity,
      carbondioxide: SENSORS.carbondioxide,
      power_consumption: SENSORS.power_consumption,
      barometer: SENSORS.barometer,
      door_locked: SENSORS.door_locked,
    };
    list.textContent = "";
    var shown = 0;
    KINDS.forEach(function (kind) {
      (state.sensors[kind] || []).slice().sort(function (a, b) { return a.sensor - b.sensor; }).forEach(function (s) {
        var li = document.createElement("li");
        li.dataset.kind = kind;
        li.dataset.sensor = s.sensor;
        var label = document.createElement("span");
        label.className = "label";
        var name = Object.prototype.hasOwnProperty.call(NAMES, s.sensor) ? NAMES[s.sensor] : fill(WORDS.sensor, { sensor: s.sensor });
        label.textContent = fill(SENSORS.label, { kind: kindNames[kind], sensor: name });
        var value = document.createElement("strong");
        value.className = "value";
        value.textContent = readingValue(kind, s.value);
        li.append(label, " ", value, " ", timeElement(s.timestamp));
        list.appendChild(li);
        shown++;
      });
    });
    var section = $("readings-section");
    if (section) section.hidden = shown === 0;
  }

  // A live sample: the newest of its kind and id.
  function applyReading(sample) {
    var list = (state.sensors[sample.kind] = state.sensors[sample.kind] || []);
    var kept = { sensor: sample.sensor, value: sample.value, timestamp: sample.timestamp, modifiedby: sample.modifiedby };
    for (var i = 0; i < list.length; i++) {
      if (list[i].sensor === sample.sensor) { list[i] = kept; return; }
    }
    list.push(kept);
  }

  var COLOURS = ["#0b57d0", "#b35300", "#1b7f3b", "#8e24aa", "#00838f"];

  function renderChart() {
    var svg = $("chart");
    if (!svg) return;
    var samples = state.tempinthist.slice().reverse();
    svg.textContent = "";
    if (samples.length < 2) {
      svg.setAttribute("hidden", "");
      return;
    }
    svg.removeAttribute("hidden");
    // One unit a pixel, so the labels read 11 px on a phone as on a desktop.
    var W = Math.round(svg.getBoundingClientRect().width) || 600, H = 160, PAD = 28;
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    var values = samples.map(function (t) { return Number(t.value); });
    var min = Math.floor(Math.min.apply(null, values) - 0.5);
    var max = Math.ceil(Math.max.apply(null, values) + 0.5);
    // Along the time of the samples; by their order if they share one time.
    var first = millis(samples[0].timestamp), last = millis(samples[samples.length - 1].timestamp);
    var at = function (i) {
      return last > first ? (millis(samples[i].timestamp) - first) / (last - first) : i / (samples.length - 1);
    };
    var x = function (i) { return PAD + at(i) * (W - PAD - 4); };
    var y = function (v) { return 4 + (1 - (v - min) / (max - min)) * (H - 24); };
    var ns = "http://www.w3.org/2000/svg";
    [min, (min + max) / 2, max].forEach(function (v) {
      var line = document.createElementNS(ns, "line");
      line.setAttribute("x1", PAD); line.setAttribute("x2", W - 4);
      line.setAttribute("y1", y(v)); line.setAttribute("y2", y(v));
      line.setAttribute("class", "grid");
      var label = document.createElementNS(ns, "text");
      label.setAttribute("x", 0); label.setAttribute("y", y(v) + 4);
      label.textContent = fill(WORDS.chart_tick, { value: v.toFixed(0) });
      svg.append(line, label);
    });
    // The time axis: the time of day at the start, the middle and the end,
    // each once (a short span has fewer).
    var shown = "";
    [0, 0.5, 1].forEach(function (f, n) {
      var text = new Date(first + f * (last - first)).toISOString().slice(11, 16);
      if (text === shown) return;
      shown = text;
      var label = document.createElementNS(ns, "text");
      label.setAttribute("x", PAD + f * (W - PAD - 4));
      label.setAttribute("y", H - 2);
      label.setAttribute("text-anchor", ["start", "middle", "end"][n]);
      label.setAttribute("class", "time");
      label.textContent = text;
      svg.appendChild(label);
    });
    var bySensor = {};
    samples.forEach(function (t, i) {
      (bySensor[t.sensor] = bySensor[t.sensor] || []).push(x(i).toFixed(1) + "," + y(Number(t.value)).toFixed(1));
    });
    Object.keys(bySensor).forEach(function (id, n) {
      var line = document.createElementNS(ns, "polyline");
      line.setAttribute("points", bySensor[id].join(" "));
      line.setAttribute("stroke", COLOURS[n % COLOURS.length]);
      line.setAttribute("class", "series");
      line.dataset.sensor = id;
      svg.appendChild(line);
    });
    svg.setAttribute("aria-label", fill(WORDS.chart, { count: samples.length, min: min, max: max }));
  }

  function renderMessage() {
    var m = state.message;
    if (!m) return;
    var none = $("message-none");
    if (none) none.hidden = true;
    var body = $("message-body");
    if (body) body.hidden = false;
    $("message-text").textContent = unescapeHtml(m.value);
    $("message-user").textContent = unescapeHtml(m.user);
    timeElement(m.timestamp, $("message-time"));
  }

  function renderAll() {
    renderStatus();
    renderSensors();
    renderReadings();
    renderMessage();
  }

  // ---- state ------------------------------------------------------------

  // `data` from the server now; `rendered`: the page's own, as it was
  // rendered (perhaps long ago, when the service worker kept it).
  function apply(data, rendered) {
    log("message", data);
    if (!rendered) {
      lastData = new Date();
      remember();
    }
    if ("version" in data) {
      state = {
        status: data.status || null,
        tempint: data.tempint || null,
        message: data.message || null,
        tempinthist: data.tempinthist || [],
        device_offline_since: data.device_offline_since || null,
        sensors: data.sensors || {},
      };
      renderAll();
      return;
    }
    if (data.status) { state.status = data.status; renderStatus(); }
    if (data.tempint) {
      state.tempint = data.tempint;
      state.tempinthist.unshift(data.tempint);
      state.tempinthist.length = Math.min(state.tempinthist.length, THRESHOLDS.history);
      renderSensors();
    }
    if (data.sensor) { applyReading(data.sensor); renderReadings(); }
    if (data.message) { state.message = data.message; renderMessage(); }
    if ("device_offline_since" in data) { state.device_offline_since = data.device_offline_since; renderDevice(); }
  }

  // ---- connection -------------------------------------------------------

  var live = $("live");
  function showLive(how) {
    if (!live) return;
    live.className = "live on";
    live.textContent = WORDS.live;
    live.dataset.transport = how;
  }
  function showOffline() {
    if (!live) return;
    live.className = "live off";
    live.textContent = lastData
      ? fill(WORDS.offline_since, {
        // In the server's time, as every time on the page.
        time: moment(new Date(lastData.getTime() - skew).toISOString().slice(0, 19).replace("T", " ")),
      })
      : WORDS.offline;
    live.dataset.transport = "none";
  }

  var delay = 1000;
  function backoff(next) {
    showOffline();
    var wait = delay;
    delay = Math.min(delay * 2, 30000);
    log("reconnecting in", wait, "ms");
    setTimeout(next, wait);
  }

  function parse(text) {
    try { return JSON.parse(text); } catch (e) { log("bad message", text); return null; }
  }

  var wsFailures = 0;
  function connectWebsocket() {
    if (!("WebSocket" in window) || wsFailures >= 2) return connectEvents();
    var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
    var opened = false;
    var ws;
    try { ws = new WebSocket(url); } catch (e) { wsFailures++; return connectEvents(); }
    ws.onopen = function () { opened = true; wsFailures = 0; delay = 1000; showLive("websocket"); };
    ws.onmessage = function (e) { var d = parse(e.data); if (d) apply(d); };
    ws.onclose = function () {
      if (!opened) {
        wsFailures++;
        log("websocket failed", wsFailures);
        if (wsFailures >= 2) return connectEvents();
      }
      backoff(connectWebsocket);
    };
  }

  var sseFailures = 0;
  function connectEvents() {
    if (!("EventSource" in window) || sseFailures >= 2) return poll();
    var opened = false;
    var source = new EventSource("/events");
    source.onopen = function () { opened = true; sseFailures = 0; delay = 1000; showLive("events"); };
    source.onmessage = function (e) { var d = parse(e.data); if (d) apply(d); };
    source.onerror = function () {
      source.close();
      if (!opened) {
        sseFailures++;
        if (sseFailures >= 2) return poll();
      }
      backoff(connectEvents);
    };
  }

  var POLL_EVERY = 5000;
  function poll() {
    fetch("/data", { cache: "no-cache" })
      .then(function (r) {
        // A copy the service worker kept: the server is out of reach.
        if (!r.ok || r.headers.get("X-Bits-Kept")) throw new Error(r.status);
        return r.json();
      })
      .then(function (d) { apply(d); showLive("polling"); setTimeout(poll, POLL_EVERY); })
      .catch(function () { backoff(poll); });
  }

  // ---- offline ----------------------------------------------------------

  // What the script last heard is kept in the browser: a page that the
  // service worker kept (the phone offline) shows it, and how old it is.
  // Written at once, then at most once a second in a burst.
  var SAVED = "bits-last";
  var saving = null;
  var savedAt = 0;
  function remember() {
    if (saving) return;
    saving = setTimeout(function () {
      saving = null;
      savedAt = Date.now();
      var saved = { at: lastData.getTime(), skew: skew, state: state };
      try { localStorage.setItem(SAVED, JSON.stringify(saved)); } catch (e) { /* private mode */ }
    }, Math.max(0, savedAt + 1000 - Date.now()));
  }
  function restore() {
    var saved = null;
    try { saved = JSON.parse(localStorage.getItem(SAVED)); } catch (e) { /* none kept */ }
    if (!saved || !saved.state || !since || !since.dataset.now) return;
    // Heard after the page was rendered (by the browser's clock then)?
    if (saved.at <= millis(since.dataset.now) + saved.skew) return;
    log("kept state from", new Date(saved.at));
    skew = saved.skew;
    state = saved.state;
    // Kept by a script from before the sensors beyond temperature.
    state.sensors = state.sensors || {};
    lastData = new Date(saved.at);
    renderAll();
  }

  // ---- colour-blind palette ---------------------------------------------

  var KEY = "bits-blind";
  function setBlind(on) {
    document.body.classList.toggle("blind", on);
    var map = $("forecast");
    // Its own address per language, so a kept copy is in the right one.
    var query = (on ? "blind=1&" : "") + "lang=" + document.documentElement.lang;
    var tall = $("forecast-tall");
    if (tall) tall.srcset = "/presence.svg?layout=tall&" + query;
    if (map) map.src = "/presence.svg?" + query;
    var toggle = $("blind-toggle");
    if (toggle) {
      toggle.setAttribute("aria-pressed", on ? "true" : "false");
      toggle.textContent = on ? WORDS.standard_colours : WORDS.blind_palette;
    }
  }
  var stored = null;
  try { stored = localStorage.getItem(KEY); } catch (e) { /* private mode */ }
  var blind = document.body.classList.contains("blind") || stored === "1";
  setBlind(blind);
  var toggle = $("blind-toggle");
  if (toggle) {
    toggle.hidden = false;
    var link = $("blind-link");
    if (link) link.hidden = true;
    toggle.addEventListener("click", function () {
      blind = !blind;
      try { localStorage.setItem(KEY, blind ? "1" : "0"); } catch (e) { /* private mode */ }
      setBlind(blind);
    });
  }

  // ---- start ------------------------------------------------------------

  var initial = $("initial-data");
  if (initial) {
    var d = parse(initial.textContent);
    if (d) apply(d, true);
  }
  restore();
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/sw.js").catch(function (e) { log("no service worker", e); });
  }
  if (live) live.textContent = WORDS.connecting;
  setInterval(function () { if (live && live.classList.contains("off")) showOffline(); }, 10000);
  // "2 minutes ago" stays true.
  setInterval(renderAll, 30000);
  // The chart is drawn to its width.
  window.addEventListener("resize", renderChart);
  connectWebsocket();
})();
