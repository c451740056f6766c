// jarvis's page: keeps the part marked data-live up to date. It listens to the event stream
// (/api/v1/events) and refetches the part when something happened; while a run is active it
// also refetches every 1.5 s (not every stage start is an event). Without script the page
// still works: it is plain links and forms.
(function () {
  "use strict";
  var live = document.querySelector("[data-live]");
  if (!live || !window.fetch) { return; }
  var url = live.getAttribute("data-live");
  var run = live.getAttribute("data-run");
  var busy = false, again = false;
  function active() { return !!live.querySelector("[data-active='1']"); }
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) { live.innerHTML = html; } })
      .catch(function () {})
      .then(function () { busy = false; if (again) { again = false; refresh(); } });
  }
  if (window.EventSource) {
    var source = new EventSource("/api/v1/events" + (run ? "?run=" + encodeURIComponent(run) : ""));
    source.onmessage = refresh;
  }
  setInterval(function () { if (active()) { refresh(); } }, 1500);
})();
