// One card per job: its state, restarts, uptime, sparklines, processes and buttons. A card
// is rebuilt from the job's info whenever an event says the job changed; sparklines and
// uptimes are redrawn in place (stats come every second, and a rebuild would lose focus).

import { bytes, duration, h } from "./dom.js";
import { sparkline } from "./spark.js";

export const SIGNALS = ["HUP", "INT", "TERM", "KILL", "USR1", "USR2", "QUIT", "CONT", "STOP", "WINCH"];
const EXITS_SHOWN = 5;

// [css class, text] for a job's state, as the words: running n/m, starting, ready,
// failing with the reason, flapping, failed, exited with codes, stopped.
export function jobState(job) {
  const info = job.info;
  const n = info.numprocesses;
  const r = info.running;
  switch (info.state) {
    case "running":
      // with a ready check (info.checked): starting until every process passed it, then ready
      if (info.checked && typeof info.ready === "number") {
        if (n > 0 && info.ready >= n) return ["ready", `ready ${info.ready}/${n}`];
        return ["starting", `starting ${info.ready}/${n} ready` + (info.reason ? `: ${info.reason}` : "")];
      }
      return r >= n ? ["running", `running ${r}/${n}`] : ["starting", `starting ${r}/${n}`];
    case "failing":
      return ["failing", `failing: ${info.last_error || "cannot spawn its processes"}`];
    case "flapping":
      return ["flapping", `flapping (retry ${info.flapping_retries})`];
    case "failed":
      return ["failed", `failed: ${info.stop_reason || info.last_error || "gave up"}`];
    case "stopped": {
      const codes = exitCodes(job);
      return codes ? ["exited", `exited (${codes})`] : ["stopped", "stopped"];
    }
    default:
      return [info.state, info.state];
  }
}

function exitText(exit) {
  return exit.term_signal ? `sig ${exit.term_signal}` : `${exit.exit_code}`;
}

function exitCodes(job) {
  return job.exits.slice(-EXITS_SHOWN).map(exitText).join(", ");
}

// The oldest running process's uptime: how long the job has been up without a full stop.
export function jobStarted(info) {
  const starts = info.processes.filter((p) => p.state === "running" && p.started).map((p) => p.started);
  return starts.length ? Math.min(...starts) : null;
}

const cpu = (v) => `${v.toFixed(1)}%`;

// The card for `job` ({info, exits, restarts, cpu, mem, procs, signal}); `act` holds the
// page's actions: act.state(job, "start"), act.scale(job, +1), act.signal(job, sig, pid),
// act.unload(job), act.logs(job, pid), act.stopProcess(pid).
export function renderJob(job, act) {
  const info = job.info;
  const [stateClass, stateText] = jobState(job);
  const restarts = typeof info.restarts === "number" ? info.restarts : job.restarts;
  const signal = h("select", { class: "signal", title: "signal", onchange: (e) => { job.signal = e.target.value; } },
    SIGNALS.map((s) => h("option", { value: s, selected: s === job.signal }, s)));
  const running = info.processes.filter((p) => p.state !== "exited");
  const card = h("article", { class: `job ${stateClass}`, dataset: { job: info.job } },
    h("header", {},
      h("h3", { class: "name", title: info.config && info.config.cmd }, info.name),
      h("span", { class: `state ${stateClass}`, title: info.last_error || "" }, stateText),
      h("span", { class: "meta" },
        h("span", { title: "restarts (after a process died by itself)" }, "restarts ",
          h("b", { class: "restarts" }, restarts)),
        h("span", { title: "uptime of the oldest running process" }, "up ",
          h("b", { class: "uptime", dataset: { started: jobStarted(info) || "" } }, "–"))),
      h("span", { class: "sparks" }, job.sparks.cpu, job.sparks.mem)),
    info.last_error && info.state !== "failing"
      ? h("p", { class: "last-error" }, `last error: ${info.last_error}`) : null,
    job.exits.length ? h("p", { class: "exits" }, `last exits: ${exitCodes(job)}`) : null,
    h("div", { class: "actions" },
      h("button", { class: "start", onclick: () => act.state(job, "start"), disabled: info.active }, "start"),
      h("button", { class: "stop", onclick: () => act.state(job, "stop"), disabled: !info.active }, "stop"),
      h("button", { class: "restart", onclick: () => act.state(job, "restart") }, "restart"),
      h("button", { class: "roll", title: "rolling restart: one new process ready, then one old stopped",
        onclick: () => act.roll(job), disabled: !info.active }, "roll"),
      h("span", { class: "scale" },
        h("button", { class: "scale-down", title: "one process less", onclick: () => act.scale(job, -1),
          disabled: info.numprocesses < 1 }, "−"),
        h("b", { class: "count", title: "processes wanted" }, info.numprocesses),
        h("button", { class: "scale-up", title: "one process more", onclick: () => act.scale(job, 1) }, "+")),
      h("span", { class: "signal-group" }, signal,
        h("button", { class: "send-signal", onclick: () => act.signal(job, job.signal) }, "signal")),
      h("button", { class: "logs", onclick: () => act.logs(job, null) }, "logs"),
      h("button", { class: "unload danger", onclick: () => act.unload(job) }, "unload")),
    running.length ? h("table", { class: "procs" },
      h("tbody", {}, running.map((p) => processRow(job, p, act)))) : null);
  return card;
}

function processRow(job, proc, act) {
  const sparks = job.procSparks(proc.pid);
  return h("tr", { class: `proc ${proc.state}`, dataset: { pid: proc.pid } },
    h("td", { class: "pid", title: `os pid ${proc.os_pid}` }, `#${proc.pid}`),
    h("td", { class: "pstate" }, proc.state + (proc.committed ? " (one-shot)" : "")),
    h("td", {}, "up ", h("b", { class: "uptime", dataset: { started: proc.started || "" } }, "–")),
    h("td", {}, sparks.cpu), h("td", {}, sparks.mem),
    h("td", { class: "pactions" }, h("span", {},
      h("button", { class: "logs", onclick: () => act.logs(job, proc.pid) }, "logs"),
      proc.redirect_input ? h("button", { class: "console", onclick: () => act.logs(job, proc.pid, true) },
        "console") : null,
      h("button", { class: "send-signal", title: "send the job's selected signal to this process",
        onclick: () => act.signal(job, job.signal, proc.pid) }, "signal"),
      h("button", { class: "stop-process", title: "stop this process (the job replaces it)",
        onclick: () => act.stopProcess(proc.pid) }, "stop"))));
}

// Sets every .uptime under `root` from its data-started (seconds since the epoch).
export function tickUptimes(root) {
  const now = Date.now() / 1000;
  for (const el of root.querySelectorAll(".uptime")) {
    const started = parseFloat(el.dataset.started);
    el.textContent = isFinite(started) ? duration(now - started) : "–";
  }
}

export function makeSparks(cpuSeries, memSeries) {
  return { cpu: sparkline("cpu", cpuSeries, cpu), mem: sparkline("mem", memSeries, bytes) };
}
