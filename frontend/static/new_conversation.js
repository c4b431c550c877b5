/* "New conversation": the rich-text editor (rich_editor.js) on the page's form (unless the
 * agent chose plain text on /account), which posts as any form does (the server answers with
 * the new conversation's page, or this page again with the error beside the Send button,
 * brought into view, and what was written). Needs common.js. */
(function () {
  "use strict";
  var form = document.querySelector("form[data-new-conversation]");
  if (!form) {
    return;
  }
  var errorBox = document.getElementById("composer-error");

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
    if (message) {
      errorBox.scrollIntoView({ block: "center" });
    }
  }

  if (!errorBox.hidden) {
    errorBox.scrollIntoView({ block: "center" });
  }
  function request(url, options) {
    options.headers = Object.assign({ "X-CSRF-Token": form.elements.csrf_token.value },
      options.headers || {});
    return window.imapdesk.fetchJson(url, options);
  }
  var rich = window.imapdeskRichEditor ? window.imapdeskRichEditor.attach(form, {
    request: request, onError: showError, onChange: function () {},
  }) : null;
  if (rich && form.elements.html.value) {
    // the page again after an error: what was written with the editor, in the editor
    rich.setHTML(form.elements.html.value);
  } else if (rich) {
    rich.opening();
    if (rich.active() && rich.empty()) {
      rich.start(form.dataset.signature || "");
    }
  }
  // one key for this message, so that a second click queues nothing new
  if (!form.elements.idempotency_key.value) {
    form.elements.idempotency_key.value = window.crypto && window.crypto.randomUUID
      ? window.crypto.randomUUID() : String(Date.now()) + "-" + String(Math.random()).slice(2);
  }
  form.addEventListener("submit", function (event) {
    if (rich && rich.busy()) {
      event.preventDefault();
      showError("An image is still being uploaded: send once it shows.");
    }
  });
})();
