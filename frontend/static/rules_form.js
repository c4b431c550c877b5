/* The rule form (admin/rule.html): "Add a condition" and "Add an action" copy a blank row
 * from the page's <template>s, "Remove" takes a row out; a condition's field picks its
 * operators and the input its value takes (a select of mailboxes, statuses, agents, teams,
 * text otherwise), an action's type shows its own inputs only, and N shows for time-based
 * triggers only. Rows are named conditions-<i>-... and actions-<i>-...; a new row takes an
 * index no row had. Without script the form posts as it is: the existing rows and one blank
 * row of each. */
(function () {
  "use strict";
  var form = document.querySelector("form[data-rule-form]");
  if (!form) {
    return;
  }
  var nextIndex = parseInt(form.getAttribute("data-next-index"), 10) || 0;

  function template(selector) {
    var found = form.querySelector("template" + selector);
    return found ? found.content : null;
  }

  function rename(root, from, to) {
    root.querySelectorAll("[name]").forEach(function (el) {
      el.setAttribute("name", el.getAttribute("name").split(from).join(to));
    });
  }

  function rowPrefix(row) {
    var first = row.querySelector("select[name]");
    var name = first ? first.getAttribute("name") : "";
    return name.slice(0, name.lastIndexOf("-") + 1);
  }

  /* a condition's operators and value input follow its field */
  function fieldChanged(row, keepValue) {
    var field = row.querySelector("[data-field]");
    var chosen = field.options[field.selectedIndex];
    var ops = chosen && chosen.getAttribute("data-ops");
    var kind = (chosen && chosen.getAttribute("data-kind")) || "text";
    var opSelect = row.querySelector("[data-op]");
    var current = opSelect.value;
    var allOps = template("[data-op-template]");
    if (allOps && ops) {
      var wanted = ops.split(" ");
      opSelect.textContent = "";
      allOps.querySelectorAll("option").forEach(function (option) {
        if (wanted.indexOf(option.value) !== -1) {
          opSelect.appendChild(option.cloneNode(true));
        }
      });
      opSelect.value = wanted.indexOf(current) !== -1 ? current : wanted[0];
    }
    var holder = row.querySelector("[data-value]");
    if (keepValue || holder.getAttribute("data-kind") === kind) {
      return;
    }
    var input = template('[data-value-template="' + kind + '"]');
    if (!input) {
      return;
    }
    var prefix = rowPrefix(row);
    var copy = input.cloneNode(true);
    rename(copy, "__name__", prefix + "value");
    rename(copy, "__calendar__", prefix + "calendar_id");
    holder.textContent = "";
    holder.appendChild(copy);
    holder.setAttribute("data-kind", kind);
  }

  /* an action's inputs: those of its type */
  function typeChanged(row) {
    var type = row.querySelector("[data-type]").value;
    row.querySelectorAll("[data-for]").forEach(function (group) {
      group.hidden = !type || group.getAttribute("data-for").split(" ").indexOf(type) === -1;
    });
  }

  function triggerChanged() {
    var trigger = form.querySelector("[data-trigger]");
    var amount = form.querySelector("[data-trigger-amount]");
    if (!trigger || !amount) {
      return;
    }
    var unit = trigger.options[trigger.selectedIndex].getAttribute("data-unit");
    amount.hidden = !unit;
    if (unit) {
      amount.querySelector("[data-trigger-unit]").textContent = unit;
    }
  }

  function setUp(row) {
    row.querySelectorAll("[data-remove-row]").forEach(function (button) {
      button.hidden = false;
      var what = row.getAttribute("data-rule-row");
      button.setAttribute("aria-label", "Remove this " + what);
    });
    if (row.getAttribute("data-rule-row") === "condition") {
      fieldChanged(row, true);
    } else {
      typeChanged(row);
    }
  }

  function addRow(what) {
    var blank = template('[data-row-template="' + what + '"]');
    var list = form.querySelector('[data-rows="' + what + '"]');
    if (!blank || !list) {
      return;
    }
    var copy = blank.cloneNode(true);
    rename(copy, "-__i__-", "-" + nextIndex + "-");
    nextIndex += 1;
    var row = copy.querySelector("[data-rule-row]");
    list.appendChild(copy);
    setUp(row);
    var first = row.querySelector("select");
    if (first) {
      first.focus();
    }
  }

  form.addEventListener("change", function (event) {
    var target = event.target;
    var row = target.closest("[data-rule-row]");
    if (target.hasAttribute("data-field") && row) {
      fieldChanged(row, false);
    } else if (target.hasAttribute("data-type") && row) {
      typeChanged(row);
    } else if (target.hasAttribute("data-trigger")) {
      triggerChanged();
    }
  });

  form.addEventListener("click", function (event) {
    var add = event.target.closest("[data-add-row]");
    if (add) {
      event.preventDefault();
      addRow(add.getAttribute("data-add-row"));
      return;
    }
    var remove = event.target.closest("[data-remove-row]");
    if (remove) {
      event.preventDefault();
      var row = remove.closest("[data-rule-row]");
      var list = row.parentNode;
      var what = row.getAttribute("data-rule-row");
      row.remove();
      var button = form.querySelector('[data-add-row="' + what + '"]');
      if (button && !list.querySelector("[data-rule-row]")) {
        button.focus();
      }
    }
  });

  form.querySelectorAll("ol [data-rule-row]").forEach(setUp);
  form.querySelectorAll("[data-add-row]").forEach(function (button) {
    button.hidden = false;
  });
  triggerChanged();
})();
