// Copy buttons of the SCIM provisioning portal. The pages work without this script: the values
// are in read-only fields that can be selected and copied by hand; the buttons stay hidden.
// On the setup page (/portal/setup#scimsl_...), it puts the link into the "Setup link" field and
// takes its secret out of the address bar: the fragment never reaches the server (no request
// log records it), and so it is not left in the history or a bookmark either. Without the
// script, the admin pastes the link into the field.
"use strict";

(function () {
  function announce(button, text) {
    var original = button.getAttribute("data-label") || button.textContent;
    button.setAttribute("data-label", original);
    button.textContent = text;
    window.setTimeout(function () { button.textContent = original; }, 2000);
  }

  function copyFrom(button) {
    var field = document.getElementById(button.getAttribute("data-copy"));
    if (!field) { return; }
    var value = field.value !== undefined ? field.value : field.textContent;
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(value).then(
        function () { announce(button, "Copied"); },
        function () { field.select(); announce(button, "Press Ctrl+C to copy"); }
      );
    } else {
      field.focus();
      field.select();
      var done = false;
      try { done = document.execCommand("copy"); } catch (e) { done = false; }
      announce(button, done ? "Copied" : "Press Ctrl+C to copy");
    }
  }

  function takeSetupLink() {
    var where = window.location;
    if (!/^#scimsl_[A-Za-z0-9_-]+$/.test(where.hash)) { return; }
    var field = document.getElementById("setup-link");
    if (!field) {
      // A link opened in a tab that shows a refusal of /portal/setup (a same-document
      // navigation: no request): load the setup page (once: the query marks it).
      if (where.pathname === "/portal/setup" && !where.search) { where.replace("/portal/setup?open" + where.hash); }
      return;
    }
    field.value = where.origin + where.pathname + where.hash;
    if (window.history && window.history.replaceState) {
      window.history.replaceState(null, "", where.pathname);
    }
  }

  window.addEventListener("hashchange", takeSetupLink);  // a link opened in a tab on the setup page
  document.addEventListener("DOMContentLoaded", function () {
    takeSetupLink();
    var buttons = document.querySelectorAll("button[data-copy]");
    for (var i = 0; i < buttons.length; i++) {
      var button = buttons[i];
      button.hidden = false;
      button.setAttribute("aria-live", "polite");
      button.addEventListener("click", function (event) { copyFrom(event.currentTarget); });
    }
  });
})();
