// Copy buttons of the SCIM provisioning portal. The pages work without this script: the values
// are in read-only fields that can be selected and copied by hand; the buttons stay hidden.
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

  document.addEventListener("DOMContentLoaded", function () {
    var buttons = document.querySelectorAll("button[data-copy]");
    for (var i = 0; i < buttons.length; i++) {
      var button = buttons[i];
      button.hidden = false;
      button.setAttribute("aria-live", "polite");
      button.addEventListener("click", function (event) { copyFrom(event.currentTarget); });
    }
  });
})();
