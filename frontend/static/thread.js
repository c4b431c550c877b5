/* A thread on the conversation page opens at its newest message. A long one comes with its
 * older messages folded to one line each (`details[data-fold]`, which work without this
 * script): "Show all" unfolds them, a link to a message (#message-N) unfolds it, and what the
 * agent unfolded stays unfolded when live updates bring the messages again.
 * Needs conversation.js (its `imapdesk:parts` events). */
(function () {
  "use strict";
  var box = document.getElementById("conv-messages");
  if (!box) {
    return;
  }
  var unfolded = {};  // message id -> true: opened by the agent

  function folds() {
    return box.querySelectorAll("details[data-fold]");
  }

  function articleId(el) {
    var article = el.closest("article[data-message-id]");
    return article ? article.dataset.messageId : "";
  }

  // after (re)rendering: the "Show all" button, and the agent's unfolded messages open again
  function arm() {
    Array.prototype.forEach.call(box.querySelectorAll("[data-unfold-all]"), function (b) {
      b.hidden = false;
    });
    Array.prototype.forEach.call(folds(), function (d) {
      if (unfolded[articleId(d)]) {
        d.open = true;
      }
    });
  }

  // `toggle` does not bubble: caught on its way down
  box.addEventListener("toggle", function (event) {
    var d = event.target;
    if (d.matches && d.matches("details[data-fold]")) {
      if (d.open) {
        unfolded[articleId(d)] = true;
      } else {
        delete unfolded[articleId(d)];
      }
    }
  }, true);

  box.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-unfold-all]");
    if (!button) {
      return;
    }
    Array.prototype.forEach.call(folds(), function (d) { d.open = true; });
    var note = button.closest("[data-fold-note]");
    if (note) {
      note.hidden = true;
    }
  });

  function showLinked() {
    var found = /^#message-(\d+)$/.exec(window.location.hash);
    var article = found ? document.getElementById("message-" + found[1]) : null;
    if (!article) {
      return false;
    }
    var fold = article.querySelector("details[data-fold]");
    if (fold) {
      fold.open = true;
    }
    article.scrollIntoView({ block: "start" });
    return true;
  }

  window.addEventListener("hashchange", showLinked);
  document.addEventListener("imapdesk:parts", arm);
  arm();
  if (!showLinked()) {
    var articles = box.querySelectorAll("article[data-message-id]");
    var newest = articles[articles.length - 1];
    if (newest && newest.getBoundingClientRect().top > window.innerHeight * 0.6) {
      newest.scrollIntoView({ block: "start" });
    }
  }
})();
