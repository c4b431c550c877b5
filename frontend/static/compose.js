/* The composer: reply, reply all, forward, note; saved replies; the collision warning.
 * Needs common.js and conversation.js. */
(function () {
  "use strict";
  var form = document.querySelector("form[data-composer]");
  var conv = window.imapdeskConversation;
  if (!form || !conv) {
    return;
  }
  var root = conv.root;
  var conflict = document.getElementById("composer-conflict");
  var sendButton = form.querySelector("[data-send]");
  var kindField = form.elements.kind;
  var labels = { reply: "Send reply", reply_all: "Send to all", forward: "Forward", note: "Add note" };

  kindField.closest("label").hidden = true;
  form.hidden = true;

  function newKey() {
    if (window.crypto && window.crypto.randomUUID) {
      return window.crypto.randomUUID();
    }
    return String(Date.now()) + "-" + String(Math.random()).slice(2);
  }

  function pressed(kind) {
    document.querySelectorAll("[data-compose]").forEach(function (b) {
      b.setAttribute("aria-pressed", String(b.getAttribute("data-compose") === kind));
    });
  }

  function open(kind) {
    kindField.value = kind;
    form.hidden = false;
    form.elements.expected_version.value = root.dataset.version;
    form.elements.force.value = "false";
    if (!form.elements.idempotency_key.value) {
      form.elements.idempotency_key.value = newKey();
    }
    form.querySelector(".field-to").hidden = kind === "note";
    form.querySelector(".field-cc").hidden = kind === "note";
    form.elements.to.required = kind === "forward";
    sendButton.textContent = labels[kind] || "Send";
    conflict.hidden = true;
    pressed(kind);
    form.elements.body.focus();
    if (window.imapdeskPresence) {
      window.imapdeskPresence("replying");
    }
  }

  function close() {
    form.reset();
    form.elements.idempotency_key.value = "";
    form.hidden = true;
    conflict.hidden = true;
    pressed("");
    if (window.imapdeskPresence) {
      window.imapdeskPresence("viewing");
    }
  }

  function send() {
    sendButton.disabled = true;
    conv.request(form.action, { method: "POST", body: new FormData(form) })
      .then(function (parts) {
        var kind = parts.sent;
        close();
        conv.applyParts(parts);
        conv.showFlash("");
        window.imapdesk.emit("imapdesk:sent", { kind: kind });
      })
      .catch(function (err) {
        if (err.status === 409 && err.body && err.body.error.code === "version_conflict") {
          conflict.querySelector(".conflict-message").textContent = err.body.error.message;
          conflict.querySelector(".conflict-newer").innerHTML = err.body.newer_html;
          conflict.hidden = false;
          conv.refresh();
        } else {
          conv.showFlash(err.message);
        }
      })
      .then(function () { sendButton.disabled = false; });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    form.elements.force.value = "false";
    send();
  });
  conflict.querySelector("[data-send-anyway]").addEventListener("click", function () {
    form.elements.force.value = "true";
    send();
  });
  form.querySelector("[data-compose-cancel]").addEventListener("click", close);
  document.querySelectorAll("[data-compose]").forEach(function (b) {
    b.addEventListener("click", function () { open(b.getAttribute("data-compose")); });
  });

  var saved = form.querySelector("[data-saved-reply]");
  if (saved) {
    saved.addEventListener("change", function () {
      var option = saved.selectedOptions[0];
      var text = option ? option.getAttribute("data-body") : null;
      if (text) {
        var area = form.elements.body;
        var at = area.selectionStart || area.value.length;
        area.value = area.value.slice(0, at) + text + area.value.slice(area.selectionEnd || at);
        area.focus();
        area.selectionStart = area.selectionEnd = at + text.length;
      }
      saved.value = "";
    });
  }

  form.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && !form.elements.body.value.trim()) {
      close();
    }
  });

  window.imapdeskComposer = { open: open, close: close };
})();
