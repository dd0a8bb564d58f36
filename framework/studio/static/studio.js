// Live counts for runs still going: the runs page and a run's page poll /api/runs every 2 s while any run
// they show is running, and write the new figures into the cells marked data-field. Nothing else is scripted.
"use strict";
(function () {
  const rows = () => Array.from(document.querySelectorAll("[data-run]"));
  function update(runs) {
    const byKey = new Map(runs.map((run) => [run.key, run]));
    let live = false;
    for (const row of rows()) {
      const run = byKey.get(row.dataset.run);
      if (!run) continue;
      row.dataset.status = run.status;
      const scope = row.classList.contains("run-live") ? document : row;
      for (const cell of scope.querySelectorAll("[data-field]")) {
        const field = cell.dataset.field;
        if (field === "progress") { cell.max = run.seeded || 1; cell.value = run.settled; }
        else if (field in run) { cell.textContent = String(run[field]); }
        if (field === "status") { cell.className = "status status-" + run.status; }
      }
      live = live || run.status === "running";
    }
    if (live) setTimeout(poll, 2000);
  }
  function poll() {
    fetch("/api/runs", { credentials: "same-origin" }).then((r) => r.json()).then(update).catch(() => setTimeout(poll, 5000));
  }
  if (rows().some((row) => row.dataset.status === "running")) setTimeout(poll, 2000);
})();
