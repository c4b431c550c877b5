/* What the page scripts share (live.js, conversation.js, compose.js, queues.js): load it first.
 *
 *   imapdesk.emit(name, detail)         a DOM event on `document`, with `detail`
 *   imapdesk.setHtml(el, html)          puts HTML in place, only when it changed
 *   imapdesk.fetchJson(url, options)    fetch from this site, the answer as JSON (see below)
 *   imapdesk.showLiveState(el, state)   the "live" label for an `imapdesk:live` state
 *   imapdesk.shortcuts(help, handle)    the page's keyboard shortcuts and their help dialog
 */
(function () {
  "use strict";

  function emit(name, detail) {
    document.dispatchEvent(new CustomEvent(name, { detail: detail }));
  }

  // an unchanged part is left alone, so its focus and selection survive
  function setHtml(el, html) {
    if (el && typeof html === "string" && el.innerHTML !== html) {
      el.innerHTML = html;
    }
  }

  // Sends `X-Requested-With: fetch` (the server answers JSON instead of a page or a redirect).
  // An answer that is not JSON means signed out meanwhile: the page reloads (to sign-in). An
  // error's JSON rejects with `message` (the server's), `status` and `body`.
  function fetchJson(url, options) {
    options = options || {};
    options.credentials = "same-origin";
    options.headers = Object.assign({ "X-Requested-With": "fetch" }, options.headers || {});
    return fetch(url, options).then(function (response) {
      var type = response.headers.get("content-type") || "";
      if (type.indexOf("application/json") === -1) {
        if (response.redirected || response.status === 401) {
          window.location.reload();
        }
        throw new Error("the server answered " + response.status);
      }
      return response.json().then(function (body) {
        if (!response.ok) {
          var err = new Error((body.error && body.error.message) || "failed");
          err.body = body;
          err.status = response.status;
          throw err;
        }
        return body;
      });
    });
  }

  function showLiveState(el, state) {
    el.dataset.state = state;
    el.textContent = state === "connected" ? "live" : state;
  }

  // where typing happens: a text field, a list, an editable area (not a checkbox or a button)
  function typing(el) {
    if (!el || !el.tagName) {
      return false;
    }
    if (el.isContentEditable || el.tagName === "TEXTAREA" || el.tagName === "SELECT") {
      return true;
    }
    return el.tagName === "INPUT" &&
      !/^(checkbox|radio|button|submit|reset)$/.test(el.type);
  }

  // `handle(event)` gets the keys pressed outside text fields, without Ctrl, Alt or Meta, and
  // returns true for those it used. `?` and the `[data-help-open]` buttons toggle the `help`
  // dialog; while it is open no other key reaches `handle`. Returns the toggle.
  function shortcuts(help, handle) {
    function toggleHelp() {
      if (help.open) {
        help.close();
      } else {
        help.showModal();
      }
    }
    document.addEventListener("click", function (event) {
      if (event.target.closest && event.target.closest("[data-help-open]")) {
        toggleHelp();
      }
    });
    Array.prototype.forEach.call(document.querySelectorAll("[data-help-open]"), function (b) {
      b.hidden = false;
    });
    document.addEventListener("keydown", function (event) {
      if (event.ctrlKey || event.metaKey || event.altKey || event.defaultPrevented) {
        return;
      }
      if (typing(event.target) || (help.open && event.key !== "?")) {
        return;
      }
      var handled = true;
      if (event.key === "?") {
        toggleHelp();
      } else {
        handled = handle(event);
      }
      if (handled) {
        event.preventDefault();
      }
    });
    return toggleHelp;
  }

  window.imapdesk = {
    emit: emit,
    setHtml: setHtml,
    fetchJson: fetchJson,
    showLiveState: showLiveState,
    shortcuts: shortcuts
  };
})();
