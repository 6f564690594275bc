// The log view of one job (or one of its processes): live output lines with their pid,
// stream label and seq, from the events websocket (io.<session>.<name>. topics); filters by
// process, label and text; pause/resume; older lines read from zsupd's ring buffer
// (read_output) when scrolled to the top. With a process that takes stdin, a console that
// writes to it over its own websocket (/wstreams/<pid>).
// With a `node` (the fleet view), the job is another node's, read through this gateway's relay
// (/cluster/nodes/<node>/...), which passes on GET requests only: events from the node's
// /watch, the ring's last lines from its /streams/<pid>/<label>?since=N; no console there,
// and no reading further back than the lines read when the view opened.

import { getText, liveEvents, post, postText, socketURL, socketsAuthenticate } from "./api.js";
import { attempt, h, showError } from "./dom.js";

const FIRST_LINES = 100; // read from the ring per stream when the view opens
const OLDER_LINES = 200; // per stream, each time the view is scrolled to the top
const MAX_LINES = 5000; // kept in the page; the oldest go first

export class LogView {
  constructor(container, info, pid, onclose, node = null) {
    this.container = container;
    this.node = node;
    this.base = node ? `/cluster/nodes/${encodeURIComponent(node)}` : "";
    this.job = info.job;
    this.info = info;
    this.lines = []; // in display order: {key, pid, label, seq, text, el}
    this.seen = new Set();
    this.streams = new Map(); // "pid/label" -> {pid, label, oldest}
    this.paused = false;
    this.pending = [];
    this.loadingOlder = false;
    this.console = null;
    this.build(pid, onclose);
    this.update(info);
    this.socket = liveEvents([`io.${info.job}.`], {
      onmessage: (text) => this.onEvent(text),
      onopen: () => this.loadRecent(), // after a reconnection too: fills what was missed
      onstatus: (open, detail) => {
        this.status.textContent = open ? "" : `disconnected: ${detail}`;
        this.status.dataset.state = open ? "open" : "closed";
      },
    }, this.base);
  }

  build(pid, onclose) {
    this.pidSelect = h("select", { class: "pid-filter", onchange: () => this.changedProcess() },
      h("option", { value: "" }, "all processes"));
    this.labelSelect = h("select", { class: "label-filter", onchange: () => this.applyFilter() },
      h("option", { value: "" }, "all streams"));
    this.filter = h("input", { class: "text-filter", type: "search", placeholder: "filter", oninput: () => this.applyFilter() });
    this.pauseButton = h("button", { class: "pause", onclick: () => this.togglePause() }, "pause");
    this.status = h("span", { class: "log-status" });
    this.log = h("div", { class: "log", onscroll: () => this.log.scrollTop < 20 && this.loadOlder() });
    this.consoleBox = h("div", { class: "console-box" });
    this.initialPid = pid;
    this.container.replaceChildren(
      h("header", {}, h("h3", {}, `output of ${this.job}${this.node ? ` on ${this.node}` : ""}`), this.status,
        h("button", { class: "close", title: "close", onclick: onclose }, "×")),
      h("div", { class: "log-tools" }, this.pidSelect, this.labelSelect, this.filter, this.pauseButton),
      this.log, this.consoleBox);
    this.container.hidden = false;
  }

  // The job's info changed: new processes in the picker, new streams to follow.
  update(info) {
    this.info = info;
    const chosen = this.initialPid ? String(this.initialPid) : this.pidSelect.value;
    this.initialPid = null;
    const labels = new Set([...this.labelSelect.options].map((o) => o.value));
    for (const p of info.processes) {
      if (![...this.pidSelect.options].some((o) => o.value === String(p.pid))) {
        this.pidSelect.append(h("option", { value: p.pid }, `#${p.pid}${p.redirect_input ? " (stdin)" : ""}`));
      }
      for (const label of p.labels) {
        const key = `${p.pid}/${label}`;
        if (!this.streams.has(key)) this.streams.set(key, { pid: p.pid, label, oldest: null, last: p.last_seq[label] || 0 });
        if (!labels.has(label)) {
          this.labelSelect.append(h("option", { value: label }, label));
          labels.add(label);
        }
      }
    }
    if (chosen !== this.pidSelect.value) {
      this.pidSelect.value = chosen;
      this.changedProcess();
    }
  }

  onEvent(text) {
    const event = JSON.parse(text);
    const { pid, label, seq } = event.msg;
    const parts = (event.data || "").split("\n");
    if (parts.length > 1 && parts[parts.length - 1] === "") parts.pop();
    const lines = parts.map((text, i) => ({ pid, label, seq: seq + i, text }));
    if (this.consoleSink && pid === this.consolePid && label === "stdout") lines.forEach((l) => this.consoleSink(l.text));
    if (this.paused) {
      this.pending.push(...lines);
      this.pauseButton.textContent = `resume (${this.pending.length} new)`;
    } else this.append(lines);
  }

  append(lines) {
    const atBottom = this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 30;
    const fresh = lines.filter((l) => this.remember(l));
    this.log.append(...fresh.map((l) => this.element(l)));
    this.lines.push(...fresh);
    while (this.lines.length > MAX_LINES) this.lines.shift().el.remove();
    if (atBottom) this.log.scrollTop = this.log.scrollHeight;
  }

  prepend(lines) {
    const fresh = lines.filter((l) => this.remember(l));
    if (!fresh.length) return 0;
    const before = this.log.scrollHeight;
    this.log.prepend(...fresh.map((l) => this.element(l)));
    this.lines.unshift(...fresh);
    this.log.scrollTop += this.log.scrollHeight - before; // the lines in view stay put
    return fresh.length;
  }

  remember(line) {
    line.key = `${line.pid}/${line.label}/${line.seq}`;
    if (this.seen.has(line.key)) return false;
    this.seen.add(line.key);
    const stream = this.streams.get(`${line.pid}/${line.label}`);
    if (stream && (stream.oldest === null || line.seq < stream.oldest)) stream.oldest = line.seq;
    else if (!stream) this.streams.set(`${line.pid}/${line.label}`, { pid: line.pid, label: line.label, oldest: line.seq });
    return true;
  }

  element(line) {
    line.el = h("div", { class: `line ${line.label}`, dataset: { pid: line.pid, label: line.label, seq: line.seq } },
      h("span", { class: "lpid" }, `#${line.pid}`), h("span", { class: "llabel" }, line.label),
      h("span", { class: "lseq" }, line.seq), h("span", { class: "ltext" }, line.text));
    line.el.hidden = !this.visible(line);
    return line.el;
  }

  visible(line) {
    const pid = this.pidSelect.value;
    const label = this.labelSelect.value;
    const text = this.filter.value;
    return (!pid || String(line.pid) === pid) && (!label || line.label === label) &&
      (!text || line.text.includes(text));
  }

  applyFilter() {
    for (const line of this.lines) line.el.hidden = !this.visible(line);
  }

  togglePause() {
    this.paused = !this.paused;
    this.pauseButton.textContent = this.paused ? "resume" : "pause";
    if (!this.paused) {
      const pending = this.pending;
      this.pending = [];
      this.append(pending);
    }
  }

  // Lines from zsupd's ring buffer: `since` is the last seq not wanted.
  async readRing(stream, since, limit) {
    if (this.base) { // the lines as text, the first one numbered since + 1 (the ring holds it)
      const text = await getText(`${this.base}/streams/${stream.pid}/${encodeURIComponent(stream.label)}?since=${since}`);
      const parts = text.split("\n");
      if (parts[parts.length - 1] === "") parts.pop();
      const lines = parts.map((t, i) => ({ pid: stream.pid, label: stream.label, seq: since + 1 + i, text: t }));
      return limit ? lines.slice(-limit) : lines;
    }
    const answer = await post("/bus/read_output", { pid: stream.pid, label: stream.label, since, limit });
    return answer.result.lines.map((l) => ({ pid: stream.pid, label: stream.label, seq: l.seq,
      text: l.data.replace(/\n$/, "") }));
  }

  async loadRecent() {
    for (const stream of this.streams.values()) {
      const since = Math.max(0, (stream.oldest === null ? stream.last : stream.oldest - 1) - FIRST_LINES);
      const lines = await attempt(`reading the output of process ${stream.pid}`,
        () => this.readRing(stream, since, FIRST_LINES * 2));
      if (!lines) continue;
      const older = lines.filter((l) => stream.oldest === null || l.seq < stream.oldest);
      const newer = lines.filter((l) => stream.oldest !== null && l.seq >= stream.oldest);
      this.prepend(older);
      this.append(newer);
    }
    this.log.scrollTop = this.log.scrollHeight;
    this.log.dataset.loaded = "true"; // the ring's lines are in (the tests wait for this)
  }

  async loadOlder() {
    if (this.loadingOlder || this.base) return;
    this.loadingOlder = true;
    try {
      const pid = this.pidSelect.value;
      for (const stream of this.streams.values()) {
        if ((pid && String(stream.pid) !== pid) || stream.oldest === null || stream.oldest <= 1) continue;
        const oldest = stream.oldest;
        // no limit: read_output's limit keeps the newest lines, and these are the oldest wanted
        const lines = await this.readRing(stream, Math.max(0, oldest - 1 - OLDER_LINES));
        this.prepend(lines.filter((l) => l.seq < oldest));
      }
    } catch (err) {
      showError(`reading older output: ${err.message}`);
    } finally {
      this.loadingOlder = false;
    }
  }

  changedProcess() {
    this.applyFilter();
    this.closeConsole();
    const pid = Number(this.pidSelect.value);
    const proc = this.info.processes.find((p) => p.pid === pid);
    if (proc && proc.redirect_input && !this.base) this.openConsole(pid);
  }

  // -- the console: stdin over /wstreams/<pid>; what comes back is the process's stdout.
  // With a password (no websocket can carry it) it writes with POST /streams/<pid>/stdin
  // and shows the process's stdout lines from the log view's events instead.

  openConsole(pid) {
    const output = h("pre", { class: "console-output" });
    const input = h("input", { class: "console-input", placeholder: `stdin of #${pid}`, autocomplete: "off" });
    const say = (text, cls) => {
      output.append(h("div", { class: cls }, text));
      output.scrollTop = output.scrollHeight;
    };
    this.consoleBox.replaceChildren(h("h4", {}, `console of #${pid}`), output);
    this.consolePid = pid;
    if (!socketsAuthenticate()) {
      this.consoleSink = (text) => say(text, "console-line");
      this.consoleBox.append(h("form", { class: "console", onsubmit: (e) => {
        e.preventDefault();
        const text = input.value;
        input.value = "";
        say(`> ${text}`, "console-sent");
        attempt(`writing to process ${pid}`, () => postText(`/streams/${pid}/stdin`, `${text}\n`));
      } }, input, h("button", { type: "submit" }, "send")));
      this.consoleInput = input;
      this.consoleBox.dataset.state = "open";
      return;
    }
    const ws = new WebSocket(socketURL(`/wstreams/${pid}`));
    ws.onmessage = (e) => {
      if (typeof e.data !== "string") return say("(binary frame)", "console-note");
      try {
        const frame = JSON.parse(e.data);
        if (frame && frame.error) return say(`error: ${frame.error.message}`, "console-error");
      } catch { /* a plain output line */ }
      say(e.data.replace(/\n$/, ""), "console-line");
    };
    ws.onopen = () => { this.consoleBox.dataset.state = "open"; };
    ws.onclose = () => {
      this.consoleBox.dataset.state = "closed";
      say("(console closed)", "console-note");
    };
    const form = h("form", { class: "console", onsubmit: (e) => {
      e.preventDefault();
      if (ws.readyState !== WebSocket.OPEN) return say("(not connected)", "console-error");
      ws.send(`${input.value}\n`);
      say(`> ${input.value}`, "console-sent");
      input.value = "";
    } }, input, h("button", { type: "submit" }, "send"));
    this.console = ws;
    this.consoleBox.append(form);
    this.consoleInput = input;
  }

  focusConsole() {
    if (this.consoleInput) this.consoleInput.focus();
  }

  closeConsole() {
    if (this.console) this.console.close();
    this.console = null;
    this.consoleSink = null;
    this.consoleInput = null;
    this.consoleBox.replaceChildren();
    delete this.consoleBox.dataset.state;
  }

  close() {
    this.socket.close();
    this.closeConsole();
    this.container.hidden = true;
    this.container.replaceChildren();
  }
}
