// Talking to the gateway: credentials, JSON requests with readable errors, websockets that
// reconnect. Every other module goes through here; nothing else knows about auth.

const STORE = "zsup-dashboard-auth";

// {kind: "basic", user, password} or {kind: "token", token}, or null (no auth configured).
// Kept in sessionStorage: gone when the tab closes, never in a cookie or the URL bar.
let credentials = JSON.parse(sessionStorage.getItem(STORE) || "null");

// ?access_token=... in the page's own URL logs in at once (for links and the test); it is
// taken out of the address bar so it does not stay in the history.
{
  const url = new URL(location.href);
  const token = url.searchParams.get("access_token");
  if (token) {
    credentials = { kind: "token", token };
    sessionStorage.setItem(STORE, JSON.stringify(credentials));
    url.searchParams.delete("access_token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
}

export function setCredentials(value) {
  credentials = value;
  if (value) sessionStorage.setItem(STORE, JSON.stringify(value));
  else sessionStorage.removeItem(STORE);
}

export function hasCredentials() {
  return credentials !== null;
}

function authorization() {
  if (!credentials) return {};
  if (credentials.kind === "token") return { Authorization: `Bearer ${credentials.token}` };
  const raw = new TextEncoder().encode(`${credentials.user}:${credentials.password}`);
  return { Authorization: `Basic ${btoa(String.fromCharCode(...raw))}` };
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status; // 0: the gateway did not answer at all
    this.code = code;
  }
}

// One request; resolves to the JSON answer, rejects with an ApiError whose message is the
// gateway's own ({"error": {"code", "message"}}), or a sentence when there is none.
// `raw`: send `body` as text, as given (stdin), instead of as JSON.
export async function request(method, path, body, raw = false) {
  // credentials "omit": a 401 with a Basic challenge then never opens the browser's own
  // password prompt (the page has its login form); the Authorization header still goes.
  const init = { method, headers: authorization(), credentials: "omit" };
  if (body !== undefined) {
    init.headers["Content-Type"] = raw ? "text/plain; charset=utf-8" : "application/json";
    init.body = raw ? body : JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, "unavailable", `the gateway does not answer (${err.message})`);
  }
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const error = data && data.error;
    const message = error && error.message ? error.message : (text.trim() || resp.statusText);
    throw new ApiError(resp.status, (error && error.code) || "error", `${resp.status}: ${message}`);
  }
  return data;
}

export const get = (path) => request("GET", path);
// A GET whose answer is plain text (an output stream's lines); errors as request's.
export async function getText(path) {
  let resp;
  try {
    resp = await fetch(path, { headers: authorization(), credentials: "omit" });
  } catch (err) {
    throw new ApiError(0, "unavailable", `the gateway does not answer (${err.message})`);
  }
  const text = await resp.text();
  if (resp.ok) return text;
  let error = null;
  try {
    error = JSON.parse(text).error;
  } catch {
    error = null;
  }
  throw new ApiError(resp.status, (error && error.code) || "error",
    `${resp.status}: ${(error && error.message) || text.trim() || resp.statusText}`);
}
export const post = (path, body) => request("POST", path, body);
export const del = (path) => request("DELETE", path);
export const postText = (path, text) => request("POST", path, text, true);

// Whether websockets can carry the credentials (a token can, as ?access_token=).
export const socketsAuthenticate = () => !credentials || credentials.kind === "token";

export const jobPath = (job) => {
  const dot = job.indexOf(".");
  return `/jobs/${encodeURIComponent(job.slice(0, dot))}/${encodeURIComponent(job.slice(dot + 1))}`;
};

// A ws:// URL for a gateway path. Browsers cannot put headers on a WebSocket: a token goes as
// ?access_token= (the gateway strips it before anything logs it).
export function socketURL(path, params = []) {
  const url = new URL(path, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  for (const [name, value] of params) url.searchParams.append(name, value);
  if (credentials && credentials.kind === "token") url.searchParams.set("access_token", credentials.token);
  return url.href;
}

// Live bus events matching `patterns`, one JSON text per event ({"topic", "msg", "data"}),
// with the handlers of LiveSocket. Over the events websocket (/channel) when it can
// authenticate; with a password, over /watch/<pattern> read with fetch (which can send the
// Authorization header): a browser sends a URL's user:password on a WebSocket only after a
// challenge, and the gateway answers a refused upgrade with a plain 401.
// `base`: another node's gateway through this one's relay (`/cluster/nodes/<node>`, the fleet
// view), which passes on GET requests only: always /watch there, never a websocket.
export function liveEvents(patterns, handlers, base = "") {
  if (!base && socketsAuthenticate()) return new LiveSocket("/channel", patterns.map((p) => ["pattern", p]), handlers);
  return new LiveWatch(patterns, handlers, base);
}

// Reads one /watch stream per pattern, each reconnecting like LiveSocket.
class LiveWatch {
  constructor(patterns, { onmessage, onopen, onstatus }, base = "") {
    Object.assign(this, { onmessage, onopen, onstatus, base });
    this.closed = false;
    this.abort = new AbortController();
    for (const pattern of patterns) this.follow(pattern);
  }

  async follow(pattern) {
    let delay = 500;
    while (!this.closed) {
      try {
        const resp = await fetch(`${this.base}/watch/${encodeURIComponent(pattern)}?heartbeat=20`,
          { headers: authorization(), credentials: "omit", signal: this.abort.signal });
        if (!resp.ok) throw new Error(`${resp.status}`);
        delay = 500;
        this.onstatus && this.onstatus(true, "");
        this.onopen && this.onopen();
        const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf("\n")) >= 0) {
            const line = buffer.slice(0, end);
            buffer = buffer.slice(end + 1);
            if (line.trim()) this.onmessage(line);
          }
        }
      } catch {
        // refused, dropped or aborted: retried below unless closed
      }
      if (this.closed) return;
      this.onstatus && this.onstatus(false, `reconnecting in ${(delay / 1000).toFixed(1)} s`);
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 5000);
    }
  }

  send() {
    return false;
  }

  close() {
    this.closed = true;
    this.abort.abort();
  }
}

// A websocket that comes back: after a close (the gateway or zsupd restarted, the network
// dropped) it reconnects with a back-off of 0.5 s doubling to 5 s. `onstatus(open, detail)`
// tells the page; `onopen` runs after every (re)connection, so the page can resync.
export class LiveSocket {
  constructor(path, params, { onmessage, onopen, onstatus }) {
    Object.assign(this, { path, params, onmessage, onopen, onstatus });
    this.delay = 500;
    this.closed = false;
    this.connect();
  }

  connect() {
    if (this.closed) return;
    const ws = (this.ws = new WebSocket(socketURL(this.path, this.params)));
    ws.onopen = () => {
      this.delay = 500;
      this.onstatus && this.onstatus(true, "");
      this.onopen && this.onopen();
    };
    ws.onmessage = (e) => this.onmessage(e.data);
    ws.onclose = () => {
      if (this.closed) return;
      this.onstatus && this.onstatus(false, `reconnecting in ${(this.delay / 1000).toFixed(1)} s`);
      this.timer = setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, 5000);
    };
  }

  send(text) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(text);
    return true;
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close();
  }
}
