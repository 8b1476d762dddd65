// A small multi-series line chart on a <canvas>: no library, nothing downloaded.
"use strict";

const CHART_COLORS = ["#2b6cb0", "#2f855a", "#c53030", "#b7791f", "#6b46c1", "#0987a0",
  "#d53f8c", "#4a5568", "#38a169", "#dd6b20"];

// The top of the y axis: four equal steps of a round size (1, 2, 2.5, 3, 4, 5, 6 or 8
// times a power of ten), the smallest that holds the largest value.
function niceCeiling(value) {
  if (value <= 0) return 1;
  const quarter = value / 4;
  const magnitude = Math.pow(10, Math.floor(Math.log10(quarter)));
  for (const step of [1, 2, 2.5, 3, 4, 5, 6, 8, 10]) {
    if (step * magnitude >= quarter) return 4 * step * magnitude;
  }
  return 40 * magnitude;
}

// series: [{name, points: [number|null, ...]}] (oldest first), all the same length.
function drawChart(canvas, series, unit) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const left = 48, right = 8, top = 8, bottom = 20;
  const plotW = width - left - right, plotH = height - top - bottom;
  let max = 0, length = 0;
  for (const s of series) {
    length = Math.max(length, s.points.length);
    for (const p of s.points) if (p !== null && p > max) max = p;
  }
  const ceiling = niceCeiling(max);
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#6b7485";
  ctx.strokeStyle = "#e1e5ec";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = top + plotH - (plotH * i) / 4;
    ctx.beginPath();
    ctx.moveTo(left, y);
    ctx.lineTo(left + plotW, y);
    ctx.stroke();
    const label = (ceiling * i) / 4;
    ctx.fillText(label >= 100 ? label.toFixed(0) : String(+label.toFixed(2)), 4, y + 4);
  }
  ctx.fillText(unit, left, height - 4);
  if (length < 2) {
    ctx.fillText("waiting for samples", left + plotW / 2 - 50, top + plotH / 2);
    return;
  }
  series.forEach((s, index) => {
    ctx.strokeStyle = CHART_COLORS[index % CHART_COLORS.length];
    ctx.lineWidth = 2;
    ctx.beginPath();
    let pen = false;
    s.points.forEach((p, i) => {
      if (p === null) { pen = false; return; }
      const x = left + (plotW * (i + length - s.points.length)) / (length - 1);
      const y = top + plotH - (plotH * p) / ceiling;
      if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
      pen = true;
    });
    ctx.stroke();
  });
}

function drawLegend(element, names) {
  element.replaceChildren(...names.map((name, index) => {
    const span = document.createElement("span");
    span.style.setProperty("--swatch", CHART_COLORS[index % CHART_COLORS.length]);
    span.textContent = name;
    return span;
  }));
}
