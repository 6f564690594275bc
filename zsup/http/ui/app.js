// The dashboard: jobs grouped by session, kept live by the events websocket (/channel).
// The job list is read once per (re)connection; after that an event about a job re-reads
// that one job's info, and stats events feed the sparklines. Nothing polls.

import { ApiError, del, get, hasCredentials, jobPath, liveEvents, post, setCredentials } from "./api.js";
import { attempt, h, showError } from "./dom.js";
import { FleetView } from "./fleet.js";
import { makeSparks, renderJob, tickUptimes } from "./jobs.js";
import { LogView } from "./logview.js";
import { Series } from "./spark.js";

const jobs = new Map(); // "session.name" -> Job
const sessionsEl = document.getElementById("sessions");
const connEl = document.getElementById("conn");
let events = null;
let logView = null;

class Job {
  constructor(info) {
    this.info = info;
    this.exits = []; // the last exits seen while the page is open: {pid, exit_code, term_signal}
    this.restarts = 0; // processes that died by themselves and were replaced, seen live
    this.signal = "HUP";
    this.cpu = new Series();
    this.mem = new Series();
    this.sparks = makeSparks(this.cpu, this.mem);
    this.procs = new Map(); // pid -> {cpu, mem, sparks, last: {cpu, rss}}
    this.el = null;
    this.refreshing = null;
  }

  procSparks(pid) {
    let p = this.procs.get(pid);
    if (!p) {
      p = { cpu: new Series(), mem: new Series(), last: null };
      p.sparks = makeSparks(p.cpu, p.mem);
      this.procs.set(pid, p);
    }
    return p.sparks;
  }
}

// -- the list ---------------------------------------------------------------------------------

function sessionEl(session) {
  let el = sessionsEl.querySelector(`section.session[data-session="${CSS.escape(session)}"]`);
  if (!el) {
    el = h("section", { class: "session", dataset: { session } }, h("h2", {}, session), h("div", { class: "jobs" }));
    const after = [...sessionsEl.children].find((s) => s.dataset.session > session);
    sessionsEl.insertBefore(el, after || null);
  }
  return el.querySelector(".jobs");
}

function render(job) {
  const card = renderJob(job, actions);
  if (job.el && job.el.isConnected) job.el.replaceWith(card);
  else {
    const list = sessionEl(job.info.session);
    const after = [...list.children].find((c) => c.dataset.job > job.info.job);
    list.insertBefore(card, after || null);
  }
  job.el = card;
  const live = new Set(job.info.processes.map((p) => p.pid));
  for (const pid of job.procs.keys()) if (!live.has(pid)) job.procs.delete(pid);
  tickUptimes(card);
  if (logView && !logView.node && logView.job === job.info.job) logView.update(job.info);
  showEmpty();
}

// "No job is loaded", in the jobs view only.
function showEmpty() {
  document.getElementById("empty").hidden = jobs.size > 0 || sessionsEl.hidden;
}

function forget(name) {
  const job = jobs.get(name);
  if (!job) return;
  jobs.delete(name);
  const list = job.el && job.el.parentElement;
  if (job.el) job.el.remove();
  if (list && !list.children.length) list.parentElement.remove();
  if (logView && !logView.node && logView.job === name) closeLogs();
  showEmpty();
}

// Re-reads one job's info; events that come while a read is on its way fold into one more.
function refresh(name) {
  let job = jobs.get(name);
  if (job && job.refreshing) {
    job.again = true;
    return job.refreshing;
  }
  const promise = get(jobPath(name)).then((info) => {
    job = jobs.get(name);
    if (job) job.info = info;
    else jobs.set(name, (job = new Job(info)));
    render(job);
  }, (err) => {
    if (err instanceof ApiError && err.status === 404) forget(name);
    else if (err instanceof ApiError && err.status === 503) awaitDaemon(err.message);
    else showError(`reading job ${name}: ${err.message}`);
  }).finally(() => {
    const j = jobs.get(name);
    if (!j) return;
    j.refreshing = null;
    if (j.again) {
      j.again = false;
      refresh(name);
    }
  });
  if (job) job.refreshing = promise;
  return promise;
}

// The whole list, after each (re)connection of the events socket (events missed while
// disconnected are unknown, so everything is read again once).
let syncing = null;
function resync() {
  // several /watch streams may (re)open at once: one read of the list, then one more
  if (syncing) {
    syncing.again = true;
    return;
  }
  syncing = { again: false };
  readAll().finally(() => {
    const again = syncing.again;
    syncing = null;
    if (again) resync();
  });
}

async function readAll() {
  let names;
  try {
    names = (await get("/jobs")).jobs;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return askLogin(err.message);
    if (err instanceof ApiError && err.status === 503) return awaitDaemon(err.message);
    showError(`reading the jobs: ${err.message}`);
    return;
  }
  for (const name of [...jobs.keys()]) if (!names.includes(name)) forget(name);
  await Promise.all(names.map(refresh));
  showEmpty();
}

// zsupd went away (its sys.stop event, or the gateway's 503) while the gateway stays up:
// what the page shows is stale until it is back. Its own events about coming back may be
// published before the gateway's subscription reconnects, so the page asks /ping (with a
// back-off) until zsupd answers, then reads everything again.
let waiting = false;
async function awaitDaemon(reason) {
  if (waiting) return;
  waiting = true;
  connEl.textContent = `zsupd unavailable: ${reason}`;
  connEl.className = "conn down";
  let delay = 300;
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, delay));
    try {
      await get("/ping");
      break;
    } catch {
      delay = Math.min(delay * 2, 5000);
    }
  }
  waiting = false;
  setConnected(true, "");
  resync();
}

// -- events -------------------------------------------------------------------------------------

function onEvent(text) {
  let event;
  try {
    event = JSON.parse(text);
  } catch {
    return;
  }
  const { topic, msg } = event;
  const parts = topic.split(".");
  if (topic === "sys.stop") return void awaitDaemon("zsupd stopped");
  if (parts[0] === "sys") return void resync();
  const name = `${parts[1]}.${parts[2]}`;
  if (parts[0] === "stats") return void onStats(name, Number(parts[3]), msg);
  const what = parts[parts.length - 1];
  if (parts[0] === "job" && what === "delete") return void forget(name);
  const job = jobs.get(name);
  if (job && parts[0] === "proc" && what === "exit") {
    job.exits.push({ pid: msg.pid, exit_code: msg.exit_code, term_signal: msg.term_signal });
    if (job.exits.length > 20) job.exits.shift();
    if (!msg.reason && !msg.committed && job.info.active) job.restarts += 1;
  }
  if (job && parts[0] === "job" && what === "start") job.exits = [];
  refresh(name);
}

function onStats(name, pid, msg) {
  const job = jobs.get(name);
  if (!job) return;
  job.procSparks(pid);
  const p = job.procs.get(pid);
  p.last = { cpu: msg.cpu || 0, rss: msg.rss || 0 };
  p.cpu.push(p.last.cpu);
  p.mem.push(p.last.rss);
  p.sparks.cpu.draw();
  p.sparks.mem.draw();
}

// Once a second: the job-level series are the sum over its processes' latest samples, and
// uptimes move on. Local work only; the server is not asked anything.
function tick() {
  for (const job of jobs.values()) {
    let cpu = 0;
    let rss = 0;
    let any = false;
    for (const p of job.procs.values()) {
      if (!p.last) continue;
      any = true;
      cpu += p.last.cpu;
      rss += p.last.rss;
    }
    if (!any && !job.info.running) continue;
    job.cpu.push(cpu);
    job.mem.push(rss);
    job.sparks.cpu.draw();
    job.sparks.mem.draw();
  }
  tickUptimes(sessionsEl);
}

function setConnected(open, detail) {
  connEl.textContent = open ? "live" : `disconnected: ${detail}`;
  connEl.className = `conn ${open ? "up" : "down"}`;
}

// -- actions ------------------------------------------------------------------------------------

const actions = {
  state: (job, action) => attempt(`${action} ${job.info.job}`,
    () => post(`${jobPath(job.info.job)}/state`, action)).then(() => refresh(job.info.job)),
  // one new process, ready, then one old one stopped, and so on (docs/lifecycle.md)
  roll: (job) => attempt(`rolling restart of ${job.info.job}`,
    () => post("/bus/rolling_restart", { name: job.info.job })).then(() => refresh(job.info.job)),
  scale: (job, by) => attempt(`scale ${job.info.job}`,
    () => post(`${jobPath(job.info.job)}/numprocesses`, { scale: by })).then(() => refresh(job.info.job)),
  signal: (job, sig, pid) => attempt(`signal ${sig} to ${pid ? `process ${pid}` : job.info.job}`,
    () => post(pid ? `/processes/${pid}/signal` : `${jobPath(job.info.job)}/signal`, { signal: sig })),
  stopProcess: (pid) => attempt(`stop process ${pid}`, () => del(`/processes/${pid}`)),
  unload: (job) => {
    if (!confirm(`Unload ${job.info.job}? Its processes stop and the job is forgotten.`)) return;
    attempt(`unload ${job.info.job}`, () => del(jobPath(job.info.job))).then((r) => r && forget(job.info.job));
  },
  logs: (job, pid, withConsole) => openLogs(job, pid, withConsole),
};

// -- views: this gateway's jobs (#jobs), or the fleet (#fleet: fleet.js) ---------------------------

const fleet = new FleetView(document.getElementById("fleet"), document.getElementById("tab-fleet"), tailRemote);

function showView() {
  const view = location.hash === "#fleet" ? "fleet" : "jobs";
  document.getElementById("tab-jobs").classList.toggle("current", view === "jobs");
  document.getElementById("tab-fleet").classList.toggle("current", view === "fleet");
  sessionsEl.hidden = view !== "jobs";
  showEmpty();
  if (view === "fleet") fleet.show();
  else fleet.hide();
}

// A job of another node, tailed through this gateway (fleet.js); `open` false: its info again.
function tailRemote(node, info, open) {
  if (!open) {
    if (!logView || logView.node !== node || logView.job !== info.job) return false;
    logView.update(info);
    return true;
  }
  if (logView) logView.close();
  logView = new LogView(document.getElementById("detail"), info, null, closeLogs, node);
  return true;
}

function openLogs(job, pid, focusConsole) {
  if (logView) logView.close();
  logView = new LogView(document.getElementById("detail"), job.info, pid, closeLogs);
  if (focusConsole) logView.focusConsole();
}

function closeLogs() {
  if (logView) logView.close();
  logView = null;
}

// -- loading a job --------------------------------------------------------------------------------

function setupLoadForm() {
  const dialog = document.getElementById("load-dialog");
  const form = dialog.querySelector("form");
  const error = dialog.querySelector(".form-error");
  document.getElementById("load-open").onclick = () => {
    error.textContent = "";
    dialog.showModal();
  };
  form.querySelector(".cancel").onclick = () => dialog.close();
  form.onsubmit = async (e) => {
    e.preventDefault();
    error.textContent = "";
    let body;
    try {
      body = JSON.parse(form.elements.job.value);
    } catch (err) {
      error.textContent = `not valid JSON: ${err.message}`;
      return;
    }
    const session = form.elements.session.value.trim() || "default";
    const start = form.elements.start.checked ? "true" : "false";
    try {
      const info = await post(`/jobs/${encodeURIComponent(session)}?start=${start}`, body);
      dialog.close();
      refresh(info.job);
    } catch (err) {
      error.textContent = err.message;
    }
  };
}

// -- login ------------------------------------------------------------------------------------------

function askLogin(reason) {
  const form = document.getElementById("login");
  form.hidden = false;
  document.getElementById("main").hidden = true;
  form.querySelector(".form-error").textContent = hasCredentials() ? `refused: ${reason}` : "";
  if (events) events.close();
  events = null;
}

function setupLogin() {
  const form = document.getElementById("login");
  form.onsubmit = (e) => {
    e.preventDefault();
    const { user, password, token } = form.elements;
    if (token.value) setCredentials({ kind: "token", token: token.value });
    else setCredentials({ kind: "basic", user: user.value, password: password.value });
    password.value = "";
    token.value = "";
    start();
  };
  document.getElementById("logout").onclick = () => {
    setCredentials(null);
    location.reload();
  };
}

// -- start ------------------------------------------------------------------------------------------

async function start() {
  try {
    await get("/ping");
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return askLogin(err.message);
    // zsupd down (503) or the gateway unreachable: the events socket retries until it is back
    showError(err.message);
  }
  document.getElementById("login").hidden = true;
  document.getElementById("main").hidden = false;
  document.getElementById("logout").hidden = !hasCredentials();
  events = liveEvents(["job.", "proc.", "stats.", "sys."], { onmessage: onEvent, onopen: resync, onstatus: setConnected });
  await fleet.probe();
  showView();
}

setupLogin();
setupLoadForm();
addEventListener("hashchange", showView);
setInterval(tick, 1000);
start();
