// faceidx: the little the pages need beyond htmx. Errors of an action show in #flash;
// the action bar says how many faces are ticked and is enabled only when some are.
(function () {
  "use strict";
  function flash(text) {
    var el = document.getElementById("flash");
    if (!el) return;
    el.textContent = text;
    el.hidden = !text;
    if (text) window.scrollTo({ top: 0, behavior: "smooth" });
  }
  document.addEventListener("htmx:responseError", function (ev) {
    var xhr = ev.detail.xhr, text = xhr.responseText;
    try { text = JSON.parse(text).error || text; } catch (e) { /* not JSON */ }
    flash("Could not do that: " + text);
  });
  document.addEventListener("htmx:sendError", function () {
    flash("The faceidx server did not answer; is it still running?");
  });
  document.addEventListener("htmx:beforeRequest", function () { flash(""); });

  function refreshSelection(form) {
    var bar = form.querySelector("[data-needs-selection]");
    if (!bar) return;
    var n = form.querySelectorAll("input[name=face_ids]:checked").length;
    var label = bar.querySelector(".selected-count");
    if (label) label.textContent = n ? n + " selected" : "Select faces below";
    bar.querySelectorAll("button").forEach(function (b) {
      if (!document.body.classList.contains("read-only")) b.disabled = n === 0;
    });
  }
  document.addEventListener("change", function (ev) {
    var form = ev.target.closest && ev.target.closest(".select-form");
    if (form) refreshSelection(form);
  });
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".select-form").forEach(refreshSelection);
  });
})();
