/* The composer: reply, reply all, forward, note; saved replies; the collision warning; after a
 * send, the toast with Undo while the reply waits for the agent's undo window (taken back, it
 * opens here again with what was written, in the rich-text editor when it was written there:
 * `imapdeskComposer.restore`). It opens with the rich-text editor (rich_editor.js) unless the
 * agent chose plain text on /account.
 *
 * What is typed is a draft on the server (one per agent and conversation): saved after a
 * pause in typing, when a field loses focus, and by a beacon when the page is left; the page
 * comes with it (the form's values), on any device. Cancel asks before it discards; leaving
 * the page while something typed is not saved yet asks too. Sending ends the draft (the
 * server does), so a send waits for the saves under way.
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
  var errorBox = document.getElementById("composer-error");
  var toast = document.getElementById("send-toast");
  var toastText = toast.querySelector(".toast-text");
  var undoButton = toast.querySelector("[data-undo-send]");
  var toastTimer = null;
  var scheduled = null;  // the reply in its undo window: {cancel_url, deadline}
  var draftUrl = form.dataset.draftUrl;
  var draftStatus = form.querySelector("[data-draft-status]");
  var discardDialog = document.getElementById("discard-draft");
  var SAVE_AFTER_MS = 800;  // a pause in typing this long saves
  var RETRY_MS = 5000;  // a save that failed is tried again after this
  var saveTimer = null;
  var saving = Promise.resolve();  // the saves under way, one after the other
  var inFlight = 0;
  var savedText = null;  // what the server holds (`current()` then), null: no draft
  var onDiscard = null;  // what the discard dialog's "Discard draft" does

  kindField.closest("label").hidden = true;
  form.hidden = true;
  // the rich-text editor in place of the text area (rich_editor.js); null: the text area
  var rich = window.imapdeskRichEditor ? window.imapdeskRichEditor.attach(form, {
    request: conv.request,
    onError: function (message) { showError(message); },
    onChange: function () { showDraftStatus(""); schedule(); },
  }) : null;

  function richOn() {
    return rich !== null && rich.active();
  }

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

  // quiet: opened by the page for a draft it came with (no focus taken, no "replying")
  function open(kind, quiet) {
    var changed = kindField.value !== kind;
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
    showError("");
    pressed(kind);
    if (quiet) {
      return;
    }
    if (rich) {
      rich.opening();
    }
    if (richOn()) {
      if (rich.empty()) {
        rich.start(form.dataset.signature || "");  // the agent's signature, below the cursor
      } else {
        rich.focus();
      }
    } else {
      var area = form.elements.body;
      area.focus();
      area.selectionStart = area.selectionEnd = area.value.length;  // carry on where it ends
    }
    if (window.imapdeskPresence) {
      window.imapdeskPresence("replying");
    }
    if (changed && current() !== savedText) {
      schedule();  // the same text, now as another kind
    }
  }

  // --- the draft -----------------------------------------------------------------------------
  function fields() {
    return { kind: kindField.value, body: form.elements.body.value,
      to: form.elements.to.value, cc: form.elements.cc.value,
      html: richOn() ? form.elements.html.value : "" };
  }

  // the draft as the server would hold it; null when there is nothing to keep
  function current() {
    var f = fields();
    var nothing = richOn() ? (rich.empty() || rich.untouched()) : !f.body.trim();
    if (nothing && !f.to.trim() && !f.cc.trim()) {
      return null;
    }
    return JSON.stringify([f.kind, f.body, f.to, f.cc, f.html]);
  }

  function unsaved() {
    return inFlight > 0 || current() !== savedText;
  }

  function showDraftStatus(text) {
    if (draftStatus) {
      draftStatus.textContent = text;
    }
  }

  function draftBody() {
    var f = fields();
    var body = new FormData();
    body.append("csrf_token", form.elements.csrf_token.value);
    body.append("kind", f.kind);
    body.append("body", f.body);
    body.append("to", f.to);
    body.append("cc", f.cc);
    body.append("html", f.html);
    return body;
  }

  function schedule() {
    window.clearTimeout(saveTimer);
    saveTimer = window.setTimeout(save, SAVE_AFTER_MS);
  }

  function save() {
    window.clearTimeout(saveTimer);
    saveTimer = null;
    var text = current();
    if (text === savedText && inFlight === 0) {
      return saving;
    }
    var body = draftBody();
    inFlight += 1;
    showDraftStatus("Saving draft…");
    saving = saving
      .then(function () { return conv.request(draftUrl, { method: "POST", body: body }); })
      .then(function () {
        savedText = text;
        // another save queued behind this one: not saved until that one is
        if (inFlight > 1) {
          return;
        }
        showDraftStatus(text === null ? "" : "Draft saved");
      }, function (err) {
        showDraftStatus("Draft not saved: " + err.message);
        if (saveTimer === null) {
          saveTimer = window.setTimeout(save, RETRY_MS);
        }
      })
      .then(function () { inFlight -= 1; });
    return saving;
  }

  function discard() {
    window.clearTimeout(saveTimer);
    saveTimer = null;
    var body = new FormData();
    body.append("csrf_token", form.elements.csrf_token.value);
    inFlight += 1;
    saving = saving
      .then(function () {
        return conv.request(draftUrl + "/discard", { method: "POST", body: body });
      })
      .then(function () {
        savedText = null;
        showDraftStatus("");
      }, function (err) {
        conv.showFlash("The draft was not discarded: " + err.message);
      })
      .then(function () { inFlight -= 1; });
    close();
  }

  // Cancel: what is written (or kept on the server) goes only once the agent says so
  function cancel() {
    if (current() === null && savedText === null) {
      close();
      return;
    }
    if (discardDialog && discardDialog.showModal) {
      onDiscard = discard;
      discardDialog.returnValue = "";
      discardDialog.showModal();
    } else if (window.confirm("Discard this draft?")) {
      discard();
    }
  }

  if (discardDialog) {
    discardDialog.addEventListener("close", function () {
      var then = onDiscard;
      onDiscard = null;
      if (discardDialog.returnValue === "discard" && then) {
        then();
      } else if (!form.hidden) {
        if (richOn()) {
          rich.focus();
        } else {
          form.elements.body.focus();
        }
      }
    });
  }

  form.addEventListener("input", function (event) {
    if (event.target && event.target.type !== "file" && !event.target.matches("[data-saved-reply]")) {
      showDraftStatus("");
      schedule();
    }
  });
  // leaving a field saves at once (the composer losing focus: another tab, a click elsewhere)
  form.addEventListener("focusout", function (event) {
    if (event.target && (/^(body|to|cc)$/.test(event.target.name || "") ||
        event.target.closest("[data-rich-root]"))) {
      save();
    }
  });
  window.addEventListener("beforeunload", function (event) {
    if (unsaved()) {
      event.preventDefault();
      event.returnValue = "";  // the browser asks whether to leave
    }
  });
  // left anyway: the last words go with a beacon, which outlives the page
  window.addEventListener("pagehide", function () {
    if (current() !== savedText && navigator.sendBeacon) {
      navigator.sendBeacon(draftUrl, draftBody());
    }
  });

  // beside the composer, and brought into view (on a long thread it may be far off)
  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
    if (message && errorBox.scrollIntoView) {
      errorBox.scrollIntoView({ block: "center" });
    }
  }

  // --- the toast: "Sending in 10 s · Undo" ---------------------------------------------------
  function hideToast() {
    if (toastTimer !== null) {
      window.clearInterval(toastTimer);
      toastTimer = null;
    }
    scheduled = null;
    toast.hidden = true;
    undoButton.hidden = true;
  }

  function say(text) {
    hideToast();
    toastText.textContent = text;
    toast.hidden = false;
    toastTimer = window.setInterval(hideToast, 6000);
  }

  function countdown() {
    var seconds = Math.ceil((scheduled.deadline - Date.now()) / 1000);
    if (seconds <= 0) {
      hideToast();  // the message's own badge goes on from here (sending, sent)
      return;
    }
    toastText.textContent = "Sending in " + seconds + " s";
  }

  function showScheduled(outbound) {
    hideToast();
    scheduled = { cancel_url: outbound.cancel_url,
      deadline: Date.now() + 1000 * (outbound.seconds_left || 0) };
    toast.hidden = false;
    undoButton.hidden = false;
    undoButton.disabled = false;
    countdown();
    toastTimer = window.setInterval(countdown, 250);
  }

  function undo() {
    if (!scheduled) {
      return;
    }
    var url = scheduled.cancel_url;
    undoButton.disabled = true;
    var body = new FormData();
    body.append("csrf_token", form.elements.csrf_token.value);
    conv.request(url, { method: "POST", body: body })
      .then(function (answer) {
        hideToast();
        conv.applyParts(answer);
        restore(answer.taken_back);
        say("Taken back: nothing was sent.");
      })
      .catch(function (err) {
        say(err.status === 409 ? "Too late to undo: " + err.message : err.message);
        conv.refresh();
      });
  }

  // what was taken back (undo, or edit and resend), in the composer again
  function restore(taken) {
    if (!taken) {
      return;
    }
    var kind = taken.kind === "new" ? "forward" : taken.kind;
    open(labels[kind] ? kind : "reply");
    form.elements.to.value = (taken.to || []).join(", ");
    form.elements.cc.value = (taken.cc || []).join(", ");
    form.elements.body.value = taken.body || "";
    if (rich && taken.html) {
      // written with the editor: in the editor again, formatting and pasted images with it
      rich.setHTML(taken.html);
      rich.focus();
    } else if (richOn()) {
      rich.setText(taken.body || "");
      rich.focus();
    } else {
      form.elements.body.focus();
    }
    schedule();  // a draft again (Undo kept it already; Edit and resend did not)
  }

  // empty fields (not form.reset(): the page's defaults are the draft it came with)
  function clearFields() {
    ["body", "to", "cc"].forEach(function (name) {
      form.elements[name].value = "";
      form.elements[name].defaultValue = "";
    });
    if (form.elements.attachments) {
      form.elements.attachments.value = "";
    }
    if (rich) {
      rich.clear();
    }
    form.elements.html.value = "";
    form.elements.html.defaultValue = "";
    kindField.value = "reply";
  }

  function close() {
    window.clearTimeout(saveTimer);
    saveTimer = null;
    clearFields();
    form.elements.idempotency_key.value = "";
    form.hidden = true;
    conflict.hidden = true;
    showError("");
    pressed("");
    if (window.imapdeskPresence) {
      window.imapdeskPresence("viewing");
    }
  }

  function send() {
    if (rich && rich.busy()) {
      showError("An image is still being uploaded: send once it shows.");
      return;
    }
    sendButton.disabled = true;
    window.clearTimeout(saveTimer);
    saveTimer = null;
    var data = new FormData(form);
    // after the saves under way: sending ends the draft, which a late save would bring back
    saving
      .then(function () { return conv.request(form.action, { method: "POST", body: data }); })
      .then(function (parts) {
        var kind = parts.sent;
        savedText = null;  // the server ended the draft with the send
        showDraftStatus("");
        close();
        conv.applyParts(parts);
        conv.showFlash("");
        if (parts.outbound && parts.outbound.state === "scheduled") {
          showScheduled(parts.outbound);
        }
        window.imapdesk.emit("imapdesk:sent", { kind: kind, outbound: parts.outbound });
      })
      .catch(function (err) {
        if (err.status === 409 && err.body && err.body.error.code === "version_conflict") {
          conflict.querySelector(".conflict-message").textContent = err.body.error.message;
          conflict.querySelector(".conflict-newer").innerHTML = err.body.newer_html;
          conflict.hidden = false;
          conv.refresh();
        } else {
          conv.showFlash(err.message);
          showError(err.message);  // beside the form too, where the agent is looking
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
  form.querySelector("[data-compose-cancel]").addEventListener("click", cancel);
  undoButton.addEventListener("click", undo);
  document.querySelectorAll("[data-compose]").forEach(function (b) {
    b.addEventListener("click", function () { open(b.getAttribute("data-compose")); });
  });

  // a saved reply: filled in by the server for this conversation (its variables), shown in a
  // preview, inserted where the cursor is once the agent says so; refused, it says why here
  var saved = form.querySelector("[data-saved-reply]");
  var preview = form.querySelector("[data-saved-preview]");
  var previewText = null;
  function closePreview() {
    previewText = null;
    if (preview) {
      preview.hidden = true;
    }
  }
  function insertText(text) {
    if (richOn()) {
      rich.insertText(text);
    } else {
      var area = form.elements.body;
      var at = area.selectionStart || area.value.length;
      area.value = area.value.slice(0, at) + text + area.value.slice(area.selectionEnd || at);
      area.focus();
      area.selectionStart = area.selectionEnd = at + text.length;
    }
    schedule();
  }
  if (saved && preview) {
    saved.addEventListener("change", function () {
      var option = saved.selectedOptions[0];
      var url = option ? option.getAttribute("data-render-url") : null;
      saved.value = "";
      if (!url) {
        return;
      }
      var body = new FormData();
      body.append("csrf_token", form.elements.csrf_token.value);
      conv.request(url, { method: "POST", body: body })
        .then(function (answer) {
          showError("");
          previewText = answer.text;
          preview.querySelector("[data-saved-preview-text]").textContent = answer.text;
          preview.hidden = false;
          preview.querySelector("[data-saved-insert]").focus();
        }, function (err) {
          closePreview();
          showError("The saved reply was not inserted: " + err.message);
        });
    });
    preview.querySelector("[data-saved-insert]").addEventListener("click", function () {
      var text = previewText;
      closePreview();
      if (text) {
        insertText(text);
      }
    });
    preview.querySelector("[data-saved-cancel]").addEventListener("click", closePreview);
  }

  form.addEventListener("keydown", function (event) {
    if (event.key === "Escape") {
      event.preventDefault();  // not also the dialog it may open
      cancel();
    }
  });

  // the page came with the agent's draft: the composer opens with it
  if (form.dataset.draftKind) {
    kindField.value = form.dataset.draftKind;
    if (rich && form.elements.html.value) {
      rich.setHTML(form.elements.html.value);  // written with the editor: in the editor again
    }
    savedText = current();
    open(labels[form.dataset.draftKind] ? form.dataset.draftKind : "reply", true);
  }

  window.imapdeskComposer = { open: open, close: close, restore: restore, save: save,
    unsaved: unsaved };
})();
