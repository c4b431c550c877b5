/* The composer's rich-text editor: Squire (frontend/static/vendor/squire/, with DOMPurify,
 * which Squire uses to clean what is pasted or loaded) in place of the text area, which stays
 * for a page without script. compose.js drives it through `imapdeskRichEditor.attach(form)`:
 *
 * - what is written goes to the form as HTML (the hidden `html` field, which the server
 *   sanitises with nh3 and sends with a plain-text alternative) and as text (`body`, for the
 *   draft and what the text area would have held);
 * - an image pasted or dropped is uploaded at once (`/compose/images`, the session's CSRF
 *   token) and shown from there; the server sends it as an inline `cid:` part;
 * - the agent's signature is put in when the composer opens empty.
 * The editor is where writing starts, unless the agent chose plain text on /account (the
 * form's `data-start="plain"`): then the text area is, and "Formatting" or an image pasted or
 * dropped into it turns the editor on, with what was typed (pressed again, back to the text
 * area: for this message). Without script, or without Squire (the vendor file missing:
 * `attach` returns null), the text area it is. */
(function () {
  "use strict";

  function escapeHtml(text) {
    return text.replace(/[&<>"]/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c];
    });
  }

  // plain text as the editor's blocks, one <div> a line
  function textToHtml(text) {
    return text.split(/\r?\n/).map(function (line) {
      return "<div>" + (line ? escapeHtml(line) : "<br>") + "</div>";
    }).join("");
  }

  function attach(form, options) {
    if (!window.Squire || !window.DOMPurify) {
      return null;
    }
    var area = form.elements.body;
    var htmlField = form.elements.html;
    var holder = form.querySelector("[data-rich]");
    if (!area || !htmlField || !holder) {
      return null;
    }
    var toolbar = form.querySelector("[data-rich-toolbar]");
    var root = document.createElement("div");
    root.className = "rich-editor-area";
    root.setAttribute("role", "textbox");
    root.setAttribute("aria-multiline", "true");
    root.setAttribute("aria-label", "Message");
    root.setAttribute("data-rich-root", "");
    holder.appendChild(root);
    var editor = new window.Squire(root, { blockTag: "DIV" });
    var toggle = form.querySelector("[data-rich-toggle]");
    var on = false;
    var initial = null;  // what the editor held when opened (the signature): "untouched"
    var maxBytes = Number(form.dataset.maxImageBytes || 0);
    var uploading = 0;

    function sync() {
      if (!on) {
        return;
      }
      htmlField.value = editor.getHTML();
      area.value = root.innerText.replace(/\u00a0/g, " ").replace(/\n+$/, "");
    }

    function changed() {
      sync();
      if (options.onChange) {
        options.onChange();
      }
    }

    editor.addEventListener("input", changed);
    root.addEventListener("input", sync);  // before the form's own listener (compose.js)

    function setHTML(html) {
      editor.setHTML(html || "");
      sync();
    }

    // how the agent's composer opens (their choice on /account)
    function startsRich() {
      return form.dataset.start !== "plain";
    }

    function show(value) {
      on = value;
      area.closest("label").hidden = value;
      area.required = !value;
      holder.hidden = !value;
      if (toolbar) {
        toolbar.hidden = !value;
      }
      if (toggle) {
        toggle.setAttribute("aria-pressed", String(value));
        toggle.title = value ? "Turn formatting off (what is written stays, as plain text)"
          : "Turn formatting on: bold, lists, links, pasted images";
      }
    }

    // the agent's signature as the editor shows it (the server adds it only to plain text)
    function signatureHtml() {
      var signature = (form.dataset.signature || "").trim();
      if (!signature) {
        return "";
      }
      return "<div><br></div><div class=\"signature\">-- <br>" +
        signature.split(/\r?\n/).map(escapeHtml).join("<br>") + "</div>";
    }

    // the editor on, with what the text area held, and the signature below it
    function activate() {
      if (on) {
        return;
      }
      var text = area.value.replace(/^\n/, "").replace(/\n+$/, "");
      show(true);
      setHTML((text.trim() ? textToHtml(text) : "<div><br></div>") + signatureHtml());
      initial = text.trim() ? null : editor.getHTML();
      cursorAboveSignature();
    }

    // the cursor at the end of what was written, above the signature
    function cursorAboveSignature() {
      editor.focus();
      var sig = root.querySelector(".signature");
      if (!sig) {
        editor.moveCursorToEnd();
        return;
      }
      var spacer = sig.previousElementSibling;
      var block = spacer ? spacer.previousElementSibling : null;
      if (!block) {
        editor.moveCursorToStart();
        return;
      }
      var range = document.createRange();
      range.selectNodeContents(block);
      range.collapse(false);
      editor.setSelection(range);
    }

    // back to the text area, with the text (formatting and images stay out)
    function deactivate() {
      if (!on) {
        return;
      }
      sync();
      show(false);
      htmlField.value = "";
      area.focus();
    }
    show(false);

    function uploadImage(file) {
      if (maxBytes && file.size > maxBytes) {
        options.onError("The image " + (file.name || "") + " has " +
          (file.size / 1048576).toFixed(1) + " MB, more than the " +
          (maxBytes / 1048576).toFixed(1) + " MB an image in a reply may have: make it " +
          "smaller, or attach it as a file.");
        return;
      }
      var body = new FormData();
      body.append("csrf_token", form.elements.csrf_token.value);
      body.append("image", file, file.name || "image.png");
      uploading += 1;
      options.onError("");
      options.request(form.dataset.imageUrl, { method: "POST", body: body })
        .then(function (answer) {
          editor.focus();
          editor.insertImage(answer.url, { alt: file.name || "image" });
          changed();
        }, function (err) {
          options.onError("The image was not added: " + err.message);
        })
        .then(function () { uploading -= 1; });
    }

    function images(list) {
      var found = [];
      for (var i = 0; list && i < list.length; i++) {
        var item = list[i];
        var file = item.getAsFile ? (item.kind === "file" ? item.getAsFile() : null) : item;
        if (file && /^image\//.test(file.type)) {
          found.push(file);
        }
      }
      return found;
    }

    function fromArea(target) {
      return target === area;
    }

    // before Squire sees it (capture, on an ancestor): an image is ours to upload; pasted
    // or dropped into the text area, it turns the editor on first
    form.addEventListener("paste", function (event) {
      if (!root.contains(event.target) && !fromArea(event.target)) {
        return;
      }
      var data = event.clipboardData;
      var files = images(data && (data.files && data.files.length ? data.files : data.items));
      if (files.length) {
        event.preventDefault();
        event.stopPropagation();
        activate();
        files.forEach(uploadImage);
      }
    }, true);
    form.addEventListener("drop", function (event) {
      if (!root.contains(event.target) && !fromArea(event.target)) {
        return;
      }
      var files = images(event.dataTransfer && event.dataTransfer.files);
      if (files.length) {
        event.preventDefault();
        event.stopPropagation();
        activate();
        files.forEach(uploadImage);
      }
    }, true);

    if (toggle) {
      toggle.hidden = false;
      toggle.addEventListener("click", function () {
        if (on) {
          deactivate();
        } else {
          activate();
          editor.focus();
        }
        changed();
      });
    }

    if (toolbar) {
      toolbar.addEventListener("click", function (event) {
        var button = event.target.closest("[data-format]");
        if (!button) {
          return;
        }
        var what = button.getAttribute("data-format");
        if (what === "link") {
          var url = window.prompt("Link to (https://…)");
          if (url) {
            editor.makeLink(url.trim());
          }
        } else if (what === "ul") {
          editor.makeUnorderedList();
        } else if (what === "ol") {
          editor.makeOrderedList();
        } else if (what === "quote") {
          editor.increaseQuoteLevel();
        } else if (what === "bold" || what === "italic" || what === "underline") {
          var tag = { bold: "B", italic: "I", underline: "U" }[what];
          if (editor.hasFormat(tag)) {
            editor["remove" + what.charAt(0).toUpperCase() + what.slice(1)]();
          } else {
            editor[what]();
          }
        }
        editor.focus();
        changed();
      });
    }

    return {
      root: root,
      active: function () { return on; },
      // the composer opens: the editor, unless the agent starts in plain text
      opening: function () {
        if (!on && startsRich()) {
          activate();
        }
      },
      focus: cursorAboveSignature,
      // opened: the signature when there is nothing yet
      start: function () {
        if (root.innerText.trim() || root.querySelector("img")) {
          return;
        }
        setHTML("<div><br></div>" + signatureHtml());
        initial = editor.getHTML();
        editor.focus();
        editor.moveCursorToStart();  // the empty line above the signature
      },
      untouched: function () { return initial !== null && editor.getHTML() === initial; },
      empty: function () { return !root.innerText.trim() && !root.querySelector("img"); },
      setHTML: function (html) { show(true); setHTML(html); initial = null; },
      setText: function (text) { setHTML(textToHtml(text || "")); initial = null; },
      insertText: function (text) {
        editor.focus();
        editor.insertHTML(textToHtml(text));
        changed();
      },
      clear: function () { setHTML(""); htmlField.value = ""; initial = null; },
      busy: function () { return uploading > 0; },
    };
  }

  window.imapdeskRichEditor = { attach: attach };
})();
