// bitsd homepage: the "Notify me" control (Web Push). The visitor ticks
// what to be told of; the service worker's push manager subscribes with
// bitsd's public key (/push/key) and the page hands the subscription to
// bitsd (/push/subscriptions) with the choice and the page's language.
// bitsd cannot be asked what a browser chose, so the choice bitsd took is
// kept in the browser. Its words come from the page (#home-words).
(function () {
  "use strict";

  var debug = !!document.querySelector('meta[name="mode"][content="debug"]');
  function log() {
    if (debug) console.log.apply(console, ["[bits notify]"].concat([].slice.call(arguments)));
  }

  var $ = function (id) { return document.getElementById(id); };
  var section = $("notify");
  var table = null;
  try { table = JSON.parse($("home-words").textContent); } catch (e) { /* no table */ }
  if (!section || !table) return;
  var WORDS = table.words;

  var form = $("notify-form");
  var state = $("notify-state");
  var problem = $("notify-error");
  var button = $("notify-button");
  var stopButton = $("notify-stop");
  var boxes = { open: $("notify-open"), message: $("notify-message") };

  // The browser's subscription, once known; null when there is none.
  var current = null;

  // A phrase with each {name} replaced by values[name], in one pass.
  function fill(phrase, values) {
    return phrase.replace(/\{(\w+)\}/g, function (whole, name) {
      return Object.prototype.hasOwnProperty.call(values, name) ? String(values[name]) : whole;
    });
  }

  // ---- what bitsd took ------------------------------------------------------

  // {"endpoint": ..., "topics": [...], "lang": ...}, as bitsd last
  // accepted them.
  var KEPT = "bits-notify";
  function kept() {
    try { return JSON.parse(localStorage.getItem(KEPT)); } catch (e) { return null; }
  }
  function keep(endpoint, topics, lang) {
    var choice = { endpoint: endpoint, topics: topics, lang: lang };
    try { localStorage.setItem(KEPT, JSON.stringify(choice)); } catch (e) { /* private mode */ }
    share(choice);
  }
  function forget() {
    try { localStorage.removeItem(KEPT); } catch (e) { /* private mode */ }
    share(null);
  }
  // The same for the service worker, which cannot read localStorage: in
  // Cache Storage (CHOICE in sw.js), so that it can hand a replaced
  // subscription to bitsd with the choice even once bitsd forgot the old.
  var CHOICE = "bitsd-push-choice";
  function share(choice) {
    if (!window.caches) return;
    var done = choice
      ? caches.open(CHOICE).then(function (cache) {
        var json = new Response(JSON.stringify(choice), { headers: { "Content-Type": "application/json" } });
        return cache.put("/push/choice", json);
      })
      : caches.delete(CHOICE);
    done.catch(function (error) { log("choice not shared with the worker", error); });
  }

  // ---- showing ----------------------------------------------------------

  function render() {
    var choice = kept();
    if (!current && choice) forget();
    var topics = current && choice && choice.endpoint === current.endpoint ? choice.topics : null;
    if (topics) {
      Object.keys(boxes).forEach(function (topic) { boxes[topic].checked = topics.indexOf(topic) >= 0; });
    }
    var open = !!topics && topics.indexOf("open") >= 0;
    var message = !!topics && topics.indexOf("message") >= 0;
    state.textContent = !current ? WORDS.notify_off
      : open && message ? WORDS.notify_on_both
      : open ? WORDS.notify_on_open
      : message ? WORDS.notify_on_message
      : WORDS.notify_on;
    section.dataset.subscribed = current ? "yes" : "no";
    button.textContent = current ? WORDS.notify_save : WORDS.notify_button;
    stopButton.hidden = !current;
  }

  function say(words) {
    problem.textContent = words || "";
    problem.hidden = !words;
  }

  // Working (the buttons held, "One moment…"), or done: the control as
  // the page knows it.
  function busy(on) {
    section.setAttribute("aria-busy", on ? "true" : "false");
    [button, stopButton, boxes.open, boxes.message].forEach(function (el) { el.disabled = on; });
    if (on) {
      say("");
      state.textContent = WORDS.notify_busy;
    } else {
      render();
    }
  }

  // The subscription the browser holds now, then the control as it is.
  function refresh() {
    return navigator.serviceWorker.ready
      .then(function (registration) { return registration.pushManager.getSubscription(); })
      .then(function (subscription) { current = subscription; render(); });
  }
  function update() {
    return refresh().catch(function (error) { log("no subscription read", error); });
  }

  // ---- failures in words --------------------------------------------------

  function failure(words) {
    var error = new Error(words);
    error.words = words;
    return error;
  }

  // What the push manager's refusal means to the visitor.
  function pushFailure(error) {
    log("push manager", error && error.name, error && error.message);
    if (error && error.words) return error;
    if (error && error.name === "NotAllowedError") return failure(WORDS.notify_denied);
    if (error && error.name === "NotSupportedError") return failure(WORDS.notify_unsupported);
    return failure(WORDS.notify_unreachable);
  }

  // bitsd's answer, or its words ("400 Bad Request: ...") when it says no.
  function send(method, url, body) {
    var request = { method: method, cache: "no-store" };
    if (body) {
      request.headers = { "Content-Type": "application/json" };
      request.body = JSON.stringify(body);
    }
    return fetch(url, request).then(function (response) {
      if (response.ok) return response;
      return response.text().then(function (text) {
        var reason = text.trim().replace(/^\d{3}[^:]*:\s*/, "") || String(response.status);
        throw failure(fill(WORDS.notify_refused, { reason: reason }));
      });
    }, function (error) {
      log("bitsd out of reach", error);
      throw failure(WORDS.notify_offline);
    });
  }

  // ---- subscribing ------------------------------------------------------

  // Bytes of a base64url text.
  function bytes(text) {
    var plain = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4));
    var out = new Uint8Array(plain.length);
    for (var i = 0; i < plain.length; i++) out[i] = plain.charCodeAt(i);
    return out;
  }

  // Whether a subscription was made with `key` (not with a key bitsd had
  // before its database was replaced, say).
  function madeWith(subscription, key) {
    var had = subscription.options && subscription.options.applicationServerKey;
    if (!had) return true;
    var old = new Uint8Array(had);
    return old.length === key.length && old.every(function (b, i) { return b === key[i]; });
  }

  function permission() {
    return new Promise(function (resolve) {
      // A promise in today's browsers, a callback in older Safari.
      var asked = Notification.requestPermission(resolve);
      if (asked && asked.then) asked.then(resolve);
    });
  }

  // How long the push service may take to answer before the page says
  // it is out of reach (a phone on a poor network takes seconds).
  var PUSH_PATIENCE = 20000;

  // A new subscription of `registration` with `key`; one that arrives
  // after the page gave up is dropped.
  function newSubscription(registration, key) {
    return new Promise(function (resolve, reject) {
      var late = false;
      var timer = setTimeout(function () { late = true; reject(failure(WORDS.notify_unreachable)); }, PUSH_PATIENCE);
      registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key }).then(function (s) {
        clearTimeout(timer);
        if (late) s.unsubscribe();
        else resolve(s);
      }, function (error) {
        clearTimeout(timer);
        reject(pushFailure(error));
      });
    });
  }

  function chosen() {
    return Object.keys(boxes).filter(function (topic) { return boxes[topic].checked; });
  }

  function subscribe() {
    var topics = chosen();
    if (!topics.length) return say(WORDS.notify_none_chosen);
    busy(true);
    // A subscription made here, and whether the browser's earlier one
    // was dropped for it.
    var made = null;
    var dropped = false;
    permission().then(function (answer) {
      if (answer === "denied") throw failure(WORDS.notify_denied);
      if (answer !== "granted") throw failure(WORDS.notify_dismissed);
      return Promise.all([
        navigator.serviceWorker.ready,
        send("GET", "/push/key").then(function (r) { return r.json(); }),
      ]);
    }).then(function (both) {
      var registration = both[0];
      var key = bytes(both[1].publicKey);
      return registration.pushManager.getSubscription().then(function (existing) {
        if (existing && madeWith(existing, key)) return existing;
        dropped = !!existing;
        var gone = existing ? existing.unsubscribe() : Promise.resolve();
        return gone.then(function () { return newSubscription(registration, key); })
          .then(function (s) { made = s; return s; });
      }, function (error) { throw pushFailure(error); });
    }).then(function (subscription) {
      var lang = document.documentElement.lang;
      var body = { subscription: subscription.toJSON(), topics: topics, lang: lang };
      return send("POST", "/push/subscriptions", body).then(function () {
        keep(subscription.endpoint, topics, lang);
        current = subscription;
      });
    }).catch(function (error) {
      // A subscription bitsd did not take would only mislead the page.
      var undone = made ? made.unsubscribe().catch(function () { /* gone anyway */ }) : Promise.resolve();
      return undone.then(function () { throw error; });
    }).then(function () {
      busy(false);
      return update();
    }, function (error) {
      log("not subscribed", error);
      if (made || dropped) current = null;
      busy(false);
      say(error.words || WORDS.notify_unreachable);
      return update();
    });
  }

  function stop() {
    var subscription = current;
    if (!subscription) return;
    busy(true);
    send("DELETE", "/push/subscriptions", { endpoint: subscription.endpoint })
      // bitsd out of reach keeps it until its next message, which the push
      // service then refuses as gone, and bitsd forgets it.
      .catch(function (error) { log("bitsd not told", error); })
      .then(function () { return subscription.unsubscribe(); })
      .then(function () {
        forget();
        current = null;
        busy(false);
        return update();
      }, function (error) {
        log("not unsubscribed", error);
        busy(false);
        say(WORDS.notify_unreachable);
        return update();
      });
  }

  // The browser replaced its subscription since bitsd took the choice (a
  // push service renews them, and not every browser tells the service
  // worker): bitsd takes the new one in place of the old, with the choice.
  function carryOver() {
    var choice = kept();
    if (!current || !choice || !choice.endpoint) return;
    // Nothing replaced: shared again, for a choice kept before the page
    // shared it with the worker.
    if (choice.endpoint === current.endpoint) return share(choice);
    var body = { subscription: current.toJSON(), replaces: choice.endpoint, topics: choice.topics };
    if (choice.lang) body.lang = choice.lang;
    var subscription = current;
    return send("POST", "/push/subscriptions", body).then(function () {
      keep(subscription.endpoint, choice.topics, choice.lang);
      render();
    }, function (error) { log("the new subscription not handed over", error); });
  }

  // ---- start ------------------------------------------------------------

  function appleMobile() {
    return /iP(hone|ad|od)/.test(navigator.userAgent) ||
      (navigator.platform === "MacIntel" && navigator.maxTouchPoints > 1);
  }
  function onHomeScreen() {
    return navigator.standalone === true ||
      (!!window.matchMedia && window.matchMedia("(display-mode: standalone)").matches);
  }

  var supported = "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
  if (!supported) {
    // Only what the visitor can act on is said; else the control stays
    // hidden.
    var why = !window.isSecureContext ? WORDS.notify_insecure
      : appleMobile() && !onHomeScreen() ? WORDS.notify_home_screen
      : appleMobile() ? WORDS.notify_unsupported
      : null;
    if (!why) return;
    form.hidden = true;
    state.textContent = why;
    section.dataset.subscribed = "unsupported";
    section.hidden = false;
    return;
  }
  Object.keys(boxes).forEach(function (topic) {
    boxes[topic].addEventListener("change", function () { say(""); });
  });
  button.addEventListener("click", subscribe);
  stopButton.addEventListener("click", stop);
  // Shown once the service worker is ready (it always is where push
  // works), as not subscribed when the browser would not say.
  update().then(function () {
    section.hidden = false;
    return carryOver();
  });
})();
