/* @mention completion in the note composer: typing "@" and the start of a handle offers the
 * agents whose handle or name starts so (from `GET /agents/handles?q=`); Tab, Enter or a
 * click puts "@handle " in place, Escape closes the list. Works on any textarea whose form
 * has `data-mentions="<url>"` and whose kind is a note (the composer's `kind` field). */
(function () {
  "use strict";
  var TOKEN = /(^|[\s(])@([A-Za-z0-9_.-]{0,32})$/;
  var list = null;
  var target = null;
  var active = 0;
  var items = [];
  var asked = 0;

  function noteKind(area) {
    var form = area.form;
    var kind = form && form.querySelector("[name=kind]");
    return !kind || kind.value === "note";
  }

  function close() {
    if (list) {
      list.remove();
      list = null;
    }
    items = [];
    if (target) {
      target.removeAttribute("aria-activedescendant");
      target.setAttribute("aria-expanded", "false");
    }
  }

  function choose(i) {
    var item = items[i];
    if (!item || !target) {
      return;
    }
    var pos = target.selectionStart;
    var before = target.value.slice(0, pos).replace(/@[A-Za-z0-9_.-]*$/, "@" + item.handle + " ");
    target.value = before + target.value.slice(pos);
    target.selectionStart = target.selectionEnd = before.length;
    target.dispatchEvent(new Event("input", { bubbles: true }));
    close();
    target.focus();
  }

  function render() {
    if (!items.length) {
      close();
      return;
    }
    if (!list) {
      list = document.createElement("ul");
      list.id = "mention-list";
      list.className = "mention-list";
      list.setAttribute("role", "listbox");
      target.insertAdjacentElement("afterend", list);
      target.setAttribute("aria-controls", "mention-list");
      target.setAttribute("aria-expanded", "true");
    }
    list.innerHTML = "";
    items.forEach(function (item, i) {
      var li = document.createElement("li");
      li.id = "mention-" + i;
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", i === active ? "true" : "false");
      li.textContent = "@" + item.handle + " (" + item.name + ")";
      li.addEventListener("mousedown", function (e) {
        e.preventDefault();
        choose(i);
      });
      list.appendChild(li);
    });
    target.setAttribute("aria-activedescendant", "mention-" + active);
  }

  document.addEventListener("input", function (e) {
    var area = e.target;
    if (!area || area.tagName !== "TEXTAREA" || !area.form || !area.form.dataset.mentions) {
      return;
    }
    if (!noteKind(area)) {
      close();
      return;
    }
    var match = TOKEN.exec(area.value.slice(0, area.selectionStart));
    if (!match) {
      close();
      return;
    }
    target = area;
    var mine = ++asked;
    var url = area.form.dataset.mentions + "?q=" + encodeURIComponent(match[2]);
    fetch(url, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : []; })
      .then(function (found) {
        if (mine !== asked) {
          return;
        }
        items = found || [];
        active = 0;
        render();
      })
      .catch(close);
  });

  document.addEventListener("keydown", function (e) {
    if (!list || e.target !== target) {
      return;
    }
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      active = (active + (e.key === "ArrowDown" ? 1 : items.length - 1)) % items.length;
      render();
      e.preventDefault();
    } else if (e.key === "Enter" || e.key === "Tab") {
      choose(active);
      e.preventDefault();
      e.stopPropagation();
    } else if (e.key === "Escape") {
      close();
      e.preventDefault();
      e.stopPropagation();
    }
  }, true);

  document.addEventListener("focusout", function (e) {
    if (e.target === target) {
      window.setTimeout(close, 150);
    }
  });
})();
