// The conversation list: "select all" and the bulk bar. The page works without it.
(function () {
  "use strict";
  var form = document.getElementById("bulk");
  if (!form) return;
  var boxes = Array.prototype.slice.call(
    document.querySelectorAll('input[type="checkbox"][name="ids"][form="bulk"]')
  );
  var all = document.getElementById("select-all");
  var count = document.getElementById("bulk-count");
  var action = document.getElementById("bulk-action");
  var assignee = form.querySelector(".bulk-assignee");
  var tag = form.querySelector(".bulk-tag");

  function update() {
    var n = boxes.filter(function (b) { return b.checked; }).length;
    count.textContent = n ? n + " selected:" : "With the selected:";
    if (all) {
      all.checked = n > 0 && n === boxes.length;
      all.indeterminate = n > 0 && n < boxes.length;
    }
  }

  function showFields() {
    assignee.hidden = action.value !== "assign";
    tag.hidden = action.value !== "tag";
  }

  if (all) {
    all.hidden = false;
    all.addEventListener("change", function () {
      boxes.forEach(function (b) { b.checked = all.checked; });
      update();
    });
  }
  boxes.forEach(function (b) { b.addEventListener("change", update); });
  action.addEventListener("change", showFields);
  showFields();
  update();
})();
