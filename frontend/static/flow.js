/* Keyboard flow between a queue and its conversations (issue 13, item 8).
 *
 * Leaving a list page remembers the queue (its address, its rows in order, the scroll
 * position and the current row) in the tab's sessionStorage. On a conversation opened from
 * it, closing it or sending a reply goes on to the next conversation of that queue; `u`
 * (imapdeskFlow.back) goes back to the queue, scrolled as it was, on the row of the
 * conversation last seen (or the row at its place, if that one left the queue).
 * Needs nothing else; conversation.js calls imapdeskFlow.back for `u`. */
(function () {
  "use strict";
  var KEY = "imapdesk.flow";

  function load() {
    try {
      var value = JSON.parse(window.sessionStorage.getItem(KEY) || "null");
      return value && Array.isArray(value.ids) ? value : null;
    } catch (e) {
      return null;
    }
  }

  function save(value) {
    try {
      window.sessionStorage.setItem(KEY, JSON.stringify(value));
    } catch (e) { /* private mode: no flow, the links still work */ }
  }

  function here() {
    return window.location.pathname + window.location.search;
  }

  // --- the list ------------------------------------------------------------------------------
  var tbody = document.getElementById("queue-rows");
  if (tbody) {
    var rowIds = function () {
      return Array.prototype.map.call(tbody.querySelectorAll("tr[data-id]"),
        function (tr) { return Number(tr.dataset.id); });
    };
    var currentRowId = function () {
      var active = document.activeElement;
      var tr = (active && active.closest ? active.closest("#queue-rows tr[data-id]") : null) ||
        tbody.querySelector("tr.is-current");
      return tr ? Number(tr.dataset.id) : null;
    };
    var remember = function () {
      var ids = rowIds();
      var at = currentRowId();
      save({ url: here(), ids: ids, scroll: window.scrollY, at: at,
        index: Math.max(0, ids.indexOf(at)), back: false });
    };
    tbody.addEventListener("click", function (event) {
      var link = event.target.closest && event.target.closest("td.subject a");
      if (link) {
        link.focus({ preventScroll: true }); // the row opened is the current one
        remember();
      }
    }, true);
    window.addEventListener("pagehide", remember);

    var flow = load();
    if (flow && flow.back && flow.url === here()) {
      flow.back = false;
      save(flow);
      var rows = tbody.querySelectorAll("tr[data-id]");
      var tr = tbody.querySelector('tr[data-id="' + flow.at + '"]') ||
        rows[Math.min(flow.index || 0, rows.length - 1)];
      var link = tr ? tr.querySelector("td.subject a") : null;
      if (link) {
        link.focus({ preventScroll: true }); // queues.js makes it the keyboard position
      }
      window.scrollTo(0, flow.scroll || 0);
    }
    return;
  }

  // --- a conversation --------------------------------------------------------------------------
  var root = document.getElementById("conversation");
  if (!root) {
    return;
  }
  var id = Number(root.dataset.id);

  function conversationUrl(other) {
    return window.location.pathname.replace(/\d+\/?$/, String(other));
  }

  function back() {
    var flow = load();
    if (!flow) {
      window.location.assign(root.dataset.listUrl);
      return;
    }
    if (flow.ids.indexOf(id) !== -1) {
      flow.at = id;
      flow.index = flow.ids.indexOf(id);
    }
    flow.back = true;
    save(flow);
    window.location.assign(flow.url);
  }

  // the next conversation of the queue this one was opened from; the queue when it was the last
  function next() {
    var flow = load();
    var index = flow ? flow.ids.indexOf(id) : -1;
    if (index === -1) {
      return false;
    }
    var following = flow.ids[index + 1];
    if (following === undefined) {
      back();
      return true;
    }
    flow.at = following;
    flow.index = index + 1;
    save(flow);
    window.location.assign(conversationUrl(following));
    return true;
  }

  // closing: the state form's "closed" button (a click or `e`), answered by new parts
  var closing = false;
  document.addEventListener("submit", function (event) {
    var submitter = event.submitter;
    closing = Boolean(event.target.closest && event.target.closest("#conv-state") &&
      submitter && submitter.name === "status" && submitter.value === "closed");
  }, true);
  document.addEventListener("imapdesk:parts", function (event) {
    if (closing && event.detail && event.detail.status === "closed") {
      closing = false;
      next();
    }
  });

  // sending: at once, or once the undo window is over (and only if it was not undone)
  var undone = false;
  document.addEventListener("click", function (event) {
    if (event.target.closest && event.target.closest("[data-undo-send]")) {
      undone = true;
    }
  }, true);
  document.addEventListener("imapdesk:sent", function (event) {
    var detail = event.detail || {};
    if (detail.kind === "note") {
      return;
    }
    undone = false;
    var outbound = detail.outbound;
    var wait = outbound && outbound.state === "scheduled" ? 1000 * (outbound.seconds_left || 0) : 0;
    window.setTimeout(function () {
      var composer = document.querySelector("form[data-composer]");
      if (!undone && !(composer && !composer.hidden)) {
        next();
      }
    }, wait + (wait ? 500 : 0));
  });

  window.imapdeskFlow = { back: back, next: next };
})();
