/* The delivery of outgoing messages on the conversation page: each reply's state (scheduled,
 * queued, sending, sent, failed) kept up to date from the page's live parts, the undo window
 * counted down, and what can be done about a reply: Undo, Retry, Edit and resend, Discard.
 * Needs common.js, conversation.js and compose.js. */
(function () {
  "use strict";
  var conv = window.imapdeskConversation;
  if (!conv) {
    return;
  }
  var common = window.imapdesk;
  var alertBox = document.getElementById("conv-delivery");
  // when each scheduled badge's window ends, by message id, on this page's clock
  var deadlines = {};
  // the badge's HTML as last put in place from the server, by message id
  var sources = {};

  function badges() {
    return document.querySelectorAll("#conv-messages [data-delivery-for]");
  }

  // the server says how many seconds were left when it made the badge: counted from there
  function arm(badge) {
    var id = badge.getAttribute("data-delivery-for");
    var left = parseFloat(badge.getAttribute("data-seconds-left") || "");
    if (badge.getAttribute("data-state") !== "scheduled" || isNaN(left)) {
      delete deadlines[id];
    } else if (!(id in deadlines)) {
      deadlines[id] = Date.now() + left * 1000;
    }
    // Edit and resend opens the composer: only with this script
    Array.prototype.forEach.call(badge.querySelectorAll("[data-delivery-action=edit]"),
      function (form) { form.hidden = false; });
    tick(badge);
  }

  function tick(badge) {
    var id = badge.getAttribute("data-delivery-for");
    var time = badge.querySelector("[data-countdown]");
    if (!time || !(id in deadlines)) {
      return;
    }
    var seconds = Math.max(0, Math.ceil((deadlines[id] - Date.now()) / 1000));
    time.textContent = seconds > 0 ? "in " + seconds + " s" : "now";
  }

  function update(parts) {
    if (!parts || !parts.deliveries) {
      return;
    }
    Object.keys(parts.deliveries).forEach(function (id) {
      var badge = document.querySelector("#conv-messages [data-delivery-for='" + id + "']");
      if (!badge) {
        return;
      }
      var html = parts.deliveries[id];
      if (sources[id] === html) {
        return;  // as it was: the countdown and the focus stay
      }
      sources[id] = html;
      var holder = document.createElement("div");
      holder.innerHTML = html;
      var fresh = holder.firstElementChild;
      if (!fresh) {
        return;
      }
      if (fresh.getAttribute("data-state") !== "scheduled") {
        delete deadlines[id];
      }
      badge.replaceWith(fresh);
      arm(fresh);
    });
    if (typeof parts.delivery === "string") {
      common.setHtml(alertBox, parts.delivery);
    }
    Array.prototype.forEach.call(badges(), arm);
  }

  document.addEventListener("imapdesk:parts", function (event) { update(event.detail); });
  Array.prototype.forEach.call(badges(), arm);
  window.setInterval(function () { Array.prototype.forEach.call(badges(), tick); }, 1000);

  // Undo, Retry, Edit and resend, Discard: the forms, sent with fetch
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var action = form.dataset ? form.dataset.deliveryAction : null;
    if (!action) {
      return;
    }
    event.preventDefault();
    Array.prototype.forEach.call(form.querySelectorAll("button"), function (b) {
      b.disabled = true;
    });
    conv.showFlash("");
    conv.request(form.action, { method: "POST", body: new FormData(form) })
      .then(function (answer) {
        conv.applyParts(answer);
        if ((action === "edit" || action === "undo") && answer.taken_back &&
            window.imapdeskComposer) {
          window.imapdeskComposer.restore(answer.taken_back);
        }
      })
      .catch(function (err) {
        conv.showFlash(err.message);
        conv.refresh();
      });
  });

  window.imapdeskDelivery = { update: update };
})();
