// Roster portal: small enhancements; every page works without this file.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // Copy buttons next to values to paste elsewhere (DNS records, URLs, secrets).
  document.querySelectorAll("button.copy[data-copy]").forEach(function (button) {
    if (!navigator.clipboard) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(button.dataset.copy).then(function () {
        button.textContent = "Copied";
        setTimeout(function () { button.textContent = "Copy"; }, 2000);
      });
    });
  });
  // The organization switcher switches as soon as another organization is chosen.
  var select = document.getElementById("organization");
  if (select && select.form) {
    select.addEventListener("change", function () { select.form.submit(); });
  }
});
