// execbroker's pages: live fragments from server-sent events, forms sent without a reload.
// Plain script, no library: the page works without it by ordinary links and forms.
(function () {
  "use strict";
  var root = document.querySelector("[data-events]");
  var status = document.getElementById("status");
  var source = null;

  function say(text, isError) {
    if (!status) return;
    status.textContent = text;
    status.className = isError ? "status error" : "status";
    status.setAttribute("role", isError ? "alert" : "status");
    clearTimeout(say.timer);
    say.timer = setTimeout(function () { status.textContent = ""; }, isError ? 15000 : 5000);
  }

  // A form control by its form, name and (for boxes) value: the same control after a swap.
  function controlKey(el) {
    var box = el.type === "checkbox" || el.type === "radio";
    return [el.form ? el.form.getAttribute("action") : "", el.name, box ? el.value : ""].join("|");
  }

  // What the user ticked or typed in a fragment and has not sent yet.
  function edits(target) {
    var found = {};
    Array.prototype.forEach.call(target.querySelectorAll("input[name], textarea[name]"), function (el) {
      var box = el.type === "checkbox" || el.type === "radio";
      if (box ? el.checked !== el.defaultChecked : el.value !== el.defaultValue) {
        found[controlKey(el)] = box ? el.checked : el.value;
      }
    });
    return found;
  }

  // Swap a fragment in, keeping keyboard focus on the same control if it is still there and
  // every edit not yet sent: a live update must not undo a half-filled form.
  function swap(id, html) {
    var target = document.getElementById(id);
    if (!target) return;
    var focused = document.activeElement && document.activeElement.id;
    var open = Array.prototype.map.call(target.querySelectorAll("details[open] summary"),
      function (s) { return s.textContent; });
    var unsent = edits(target);
    target.innerHTML = html;
    Array.prototype.forEach.call(target.querySelectorAll("input[name], textarea[name]"), function (el) {
      var key = controlKey(el);
      if (!(key in unsent)) return;
      if (el.type === "checkbox" || el.type === "radio") el.checked = unsent[key];
      else el.value = unsent[key];
    });
    Array.prototype.forEach.call(target.querySelectorAll("details summary"), function (s) {
      if (open.indexOf(s.textContent) >= 0) s.parentNode.open = true;
    });
    if (focused) {
      var again = document.getElementById(focused);
      if (again) again.focus();
    }
    countdown();
  }

  function connect() {
    if (!root || !window.EventSource) return;
    if (source) source.close();
    source = new EventSource(root.dataset.events + location.search);
    source.addEventListener("fragment", function (event) {
      var data = JSON.parse(event.data);
      swap(data.id, data.html);
    });
    source.addEventListener("login", function () { location.assign(root.dataset.login || "/ui/login"); });
    source.addEventListener("problem", function (event) { say(JSON.parse(event.data).message, true); });
  }

  // Filters, sorting and paging change the query string and the stream, not the page.
  function navigate(search) {
    history.pushState(null, "", location.pathname + search);
    connect();
  }

  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a[data-live]");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    navigate(new URL(link.href).search);
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.hasAttribute("data-filter")) {
      event.preventDefault();
      var query = new URLSearchParams(new FormData(form));
      var keep = new URLSearchParams(location.search).get("show");
      if (keep) query.set("show", keep);
      navigate("?" + query.toString());
      return;
    }
    if (!form.hasAttribute("data-inline")) return;
    event.preventDefault();
    var body = new FormData(form);
    if (event.submitter && event.submitter.name) body.set(event.submitter.name, event.submitter.value);
    fetch(form.action, { method: "POST", body: body, headers: { "X-UI": "fetch" }, credentials: "same-origin" })
      .then(function (response) {
        return response.text().then(function (text) {
          if (!response.ok) { say(text, true); return; }
          var target = form.dataset.target && document.getElementById(form.dataset.target);
          var html = (response.headers.get("content-type") || "").indexOf("text/html") === 0;
          if (target && html) { target.innerHTML = text; countdown(); say("answer received"); }
          else if (target) { target.textContent = text; say(text); }
          else say(text);
        });
      })
      .catch(function (error) { say("could not send: " + error, true); });
  });

  // Expiry countdowns, once a second, from each <time data-countdown datetime=...>.
  function countdown() {
    var now = Date.now();
    Array.prototype.forEach.call(document.querySelectorAll("time[data-countdown]"), function (el) {
      var left = Math.max(0, Math.floor((Date.parse(el.getAttribute("datetime")) - now) / 1000));
      el.textContent = left > 0 ? "in " + Math.floor(left / 60) + ":" + String(left % 60).padStart(2, "0") : "now (expired)";
    });
  }

  window.addEventListener("popstate", connect);
  setInterval(countdown, 1000);
  connect();
})();
