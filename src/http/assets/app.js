// jarvis's page: keeps the part marked data-live up to date. It listens to the event stream
// (/api/v1/events) and refetches the part when something happened; while a run is active it
// also refetches every 1.5 s (not every stage start is an event). Without script the page
// still works: it is plain links and forms.
(function () {
  "use strict";

  function ago(ms) {
    var s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 45) { return "just now"; }
    var m = Math.round(s / 60);
    if (m < 60) { return m + " min ago"; }
    var h = Math.round(m / 60);
    if (h < 24) { return h + " h ago"; }
    var d = Math.round(h / 24);
    return d + (d === 1 ? " day ago" : " days ago");
  }

  // Times come as UTC text, which reads without script; shown here in the viewer's own zone
  // with how long ago, the UTC text kept as the title.
  function localise(root) {
    var times = root.querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var t = times[i], ms = Date.parse(t.getAttribute("datetime"));
      if (isNaN(ms)) { continue; }
      if (!t.hasAttribute("title")) { t.setAttribute("title", t.textContent); }
      var when = new Date(ms), text;
      // Short enough for a table on a phone; the zone named, the year only when not this one.
      var format = { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
                     timeZoneName: "short" };
      if (when.getFullYear() !== new Date().getFullYear()) { format.year = "numeric"; }
      try {
        text = when.toLocaleString(undefined, format);
      } catch (old) {
        text = when.toLocaleString();
      }
      text += " (" + ago(ms) + ")";
      if (t.textContent !== text) { t.textContent = text; }
    }
  }
  localise(document);
  // "3 min ago" goes on being true.
  setInterval(function () { localise(document); }, 30000);

  var live = document.querySelector("[data-live]");
  if (!live || !window.fetch) { return; }
  var url = live.getAttribute("data-live");
  var run = live.getAttribute("data-run");
  // The stream names each event by its kind (event: run_started), and EventSource gives a
  // named event only to a listener of that name, so the page listens to each kind the
  // server lists.
  var kinds = (live.getAttribute("data-events") || "").split(" ").filter(Boolean);
  var announce = document.getElementById("announce");
  var busy = false, again = false, stopped = false, source = null, timer = null;

  function active() { return !!live.querySelector("[data-active='1']"); }

  // Two nodes are the same thing when their kind, tag and id agree: such a node is kept and
  // brought up to date rather than replaced, so focus, a text selection and what a screen
  // reader was reading stay where they were.
  function same(a, b) {
    return a.nodeType === b.nodeType && a.nodeName === b.nodeName &&
      (a.nodeType !== 1 || a.id === b.id);
  }

  function attributes(old, fresh) {
    var i, a;
    for (i = old.attributes.length - 1; i >= 0; i--) {
      a = old.attributes[i];
      if (!fresh.hasAttribute(a.name)) { old.removeAttribute(a.name); }
    }
    for (i = 0; i < fresh.attributes.length; i++) {
      a = fresh.attributes[i];
      if (old.getAttribute(a.name) !== a.value) { old.setAttribute(a.name, a.value); }
    }
  }

  function childWithId(parent, id, from) {
    for (var i = from; i < parent.childNodes.length; i++) {
      var c = parent.childNodes[i];
      if (c.nodeType === 1 && c.id === id) { return c; }
    }
    return null;
  }

  // Makes old's children what fresh's are, touching only what changed: a new run's row is
  // inserted, a changed row updated, rows gone removed.
  function children(old, fresh) {
    var kids = Array.prototype.slice.call(fresh.childNodes);
    for (var i = 0; i < kids.length; i++) {
      var n = kids[i], cur = old.childNodes[i] || null;
      if (cur && same(cur, n)) { morph(cur, n); continue; }
      var match = n.nodeType === 1 && n.id ? childWithId(old, n.id, i + 1) : null;
      if (match) {
        old.insertBefore(match, cur);
        morph(match, n);
      } else {
        old.insertBefore(n, cur);
      }
    }
    while (old.childNodes.length > kids.length) { old.removeChild(old.lastChild); }
  }

  function morph(old, fresh) {
    if (old.nodeType !== 1) {
      var now = old.nodeValue, next = fresh.nodeValue;
      if (now === next) { return; }
      // A log that only grew gets its new lines appended, so a selection in it survives.
      if (now && next.lastIndexOf(now, 0) === 0) {
        old.appendData(next.slice(now.length));
      } else {
        old.nodeValue = next;
      }
      return;
    }
    if (old.isEqualNode(fresh)) { return; }
    attributes(old, fresh);
    children(old, fresh);
  }

  // A session that ended (logout, expiry, a restart) makes the part answer with a redirect
  // to the login page: say so once and stop, rather than paste the login page into this
  // one (and reset its form's nonce on every poll, which breaks a login in another tab).
  function signedOut() {
    stopped = true;
    if (source) { source.close(); }
    if (timer) { clearInterval(timer); }
    if (document.getElementById("signed-out")) { return; }
    var line = document.createElement("p");
    line.id = "signed-out";
    line.className = "failure";
    line.setAttribute("role", "alert");
    var link = document.createElement("a");
    link.href = "/login";
    link.textContent = "sign in again";
    line.appendChild(document.createTextNode("Signed out — "));
    line.appendChild(link);
    live.parentNode.insertBefore(line, live);
  }

  function refresh() {
    if (stopped) { return; }
    if (busy) { again = true; return; }
    busy = true;
    fetch(url, { credentials: "same-origin", cache: "no-store", redirect: "manual" })
      .then(function (r) {
        if (r.type === "opaqueredirect" || r.status === 401) { signedOut(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html === null) { return; }
        var fresh = document.createElement(live.nodeName);
        fresh.innerHTML = html;
        // Localised before the merge, so that a time that did not change compares equal.
        localise(fresh);
        children(live, fresh);
      })
      .catch(function () {})
      .then(function () { busy = false; if (again) { again = false; refresh(); } });
  }

  function heard(e) {
    refresh();
    // The runs page has one polite live line: it says what happened, in chat's words,
    // instead of a screen reader reading the whole table again.
    if (announce && e && e.data) {
      try {
        var data = JSON.parse(e.data);
        if (data && typeof data.text === "string") { announce.textContent = data.text; }
      } catch (ignored) { /* not an event of ours */ }
    }
  }

  if (window.EventSource) {
    source = new EventSource("/api/v1/events" + (run ? "?run=" + encodeURIComponent(run) : ""));
    // Marks the part as following the stream: what a test (or a curious reader of the
    // page) can wait on before something happens elsewhere.
    source.addEventListener("open", function () { live.setAttribute("data-listening", "1"); });
    source.addEventListener("error", function () { live.removeAttribute("data-listening"); });
    source.addEventListener("message", heard);
    for (var i = 0; i < kinds.length; i++) { source.addEventListener(kinds[i], heard); }
  }
  timer = setInterval(function () { if (active()) { refresh(); } }, 1500);
})();
