/* The portal's progressive enhancement. Every page works without it; this only
 * - shows times in the viewer's own time zone (the title of each <time data-local>),
 * - makes the comment required in the browser when Reject is pressed (the server checks too),
 * - keeps a decision form from being sent twice,
 * - refreshes the Step Functions status after a decision until it is final (from the request's
 *   JSON status, /requests/<id>/status/; without JavaScript the page's Refresh link does it),
 *   and shows the page again when the request's own status changed meanwhile (reopened, closed).
 * Loaded with `defer` from our own origin: the CSP allows no inline scripts.
 */
(function () {
  "use strict";

  function localizeTimes(root) {
    if (!window.Intl || !Intl.DateTimeFormat) return;
    var format = new Intl.DateTimeFormat(undefined, {
      weekday: "short", year: "numeric", month: "short", day: "numeric",
      hour: "2-digit", minute: "2-digit", timeZoneName: "short"
    });
    root.querySelectorAll("time[data-local][datetime]").forEach(function (element) {
      var date = new Date(element.getAttribute("datetime"));
      if (isNaN(date.getTime())) return;
      element.title = format.format(date);
      if (element.getAttribute("data-local") === "text") element.textContent = element.title;
    });
  }

  function requireCommentOnReject(form) {
    var comment = form.querySelector("textarea[data-reject-requires]");
    if (!comment) return;
    form.querySelectorAll("button[name=decision]").forEach(function (button) {
      button.addEventListener("click", function () {
        comment.required = button.value === "reject" || button.getAttribute("data-outcome") === "failure";
        comment.setCustomValidity("");
        if (comment.required && !comment.value.trim()) {
          comment.setCustomValidity("Say why you reject: the requester and the workflow see it.");
        }
      });
    });
    comment.addEventListener("input", function () { comment.setCustomValidity(""); });
  }

  function submitOnce(form) {
    form.addEventListener("submit", function (event) {
      if (form.dataset.sent) {
        event.preventDefault();
        return;
      }
      form.dataset.sent = "1";
      var submitter = event.submitter;
      // Disable after the browser has read the form: a disabled button's name/value is not sent.
      window.setTimeout(function () {
        form.querySelectorAll("button[type=submit]").forEach(function (button) {
          button.disabled = true;
        });
        if (submitter && submitter.dataset.busyLabel) submitter.textContent = submitter.dataset.busyLabel;
        form.setAttribute("aria-busy", "true");
      }, 0);
    });
  }

  // Back/forward cache: a page restored after submitting must be usable again.
  window.addEventListener("pageshow", function (event) {
    if (!event.persisted) return;
    document.querySelectorAll("form[data-sent]").forEach(function (form) {
      delete form.dataset.sent;
      form.removeAttribute("aria-busy");
      form.querySelectorAll("button[type=submit]").forEach(function (button) { button.disabled = false; });
    });
  });

  // Polls the request's small JSON status (data-status-url), not the page: the page may be large.
  function followCallback(status) {
    var url = status.getAttribute("data-status-url");
    var attempts = 0;
    function check() {
      attempts += 1;
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (response) { return response.ok ? response.json() : Promise.reject(response.status); })
        .then(function (data) {
          // The request itself changed (the re-check reopened it and removed its callback, Step
          // Functions or the system closed it): the page's outcome and status no longer hold, so
          // the server renders the page again.
          var shown = status.getAttribute("data-request-status");
          if (data && shown && data.status && data.status !== shown) {
            window.location.reload();
            return;
          }
          var callback = data && data.callback;
          if (!callback || typeof callback.text !== "string") return;
          if (status.textContent !== callback.text) status.textContent = callback.text;
          status.className = "callback callback-" + String(callback.status).replace(/[^a-z_-]/g, "");
          if (!callback.final) {
            schedule();
          } else {
            status.removeAttribute("data-pending");
            var refresh = status.parentNode.querySelector("a.refresh");
            if (refresh) refresh.remove();
          }
        })
        .catch(schedule);
    }
    function schedule() {
      if (attempts < 120) window.setTimeout(check, Math.min(1000 + attempts * 250, 5000));
    }
    schedule();
  }

  function start() {
    localizeTimes(document);
    document.querySelectorAll("form[data-decision-form]").forEach(requireCommentOnReject);
    document.querySelectorAll("form[data-decision-form], form[data-once]").forEach(submitOnce);
    var status = document.querySelector("#callback-status[data-pending][data-status-url]");
    if (status && window.fetch) followCallback(status);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
