// The service worker of an edgetl web app: every file of the app is cached on
// the first visit, so the app opens, predicts and learns offline afterwards.
// 'edgetl export --format web' fills in FILES and VERSION; a new export has a
// new VERSION, and its cache replaces the old one.

const FILES = /*FILES*/[];
const VERSION = /*VERSION*/"dev";
const CACHE = `edgetl-${VERSION}`;

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(FILES)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith('edgetl-') && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

// Cache first (the files of one export never change), the network for anything else.
self.addEventListener('fetch', (event) => {
  if (event.request.method !== 'GET') return;
  event.respondWith(
    caches.open(CACHE).then((cache) =>
      cache.match(event.request, { ignoreSearch: true }).then((hit) => hit || fetch(event.request)),
    ),
  );
});
