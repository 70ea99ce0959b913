// Two small chart kinds drawn as inline SVG: line charts (training curves) and horizontal bars (the
// teacher-vs-student report). No library: the dashboard loads nothing from elsewhere and has no build step.
// Every chart is built from DOM nodes (never innerHTML), so a series name cannot inject markup.
"use strict";

const Charts = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const PALETTE = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c",
    "#ccb974", "#64b5cd"];

  function el(name, attrs = {}, text = null) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    if (text !== null) node.textContent = text;
    return node;
  }

  // Round tick positions covering [lo, hi]: steps of 1, 2 or 5 × 10^k, about `count` of them.
  function niceTicks(lo, hi, count = 5) {
    if (!(hi > lo)) {
      const pad = Math.abs(lo) > 0 ? Math.abs(lo) * 0.1 : 1;
      lo -= pad;
      hi += pad;
    }
    const raw = (hi - lo) / count;
    const magnitude = 10 ** Math.floor(Math.log10(raw));
    const norm = raw / magnitude;
    const step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * magnitude;
    const start = Math.floor(lo / step) * step;
    const end = Math.ceil(hi / step) * step;
    const ticks = [];
    for (let v = start; v <= end + step / 2; v += step) ticks.push(Number(v.toPrecision(12)));
    return { ticks, lo: start, hi: end };
  }

  // Decades covering [lo, hi] (both > 0), with 2× and 5× ticks when there are few decades.
  function logTicks(lo, hi) {
    const a = Math.floor(Math.log10(lo)), b = Math.max(Math.ceil(Math.log10(hi)), a + 1);
    const ticks = [];
    for (let k = a; k <= b; k += 1) {
      for (const f of b - a <= 2 ? [1, 2, 5] : [1]) if (k < b || f === 1) ticks.push(Number((f * 10 ** k).toPrecision(12)));
    }
    return { ticks, lo: 10 ** a, hi: 10 ** b };
  }

  function fmt(v) {
    const a = Math.abs(v);
    if (a !== 0 && (a < 0.01 || a >= 1e5)) return v.toExponential(0);
    return String(Number(v.toPrecision(3)));
  }

  function legend(container, series) {
    const list = document.createElement("ul");
    list.className = "legend";
    series.forEach((s, i) => {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = s.dashed ? "swatch dashed" : "swatch";
      swatch.style.borderColor = PALETTE[i % PALETTE.length];
      item.append(swatch, document.createTextNode(s.name));
      list.append(item);
    });
    container.append(list);
  }

  // series: [{name, points: [[x, y], …], dashed?}] (sorted by x). Replaces the container's content. The y axis
  // turns logarithmic when the values span more than LOG_SPAN (a T²-scaled soft loss beside a hard one).
  const LOG_SPAN = 30;
  function line(container, { title, series, xLabel = "step", yMin = null, yMax = null, empty = "no data yet" }) {
    const W = 560, H = 260, m = { left: 52, right: 14, top: 30, bottom: 40 };
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart line", role: "img", "aria-label": title });
    svg.append(el("text", { x: m.left, y: 18, class: "chart-title" }, title));
    const all = series.flatMap((s) => s.points);
    svg.dataset.points = String(all.length);
    svg.dataset.series = series.map((s) => s.name).join(",");
    container.replaceChildren(svg);
    if (all.length === 0) {
      svg.append(el("text", { x: W / 2, y: H / 2, class: "chart-empty", "text-anchor": "middle" }, empty));
      return svg;
    }
    const xs = niceTicks(Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0])), 6);
    const low = Math.min(...all.map((p) => p[1])), high = Math.max(...all.map((p) => p[1]));
    const log = yMin === null && yMax === null && low > 0 && high / low > LOG_SPAN;
    const ys = log ? logTicks(low, high) : niceTicks(yMin ?? low, yMax ?? high, 5);
    const scale = log ? Math.log10 : (v) => v;
    const px = (x) => m.left + ((x - xs.lo) / (xs.hi - xs.lo)) * (W - m.left - m.right);
    const py = (y) => H - m.bottom - ((scale(y) - scale(ys.lo)) / (scale(ys.hi) - scale(ys.lo))) * (H - m.top - m.bottom);
    svg.dataset.scale = log ? "log" : "linear";
    for (const t of ys.ticks) {
      svg.append(el("line", { x1: m.left, x2: W - m.right, y1: py(t), y2: py(t), class: "grid" }));
      svg.append(el("text", { x: m.left - 6, y: py(t) + 4, "text-anchor": "end", class: "tick" }, fmt(t)));
    }
    for (const t of xs.ticks) {
      svg.append(el("text", { x: px(t), y: H - m.bottom + 16, "text-anchor": "middle", class: "tick" }, fmt(t)));
    }
    svg.append(el("line", { x1: m.left, x2: W - m.right, y1: H - m.bottom, y2: H - m.bottom, class: "axis" }));
    svg.append(el("text", { x: (m.left + W - m.right) / 2, y: H - 6, "text-anchor": "middle", class: "axis-label" },
      xLabel));
    series.forEach((s, i) => {
      const color = PALETTE[i % PALETTE.length];
      const d = s.points.map((p, j) => `${j ? "L" : "M"}${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join("");
      const path = el("path", { d, fill: "none", stroke: color, "stroke-width": 2, class: "series" });
      if (s.dashed) path.setAttribute("stroke-dasharray", "6 4");
      svg.append(path);
      if (s.points.length <= 60) {
        for (const [x, y] of s.points) {
          const dot = el("circle", { cx: px(x), cy: py(y), r: 3, fill: color });
          dot.append(el("title", {}, `${s.name} = ${fmt(y)} at ${xLabel} ${x}`));
          svg.append(dot);
        }
      }
    });
    if (log) {
      svg.append(el("text", { x: W - m.right, y: 18, "text-anchor": "end", class: "tick" }, "log scale"));
    }
    legend(container, series);
    return svg;
  }

  // bars: [{label, value, text?, color?}] (value null = left out). Replaces the container's content.
  function bars(container, { title, bars: rows, max = null, note = "" }) {
    rows = rows.filter((r) => typeof r.value === "number" && Number.isFinite(r.value));
    const W = 420, row = 30, labelW = 130, top = 30, valueW = 70;
    const H = top + Math.max(rows.length, 1) * row + (note ? 22 : 8);
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart bars", role: "img", "aria-label": title });
    svg.append(el("text", { x: 0, y: 18, class: "chart-title" }, title));
    svg.dataset.bars = rows.map((r) => `${r.label}=${r.value}`).join(";");
    container.replaceChildren(svg);
    if (rows.length === 0) {
      svg.append(el("text", { x: W / 2, y: top + 18, class: "chart-empty", "text-anchor": "middle" }, "no data"));
      return svg;
    }
    const top_ = max ?? Math.max(...rows.map((r) => r.value)) * 1.05;
    const width = (v) => Math.max(1, (v / (top_ || 1)) * (W - labelW - valueW));
    rows.forEach((r, i) => {
      const y = top + i * row;
      svg.append(el("text", { x: labelW - 8, y: y + row / 2 + 4, "text-anchor": "end", class: "bar-label" }, r.label));
      const bar = el("rect", { x: labelW, y: y + 4, width: width(r.value), height: row - 8, rx: 3,
        fill: r.color ?? PALETTE[i % PALETTE.length] });
      bar.append(el("title", {}, `${r.label}: ${r.text ?? fmt(r.value)}`));
      svg.append(bar);
      svg.append(el("text", { x: labelW + width(r.value) + 6, y: y + row / 2 + 4, class: "bar-value" },
        r.text ?? fmt(r.value)));
    });
    if (note) svg.append(el("text", { x: labelW, y: H - 6, class: "chart-note" }, note));
    return svg;
  }

  return { line, bars, niceTicks, PALETTE };
})();
