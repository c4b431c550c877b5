/* A customer's note (the conversation page's sidebar, the customer's page): saved with fetch,
 * the agent's words kept in the field when a colleague saved first (409, with theirs shown),
 * and a warning before leaving with words not saved. Needs common.js; without script the form
 * posts as it is. */
(function () {
  "use strict";
  var common = window.imapdesk;
  var forms = document.querySelectorAll("form[data-customer-note]");
  if (!common || !forms.length) {
    return;
  }

  function setup(form) {
    var field = form.querySelector("[data-note-field]");
    var version = form.querySelector("[data-note-version]");
    var status = form.querySelector("[data-note-status]");
    var conflict = form.querySelector("[data-note-conflict]");
    var saved = field.value;

    function dirty() {
      return field.value !== saved;
    }

    field.addEventListener("input", function () {
      status.textContent = dirty() ? "Not saved yet" : "";
    });

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var button = form.querySelector("button[type=submit]");
      button.disabled = true;
      status.textContent = "Saving…";
      common.fetchJson(form.action, { method: "POST", body: new FormData(form) })
        .then(function (body) {
          saved = body.note;
          field.value = body.note;
          version.value = String(body.note_version);
          conflict.hidden = true;
          status.textContent = "Saved" + (body.updated_by ? " by " + body.updated_by : "");
        })
        .catch(function (err) {
          var detail = err.body && err.body.error;
          if (err.status === 409 && detail && typeof detail.note_version === "number") {
            // theirs is shown beside the agent's words; saving again puts the agent's over it
            version.value = String(detail.note_version);
            saved = detail.note;
            form.querySelector("[data-note-conflict-message]").textContent = detail.message;
            form.querySelector("[data-note-theirs]").textContent = detail.note || "(empty)";
            conflict.hidden = false;
            status.textContent = "Not saved";
          } else {
            status.textContent = "Not saved: " + err.message;
          }
        })
        .then(function () { button.disabled = false; });
    });

    window.addEventListener("beforeunload", function (event) {
      if (dirty()) {
        event.preventDefault();
        event.returnValue = "";
      }
    });
  }

  Array.prototype.forEach.call(forms, setup);
})();
