/* The dashboard's script: keeps the server-rendered page live. Without it the page is complete for reading.
 *
 * Async server: follows the WebSocket /events (from ?after=0, showing the newest of what the server still
 * buffers; reconnecting with ?after=<last seq seen>), refreshes the
 * state on todo and component events, and polls /ui/api/state every 2 s for the live figures.
 * Legacy server (no WebSocket): polls /ui/api/state every second and lists the status changes it sees.
 * Changes go through the flags API itself: PUT /flags/{component} with "source": "ui".
 * Everything shown comes formatted from the server; this only copies text into place.
 */
(function () {
  "use strict";

  var body = document.body;
  var BASE = body.dataset.base || "";
  var API = body.dataset.api || "";
  var HAS_EVENTS = body.dataset.events === "1";
  var MAX_EVENTS = 100;
  var POLL_MS = HAS_EVENTS ? 2000 : 1000;
  var TODO_FIELDS = ["id", "text", "status", "attempts", "commit", "duration", "error"];
  var COMPONENT_FIELDS = ["mode_text", "percent_text", "serve_text", "since", "source", "calls", "errors",
    "error_rate_text", "mismatches", "rollback"];

  /* State the tests (and a curious person in the console) can look at. */
  var dash = {
    lastSeq: null,
    socketUrls: [],
    ws: null,
    events: 0,
    refreshes: 0,
    mismatches: Number(body.dataset.mismatches || 0),
    audit: Number(body.dataset.audit || 0),
    statuses: new Map(),
    components: [],
    signedOut: false
  };
  window.codeagentDashboard = dash;

  function $(selector, root) { return (root || document).querySelector(selector); }
  function $$(selector, root) { return Array.prototype.slice.call((root || document).querySelectorAll(selector)); }
  function setText(el, value) {
    var text = value === null || value === undefined ? "" : String(value);
    if (el && el.textContent !== text) { el.textContent = text; }
  }
  function span(cls, text) {
    var el = document.createElement("span");
    el.className = cls;
    el.textContent = text;
    return el;
  }

  function setConnection(text, kind) {
    var el = $("#connection");
    if (el) { el.textContent = text; el.dataset.kind = kind || ""; }
  }

  function signedOut() {
    if (dash.signedOut) { return; }
    dash.signedOut = true;
    var note = $("#signed-out");
    if (note) { note.hidden = false; }
    setConnection("signed out", "error");
  }

  function request(url, options) {
    var opts = Object.assign({ credentials: "same-origin", headers: { Accept: "application/json" } }, options || {});
    return fetch(url, opts).then(function (response) {
      if (response.status === 401) { signedOut(); }
      return response.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        return { ok: response.ok, status: response.status, data: data };
      });
    });
  }

  /* ------------------------------------------------------------------ applying the state */

  function applyComponents(flags) {
    dash.components = flags.components;
    setText($("[data-flag=loop]"), flags.loop);
    flags.components.forEach(function (row) {
      var tr = $('tr[data-component="' + row.component + '"]');
      if (!tr) { return; }
      tr.dataset.mode = row.mode;
      COMPONENT_FIELDS.forEach(function (field) { setText($('[data-field="' + field + '"]', tr), row[field]); });
      var rollback = $('[data-field="rollback"]', tr);
      if (rollback) { rollback.dataset.state = row.rollback_state; }
    });
    var banner = $("#flags-error");
    if (banner) {
      banner.hidden = !flags.error;
      setText(banner, flags.error ? "The flag file is invalid; the last good flags are in force: " + flags.error : "");
    }
  }

  function renderCounts(el, counts) {
    if (!el) { return; }
    var parts = [];
    Object.keys(counts).forEach(function (status) {
      if (!counts[status]) { return; }
      var badge = span("badge", counts[status] + " " + status);
      badge.dataset.status = status;
      parts.push(badge, document.createTextNode(" "));
    });
    el.replaceChildren.apply(el, parts);
  }

  function applyTodos(workspaces) {
    workspaces.forEach(function (ws) {
      var box = $('.workspace[data-workspace="' + CSS.escape(ws.name) + '"]');
      if (!box) { return; }
      setText($('[data-ws="agent"]', box), ws.agent);
      renderCounts($('[data-ws="counts"]', box), ws.counts);
      var tbody = $("tbody", box);
      ws.todos.forEach(function (todo) {
        var tr = $('tr[data-id="' + CSS.escape(todo.id) + '"]', tbody);
        if (!tr) {
          tr = $("#todo-row").content.firstElementChild.cloneNode(true);
          tbody.appendChild(tr);
        }
        tr.dataset.id = todo.id;
        if (tr.dataset.status !== todo.status) { tr.dataset.status = todo.status; }
        TODO_FIELDS.forEach(function (field) { setText($('[data-field="' + field + '"]', tr), todo[field]); });
        $('[data-field="commit"]', tr).title = todo.commit_full;
        noteStatus(ws.name, todo);
      });
    });
  }

  /* The legacy server has no event stream: its status changes, as polling sees them, are the events. */
  function noteStatus(workspace, todo) {
    var key = workspace + "/" + todo.id;
    var before = dash.statuses.get(key);
    dash.statuses.set(key, todo.status);
    if (HAS_EVENTS || before === todo.status) { return; }
    addEvent({
      type: before === undefined ? "todo.added" : "todo." + todo.status,
      workspace: workspace,
      todo_id: todo.id,
      detail: before === undefined ? todo.status : before + " \u2192 " + todo.status
    });
  }

  function applyLive(live) {
    setText($('[data-live="lag"]'), live.lag.text);
    setText($('[data-live="lag_detail"]'), live.lag.detail);
    setText($('[data-live="llm_in_flight"]'), live.llm_in_flight);
    var queued = live.todos_queued === null || live.todos_queued === undefined ? "" : " (" + live.todos_queued + " queued)";
    setText($('[data-live="todos_in_flight"]'), live.todos_in_flight + queued);
    setText($('[data-live="todos_total"]'), live.todos_total);
    setText($('[data-live="throughput"]'), live.throughput.text);
    var rects = $$("#throughput rect");
    live.throughput.heights.forEach(function (h, i) {
      if (!rects[i]) { return; }
      rects[i].setAttribute("y", String(40 - h));
      rects[i].setAttribute("height", String(h));
    });
  }

  function apply(state) {
    applyComponents(state.flags);
    applyTodos(state.workspaces);
    applyLive(state.live);
    if (state.mismatches.count !== dash.mismatches) {
      dash.mismatches = state.mismatches.count;
      refreshPart("mismatches");
    }
    if (state.audit.count !== dash.audit) {
      dash.audit = state.audit.count;
      refreshPart("audit");
    }
    dash.refreshes += 1;
  }

  /* ------------------------------------------------------------------ refreshing */

  var timer = null;
  var busy = false;
  var again = false;
  var waiting = []; /* callers of refresh() while one was running: they get the next one */

  function refreshSoon(delay) {
    if (timer !== null) { return; }
    timer = setTimeout(function () { timer = null; refresh(); }, delay === undefined ? 100 : delay);
  }

  /* The state as of now: a call made while a refresh runs resolves after the next one, which starts then. */
  function refresh() {
    if (dash.signedOut) { return Promise.resolve(); }
    if (busy) {
      again = true;
      return new Promise(function (resolve) { waiting.push(resolve); });
    }
    busy = true;
    return request(BASE + "/api/state").then(function (answer) {
      if (answer.ok && answer.data) {
        apply(answer.data);
        if (!HAS_EVENTS) { setConnection("live (polling)", "ok"); }
      }
    }).catch(function () {
      setConnection("server unreachable: retrying", "error");
    }).then(function () {
      busy = false;
      if (again) {
        again = false;
        var resolvers = waiting;
        waiting = [];
        refresh().then(function () { resolvers.forEach(function (resolve) { resolve(); }); });
      }
    });
  }

  function currentFilter() {
    var select = $("#mismatch-filter select");
    return select ? select.value : "";
  }

  function refreshPart(name) {
    var url = BASE + "/part/" + name;
    if (name === "mismatches" && currentFilter()) { url += "?component=" + encodeURIComponent(currentFilter()); }
    return fetch(url, { credentials: "same-origin" }).then(function (response) {
      if (response.status === 401) { signedOut(); }
      if (!response.ok) { return; }
      return response.text().then(function (html) {
        var box = $("#" + name + "-body");
        var open = new Set($$("li[data-key]", box).filter(function (li) {
          return $("details", li).open;
        }).map(function (li) { return li.dataset.key; }));
        var seen = new Set($$("li[data-key]", box).map(function (li) { return li.dataset.key; }));
        box.innerHTML = html; /* HTML the server rendered, escaped by its templates */
        $$("li[data-key]", box).forEach(function (li) {
          if (seen.has(li.dataset.key)) { $("details", li).open = open.has(li.dataset.key); }
        });
        if (name === "mismatches") { bindFilter(); }
      });
    });
  }

  /* ------------------------------------------------------------------ events */

  function describe(event) {
    var skip = { seq: 1, type: 1, time: 1, workspace: 1, todo_id: 1, detail: 1, text: 1 };
    return Object.keys(event).filter(function (k) { return !skip[k]; }).map(function (k) {
      var value = event[k];
      var text = typeof value === "object" ? JSON.stringify(value) : String(value);
      return k + "=" + (text.length > 80 ? text.slice(0, 77) + "..." : text);
    }).join(" ");
  }

  function addEvent(event) {
    var list = $("#events");
    if (!list) { return; }
    var empty = $(".empty", list);
    if (empty) { empty.remove(); }
    var li = document.createElement("li");
    li.dataset.type = event.type;
    if (event.seq !== undefined) { li.dataset.seq = String(event.seq); }
    var when = (event.time || new Date().toISOString()).slice(11, 19);
    var words = [event.workspace, event.todo_id, event.detail || describe(event)].filter(Boolean).join(" \u00b7 ");
    li.append(span("time", when), " ", span("seq", event.seq !== undefined ? "#" + event.seq : ""), " ",
      span("type", event.type), " ", span("what", words));
    list.prepend(li);
    while (list.children.length > MAX_EVENTS) { list.lastElementChild.remove(); }
    dash.events += 1;
  }

  var backoff = 500;
  /* The first connection asks for what the server still buffers (?after=0) and shows its newest part. */
  var replay = null;

  function flushReplay() {
    replay.backlog.forEach(addEvent);
    replay = null;
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss:" : "ws:";
    var url = scheme + "//" + location.host + API + "/events?after=" + (dash.lastSeq !== null ? dash.lastSeq : 0);
    var ws = new WebSocket(url);
    dash.ws = ws;
    dash.socketUrls.push(url);
    ws.onopen = function () {
      backoff = 500;
      setConnection("live (WebSocket)", "ok");
      refreshSoon(0); /* what changed while we were away */
    };
    ws.onmessage = function (message) {
      var event;
      try { event = JSON.parse(message.data); } catch (e) { return; }
      if (event.type === "stream.hello") {
        if (dash.lastSeq === null) {
          dash.lastSeq = 0;
          if (event.last_seq > 0) { replay = { until: event.last_seq, backlog: [] }; }
        } else if (event.missed) {
          addEvent({ type: "stream.missed", detail: "events " + event.missed[0] + "-" + (event.missed[1] - 1) + " left the server's buffer" });
        }
        return;
      }
      if (typeof event.seq === "number") {
        if (event.seq <= dash.lastSeq) { return; }
        dash.lastSeq = event.seq;
      }
      if (replay !== null) {
        replay.backlog.push(event);
        if (replay.backlog.length > MAX_EVENTS) { replay.backlog.shift(); }
        if (event.seq >= replay.until) { flushReplay(); }
        return;
      }
      addEvent(event);
      if (/^(todo|component|flags|worker|workspace|config)\./.test(event.type)) { refreshSoon(150); }
    };
    ws.onclose = function (close) {
      if (dash.ws === ws) { dash.ws = null; }
      if (replay !== null) { flushReplay(); }
      if (close.code === 1008) { signedOut(); return; }
      setConnection("reconnecting", "warn");
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 10000);
    };
  }

  /* ------------------------------------------------------------------ controls */

  function showMessage(text, ok) {
    var el = $("#flag-message");
    el.textContent = text;
    el.className = "message " + (ok ? "ok" : "error");
  }

  function putFlag(component, payload) {
    return request(API + "/flags/" + encodeURIComponent(component), {
      method: "PUT",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(payload)
    });
  }

  function modeOf(component) {
    var row = dash.components.filter(function (r) { return r.component === component; })[0];
    return row ? row.mode_text : "";
  }

  function errorOf(answer) {
    return answer.data && answer.data.error ? answer.data.error.message : "HTTP " + answer.status;
  }

  function bindControls() {
    var flagForm = $("#flag-form");
    flagForm.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var data = new FormData(flagForm);
      var component = String(data.get("component"));
      var mode = String(data.get("mode"));
      var payload = { mode: mode, source: "ui" };
      var reason = String(data.get("reason") || "").trim();
      if (reason) { payload.reason = reason; }
      var percent = String(data.get("percent") || "").trim();
      if (percent !== "") { payload.percent = /^-?\d+(\.\d+)?$/.test(percent) ? Number(percent) : percent; }
      var serve = String(data.get("serve") || "");
      if (serve && mode === "shadow") { payload.serve = serve; }
      showMessage("applying\u2026", true);
      putFlag(component, payload).then(function (answer) {
        if (!answer.ok) { showMessage(component + ": " + errorOf(answer), false); return; }
        return refresh().then(function () {
          showMessage(component + ": " + modeOf(component) + " (recorded in the audit log with source ui)", true);
        });
      }).catch(function (e) { showMessage("the server did not answer: " + e, false); });
    });

    var rollbackForm = $("#rollback-form");
    rollbackForm.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var data = new FormData(rollbackForm);
      var target = String(data.get("component"));
      var reason = String(data.get("reason") || "").trim();
      if (!reason) { showMessage("a rollback needs a reason", false); return; }
      var names = target !== "all" ? [target] : dash.components.filter(function (r) {
        return r.mode !== "legacy";
      }).map(function (r) { return r.component; });
      if (!names.length) { showMessage("every component is already on legacy", true); return; }
      var payload = { mode: "legacy", reason: "rollback: " + reason, source: "ui" };
      var failures = [];
      names.reduce(function (chain, name) {
        return chain.then(function () {
          return putFlag(name, payload).then(function (answer) {
            if (!answer.ok) { failures.push(name + ": " + errorOf(answer)); }
          });
        });
      }, Promise.resolve()).then(function () {
        return refresh();
      }).then(function () {
        if (failures.length) { showMessage(failures.join("; "), false); } else {
          showMessage("rolled back " + names.join(", ") + " (recorded in the audit log with source ui)", true);
        }
      });
    });
  }

  function bindFilter() {
    var form = $("#mismatch-filter");
    if (!form) { return; }
    function apply(ev) {
      if (ev) { ev.preventDefault(); }
      var value = currentFilter();
      var url = new URL(location.href);
      if (value) { url.searchParams.set("component", value); } else { url.searchParams.delete("component"); }
      url.hash = "mismatches";
      history.replaceState(null, "", url.toString());
      refreshPart("mismatches");
    }
    form.addEventListener("submit", apply);
    $("select", form).addEventListener("change", apply);
  }

  /* ------------------------------------------------------------------ start */

  function start() {
    $$(".workspace").forEach(function (box) {
      $$("tbody tr[data-id]", box).forEach(function (tr) {
        dash.statuses.set(box.dataset.workspace + "/" + tr.dataset.id, tr.dataset.status);
      });
    });
    var list = $("#events .empty");
    if (list) { list.textContent = HAS_EVENTS ? "Waiting for events\u2026" : "Waiting for status changes\u2026"; }
    bindControls();
    bindFilter();
    if (HAS_EVENTS) {
      setConnection("connecting", "warn");
      connect();
    }
    setInterval(function () { if (!document.hidden) { refresh(); } }, POLL_MS);
    if (!HAS_EVENTS) { refresh(); }
  }

  start();
})();
