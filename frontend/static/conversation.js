/* The conversation page: actions without reloads, live updates, presence, shortcuts.
 * Needs common.js. */
(function () {
  "use strict";
  var root = document.getElementById("conversation");
  if (!root) {
    return;
  }
  var common = window.imapdesk;
  var conversationId = Number(root.dataset.id);
  var csrf = root.dataset.csrf;
  var flash = document.getElementById("flash");
  var liveStatus = document.getElementById("live-status");
  var refreshing = false;
  var again = false;
  var current = -1;

  function showFlash(message) {
    flash.textContent = message;
    flash.hidden = !message;
  }

  function messageIds() {
    return Array.prototype.map.call(
      document.querySelectorAll("#conv-messages article[data-message-id]"),
      function (a) { return Number(a.dataset.messageId); }
    );
  }

  function setHtml(id, html) {
    common.setHtml(document.getElementById(id), html);
  }

  // the state part is replaced after an action: keep the keyboard focus where it was
  function focusKey() {
    var el = document.activeElement;
    var form = el && el.closest ? el.closest("#conv-state form[data-action]") : null;
    if (!form) {
      return null;
    }
    return { action: form.dataset.action, name: el.name || "", value: el.value || "",
      tag: el.tagName.toLowerCase() };
  }

  function restoreFocus(key) {
    if (!key) {
      return;
    }
    var state = document.getElementById("conv-state");
    var selector = key.tag + (key.name ? "[name='" + key.name + "']" : "");
    var candidates = state.querySelectorAll("form[data-action='" + key.action + "'] " + selector);
    var target = Array.prototype.filter.call(candidates, function (el) {
      return !el.disabled && (key.tag !== "button" || !key.value || el.value === key.value);
    })[0] || state.querySelector(".actions button:not([disabled])");
    if (target) {
      target.focus();
    }
  }

  // what the agent typed in the state part's fields (a snooze time, tags) and not yet sent
  function typedValues() {
    return Array.prototype.filter.call(
      document.querySelectorAll("#conv-state form[data-action] input[name]"),
      function (el) { return el.type !== "hidden" && el.value !== el.defaultValue; }
    ).map(function (el) {
      return { action: el.closest("form").dataset.action, name: el.name, value: el.value };
    });
  }

  function restoreTyped(typed) {
    typed.forEach(function (t) {
      var el = document.querySelector("#conv-state form[data-action='" + t.action + "'] input[name='" +
        t.name + "']");
      if (el) {
        el.value = t.value;
      }
    });
  }

  // `keepTyped`: a live refresh, which leaves what the agent is typing alone
  function applyParts(parts, keepTyped) {
    if (parts.redirect) {
      window.location.assign(parts.redirect);
      return;
    }
    var key = focusKey();
    var typed = keepTyped === true ? typedValues() : [];
    setHtml("conv-state", parts.state);
    restoreTyped(typed);
    restoreFocus(key);
    setHtml("conv-presence", parts.presence);
    setHtml("conv-activity", parts.activity);
    if (parts.message_ids && parts.message_ids.join(",") !== messageIds().join(",")) {
      setHtml("conv-messages", parts.messages);
    }
    root.dataset.version = String(parts.version);
    root.dataset.status = parts.status;
    common.emit("imapdesk:parts", parts);
  }

  function request(url, options) {
    options = options || {};
    options.headers = Object.assign({ "X-CSRF-Token": csrf }, options.headers || {});
    return common.fetchJson(url, options);
  }

  function refresh() {
    if (refreshing) {
      again = true;
      return;
    }
    refreshing = true;
    request(root.dataset.partsUrl)
      .then(function (parts) { applyParts(parts, true); })
      .catch(function (err) { showFlash("Could not update the page: " + err.message); })
      .then(function () {
        refreshing = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  }

  // --- actions: the state forms, sent with fetch --------------------------------------------
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.closest || !form.closest("#conv-state") || !form.dataset.action) {
      return;
    }
    event.preventDefault();
    var data = new FormData(form);
    if (event.submitter && event.submitter.name) {
      data.append(event.submitter.name, event.submitter.value);
    }
    showFlash("");
    request(form.action, { method: "POST", body: data })
      .then(applyParts)
      .catch(function (err) { showFlash(err.message); refresh(); });
  });

  document.addEventListener("change", function (event) {
    var el = event.target;
    if (el.matches && el.matches("select[data-autosubmit]") && el.form) {
      el.form.requestSubmit();
    }
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-load-images]");
    if (button) {
      var frame = button.closest("details").querySelector("iframe");
      frame.src = button.getAttribute("data-load-images");
      button.disabled = true;
      button.textContent = "Remote images loaded";
    }
  });

  // --- live ---------------------------------------------------------------------------------
  document.addEventListener("imapdesk:live", function (event) {
    var state = event.detail.state;
    common.showLiveState(liveStatus, state);
    if (state === "connected" || state === "resync") {
      refresh();
    }
  });
  document.addEventListener("imapdesk:conversation", function (event) {
    if (event.detail.id === conversationId && String(event.detail.version) !== root.dataset.version) {
      refresh();
    }
  });
  document.addEventListener("imapdesk:presence", function (event) {
    if (event.detail.id !== conversationId) {
      return;
    }
    refresh();
  });

  // --- presence: heartbeats while the page is open ------------------------------------------
  var presenceState = "viewing";
  function heartbeat() {
    var body = new FormData();
    body.append("csrf_token", csrf);
    body.append("state", presenceState);
    return fetch(root.dataset.presenceUrl, {
      method: "POST", body: body, credentials: "same-origin",
      headers: { "X-Requested-With": "fetch" }
    }).catch(function () { return null; });
  }
  window.imapdeskPresence = function (state) {
    if (state !== presenceState) {
      presenceState = state;
      heartbeat();
    }
  };
  heartbeat();
  window.setInterval(heartbeat, 1000 * Number(root.dataset.heartbeat || 8));
  window.addEventListener("pagehide", function () {
    var body = new FormData();
    body.append("csrf_token", csrf);
    body.append("state", "left");
    navigator.sendBeacon(root.dataset.presenceUrl, body);
  });

  // --- keyboard -----------------------------------------------------------------------------
  function focusMessage(step) {
    var articles = document.querySelectorAll("#conv-messages article[data-message-id]");
    if (!articles.length) {
      return;
    }
    var active = document.activeElement && document.activeElement.closest
      ? document.activeElement.closest("article[data-message-id]") : null;
    var index = Array.prototype.indexOf.call(articles, active);
    if (index === -1) {
      index = current;
    }
    index = Math.max(0, Math.min(articles.length - 1, index + step));
    if (index === -1 || (current === -1 && step < 0)) {
      index = articles.length - 1;
    }
    current = index;
    articles[index].focus();
    articles[index].scrollIntoView({ block: "nearest" });
  }

  function press(selector) {
    var el = document.querySelector(selector);
    if (el && !el.disabled) {
      el.click();
      return true;
    }
    return false;
  }

  common.shortcuts(document.getElementById("help"), function (event) {
    switch (event.key) {
      case "j": focusMessage(1); return true;
      case "k": focusMessage(-1); return true;
      case "c": return press("#conv-state form[data-action=claim] button") || sayHolder();
      case "e": return press("#conv-state button[name=status][value=closed]");
      case "r": return openComposer("reply");
      case "n": return openComposer("note");
      case "u":  // back to the queue it was opened from, at its place (flow.js)
        if (window.imapdeskFlow) { window.imapdeskFlow.back(); } else { window.location.assign(root.dataset.listUrl); }
        return true;
      case "/": return focusSearch();
      default: return false;
    }
  });

  // `c` on a conversation someone holds (a colleague, a mail client, the agent): who
  function sayHolder() {
    var holder = document.getElementById("conv-holder");
    var text = holder ? holder.textContent.trim() : "";
    if (!text || text === "unassigned") {
      return false;
    }
    showFlash("Not claimed: it is already " + text + ".");
    return true;
  }

  function focusSearch() {
    var search = document.getElementById("top-q") || document.querySelector("input[type=search]");
    if (search) {
      search.focus();
    } else {
      window.location.assign(root.dataset.listUrl);
    }
    return true;
  }

  function openComposer(kind) {
    if (window.imapdeskComposer) {
      window.imapdeskComposer.open(kind);
      return true;
    }
    return false;
  }

  window.imapdeskConversation = { refresh: refresh, applyParts: applyParts, request: request,
    showFlash: showFlash, root: root };
})();
