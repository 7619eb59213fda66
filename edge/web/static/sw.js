// The panel as an installed app: its files are kept here so that it opens, and
// says "offline", when the gateway cannot be reached. Online, the network always
// wins (the gateway may have been updated); the cache is only the fallback.

const CACHE = "edge-panel-1";
const FILES = ["/static/panel.html", "/static/panel.js", "/static/panel.css", "/static/icon.svg", "/pair", "/static/pair.js"];
const NETWORK_WAIT_MS = 4000; // a gateway that does not answer by then counts as gone

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(FILES))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

function fromNetwork(request) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no answer")), NETWORK_WAIT_MS);
    fetch(request).then(
      (r) => {
        clearTimeout(timer);
        resolve(r);
      },
      (e) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}

self.addEventListener("fetch", (event) => {
  const req = event.request;
  const url = new URL(req.url);
  if (req.method !== "GET" || url.origin !== self.location.origin) return;
  // Every room's panel is the same page (it reads its room from the address).
  const panel = /^\/panel\/[^/]+$/.test(url.pathname);
  const key = panel ? "/static/panel.html" : url.pathname;
  if (!panel && !FILES.includes(key)) return; // the API and everything else: the network's
  event.respondWith(
    fromNetwork(req).then(
      (r) => {
        if (r.ok) {
          const copy = r.clone();
          caches.open(CACHE).then((cache) => cache.put(key, copy));
        }
        return r;
      },
      () => caches.match(key).then((hit) => hit || Response.error()),
    ),
  );
});
