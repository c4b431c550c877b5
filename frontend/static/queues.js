/* The conversation list: "select all" and the bulk bar, live updates of the rows and the queue
 * counts, and keyboard shortcuts. The page works without it. Needs common.js. */
(function () {
  "use strict";
  var common = window.imapdesk;
  var setHtml = common.setHtml;
  var main = document.getElementById("queue-main");
  var form = document.getElementById("bulk");
  var tbody = document.getElementById("queue-rows");
  if (!main || !form || !tbody) {
    return;
  }
  var COALESCE_MS = 150;
  var GATHER_MS = 20;
  var FLASH_MS = 1600;
  var sidebar = document.getElementById("queue-sidebar");
  var table = document.getElementById("queue-table");
  var empty = document.getElementById("queue-empty");
  var pager = document.getElementById("queue-pager");
  var announcer = document.getElementById("queue-announce");
  var changed = document.getElementById("queue-changed");
  var liveStatus = document.getElementById("live-status");
  var all = document.getElementById("select-all");
  var count = document.getElementById("bulk-count");
  var action = document.getElementById("bulk-action");
  var assignee = form.querySelector(".bulk-assignee");
  var tag = form.querySelector(".bulk-tag");
  // a later page (with a cursor) is not rewritten under the agent: it offers the newest instead
  var paged = main.dataset.paged === "1";
  var currentId = null;

  function rows() {
    return Array.prototype.slice.call(tbody.querySelectorAll("tr[data-id]"));
  }

  function boxes() {
    return Array.prototype.slice.call(
      tbody.querySelectorAll('input[type="checkbox"][name="ids"][form="bulk"]')
    );
  }

  // --- the bulk bar ---------------------------------------------------------------------------
  function update() {
    var list = boxes();
    var n = list.filter(function (b) { return b.checked; }).length;
    count.textContent = n ? n + " selected:" : "With the selected:";
    if (all) {
      all.checked = n > 0 && n === list.length;
      all.indeterminate = n > 0 && n < list.length;
    }
  }

  function showFields() {
    assignee.hidden = action.value !== "assign";
    tag.hidden = action.value !== "tag";
  }

  if (all) {
    all.hidden = false;
    all.addEventListener("change", function () {
      boxes().forEach(function (b) { b.checked = all.checked; });
      update();
    });
  }
  // delegated: live updates replace rows
  tbody.addEventListener("change", function (event) {
    if (event.target.name === "ids") {
      update();
    }
  });
  action.addEventListener("change", showFields);
  showFields();
  update();

  // --- live updates ---------------------------------------------------------------------------
  var timer = null;
  var inflight = false;
  var again = false;
  var lastStart = 0;

  function announce(message) {
    // cleared first, so the same words are announced again
    announcer.textContent = "";
    window.setTimeout(function () { announcer.textContent = message; }, 50);
  }

  function rowLink(tr) {
    return tr.querySelector(".subject a");
  }

  function flash(tr) {
    tr.classList.remove("row-flash");
    void tr.offsetWidth; // restarts the animation
    tr.classList.add("row-flash");
    window.setTimeout(function () { tr.classList.remove("row-flash"); }, FLASH_MS);
  }

  // Puts the fresh rows in place: a row whose version did not move is kept as it is (its
  // checkbox, its focus); a changed one is replaced, keeping its checkbox; gone ones go.
  function applyRows(html) {
    var template = document.createElement("template");
    template.innerHTML = html;
    var fresh = Array.prototype.slice.call(template.content.querySelectorAll("tr[data-id]"));
    var before = rows();
    var old = {};
    before.forEach(function (tr) { old[tr.dataset.id] = tr; });
    var active = document.activeElement;
    var focusedRow = active && active.closest ? active.closest("#queue-rows tr[data-id]") : null;
    var focusedId = focusedRow ? focusedRow.dataset.id : null;
    var focusedBox = Boolean(focusedRow) && active.name === "ids";
    var currentIndex = before.map(function (tr) { return tr.dataset.id; }).indexOf(currentId);
    var added = 0;
    var next = fresh.map(function (tr) {
      var previous = old[tr.dataset.id];
      if (previous && previous.dataset.version === tr.dataset.version) {
        return previous;
      }
      if (previous) {
        var box = previous.querySelector('input[name="ids"]');
        tr.querySelector('input[name="ids"]').checked = Boolean(box && box.checked);
      } else {
        added += 1;
      }
      tr.dataset.fresh = "1";
      return tr;
    });
    // move only what is out of place: a row that stays where it is keeps its focus
    next.forEach(function (tr, i) {
      var at = tbody.children[i];
      if (at !== tr) {
        tbody.insertBefore(tr, at || null);
      }
    });
    while (tbody.children.length > next.length) {
      tbody.removeChild(tbody.lastElementChild);
    }
    next.forEach(function (tr) {
      if (tr.dataset.fresh) {
        delete tr.dataset.fresh;
        flash(tr);
      }
    });
    table.hidden = form.hidden = next.length === 0;
    empty.hidden = next.length > 0;

    // the keyboard position follows its conversation, or stays at its place if that left
    var current = null;
    if (currentId !== null) {
      current = tbody.querySelector('tr[data-id="' + currentId + '"]') ||
        next[Math.min(Math.max(currentIndex, 0), next.length - 1)] || null;
      markCurrent(current);
    }
    if (focusedId !== null && !tbody.contains(document.activeElement)) {
      var target = tbody.querySelector('tr[data-id="' + focusedId + '"]') || current;
      if (target) {
        var refocus = focusedBox ? target.querySelector('input[name="ids"]') : rowLink(target);
        refocus.focus({ preventScroll: true });
      }
    }
    update();
    if (added) {
      announce(added === 1 ? "1 new conversation" : added + " new conversations");
    }
  }

  function rowsDiffer(parts) {
    var shown = rows().map(function (tr) { return tr.dataset.id + ":" + tr.dataset.version; });
    var got = (parts.ids || []).map(function (id) { return id + ":" + parts.versions[id]; });
    return shown.join(",") !== got.join(",");
  }

  function showChanged() {
    if (changed.hidden) {
      changed.hidden = false;
      announce("The list changed");
    }
  }

  // the counts change in place while the queues stay the same, so a focused link keeps focus
  function applySidebar(html) {
    var template = document.createElement("template");
    template.innerHTML = html;
    var links = sidebar.querySelectorAll("a");
    var fresh = template.content.querySelectorAll("a");
    var same = links.length === fresh.length && Array.prototype.every.call(links, function (a, i) {
      return a.getAttribute("href") === fresh[i].getAttribute("href");
    });
    if (!same) {
      setHtml(sidebar, html);
      return;
    }
    Array.prototype.forEach.call(links, function (a, i) {
      var was = a.querySelector(".count");
      var now = fresh[i].querySelector(".count");
      if (was && now && was.textContent !== now.textContent) {
        was.textContent = now.textContent;
      }
    });
  }

  function apply(parts) {
    applySidebar(parts.sidebar);
    if (paged) {
      if (rowsDiffer(parts)) {
        showChanged();
      }
      return;
    }
    applyRows(parts.rows);
    setHtml(pager, parts.pager);
  }

  function refresh() {
    inflight = true;
    lastStart = Date.now();
    common.fetchJson(main.dataset.partsUrl, { headers: { Accept: "application/json" } })
      .then(apply)
      .catch(function () { return null; })
      .then(function () {
        inflight = false;
        if (again) {
          again = false;
          schedule();
        }
      });
  }

  // One request at a time, starting at least COALESCE_MS apart: the first change is fetched
  // at once (after GATHER_MS, for the rest of its batch), a burst after it in one more request.
  function schedule() {
    if (inflight) {
      again = true;
      return;
    }
    if (timer === null) {
      var wait = Math.max(GATHER_MS, lastStart + COALESCE_MS - Date.now());
      timer = window.setTimeout(function () {
        timer = null;
        refresh();
      }, wait);
    }
  }

  // The stream pushes this view's parts after every change (the page's data-live asks for
  // them): no request per change then, only after a (re)connect or a resync.
  var pushed = false;
  document.addEventListener("imapdesk:parts", function (event) {
    pushed = true;
    apply(event.detail || {});
  });

  document.addEventListener("imapdesk:conversation", function (event) {
    var detail = event.detail || {};
    var tr = tbody.querySelector('tr[data-id="' + Number(detail.id) + '"]');
    if (tr && tr.dataset.version === String(detail.version)) {
      return; // already showing that version
    }
    if (paged) {
      showChanged();
    }
    if (!pushed) {
      schedule(); // else its parts follow on the stream
    }
  });

  function liveState(state) {
    liveStatus.hidden = false;
    common.showLiveState(liveStatus, state);
    if (state === "connected" || state === "resync") {
      schedule(); // what changed while not connected
    }
  }
  document.addEventListener("imapdesk:live", function (event) {
    if (event.detail.state === "connected") {
      pushed = !!event.detail.parts;
    }
    liveState(event.detail.state);
  });
  // (live.js connects once this script has run, so "connected" is never missed)

  // --- keyboard -------------------------------------------------------------------------------
  function markCurrent(tr) {
    rows().forEach(function (r) {
      if (r !== tr) {
        r.classList.remove("is-current");
      }
    });
    currentId = tr ? tr.dataset.id : null;
    if (tr) {
      tr.classList.add("is-current");
    }
  }

  function currentRow() {
    var active = document.activeElement;
    var row = active && active.closest ? active.closest("#queue-rows tr[data-id]") : null;
    if (row) {
      return row;
    }
    return currentId === null ? null : tbody.querySelector('tr[data-id="' + currentId + '"]');
  }

  function move(step) {
    var list = rows();
    if (!list.length) {
      return;
    }
    var index = list.indexOf(currentRow());
    index = index === -1 ? (step > 0 ? 0 : list.length - 1)
      : Math.max(0, Math.min(list.length - 1, index + step));
    var tr = list[index];
    markCurrent(tr);
    rowLink(tr).focus({ preventScroll: true });
    tr.scrollIntoView({ block: "nearest" });
  }

  function openCurrent() {
    var tr = currentRow();
    if (!tr) {
      return false;
    }
    window.location.assign(rowLink(tr).href);
    return true;
  }

  function toggleCurrent() {
    var tr = currentRow();
    if (!tr) {
      return false;
    }
    tr.querySelector('input[name="ids"]').click(); // fires "change": the bulk bar counts it
    return true;
  }

  // focus entering a row (Tab, a click) makes it the keyboard position
  tbody.addEventListener("focusin", function (event) {
    var tr = event.target.closest("tr[data-id]");
    if (tr) {
      markCurrent(tr);
    }
  });

  common.shortcuts(document.getElementById("help"), function (event) {
    switch (event.key) {
      case "j": move(1); return true;
      case "k": move(-1); return true;
      case "o": return openCurrent();
      // on a link or a button Enter does what it does there
      case "Enter": return !event.target.closest("a, button, input") && openCurrent();
      case "x": return toggleCurrent();
      case "/": document.getElementById("list-q").focus(); return true;
      default: return false;
    }
  });

  window.imapdeskQueue = { refresh: schedule };
})();
