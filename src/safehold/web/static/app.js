// Live tail of a running job: poll its status, append new log lines, update progress, reload when done.
// Everything else in the console works without JavaScript (a job page refreshes itself via <noscript>).
(function () {
  "use strict";
  var job = document.getElementById("job");
  if (!job || job.dataset.done === "yes") { return; }
  var next = parseInt(job.dataset.next, 10) || 0;
  var log = document.getElementById("log");
  var progress = document.getElementById("progress");
  var state = document.getElementById("job-state");

  function size(n) {
    var units = ["B", "KB", "MB", "GB", "TB"], i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
    return (i ? n.toFixed(1) : n.toFixed(0)) + " " + units[i];
  }

  function render(status) {
    status.log.forEach(function (line) {
      var span = document.createElement("span");
      span.className = "log-" + line.level;
      span.textContent = new Date(line.time * 1000).toISOString().slice(0, 19).replace("T", " ") + " UTC " + line.message + "\n";
      log.appendChild(span);
    });
    if (status.log.length) { log.scrollTop = log.scrollHeight; }
    next = status.next;
    progress.textContent = "";
    Object.keys(status.progress).forEach(function (part) {
      var p = status.progress[part], row = document.createElement("div"), bar = document.createElement("progress");
      row.className = "bar";
      bar.value = p.done;
      if (p.total) { bar.max = p.total; }
      row.textContent = part + " ";
      row.appendChild(bar);
      row.appendChild(document.createTextNode(" " + size(p.done)));
      progress.appendChild(row);
    });
    state.textContent = "";
    var badge = document.createElement("span");
    badge.className = "badge job-" + status.state;
    badge.textContent = status.state;
    state.appendChild(badge);
  }

  function poll() {
    fetch(job.dataset.status + "?since=" + next, { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (status) {
        render(status);
        if (status.done) { window.location.reload(); } else { setTimeout(poll, 1000); }
      })
      .catch(function () { setTimeout(poll, 3000); });
  }
  setTimeout(poll, 500);
}());
