// bitsd service worker: keeps the homepage, its files and the last /data,
// so that a phone without network still shows the last state (the page
// script says how old it is). The network comes first, always: a kept copy
// is used only when the network fails.
"use strict";

var KEPT = "bitsd-kept-1";

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
    return Promise.all(names.filter(function (name) { return name !== KEPT; })
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
