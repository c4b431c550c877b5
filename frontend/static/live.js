/* imapdesk live updates: one event stream per page, re-dispatched as DOM events.
 *
 * Any page can subscribe: put an element with `data-live="/live"` (all conversations the agent
 * may see) or `data-live="/live?conversation=ID"` on the page, load common.js and this script,
 * and listen:
 *   document.addEventListener("imapdesk:conversation", e => e.detail)  // {id, mailbox_id, version}
 *   document.addEventListener("imapdesk:presence", e => e.detail)      // {id, mailbox_id, agents}
 *   document.addEventListener("imapdesk:parts", e => e.detail)         // with ?parts=1: a list's parts
 *   document.addEventListener("imapdesk:notifications", e => e.detail) // {unread, new: [...]}
 *   document.addEventListener("imapdesk:live", e => e.detail.state)    // connected|resync|reconnecting|closed
 * ("connected" carries `parts: true` when the stream pushes a list's parts.)
 * "connected" also comes after every reconnect: refetch what may have changed meanwhile.
 * Needs common.js, loaded before it.
 *
 * The stream is read with fetch rather than EventSource, which cannot see why a connection was
 * refused nor spread its reconnects: after a restart every open tab would come back at the same
 * second. Here a stream that ends or fails is opened again after a random delay that grows with
 * each failure in a row; a server at capacity (503, 429) is asked again after its Retry-After,
 * also with jitter. An answer that is not a stream (signed out: the sign-in page) ends it.
 */
(function () {
  "use strict";
  var holder = document.querySelector("[data-live]");
  if (!holder || !window.fetch || !window.AbortController || !window.TextDecoder) {
    return;
  }
  var emit = window.imapdesk.emit;
  var url = holder.getAttribute("data-live");
  var MAX_DELAY = 60000;
  var retry = 1000;  // the stream's `retry:` field, the first reconnect's delay
  var failures = 0;  // in a row: the next delay doubles with each
  var controller = null;
  var timer = null;
  var stopped = false;

  function parse(data) {
    try {
      return JSON.parse(data);
    } catch (err) {
      return {};
    }
  }

  function dispatch(kind, data) {
    if (kind === "hello") {
      failures = 0;
      emit("imapdesk:live", { state: "connected", parts: !!parse(data).parts });
    } else if (kind === "resync") {
      emit("imapdesk:live", { state: "resync" });
    } else if (kind === "conversation" || kind === "presence" || kind === "parts" ||
               kind === "notifications") {
      emit("imapdesk:" + kind, parse(data));
    }
  }

  // server-sent events: fields up to a blank line make one event
  function reader(body) {
    var decoder = new TextDecoder();
    var buffer = "";
    var kind = "";
    var data = [];
    function line(text) {
      if (text === "") {
        if (data.length) {
          dispatch(kind || "message", data.join("\n"));
        }
        kind = "";
        data = [];
        return;
      }
      if (text.charAt(0) === ":") {
        return;
      }
      var colon = text.indexOf(":");
      var name = colon === -1 ? text : text.slice(0, colon);
      var value = colon === -1 ? "" : text.slice(colon + 1).replace(/^ /, "");
      if (name === "event") {
        kind = value;
      } else if (name === "data") {
        data.push(value);
      } else if (name === "retry" && /^\d+$/.test(value)) {
        retry = parseInt(value, 10);
      }
    }
    var source = body.getReader();
    function pump() {
      return source.read().then(function (chunk) {
        if (chunk.done) {
          return;
        }
        buffer += decoder.decode(chunk.value, { stream: true });
        var lines = buffer.split(/\r\n|\r|\n/);
        buffer = lines.pop();
        lines.forEach(line);
        return pump();
      });
    }
    return pump();
  }

  // the delay before trying again: between half and one and a half times a bound that doubles
  // with each failure in a row, so that pages refused together come back spread out
  function backoff() {
    var bound = retry * Math.pow(2, Math.min(failures, 10));
    failures += 1;
    return Math.min(MAX_DELAY, bound * (0.5 + Math.random()));
  }

  function retryAfter(response) {
    var seconds = parseInt(response.headers.get("retry-after") || "", 10);
    if (!(seconds >= 0)) {
      return backoff();
    }
    failures += 1;
    return seconds * 1000 * (1 + Math.random() * 0.5);
  }

  function again(delay) {
    if (stopped) {
      return;
    }
    emit("imapdesk:live", { state: "reconnecting" });
    timer = window.setTimeout(connect, delay);
  }

  function end() {
    stopped = true;
    emit("imapdesk:live", { state: "closed" });
  }

  function connect() {
    timer = null;
    controller = new AbortController();
    var options = {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "text/event-stream" },
      signal: controller.signal
    };
    fetch(url, options).then(function (response) {
      var type = response.headers.get("content-type") || "";
      if (response.status === 503 || response.status === 429) {
        again(retryAfter(response));
      } else if (response.status >= 500) {
        again(backoff());
      } else if (!response.ok || type.indexOf("text/event-stream") !== 0 || !response.body) {
        end();  // signed out (the sign-in page), or nothing live here
      } else {
        return reader(response.body).then(function () { again(backoff()); });
      }
    }).catch(function () {
      again(backoff());  // the network, or the server going away
    });
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

  function close() {
    stopped = true;
    if (timer !== null) {
      window.clearTimeout(timer);
    }
    if (controller) {
      controller.abort();
    }
  }
  window.imapdeskLive = { close: close };
  window.addEventListener("pagehide", close);
})();
