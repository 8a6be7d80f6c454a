// Audience upload with a progress bar: posts the page's multipart form with XMLHttpRequest
// (whose upload events report the bytes sent), the CSRF token in the X-CSRF-Token header,
// and puts the per-line report the router returns (an HTML fragment) under the form.
// Without this script the same form posts normally and the whole page comes back.
"use strict";

(function () {
  function enhance(form) {
    var progress = form.querySelector("[data-upload-progress]");
    var percent = form.querySelector("[data-upload-percent]");
    var report = document.querySelector("[data-upload-report]");
    var button = form.querySelector("button[type=submit]");

    function show(value) {
      progress.hidden = false;
      progress.value = value;
      percent.textContent = value + " %";
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var body = new FormData(form);
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("X-CSRF-Token", form.elements.csrf_token.value);
      xhr.setRequestHeader("HX-Request", "true");
      xhr.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) {
          show(Math.floor((e.loaded / e.total) * 100));
        }
      });
      xhr.upload.addEventListener("load", function () {
        show(100);
        percent.textContent = "100 %: checking the lines…";
      });
      xhr.addEventListener("load", function () {
        var redirect = xhr.getResponseHeader("HX-Redirect");
        if (redirect) {
          window.location.assign(redirect);
          return;
        }
        show(100);
        percent.textContent = xhr.status < 400 ? "100 %: done" : "refused";
        report.innerHTML = xhr.responseText;
        button.disabled = false;
      });
      xhr.addEventListener("error", function () {
        percent.textContent = "the upload failed: the router could not be reached";
        button.disabled = false;
      });
      button.disabled = true;
      show(0);
      xhr.send(body);
    });
  }

  document.querySelectorAll("form[data-audience-upload]").forEach(enhance);
})();
