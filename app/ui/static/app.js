// The dashboard: a jobs list (#/) and a job page (#/jobs/ID), both read from the JSON API (/v1/...).
//
// Auth: requests carry `Authorization: Bearer <key>` once the user has given a key; a 401 brings up the
// key prompt, and the key is kept in localStorage. Downloads are fetched with the same header and saved
// through a blob: URL (a plain link could not send it). Live updates are polling: the job with its ETag
// (304 while nothing changed), and only the events and metrics newer than the last ones seen.
// Everything the API returns is put in the page as text (textContent), never parsed as HTML.
"use strict";

(() => {
  const KEY_STORAGE = "distillery.apiKey";
  const POLL_MS = 1500;
  const LIST_POLL_MS = 3000;
  const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
  const ACCURACY_LEAVES = new Set(["top1", "top5", "accuracy", "agreement"]);
  const TEACHER = "#4c72b0", ALONE = "#8c8c8c", STUDENT = "#dd8452";

  let apiKey = localStorage.getItem(KEY_STORAGE) || "";
  let generation = 0; // bumped on every navigation: a stale view's timers and answers are dropped
  let timer = null;

  class Unauthorized extends Error {}

  const $ = (id) => document.getElementById(id);

  function h(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (value !== null && value !== undefined && value !== false) node[key] = value;
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  // ---- the API --------------------------------------------------------------------------------------

  async function api(path, { headers = {}, ...options } = {}) {
    const sent = { ...headers };
    if (apiKey) sent.Authorization = `Bearer ${apiKey}`;
    const response = await fetch(path, { ...options, headers: sent, cache: "no-store" });
    if (response.status === 401) throw new Unauthorized(await errorText(response));
    return response;
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      return body?.error?.message || `${response.status} ${response.statusText}`;
    } catch {
      return `${response.status} ${response.statusText}`;
    }
  }

  async function getJson(path) {
    const response = await api(path);
    if (!response.ok) throw new Error(await errorText(response));
    return response.json();
  }

  // Every page of a cursor-paginated series newer than `after` (events and metrics have integer ids).
  async function newerRows(path, after) {
    const rows = [];
    for (;;) {
      const page = await getJson(`${path}?after=${after}&limit=1000`);
      rows.push(...page.data);
      if (!page.has_more || page.data.length === 0) return rows;
      after = page.data[page.data.length - 1].id;
    }
  }

  // ---- the key prompt -------------------------------------------------------------------------------

  function askForKey(message) {
    stopPolling();
    $("view").replaceChildren();
    $("key-prompt").hidden = false;
    const error = $("key-error");
    error.hidden = !message;
    error.textContent = message || "";
    $("key-input").value = "";
    $("key-input").focus();
    showKeyState();
  }

  function showKeyState() {
    $("forget-key").hidden = !apiKey;
    $("key-state").textContent = apiKey ? `key ${apiKey.slice(0, 16)}…` : "";
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    apiKey = $("key-input").value.trim();
    if (!apiKey) return;
    localStorage.setItem(KEY_STORAGE, apiKey);
    $("key-prompt").hidden = true;
    route();
  });

  $("forget-key").addEventListener("click", () => {
    apiKey = "";
    localStorage.removeItem(KEY_STORAGE);
    askForKey("");
  });

  // A view's failure: a 401 asks for a key (saying why when one was sent); anything else is shown.
  function failed(error) {
    if (error instanceof Unauthorized) {
      askForKey(apiKey ? `The key was refused: ${error.message}` : "");
    } else {
      const banner = $("view").querySelector(".load-error") || $("view").appendChild(h("p", { className: "error load-error" }));
      banner.textContent = `Could not load: ${error.message}. Retrying…`;
    }
  }

  // ---- routing --------------------------------------------------------------------------------------

  function stopPolling() {
    generation += 1;
    clearTimeout(timer);
  }

  // Run `tick` now and then every `ms` until the view changes or `tick` returns true (done).
  function poll(tick, ms) {
    const mine = generation;
    const run = async () => {
      if (mine !== generation) return;
      let done = false;
      try {
        done = await tick(() => mine !== generation);
        $("view").querySelector(".load-error")?.remove();
      } catch (error) {
        if (mine !== generation) return;
        failed(error);
        if (error instanceof Unauthorized) return;
      }
      if (!done && mine === generation) timer = setTimeout(run, ms);
    };
    run();
  }

  function route() {
    stopPolling();
    $("key-prompt").hidden = true;
    showKeyState();
    const match = location.hash.match(/^#\/jobs\/([^/?#]+)/);
    if (match) showJob(decodeURIComponent(match[1]));
    else showJobs(new URLSearchParams(location.hash.split("?")[1] || ""));
  }

  window.addEventListener("hashchange", route);

  // ---- formatting -----------------------------------------------------------------------------------

  const pct = (v) => (typeof v === "number" ? `${(v * 100).toFixed(1)}%` : "–");
  const times = (v) => (typeof v === "number" ? `${v.toFixed(1)}×` : "–");
  const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");

  function bytes(n) {
    if (typeof n !== "number") return "–";
    const units = ["B", "KB", "MB", "GB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${i ? n.toFixed(1) : n} ${units[i]}`;
  }

  function duration(seconds) {
    if (typeof seconds !== "number") return "";
    if (seconds < 90) return `${Math.round(seconds)} s`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
    return `${(seconds / 3600).toFixed(1)} h`;
  }

  function architecture(side) {
    if (!side) return "–";
    if (side.architecture) return side.architecture.name;
    if (side.file_id) return `uploaded ${side.format || "file"}`;
    return "–";
  }

  function knowledgeText(knowledge) {
    if (!knowledge) return "–";
    if (knowledge.terms) return knowledge.terms.map((t) => t.method || t.type).join(" + ");
    return knowledge.type || "–";
  }

  const badge = (status) => h("span", { className: `badge ${status}`, dataset: { status } }, status);

  function progressBar(progress, status) {
    const fraction = status === "succeeded" ? 1 : progress?.fraction ?? 0;
    const fill = h("div", { className: "fill" });
    fill.style.width = `${Math.max(0, Math.min(1, fraction)) * 100}%`;
    return h("div", { className: `progress ${status}`, dataset: { fraction: String(fraction) } }, fill);
  }

  // ---- the jobs list --------------------------------------------------------------------------------

  function showJobs(params) {
    const status = params.get("status") || "";
    const after = params.get("after") || "";
    const filter = h("select", {
      id: "status-filter",
      onchange: (e) => { location.hash = e.target.value ? `#/?status=${e.target.value}` : "#/"; },
    }, ["", "queued", "running", "succeeded", "failed", "cancelled"].map(
      (s) => h("option", { value: s, selected: s === status }, s || "all statuses")));
    const body = h("tbody");
    const more = h("p", { className: "pager" });
    $("view").replaceChildren(h("section", { className: "card" },
      h("div", { className: "heading" }, h("h1", {}, "Jobs"), filter),
      h("table", { id: "jobs-table", className: "jobs" },
        h("thead", {}, h("tr", {}, ["Job", "Status", "Progress", "Student", "Knowledge", "Created", "Result"]
          .map((c) => h("th", {}, c)))),
        body),
      more));

    poll(async (stale) => {
      const query = new URLSearchParams({ limit: "50" });
      if (status) query.set("status", status);
      if (after) query.set("after", after);
      const page = await getJson(`v1/jobs?${query}`);
      if (stale()) return true;
      body.replaceChildren(...page.data.map(jobRow));
      if (page.data.length === 0) {
        body.append(h("tr", {}, h("td", { colSpan: 7, className: "muted empty" },
          "No jobs yet. Submit one with POST /v1/jobs (see /docs) or the distillery CLI.")));
      }
      const last = page.data[page.data.length - 1];
      more.replaceChildren(
        after ? h("a", { href: status ? `#/?status=${status}` : "#/" }, "← newest") : "",
        page.has_more && last ? h("a", { href: `#/?${new URLSearchParams({ ...(status && { status }), after: last.id })}` },
          "older →") : "");
      return false;
    }, LIST_POLL_MS);
  }

  function jobRow(job) {
    const p = job.progress || {};
    const phase = FINISHED.has(job.status) ? "" : [p.phase, p.epoch ? `epoch ${p.epoch}/${p.epochs}` : ""]
      .filter(Boolean).join(" · ");
    const result = job.status === "succeeded" ? `top-1 ${pct(job.metrics?.["student/top1"])}`
      : job.error ? job.error.code : "";
    const link = h("a", { href: `#/jobs/${encodeURIComponent(job.id)}` }, job.id);
    return h("tr", { dataset: { jobId: job.id, status: job.status } },
      h("td", { className: "mono" }, link),
      h("td", {}, badge(job.status)),
      h("td", { className: "progress-cell" }, progressBar(p, job.status),
        h("span", { className: "muted small" }, `${pct(job.status === "succeeded" ? 1 : p.fraction ?? 0)} ${phase}`)),
      h("td", {}, architecture(job.spec?.student)),
      h("td", {}, knowledgeText(job.spec?.knowledge)),
      h("td", { className: "small" }, when(job.created_at)),
      h("td", {}, result));
  }

  // ---- a job's page ---------------------------------------------------------------------------------

  function showJob(id) {
    const base = `v1/jobs/${encodeURIComponent(id)}`;
    const view = {
      header: h("div", { className: "heading" }),
      summary: h("div", { id: "job-summary" }),
      progress: h("div", { id: "job-progress" }),
      error: h("div", { id: "job-error" }),
      loss: h("div", { id: "loss-chart", className: "chart-box" }),
      accuracy: h("div", { id: "accuracy-chart", className: "chart-box" }),
      report: h("section", { id: "report", className: "card", hidden: true }),
      artifacts: h("section", { id: "artifacts", className: "card", hidden: true }),
      events: h("tbody"),
      spec: h("pre", { id: "job-spec" }),
    };
    $("view").replaceChildren(
      h("p", { className: "crumbs" }, h("a", { href: "#/" }, "← all jobs")),
      h("section", { className: "card" }, view.header, view.summary, view.progress, view.error),
      h("section", { className: "card" }, h("h2", {}, "Training curves"),
        h("div", { className: "charts" }, view.loss, view.accuracy)),
      view.report,
      view.artifacts,
      h("section", { className: "card" }, h("h2", {}, "Events"),
        h("div", { className: "events-box" }, h("table", { id: "events", className: "events" },
          h("thead", {}, h("tr", {}, ["Time", "Level", "Type", "Message"].map((c) => h("th", {}, c)))),
          view.events))),
      h("section", { className: "card" }, h("details", {}, h("summary", {}, h("h2", {}, "Spec")), view.spec)));

    const state = { etag: null, job: null, eventsAfter: 0, metricsAfter: 0, series: new Map(), finishedShown: false };
    drawCurves(view, state.series);

    poll(async (stale) => {
      const response = await api(base, { headers: state.etag ? { "If-None-Match": state.etag } : {} });
      if (response.status === 404) throw new Error(`there is no job ${id} (or it belongs to another tenant)`);
      if (response.status !== 304) {
        if (!response.ok) throw new Error(await errorText(response));
        state.job = await response.json();
        state.etag = response.headers.get("ETag");
      }
      const job = state.job;
      const [events, metrics] = await Promise.all([
        newerRows(`${base}/events`, state.eventsAfter),
        newerRows(`${base}/metrics`, state.metricsAfter),
      ]);
      if (stale()) return true;
      if (response.status !== 304) drawJob(view, job);
      addEvents(view, events);
      if (events.length) state.eventsAfter = events[events.length - 1].id;
      if (metrics.length) {
        state.metricsAfter = metrics[metrics.length - 1].id;
        for (const m of metrics) {
          if (!state.series.has(m.name)) state.series.set(m.name, []);
          state.series.get(m.name).push([m.step, m.value]);
        }
        drawCurves(view, state.series);
      }
      if (!FINISHED.has(job.status)) return false;
      // Finished: the worker writes the last events and metrics with the final status; one more round
      // picks up any that were committed after the answers above, then the page stops polling.
      if (!state.finishedShown) {
        state.finishedShown = true;
        if (job.status === "succeeded") drawReport(view, job);
        await drawArtifacts(view, base, job);
        return false;
      }
      return true;
    }, POLL_MS);
  }

  function drawJob(view, job) {
    const spec = job.spec || {};
    const cancellable = job.status === "queued" || job.status === "running";
    view.header.replaceChildren(h("h1", {}, "Job ", h("span", { className: "mono" }, job.id)),
      h("span", { className: "actions" },
        cancellable ? h("button", { id: "cancel-job", type: "button", className: "secondary",
          onclick: () => cancel(job.id) }, "Cancel job") : null,
        h("span", { id: "job-status" }, badge(job.status))));
    const facts = [
      ["Teacher", spec.teacher ? architecture(spec.teacher) : spec.mode === "self" ? "none (self)" : "–"],
      ["Student", architecture(spec.student)],
      ["Knowledge", knowledgeText(spec.knowledge)],
      ["Mode", spec.mode || "offline"],
      ["Epochs", spec.training?.epochs ?? "–"],
      ["Created", when(job.created_at)],
      ["Started", when(job.started_at)],
      ["Finished", when(job.finished_at)],
    ];
    view.summary.replaceChildren(h("dl", { className: "facts" },
      facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])));
    const p = job.progress || {};
    const fraction = job.status === "succeeded" ? 1 : p.fraction ?? 0;
    const parts = [
      p.phase,
      p.epoch ? `epoch ${p.epoch}/${p.epochs}` : null,
      p.step ? `step ${p.step}/${p.steps}` : null,
      `${(fraction * 100).toFixed(0)}%`,
      !FINISHED.has(job.status) && p.eta_seconds ? `about ${duration(p.eta_seconds)} left` : null,
    ].filter(Boolean);
    view.progress.replaceChildren(progressBar(p, job.status),
      h("p", { id: "progress-text", className: "muted" }, parts.join(" · ")));
    view.error.replaceChildren(job.error
      ? h("p", { className: "error" }, `${job.error.code}: ${job.error.message}`) : "");
    view.spec.textContent = JSON.stringify(spec, null, 2);
  }

  function drawCurves(view, series) {
    // The distilled student's series first (they get the first colours), the baseline's after them, dashed.
    const order = (name) => `${name.startsWith("baseline/") ? 1 : 0}${name}`;
    const sorted = [...series.entries()].sort(([a], [b]) => order(a).localeCompare(order(b)))
      .map(([name, points]) => ({
        name, points: [...points].sort((p, q) => p[0] - q[0]), dashed: name.startsWith("baseline/"),
      }));
    const leaf = (name) => name.split("/").pop();
    Charts.line(view.loss, {
      title: "loss", empty: "waiting for the first epoch",
      series: sorted.filter((s) => !ACCURACY_LEAVES.has(leaf(s.name)) && leaf(s.name) !== "lr"),
    });
    Charts.line(view.accuracy, {
      title: "validation accuracy / agreement", empty: "waiting for the first epoch", yMax: 1,
      series: sorted.filter((s) => ACCURACY_LEAVES.has(leaf(s.name))),
    });
  }

  function addEvents(view, events) {
    for (const e of events) {
      view.events.prepend(h("tr", { className: `level-${e.level}`, dataset: { type: e.type } },
        h("td", { className: "small nowrap" }, new Date(e.created_at).toLocaleTimeString()),
        h("td", {}, e.level), h("td", {}, e.type), h("td", { className: "message" }, e.message)));
    }
    while (view.events.rows.length > 500) view.events.deleteRow(-1);
  }

  // The teacher-vs-student report, from the job's final metrics (report.json flattened: "student/top1", …).
  function drawReport(view, job) {
    const m = job.metrics || {};
    const models = [["teacher", "teacher", TEACHER], ["baseline", "student alone", ALONE], ["student", "distilled", STUDENT]];
    const rows = (leaf, format) => models.map(([key, label, color]) => ({
      label, color, value: m[`${key}/${leaf}`], text: format(m[`${key}/${leaf}`]),
    }));
    const box = (id) => h("div", { id, className: "chart-box" });
    const charts = { accuracy: box("report-accuracy"), agreement: box("report-agreement"), size: box("report-size"),
      latency: box("report-latency"), calibration: box("report-calibration") };
    const cards = [
      ["compression", times(m.compression_ratio), "fewer parameters"],
      ["speed-up", times(m.speedup), "CPU latency, teacher ÷ student"],
      ["size", times(m.size_ratio), "smaller on disk"],
      ["distillation gain", typeof m.distillation_gain_top1 === "number"
        ? `${(m.distillation_gain_top1 * 100).toFixed(1)} pts` : "–", "top-1 over the student alone"],
    ].filter(([, value]) => value !== "–");
    view.report.hidden = false;
    view.report.replaceChildren(h("h2", {}, "Teacher vs student"),
      h("div", { className: "headline", id: "report-headline" }, cards.map(([name, value, hint]) =>
        h("div", { className: "stat", dataset: { stat: name } }, h("span", { className: "muted" }, name),
          h("b", {}, value), h("span", { className: "muted small" }, hint)))),
      h("div", { className: "charts report-charts" }, Object.values(charts)));
    Charts.bars(charts.accuracy, { title: "top-1 accuracy (validation)", max: 1, bars: rows("top1", pct) });
    Charts.bars(charts.agreement, {
      title: "agreement with the teacher", max: 1,
      bars: [{ label: "teacher (itself)", color: TEACHER, value: m["teacher/top1"] === undefined ? null : 1, text: "100%" },
        ...rows("agreement", pct).slice(1)],
    });
    Charts.bars(charts.size, { title: "parameters", bars: rows("params", (v) => (v ?? 0).toLocaleString()),
      note: typeof m["student/bytes"] === "number" ? `student file ${bytes(m["student/bytes"])}, teacher ${bytes(m["teacher/bytes"])}` : "" });
    Charts.bars(charts.latency, { title: "CPU latency per batch (median, ms)",
      bars: rows("latency_ms/median_ms", (v) => `${(v ?? 0).toFixed(2)} ms`),
      note: typeof m.speedup === "number" ? `speed-up ${times(m.speedup)}` : "" });
    Charts.bars(charts.calibration, { title: "expected calibration error (lower is better)",
      bars: rows("ece", (v) => (v ?? 0).toFixed(3)) });
  }

  async function drawArtifacts(view, base, job) {
    const artifacts = job.status === "succeeded" ? await getJson(`${base}/artifacts`) : [];
    if (artifacts.length === 0) return;
    view.artifacts.hidden = false;
    view.artifacts.replaceChildren(h("h2", {}, "Downloads"),
      h("table", { className: "artifacts" }, h("tbody", {}, artifacts.map((a) => h("tr", {},
        h("td", {}, h("button", {
          type: "button", className: "link download", dataset: { name: a.name },
          onclick: () => download(`${base}/artifacts/${encodeURIComponent(a.name)}`, a.name),
        }, a.name)),
        h("td", { className: "muted" }, a.format),
        h("td", { className: "muted right" }, bytes(a.bytes)),
        h("td", { className: "mono muted small", title: a.sha256 }, `sha256 ${a.sha256.slice(0, 12)}…`))))));
  }

  async function cancel(id) {
    if (!confirm(`Cancel job ${id}? A running job stops at its next step.`)) return;
    try {
      const response = await api(`v1/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" });
      if (!response.ok) throw new Error(await errorText(response));
      $("cancel-job")?.remove(); // the next poll shows "cancelling", then "cancelled"
    } catch (error) {
      if (error instanceof Unauthorized) failed(error);
      else alert(`Cancel failed: ${error.message}`);
    }
  }

  // Fetch with the key, then save the bytes under the artifact's name through a temporary blob: URL.
  async function download(path, name) {
    try {
      const response = await api(path);
      if (!response.ok) throw new Error(await errorText(response));
      const url = URL.createObjectURL(await response.blob());
      const link = h("a", { href: url, download: name });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (error) {
      if (error instanceof Unauthorized) failed(error);
      else alert(`Download failed: ${error.message}`);
    }
  }

  route();
})();
