/* /account: offers the browser's own timezone where it is not the one chosen. */
(function () {
  "use strict";
  var field = document.getElementById("account-timezone");
  var offer = document.getElementById("browser-zone");
  if (!field || !offer || !window.Intl) {
    return;
  }
  var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  if (!zone || zone === (field.value || "UTC")) {
    return;
  }
  offer.querySelector("[data-zone]").textContent = zone;
  offer.hidden = false;
  offer.querySelector("[data-use-zone]").addEventListener("click", function () {
    field.value = zone;
    offer.hidden = true;
    field.focus();
  });
})();
