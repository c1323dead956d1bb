// bitsd service worker: keeps the homepage, its files and the last /data,
// so that a phone without network still shows the last state (the page
// script says how old it is). The network comes first, always: a kept copy
// is used only when the network fails. It also shows bitsd's push messages
// as notifications, a click on one brings up the homepage, and a push
// subscription the browser replaces is handed to bitsd in place of the old.
"use strict";

var KEPT = "bitsd-kept-2";
// What the page last had bitsd take: {"endpoint", "topics", "lang"} at
// /push/choice (the CHOICE of notify.js).
var CHOICE = "bitsd-push-choice";

// The homepage, the state, the forecast picture, the manifest and the
// static files; never a form, a member's page or an event stream.
function kept(url) {
  var path = url.pathname;
  return path === "/" || path === "/data" || path === "/presence.svg" ||
    path === "/manifest.webmanifest" || path.indexOf("/static/") === 0;
}

self.addEventListener("install", function () {
  self.skipWaiting();
});

self.addEventListener("activate", function (event) {
  event.waitUntil(caches.keys().then(function (names) {
    return Promise.all(names.filter(function (name) { return name !== KEPT && name !== CHOICE; })
      .map(function (name) { return caches.delete(name); }));
  }).then(function () { return self.clients.claim(); }));
});

self.addEventListener("fetch", function (event) {
  var request = event.request;
  var url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== self.location.origin || !kept(url)) return;
  event.respondWith(fetch(request).then(function (response) {
    // A member's homepage names people: never kept, as a visitor may use
    // the phone next.
    var private_ = /private|no-store/.test(response.headers.get("Cache-Control") || "");
    if (response.ok && !private_) {
      var copy = response.clone();
      event.waitUntil(caches.open(KEPT).then(function (cache) { return cache.put(request, copy); }));
    }
    return response;
  }).catch(function (error) {
    // The same address, else the same path (`/?lang=it` for `/`).
    return caches.match(request, { ignoreVary: true }).then(function (hit) {
      return hit || caches.match(request, { ignoreVary: true, ignoreSearch: true });
    }).then(function (hit) {
      if (!hit) throw error;
      // Marked, so the page script never takes a kept /data for news.
      var headers = new Headers(hit.headers);
      headers.set("X-Bits-Kept", "1");
      return new Response(hit.body, { status: hit.status, statusText: hit.statusText, headers: headers });
    });
  }));
});

// ---- notifications ------------------------------------------------------

var ICON = "/static/icon-192.png";

// The space's name, from the manifest (kept, for a phone offline), for a
// message that says nothing readable.
function spaceName() {
  var manifest = new Request("/manifest.webmanifest");
  return fetch(manifest).catch(function () {
    return caches.match(manifest, { ignoreVary: true });
  }).then(function (response) {
    if (!response || !response.ok) throw new Error("no manifest");
    return response.json();
  }).then(function (app) {
    return app.name || self.location.host;
  }).catch(function () {
    return self.location.host;
  });
}

// bitsd sends JSON: {"title", "body", "url", "tag", "timestamp"}, already in
// the subscriber's language; anything else is shown as it came, under the
// space's name.
function readPush(data) {
  var text = data ? data.text() : "";
  var message = null;
  try { message = JSON.parse(text); } catch (e) { /* not JSON */ }
  if (message && typeof message === "object") return message;
  return { body: text.slice(0, 200) };
}

self.addEventListener("push", function (event) {
  var message = readPush(event.data);
  var title = typeof message.title === "string" && message.title ? Promise.resolve(message.title) : spaceName();
  event.waitUntil(title.then(function (title) {
    var options = {
      body: typeof message.body === "string" ? message.body : "",
      icon: ICON,
      tag: typeof message.tag === "string" && message.tag ? message.tag : "bitsd",
      // A newer status or message replaces the older and still alerts.
      renotify: true,
      data: { url: typeof message.url === "string" && message.url ? message.url : "/" },
    };
    if (typeof message.timestamp === "number") options.timestamp = message.timestamp;
    return self.registration.showNotification(title, options);
  }));
});

// A click closes the notification and brings up a window of its page
// (the homepage): one already open, else a new one.
self.addEventListener("notificationclick", function (event) {
  event.notification.close();
  var data = event.notification.data || {};
  var target = new URL(data.url || "/", self.location.origin);
  // Only this site's pages.
  if (target.origin !== self.location.origin) target = new URL("/", self.location.origin);
  event.waitUntil(self.clients.matchAll({ type: "window", includeUncontrolled: true }).then(function (windows) {
    var open = windows.filter(function (client) {
      return new URL(client.url).pathname === target.pathname;
    })[0];
    if (open && "focus" in open) return open.focus();
    return self.clients.openWindow(target.href);
  }));
});

// ---- a subscription replaced ---------------------------------------------

// Bytes of a base64url text.
function bytes(text) {
  var plain = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4));
  var out = new Uint8Array(plain.length);
  for (var i = 0; i < plain.length; i++) out[i] = plain.charCodeAt(i);
  return out;
}

// A new subscription made here, with bitsd's public key.
function subscribeAgain() {
  return fetch("/push/key", { cache: "no-store" }).then(function (response) {
    if (!response.ok) throw new Error("no push key: " + response.status);
    return response.json();
  }).then(function (key) {
    return self.registration.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: bytes(key.publicKey),
    });
  });
}

// The choice the page last had bitsd take, or null.
function keptChoice() {
  return caches.open(CHOICE).then(function (cache) {
    return cache.match("/push/choice");
  }).then(function (response) {
    return response ? response.json() : null;
  }).catch(function () { return null; });
}

// The browser replaced its push subscription (the push service renewed
// or expired it). The new one goes to bitsd in place of the old, with the
// choice the page kept for the old one; without it (a choice made before
// the page kept it for the worker) bitsd takes the old one's, while it
// still has it. Firefox gives the new subscription; other browsers may
// not, and the worker subscribes again itself.
self.addEventListener("pushsubscriptionchange", function (event) {
  var old = event.oldSubscription;
  // Without the old subscription there is no telling whose choice this
  // is: nothing is sent. The page hands the browser's new subscription to
  // bitsd next time it is opened, and bitsd forgets the old one once its
  // push service says it is gone.
  if (!old) return;
  var fresh = event.newSubscription ? Promise.resolve(event.newSubscription) : subscribeAgain();
  event.waitUntil(Promise.all([fresh, keptChoice()]).then(function (both) {
    var subscription = both[0];
    var choice = both[1] && both[1].endpoint === old.endpoint ? both[1] : null;
    var body = { subscription: subscription.toJSON(), replaces: old.endpoint };
    if (choice) {
      body.topics = choice.topics;
      if (choice.lang) body.lang = choice.lang;
    }
    return fetch("/push/subscriptions", {
      method: "POST",
      cache: "no-store",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    }).then(function (response) {
      if (!response.ok) throw new Error("bitsd refused the new subscription: " + response.status);
      if (!choice) return;
      // The choice now belongs to the new subscription.
      var kept = { endpoint: subscription.endpoint, topics: choice.topics, lang: choice.lang };
      return caches.open(CHOICE).then(function (cache) {
        var json = new Response(JSON.stringify(kept), { headers: { "Content-Type": "application/json" } });
        return cache.put("/push/choice", json);
      });
    });
  }));
});
