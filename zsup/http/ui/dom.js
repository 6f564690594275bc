// Small DOM helpers: build elements, show errors, format numbers. No framework: the page is
// small enough that plain DOM calls stay readable, and nothing needs a build step.

// h("button", {class: "x", onclick: f}, "text", child...) -> an element.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

// An error as a readable line at the top of the page; it goes away by itself after a while.
export function showError(message) {
  const box = document.getElementById("errors");
  const item = h("div", { class: "error", role: "alert" }, h("span", {}, String(message)),
    h("button", { class: "close", title: "dismiss", onclick: () => item.remove() }, "×"));
  box.append(item);
  setTimeout(() => item.remove(), 15000);
  while (box.children.length > 5) box.firstChild.remove();
}

// Runs an async action; its error (an ApiError's message says what the gateway said) is
// shown instead of thrown. Resolves to the action's result, or undefined on error.
export async function attempt(what, action) {
  try {
    return await action();
  } catch (err) {
    showError(`${what}: ${err.message}`);
    return undefined;
  }
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds) || seconds < 0) return "–";
  const s = Math.floor(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i && n < 10 ? 1 : 0)} ${units[i]}`;
}
