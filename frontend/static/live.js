/* imapdesk live updates: one EventSource per page, re-dispatched as DOM events.
 *
 * Any page can subscribe: put an element with `data-live="/live"` (all conversations the agent
 * may see) or `data-live="/live?conversation=ID"` on the page, load common.js and this script,
 * and listen:
 *   document.addEventListener("imapdesk:conversation", e => e.detail)  // {id, mailbox_id, version}
 *   document.addEventListener("imapdesk:presence", e => e.detail)      // {id, mailbox_id, agents}
 *   document.addEventListener("imapdesk:parts", e => e.detail)         // with ?parts=1: a list's parts
 *   document.addEventListener("imapdesk:live", e => e.detail.state)    // connected|resync|reconnecting
 * ("connected" carries `parts: true` when the stream pushes a list's parts.)
 * "connected" also comes after every reconnect: refetch what may have changed meanwhile.
 * Needs common.js, loaded before it.
 */
(function () {
  "use strict";
  var holder = document.querySelector("[data-live]");
  if (!holder || !window.EventSource) {
    return;
  }
  var emit = window.imapdesk.emit;
  var source = null;

  function parse(event) {
    try {
      return JSON.parse(event.data);
    } catch (err) {
      return {};
    }
  }

  function connect() {
    source = new EventSource(holder.getAttribute("data-live"));
    source.addEventListener("hello", function (e) {
      emit("imapdesk:live", { state: "connected", parts: !!parse(e).parts });
    });
    source.addEventListener("resync", function () { emit("imapdesk:live", { state: "resync" }); });
    source.addEventListener("conversation", function (e) { emit("imapdesk:conversation", parse(e)); });
    source.addEventListener("presence", function (e) { emit("imapdesk:presence", parse(e)); });
    source.addEventListener("parts", function (e) { emit("imapdesk:parts", parse(e)); });
    source.onerror = function () {
      emit("imapdesk:live", { state: source.readyState === 2 ? "closed" : "reconnecting" });
    };
  }

  // Connect once every deferred script of the page has run: its listeners must be in place
  // before "hello" can arrive (the browser runs network events between deferred scripts while
  // a later one is still loading, and a lost "connected" would leave the page "not live").
  var started = false;
  function start() {
    if (!started) {
      started = true;
      connect();
    }
  }
  if (document.readyState === "complete") {
    start();
  } else {
    document.addEventListener("DOMContentLoaded", start);
    window.addEventListener("load", start);
  }
  window.imapdeskLive = {
    source: function () { return source; },
    close: function () { if (source) { source.close(); } }
  };
  window.addEventListener("pagehide", function () { if (source) { source.close(); } });
})();
