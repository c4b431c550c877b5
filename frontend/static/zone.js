/* For an agent with no timezone: the browser's zone offered once (header). "Use" saves it
 * (POST /account/timezone) and reloads, so every time is shown in it; "Keep UTC" is
 * remembered in this browser, and the offer is not made again. */
(function () {
  "use strict";
  var offer = document.getElementById("zone-offer");
  var KEY = "imapdesk.zoneOffered";
  if (!offer || !window.Intl) {
    return;
  }
  var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  try {
    if (!zone || zone === "UTC" || zone === "Etc/UTC" || window.localStorage.getItem(KEY)) {
      return;
    }
  } catch (e) {
    return;
  }
  function done() {
    try { window.localStorage.setItem(KEY, "1"); } catch (e) { /* no storage: asked again */ }
    offer.hidden = true;
  }
  offer.querySelector("[data-zone]").textContent = zone;
  offer.hidden = false;
  offer.querySelector("[data-zone-dismiss]").addEventListener("click", done);
  offer.querySelector("[data-zone-use]").addEventListener("click", function () {
    var body = new FormData();
    body.append("csrf_token", offer.dataset.csrf);
    body.append("timezone", zone);
    fetch(offer.dataset.url, { method: "POST", body: body, credentials: "same-origin",
      headers: { "X-Requested-With": "fetch" } })
      .then(function (r) {
        if (r.ok) {
          done();
          window.location.reload();
        }
      });
  });
})();
