// The fleet view (docs/fleet.md, docs/dashboard.md): when this gateway has a cluster, every
// registered node, up or down, with the jobs it runs and their states, read from
// /cluster/nodes and /cluster/jobs every POLL ms while the view is shown; "tail" opens the log
// view on a job of any node through this gateway's relay (/cluster/nodes/<node>/...).
// The gateway's fleet routes are plain GETs without a feed of their own, so the view polls.

import { ApiError, get } from "./api.js";
import { attempt, duration, h } from "./dom.js";

const POLL = 2000;

export class FleetView {
  // `el`: the view's container; `tab`: its button in the header; `onTail(node, info, open)`:
  // open (`open` true) a log view on a job of `node`, its info read through the relay, or
  // give the open one its info again (new processes); false when that view was closed.
  constructor(el, tab, onTail) {
    Object.assign(this, { el, tab, onTail });
    this.tailing = null; // the job whose log view is open: {node, path}
    this.configured = null; // unknown until probe(): then true, or false (no fleet here)
    this.reason = "";
    this.jobs = null; // the last answer of /cluster/jobs
    this.known = new Map(); // node name -> its last document, kept once it left the registry
    this.timer = null;
    this.shown = false;
  }

  // Is there a fleet behind this gateway? (A 404 of /cluster/nodes says there is none.)
  async probe() {
    try {
      this.apply(await get("/cluster/nodes"), null);
      this.configured = true;
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        this.configured = false;
        this.reason = err.message;
      } else this.configured = true; // a fleet whose registry does not answer now: say so
    }
    this.tab.hidden = !this.configured;
    return this.configured;
  }

  show() {
    this.shown = true;
    this.el.hidden = false;
    if (this.configured === false) {
      this.el.replaceChildren(h("p", { class: "no-fleet" },
        "No fleet configured: this gateway has no cluster (start zsup-http with --cluster URL, ",
        "or give zsupd's config a [zsup] registry). ", h("span", { class: "muted" }, this.reason)));
      return;
    }
    this.poll();
  }

  hide() {
    this.shown = false;
    this.el.hidden = true;
    clearTimeout(this.timer);
    this.timer = null;
  }

  // One read of the fleet (and of the tailed job's info), then the next in POLL ms.
  async poll() {
    if (this.busy) return;
    this.busy = true;
    clearTimeout(this.timer);
    try {
      let nodes = null;
      let jobs = null;
      let error = null;
      try {
        [nodes, jobs] = await Promise.all([get("/cluster/nodes"), get("/cluster/jobs")]);
      } catch (err) {
        error = err;
      }
      if (!this.shown) return;
      this.apply(nodes, jobs, error);
      if (this.tailing) {
        const { node, path } = this.tailing;
        try {
          if (!this.onTail(node, await get(path), false)) this.tailing = null;
        } catch {
          // the node or the job went: the log view says its stream dropped; asked again next time
        }
      }
    } finally {
      this.busy = false;
      if (this.shown) this.timer = setTimeout(() => this.poll(), POLL);
    }
  }

  // Remembers what the registry says; renders when the view is shown.
  apply(nodes, jobs, error = null) {
    if (nodes) {
      const now = new Set(nodes.nodes.map((n) => n.name || n.node_id));
      for (const node of nodes.nodes) this.known.set(node.name || node.node_id, { doc: node, up: true });
      for (const [name, entry] of this.known) if (!now.has(name)) entry.up = false;
    }
    if (jobs) this.jobs = jobs; // after a failed read, the last known states stay on screen
    if (this.shown) this.render(this.jobs ? this.jobs.jobs : {}, this.jobs ? this.jobs.unreachable || {} : {}, error);
  }

  render(jobs, unreachable, error) {
    const byNode = new Map(); // node -> [{job, state, running, numprocesses} | {job, error}]
    for (const [job, places] of Object.entries(jobs)) {
      for (const place of places) {
        if (!byNode.has(place.node)) byNode.set(place.node, []);
        byNode.get(place.node).push({ job, ...place });
      }
    }
    const cards = [...this.known.keys()].sort().map((name) =>
      this.nodeCard(name, this.known.get(name), byNode.get(name) || [], unreachable[name]));
    const up = [...this.known].filter(([name, e]) => e.up && !unreachable[name]).length;
    this.el.replaceChildren(
      h("header", { class: "fleet-head" }, h("h2", {}, "fleet"),
        h("span", { class: "muted" }, `${up} of ${this.known.size} nodes up; refreshed every ${POLL / 1000} s`),
        error ? h("span", { class: "fleet-error" }, `cannot read the fleet: ${error.message}`) : null),
      ...(cards.length ? cards : [h("p", { class: "muted" }, "No node is registered.")]));
  }

  nodeCard(name, { doc, up }, rows, failure) {
    const unreachable = up && failure;
    const state = !up ? "down" : unreachable ? "unreachable" : doc.leaving ? "leaving" : "up";
    const detail = !up ? "gone from the registry" : unreachable ? failure.message : "";
    // a node that does not answer (or left) still shows the jobs the registry listed for it
    const list = up && !unreachable ? rows : (doc.jobs || []).map((job) => ({ job, node: name, state: null }));
    const since = doc.registered_at ? duration(Date.now() / 1000 - doc.registered_at) : "–";
    return h("article", { class: `node ${state}`, dataset: { node: name, state } },
      h("header", {}, h("h3", {}, name), h("span", { class: `state ${state === "up" ? "running" : "failed"}` }, state),
        h("span", { class: "meta" }, doc.urls && doc.urls.http ? doc.urls.http : "no gateway",
          ` · zsup ${doc.version || "?"} · registered ${since} ago`),
        detail ? h("span", { class: "last-error" }, detail) : null),
      list.length ? h("table", { class: "procs node-jobs" }, list.map((row) => this.jobRow(name, row, up && !unreachable)))
        : h("p", { class: "muted" }, "no job"));
  }

  jobRow(node, row, reachable) {
    const count = row.numprocesses !== undefined ? `${row.running}/${row.numprocesses}` : "";
    const state = row.state || "unknown";
    const canTail = reachable && node && row.state;
    return h("tr", { dataset: { job: row.job, state } },
      h("td", {}, h("b", {}, row.job)), h("td", {}, h("span", { class: `state ${state}` }, state)), h("td", {}, count),
      h("td", { class: "pactions" }, h("span", {}, h("button", {
        class: "tail", disabled: !canTail, title: `tail ${row.job} on ${node} through this gateway`,
        onclick: () => this.tail(node, row.job),
      }, "tail"))));
  }

  async tail(node, job) {
    const dot = job.indexOf(".");
    const path = `/cluster/nodes/${encodeURIComponent(node)}/jobs/${encodeURIComponent(job.slice(0, dot))}/` +
      encodeURIComponent(job.slice(dot + 1));
    const info = await attempt(`reading ${job} on ${node}`, () => get(path));
    if (!info) return;
    this.tailing = { node, path };
    this.onTail(node, info, true);
  }
}
