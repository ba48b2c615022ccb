// snaptail console: the projections page refreshes itself every second.
// Values are set with textContent only: nothing from the log is parsed as HTML.
"use strict";
(function () {
  const table = document.querySelector("table[data-live]");
  if (!table) return;
  const url = table.getAttribute("data-live");
  const body = table.querySelector("tbody");
  function cell(text, numeric) {
    const td = document.createElement("td");
    if (numeric) td.className = "n";
    td.textContent = text;
    return td;
  }
  function render(data) {
    document.getElementById("head").textContent = data.head.toLocaleString("en");
    document.getElementById("checked-at").textContent = data.checked_at;
    const rows = data.projections.map(function (p) {
      const tr = document.createElement("tr");
      tr.setAttribute("data-name", p.name);
      tr.append(cell(p.name), cell(String(p.position), true), cell(String(p.processed), true));
      const lag = cell(String(p.lag_events), true);
      lag.classList.add("lag");
      lag.setAttribute("data-field", "lag_events");
      tr.append(lag, cell(String(p.lag_seconds), true), cell(p.worker || "none running"),
                cell(String(p.dead_letters.length), true));
      return tr;
    });
    if (rows.length === 0) {
      const tr = document.createElement("tr");
      const td = cell("no projection has run on this view database yet");
      td.colSpan = 7;
      td.className = "empty";
      tr.append(td);
      rows.push(tr);
    }
    body.replaceChildren.apply(body, rows);
  }
  function poll() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) render(data); })
      .catch(function () { /* the next poll tries again */ })
      .finally(function () { setTimeout(poll, 1000); });
  }
  setTimeout(poll, 1000);
})();
