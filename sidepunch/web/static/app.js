// Sidepunch dashboard: live polling of /stats for the summary bar and the live chart. Hand-written, no
// dependencies, no eval, no innerHTML: every value is set with textContent or as an SVG attribute.
(function () {
  "use strict";
  var root = document.getElementById("live");
  var bar = document.querySelectorAll("[data-stat]");
  if (!bar.length) { return; }
  var statsUrl = document.body.getAttribute("data-stats-url");
  var select = document.getElementById("poll");
  var points = [];
  var last = null;
  var timer = null;

  function fmt(n) { return typeof n === "number" ? n.toLocaleString("en-US") : String(n); }

  function draw() {
    if (!root) { return; }
    root.hidden = false;
    var svg = document.getElementById("live-chart");
    var max = 1;
    points.forEach(function (p) { max = Math.max(max, p[0], p[1]); });
    ["processed", "failed"].forEach(function (name, k) {
      var line = svg.querySelector("polyline." + name);
      var coords = points.map(function (p, i) {
        var x = points.length < 2 ? 0 : (i * 1000) / (points.length - 1);
        return x.toFixed(1) + "," + (190 - (p[k] * 180) / max).toFixed(1);
      });
      line.setAttribute("points", coords.join(" "));
    });
    document.getElementById("live-max").textContent = fmt(max);
  }

  function update(data) {
    var s = data.sidekiq;
    bar.forEach(function (el) {
      var v = s[el.getAttribute("data-stat")];
      if (v !== undefined) { el.textContent = fmt(v); }
    });
    if (last) {
      points.push([Math.max(s.processed - last.processed, 0), Math.max(s.failed - last.failed, 0)]);
      if (points.length > 60) { points.shift(); }
      draw();
    }
    last = s;
    var clock = document.getElementById("server-time");
    if (clock) { clock.textContent = data.server_utc_time; }
  }

  function poll() {
    fetch(statsUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { update(data); } })
      .catch(function () { /* the next tick tries again */ });
  }

  function start() {
    if (timer) { clearInterval(timer); }
    var seconds = select ? parseInt(select.value, 10) : 5;
    timer = setInterval(poll, (seconds > 0 ? seconds : 5) * 1000);
  }

  if (select) { select.addEventListener("change", start); }
  poll();
  start();
}());
