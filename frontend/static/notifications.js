/* The bell in the header: the unread count, live, and the browser's notifications.
 *
 * The count comes from `GET /notifications/unread` when the page's event stream (live.js)
 * connects (and after every reconnect), then moves with `imapdesk:notifications` events
 * (`{unread, new: [...]}`). A page without a stream of its own gets one: the bell's
 * `data-live-fallback` names it and common.js and live.js are loaded for it. While a tab is
 * open and the agent allowed it (the button on the notifications page), each new notification
 * is also shown by the browser (the Notification API). Loaded by every signed-in page.
 */
(function () {
  "use strict";
  var bell = document.getElementById("notif-bell");
  if (!bell) {
    return;
  }
  var count = document.getElementById("notif-count");
  var unreadUrl = bell.getAttribute("data-unread-url");
  var openBase = bell.getAttribute("href");
  var shown = {};

  function setCount(n) {
    n = Math.max(0, n | 0);
    count.textContent = n > 99 ? "99+" : String(n);
    count.hidden = n === 0;
    bell.dataset.unread = String(n);
    bell.setAttribute("aria-label", n ? "Notifications: " + n + " unread" : "Notifications");
  }

  function refresh() {
    fetch(unreadUrl, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) {
        if (body && typeof body.unread === "number") {
          setCount(body.unread);
          (body.new || []).forEach(function (n) { shown[n.id] = true; });
        }
      })
      .catch(function () {});
  }

  function tellBrowser(item) {
    if (shown[item.id] || !("Notification" in window) || Notification.permission !== "granted") {
      return;
    }
    shown[item.id] = true;
    try {
      var note = new Notification("imapdesk", { body: item.text, tag: "imapdesk-" + item.id });
      note.onclick = function () {
        window.focus();
        window.location.href = openBase + "/" + item.id + "/open";
      };
    } catch (err) {
      /* some browsers allow it only from a service worker: the bell still counts */
    }
  }

  document.addEventListener("imapdesk:live", function (e) {
    if (e.detail && (e.detail.state === "connected" || e.detail.state === "resync")) {
      refresh();
    }
  });
  document.addEventListener("imapdesk:notifications", function (e) {
    var detail = e.detail || {};
    if (typeof detail.unread === "number") {
      setCount(detail.unread);
    }
    (detail.new || []).forEach(tellBrowser);
  });

  // the notifications page's button: the browser asks once, on a click
  var ask = document.getElementById("notif-browser");
  var askState = document.getElementById("notif-browser-state");
  if (ask && "Notification" in window) {
    var describe = function () {
      var p = Notification.permission;
      ask.hidden = p !== "default";
      askState.textContent = p === "granted" ? "Browser notifications are on while a tab is open."
        : p === "denied" ? "This browser blocks notifications from imapdesk." : "";
    };
    ask.addEventListener("click", function () {
      Notification.requestPermission().then(describe);
    });
    describe();
  }

  // a page without an event stream of its own: the bell's
  if (!document.querySelector("[data-live]")) {
    bell.setAttribute("data-live", bell.getAttribute("data-live-fallback"));
    var base = bell.getAttribute("data-static");
    var load = function (name, then) {
      var s = document.createElement("script");
      s.src = base + name;
      s.onload = then;
      document.head.appendChild(s);
    };
    if (window.imapdesk && window.imapdesk.emit) {
      load("live.js");
    } else {
      load("common.js", function () { load("live.js"); });
    }
  }
  setCount(0);
  refresh();
})();
