// Sparklines: a series of recent samples drawn as an SVG polyline. A sample a second kept
// for SPAN seconds: the last five minutes.

import { h } from "./dom.js";

export const SPAN = 300;
const W = 120;
const H = 24;
const NS = "http://www.w3.org/2000/svg";

export class Series {
  constructor() {
    this.values = [];
  }

  push(value) {
    this.values.push(value);
    if (this.values.length > SPAN) this.values.shift();
  }

  get last() {
    return this.values.length ? this.values[this.values.length - 1] : null;
  }
}

// An element showing `series`, labelled with format(last value); kind is "cpu" or "mem"
// (for the colour and the test's selectors). Call draw() again after pushes.
export function sparkline(kind, series, format) {
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const line = document.createElementNS(NS, "polyline");
  svg.append(line);
  const label = h("span", { class: "value" });
  const el = h("span", { class: `spark ${kind}`, title: kind === "cpu" ? "CPU %" : "memory (RSS)" },
    svg, label);
  el.draw = () => {
    const values = series.values;
    // CPU from 0 to at least 5%; memory from 0 to a quarter above its peak (a steady RSS
    // is a flat line, not a wall at the top)
    const top = kind === "cpu" ? Math.max(5, ...values) : Math.max(1, ...values) * 1.25;
    // the x axis spans the samples there are (at least a minute), up to SPAN
    const slots = Math.max(60, values.length);
    const step = W / (slots - 1);
    const offset = (slots - values.length) * step;
    line.setAttribute("points", values.map((v, i) =>
      `${(offset + i * step).toFixed(1)},${(H - 1 - (v / top) * (H - 2)).toFixed(1)}`).join(" "));
    label.textContent = series.last === null ? "–" : format(series.last);
  };
  el.draw();
  return el;
}
