// The operator console: plain DOM, no framework, no build step, nothing from another host.
// Everything shown comes from the relay's API, called with the operator's own credentials:
// a function key (keys mode) or an Entra ID session or token (entra mode), kept in
// sessionStorage only, so it is gone when the tab closes and never appears in a URL.

const API = location.pathname.replace(/\/console\/?$/, "");
const KEY = "relay.console.key";
const TOKEN = "relay.console.token";
const main = document.getElementById("main");
let config = { auth: "keys", loginUrl: "/.auth/login/aad", logoutUrl: "/.auth/logout" };

// ---- small helpers ------------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "text") el.textContent = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, value);
  for (const child of children) el.append(child instanceof Node ? child : String(child));
  return el;
}

function announce(text) {
  const region = document.getElementById("announce");
  region.textContent = "";
  setTimeout(() => { region.textContent = text; }, 30);
}

// Times: ISO-like local time with its zone (no day/month ambiguity) and how long ago, in a
// <time> whose title holds the exact UTC time for hover.
const pad = (n, w = 2) => String(n).padStart(w, "0");

function localStamp(d) {
  const offset = -d.getTimezoneOffset();
  const zone = offset === 0 ? "UTC" : `UTC${offset > 0 ? "+" : "-"}${Math.floor(Math.abs(offset) / 60)}${Math.abs(offset) % 60 ? ":" + pad(Math.abs(offset) % 60) : ""}`;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${zone}`;
}

function utcStamp(d) {
  return d.toISOString().replace("T", " ").replace("Z", " UTC");
}

function relative(d, now = Date.now()) {
  const seconds = Math.round((now - d.getTime()) / 1000);
  const span = Math.abs(seconds);
  const text = span < 60 ? `${span} s` : span < 3600 ? `${Math.floor(span / 60)} min`
    : span < 86400 ? `${Math.floor(span / 3600)} h` : `${Math.floor(span / 86400)} d`;
  return seconds >= 0 ? `${text} ago` : `in ${text}`;
}

function when(text) {
  if (!text) return "—";
  const d = new Date(text);
  if (isNaN(d)) return text;
  return h("time", { datetime: text, title: utcStamp(d), text: `${localStamp(d)} (${relative(d)})` });
}

// A URL that wraps between its parts (after '/', before '?' and '&'), not inside a word.
function urlText(url) {
  const parts = String(url).split(/(?<=\/)(?!\/)|(?=[?&])/);
  const out = [];
  // Each part is a box of its own: a line breaks between parts (after "/", before "?" and "&"),
  // not at a hyphen inside one, unless a part alone is wider than its column.
  parts.forEach((part, i) => { if (i) out.push(h("wbr")); out.push(h("span", { class: "seg", text: part })); });
  return out;
}

function hostOf(url) {
  try { return new URL(url).host; } catch { return url; }
}

function pathOf(link) {
  // nextLink and Location are absolute (maybe on the public host name): follow them here.
  const u = new URL(link, location.href);
  return u.pathname + u.search;
}

function sleep(ms) { return new Promise(resolve => setTimeout(resolve, ms)); }

// ---- the API ------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `the relay answered ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const key = sessionStorage.getItem(KEY);
  const token = sessionStorage.getItem(TOKEN);
  if (key) headers["x-functions-key"] = key;
  if (token) headers["Authorization"] = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path.startsWith("/") ? path : `${API}/${path}`, {
      method, headers, credentials: "same-origin", cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, { title: "Unreachable", detail: "the relay did not answer; check the network and try again" });
  }
  const text = await response.text();
  let doc = null;
  try { doc = text ? JSON.parse(text) : null; } catch { doc = null; }
  if (!response.ok) {
    const error = new ApiError(response.status, doc);
    error.headers = response.headers;
    if (response.status === 401 && !path.includes("console/")) {
      signOut(config.auth === "keys" ? "The relay refused the key: sign in again." :
        "Your session is missing or expired: sign in again.");
    }
    if (response.status === 403) error.message = "Your roles do not allow this. " + (doc && doc.detail || "");
    throw error;
  }
  return { status: response.status, body: doc, headers: response.headers };
}

async function allPages(path, limit = 20) {
  const items = [];
  let next = path;
  for (let i = 0; next && i < limit; i++) {
    const { body } = await api("GET", next);
    items.push(...body.value);
    next = body.nextLink ? pathOf(body.nextLink) : null;
  }
  return { items, more: Boolean(next) };
}

// Errors go next to what caused them: a problem's `errors` name fields; each field of a form
// has an element with data-error="<field>" beside it, and the form a general one.
function clearErrors(form) {
  for (const el of form.querySelectorAll("[data-error]")) { el.textContent = ""; el.hidden = true; }
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

function showError(form, field, message) {
  let slot = form.querySelector(`[data-error="${CSS.escape(field)}"]`);
  const input = form.querySelector(`[name="${CSS.escape(field)}"]`);
  if (!slot) slot = form.querySelector('[data-error="_form"]');
  slot.textContent = (slot.textContent ? slot.textContent + " " : "") + message;
  slot.hidden = false;
  if (input && slot.dataset.error === field) input.setAttribute("aria-invalid", "true");
}

function showProblem(form, error, fieldMap = f => f) {
  clearErrors(form);
  const errors = (error.problem && error.problem.errors) || [];
  let placed = false;
  for (const e of errors) {
    const name = fieldMap(e.field);
    if (name && form.querySelector(`[data-error="${CSS.escape(name)}"]`)) {
      showError(form, name, `${e.field}: ${e.message}`);
      placed = true;
    }
  }
  if (!placed) showError(form, "_form", error.message);
  const first = form.querySelector("[aria-invalid]") || form.querySelector('[data-error]:not([hidden])');
  if (first && first.focus) first.focus();
}

function errorSlot(name, id) {
  return h("p", { class: "error", "data-error": name, id, hidden: true, role: "alert" });
}

async function busy(button, work) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try { return await work(); } finally { button.disabled = false; button.removeAttribute("aria-busy"); }
}

// A destructive button asks for a second press instead of a blocking confirm() dialog.
function confirmButton(label, confirmLabel, action) {
  const button = h("button", { type: "button", class: "danger", text: label });
  let armed = false;
  let timer = null;
  button.addEventListener("click", async () => {
    if (!armed) {
      armed = true;
      button.textContent = confirmLabel;
      timer = setTimeout(() => { armed = false; button.textContent = label; }, 5000);
      return;
    }
    clearTimeout(timer);
    armed = false;
    button.textContent = label;
    await busy(button, action);
  });
  return button;
}

// ---- sign in ------------------------------------------------------------------------------------

function signedIn() {
  return Boolean(sessionStorage.getItem(KEY) || sessionStorage.getItem(TOKEN) || config.auth === "entra");
}

let signOutMessage = "";
function signOut(message = "") {
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(TOKEN);
  signOutMessage = message;
  if (location.hash !== "#/signin") location.hash = "#/signin";
  else render();
}

function viewSignIn() {
  document.getElementById("nav").hidden = true;
  document.getElementById("signout").hidden = true;
  const form = h("form", { id: "signin", class: "card narrow", novalidate: true });
  const message = signOutMessage;
  signOutMessage = "";
  if (config.auth === "entra") {
    const back = encodeURIComponent(location.pathname);
    form.append(
      h("h1", { tabindex: "-1", text: "Sign in" }),
      h("p", { text: "This relay uses Microsoft Entra ID. Sign in with your work account; what you can do follows your app roles." }),
      h("p", {}, h("a", { class: "button", id: "entra-login", href: `${config.loginUrl}?post_login_redirect_uri=${back}`, text: "Sign in with Microsoft" })),
      h("p", { text: "Or paste an access token for the relay (for example from az account get-access-token):" }),
      h("label", { for: "token", text: "Access token" }),
      h("input", { id: "token", name: "token", type: "password", autocomplete: "off", "aria-describedby": "token-error" }),
      errorSlot("token", "token-error"),
      h("button", { type: "submit", text: "Continue" }),
    );
  } else {
    form.append(
      h("h1", { tabindex: "-1", text: "Sign in" }),
      config.keysChecked === false
        ? h("p", { id: "key-note", class: "note", text: "This relay is a local dev host started without --function-key: it accepts any key, so type anything. A relay in Azure checks its function keys." })
        : h("p", { id: "key-note", text: "Paste a function key of the relay (Azure portal: the function app, App keys). It stays in this tab only." }),
      h("label", { for: "key", text: "Function key" }),
      h("input", { id: "key", name: "key", type: "password", autocomplete: "off", required: true, "aria-describedby": "key-error" }),
      errorSlot("key", "key-error"),
      h("button", { type: "submit", text: "Sign in" }),
    );
  }
  form.append(errorSlot("_form", "signin-error"));
  form.addEventListener("submit", async event => {
    event.preventDefault();
    clearErrors(form);
    const field = config.auth === "entra" ? "token" : "key";
    const value = form.elements[field].value.trim();
    if (config.auth === "keys" && !value) { showError(form, "key", "Enter a function key."); form.elements.key.focus(); return; }
    if (value) sessionStorage.setItem(config.auth === "entra" ? TOKEN : KEY, value);
    try {
      await busy(form.querySelector("button[type=submit]"), () => probe());
      location.hash = "#/overview";
    } catch (error) {
      sessionStorage.removeItem(KEY);
      sessionStorage.removeItem(TOKEN);
      showError(form, error.status === 401 || error.status === 403 ? field : "_form",
        error.status !== 401 ? error.message : config.auth === "keys" ? "The relay refused this key." :
          value ? "The relay refused this token." : "No signed-in session: sign in with Microsoft first, or paste a token.");
      form.elements[field].focus();
    }
  });
  main.replaceChildren(form);
  if (message) showError(form, "_form", message);
  form.querySelector("input")?.focus();
}

async function probe() {
  // Without the 401 handler's sign-out: the form shows the error itself.
  const headers = { Accept: "application/json" };
  if (sessionStorage.getItem(KEY)) headers["x-functions-key"] = sessionStorage.getItem(KEY);
  if (sessionStorage.getItem(TOKEN)) headers["Authorization"] = "Bearer " + sessionStorage.getItem(TOKEN);
  let response;
  try {
    response = await fetch(`${API}/subscriptions?limit=1`, { headers, credentials: "same-origin", cache: "no-store" });
  } catch {
    throw new ApiError(0, { detail: "the relay did not answer; check the network and try again" });
  }
  if (!response.ok) {
    let doc = null;
    try { doc = await response.json(); } catch { doc = null; }
    throw new ApiError(response.status, doc);
  }
}

// ---- overview -----------------------------------------------------------------------------------

// Bars in an SVG that stretches to the card; the labels are HTML beside it, so they keep their
// size at any width (text inside a scaled SVG shrank to about 5 px on a phone).
function chart(stats, title) {
  const width = 600, height = 150, top = 4;
  const points = stats.series;
  const max = Math.max(1, ...points.map(p => p.succeeded + p.retrying + p.failed));
  const slot = width / points.length;
  const bar = Math.max(1, slot * 0.75);
  const scale = v => (v / max) * (height - top);
  const t = stats.totals;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", class: "chart", role: "img",
    "aria-label": `${title}: ${t.succeeded} succeeded, ${t.retrying} retrying, ${t.failed} failed` });
  svg.append(s("line", { x1: 0, y1: height, x2: width, y2: height, class: "axis", "vector-effect": "non-scaling-stroke" }));
  const xLabels = h("div", { class: "chart-x", "aria-hidden": "true" });
  points.forEach((p, i) => {
    let y = height;
    const x = i * slot + (slot - bar) / 2;
    for (const outcome of ["succeeded", "retrying", "failed"]) {
      const value = p[outcome];
      if (!value) continue;
      const hgt = Math.max(1, scale(value));
      y -= hgt;
      const rect = s("rect", { x, y, width: bar, height: hgt, class: `bar ${outcome}` });
      rect.append(s("title", {}, `${localStamp(new Date(p.start))}: ${value} ${outcome}`));
      svg.append(rect);
    }
    const every = stats.bucket === "minute" ? 10 : 4;
    if (i % every === 0) {
      const d = new Date(p.start);
      const label = h("span", { class: "tick", text: `${pad(d.getHours())}:${pad(d.getMinutes())}` });
      label.style.left = `${((x + bar / 2) / width) * 100}%`;  // CSSOM, which the CSP allows
      xLabels.append(label);
    }
  });
  return h("figure", { class: "card chart-card" },
    h("figcaption", {}, h("h3", { text: title }),
      h("ul", { class: "legend" },
        h("li", { class: "succeeded", text: `Succeeded ${t.succeeded}` }),
        h("li", { class: "retrying", text: `Retrying ${t.retrying}` }),
        h("li", { class: "failed", text: `Failed ${t.failed}` }))),
    h("div", { class: "chart-plot" },
      h("div", { class: "chart-y", "aria-hidden": "true" }, h("span", { class: "tick", text: String(max) }), h("span", { class: "tick", text: "0" })),
      svg, h("span", {}), xLabels));
}

function subLink(id, subs) {
  const sub = subs.get(id);
  return h("a", { href: `#/subscriptions/${id}/deliveries`, title: id, class: "url" }, sub ? urlText(sub.notificationUrl) : `${id} (deleted)`);
}

async function viewOverview() {
  const [hour, day, list] = await Promise.all([api("GET", "stats?window=1h"), api("GET", "stats?window=24h"),
    allPages("subscriptions?limit=1000", 5)]);
  const subs = new Map(list.items.map(x => [x.id, x]));
  const counts = day.body.subscriptions;
  const tile = (label, value, cls = "") => h("div", { class: `tile ${cls}` }, h("span", { class: "value", text: value }), h("span", { text: label }));
  const more = counts.complete ? "" : "+";
  const failing = day.body.failing;
  const slowest = day.body.slowest;
  main.replaceChildren(
    h("h1", { tabindex: "-1", text: "Overview" }),
    h("section", { "aria-labelledby": "subs-heading", class: "tiles", id: "subscription-counts" },
      h("h2", { id: "subs-heading", class: "visually-hidden", text: "Subscriptions by status" }),
      tile("active subscriptions", `${counts.active}${more}`, "ok"),
      tile("disabled subscriptions", `${counts.disabled}${more}`, counts.disabled ? "bad" : ""),
      tile("failed in the last hour", hour.body.totals.failed, hour.body.totals.failed ? "bad" : ""),
      tile("failed in the last day", day.body.totals.failed, day.body.totals.failed ? "bad" : "")),
    h("section", { class: "charts", "aria-label": "Deliveries by outcome" },
      chart(hour.body, "Deliveries in the last hour (per minute)"),
      chart(day.body, "Deliveries in the last day (per hour)")),
    h("div", { class: "two" },
      h("section", { class: "card", id: "failing", "aria-labelledby": "failing-heading" },
        h("h2", { id: "failing-heading", text: "Most failing subscriptions (last day)" }),
        failing.length ? h("table", { class: "stack" },
          h("thead", {}, h("tr", {}, ["Subscription", "Failed", "Retrying", "Succeeded"].map(t => h("th", { scope: "col", text: t })))),
          h("tbody", {}, failing.map(f => h("tr", {}, h("td", { "data-label": "Subscription" }, subLink(f.id, subs)),
            h("td", { "data-label": "Failed", text: f.failed }), h("td", { "data-label": "Retrying", text: f.retrying }),
            h("td", { "data-label": "Succeeded", text: f.succeeded })))))
          : h("p", { text: "No failures in the last day." })),
      h("section", { class: "card", id: "slowest", "aria-labelledby": "slowest-heading" },
        h("h2", { id: "slowest-heading", text: "Slowest subscriptions (last day)" }),
        slowest.length ? h("table", { class: "stack" },
          h("thead", {}, h("tr", {}, ["Subscription", "Average", "Slowest"].map(t => h("th", { scope: "col", text: t })))),
          h("tbody", {}, slowest.map(f => h("tr", {}, h("td", { "data-label": "Subscription" }, subLink(f.id, subs)),
            h("td", { "data-label": "Average", text: `${f.averageMs} ms` }), h("td", { "data-label": "Slowest", text: `${f.maxMs} ms` })))))
          : h("p", { text: "No deliveries in the last day." }))),
    h("p", { class: "muted", text: "Counts are written by each instance every few seconds; the delivery log of a subscription is the full record." }),
  );
}

// ---- subscriptions ------------------------------------------------------------------------------

// The controls of one subscription, on its row and on its page: pause or resume it, and send a
// test event to it alone (POST subscriptions/{id}/test: never published to anyone else).
function controlButtons(sub, say, refresh) {
  const buttons = [];
  if (sub.status === "active" || sub.status === "paused") {
    const pausing = sub.status === "active";
    const toggle = h("button", { type: "button", class: "pause-toggle", text: pausing ? "Pause" : "Resume",
      "aria-label": `${pausing ? "Pause" : "Resume"} ${sub.notificationUrl}` });
    toggle.addEventListener("click", () => busy(toggle, async () => {
      try {
        await api("POST", `subscriptions/${sub.id}/${pausing ? "pause" : "resume"}`, {});
        announce(pausing ? "Subscription paused: its deliveries are held" : "Subscription resumed: held deliveries go out in order");
        await refresh();
      } catch (error) { say(error.message, true); }
    }));
    buttons.push(toggle);
  }
  const test = h("button", { type: "button", class: "send-test", text: "Send test event",
    "aria-label": `Send test event to ${sub.notificationUrl}` });
  test.addEventListener("click", () => busy(test, async () => {
    try {
      const { body } = await api("POST", `subscriptions/${sub.id}/test`, {});
      say(`Sent test event ${body.id} to this subscription only.`);
    } catch (error) { say(error.message, true); }
  }));
  buttons.push(test);
  return buttons;
}

// A subscription's filters in one line (the CLI's `subscriptions show` writes the same):
// subject begins/ends with, then each data condition, all of which must hold.
const FILTER_OPS = { eq: "=", ne: "!=", gt: ">", ge: ">=", lt: "<", le: "<=", in: "in", contains: "contains" };
function filtersText(sub) {
  const parts = [];
  if (sub.subjectBeginsWith) parts.push(`subject begins with ${JSON.stringify(sub.subjectBeginsWith)}`);
  if (sub.subjectEndsWith) parts.push(`subject ends with ${JSON.stringify(sub.subjectEndsWith)}`);
  for (const c of (sub.filters && sub.filters.data) || []) {
    parts.push(c.op === "exists" ? `${c.path} ${c.value ? "exists" : "is missing"}` : `${c.path} ${FILTER_OPS[c.op] || c.op} ${JSON.stringify(c.value)}`);
  }
  return parts.join(" · ");
}

// Endpoint health (GET /subscriptions answers it): the last hour's success rate and p95, else
// the day's; "—" without attempts.
function healthText(health) {
  for (const [name, w] of [["hour", health && health.hour], ["day", health && health.day]]) {
    if (w && w.attempts) {
      const rate = w.successRate == null ? "—" : `${Math.round(w.successRate * 100)}%`;
      return `${rate} ok · p50 ${w.p50Ms ?? "—"} ms · p95 ${w.p95Ms ?? "—"} ms (${name}, ${w.attempts} attempts)`;
    }
  }
  return "—";
}

function subscriptionRow(sub, counts, refresh) {
  const out = h("div", { class: "row-output", role: "status", "aria-live": "polite", id: `out-${sub.id}` });
  const say = (text, isError = false) => { out.replaceChildren(h("span", { class: isError ? "error" : "", text })); };
  const actions = h("div", { class: "actions" },
    h("a", { class: "button", href: `#/subscriptions/${sub.id}/deliveries`, text: "Deliveries",
      "aria-label": `Deliveries of ${sub.notificationUrl}` }));
  const rotate = h("button", { type: "button", text: "Rotate secret", "aria-label": `Rotate secret of ${sub.notificationUrl}` });
  // How long the old secret keeps signing beside the new one; "now" is for a leaked secret.
  const grace = h("select", { "aria-label": `Old secret of ${sub.notificationUrl} keeps signing` },
    h("option", { value: "86400", text: "old secret signs 1 more day" }),
    h("option", { value: "3600", text: "old secret signs 1 more hour" }),
    h("option", { value: "0", text: "old secret stops now (leaked)" }));
  rotate.addEventListener("click", () => busy(rotate, async () => {
    try {
      const { body } = await api("POST", `subscriptions/${sub.id}/secret`, { graceSeconds: Number(grace.value) });
      const code = h("code", { class: "secret", text: body.secret });
      const copy = h("button", { type: "button", class: "quiet", text: "Copy" });
      copy.addEventListener("click", async () => {
        try { await navigator.clipboard.writeText(body.secret); copy.textContent = "Copied"; } catch { copy.textContent = "Select and copy it"; }
      });
      // when() is a <time> element: the sentence is built of parts, not one template string.
      const until = body.previousSecretExpiresAt ? ["; the old one also signs until ", when(body.previousSecretExpiresAt)] : ["; the old one signs nothing more"];
      out.replaceChildren(h("span", {}, "New secret (shown once; give it to the receiver", ...until, "): "), code, copy);
    } catch (error) { say(error.message, true); }
  }));
  actions.append(...controlButtons(sub, say, refresh), grace, rotate);
  if (sub.status === "disabled") {
    const activate = h("button", { type: "button", text: "Re-activate", "aria-label": `Re-activate ${sub.notificationUrl}` });
    activate.addEventListener("click", () => busy(activate, async () => {
      try { await api("POST", `subscriptions/${sub.id}/activate`, {}); announce("Subscription re-activated"); await refresh(); }
      catch (error) { say(error.message, true); }
    }));
    actions.append(activate);
  }
  const remove = confirmButton("Delete", "Press again to delete", async () => {
    try { await api("DELETE", `subscriptions/${sub.id}`); announce("Subscription deleted"); await refresh(); }
    catch (error) { say(error.message, true); }
  });
  remove.setAttribute("aria-label", `Delete ${sub.notificationUrl}`);
  actions.append(remove);
  const failures = counts ? counts.failed : 0;
  return h("tr", { "data-id": sub.id, class: sub.status === "disabled" ? "disabled" : "" },
    h("td", { "data-label": "Callback" }, h("span", { class: "url" }, urlText(sub.notificationUrl)),
      sub.description ? h("span", { class: "muted block", text: sub.description }) : null),
    h("td", { "data-label": "Event types", text: sub.eventTypes.join(", ") }),
    h("td", { "data-label": "Status" }, h("span", { class: `badge ${sub.status}`, text: sub.status }),
      sub.disabledBy === "relay" ? h("span", { class: "muted block" }, "disabled by the relay ", when(sub.disabledAt)) : null,
      sub.disabledReason ? h("span", { class: "muted block", text: sub.disabledReason }) : null,
      sub.maxPerSecond ? h("span", { class: "muted block", text: `rate limit: at most ${sub.maxPerSecond} per second` }) : null,
      sub.previousSecretExpiresAt ? h("span", { class: "muted block" }, "old secret signs until ", when(sub.previousSecretExpiresAt)) : null),
    h("td", { "data-label": "Health", class: "health", text: healthText(sub.health) }),
    h("td", { "data-label": "Last success" }, when(counts && counts.lastSuccessAt)),
    h("td", { "data-label": "Failures (day)", class: failures ? "bad" : "", text: failures }),
    h("td", { "data-label": "Actions" }, actions, out));
}

async function viewSubscriptions() {
  const filters = h("form", { class: "filters card", role: "search", "aria-label": "Filter subscriptions" },
    h("div", {}, h("label", { for: "f-host", text: "URL host" }), h("input", { id: "f-host", name: "host", type: "search", placeholder: "e.g. prod-12.westeurope" })),
    h("div", {}, h("label", { for: "f-type", text: "Event type" }), h("input", { id: "f-type", name: "type", type: "search", placeholder: "e.g. order.created" })),
    h("div", {}, h("label", { for: "f-status", text: "Status" }),
      h("select", { id: "f-status", name: "status" }, h("option", { value: "", text: "Any" }), h("option", { value: "active", text: "Active" }), h("option", { value: "paused", text: "Paused" }), h("option", { value: "disabled", text: "Disabled" }))));
  const summary = h("p", { id: "subs-summary", role: "status", "aria-live": "polite" });
  const body = h("tbody", {});
  const table = h("table", { class: "stack", id: "subscriptions" },
    h("caption", { class: "visually-hidden", text: "Subscriptions" }),
    h("thead", {}, h("tr", {}, ["Callback", "Event types", "Status", "Health", "Last success", "Failures (day)", "Actions"].map(t => h("th", { scope: "col", text: t })))),
    body);
  const errors = errorSlot("_form", "subs-error");
  main.replaceChildren(h("h1", { tabindex: "-1", text: "Subscriptions" }), filters, errors, summary, h("div", { class: "scroll" }, table));
  let all = [], counts = {}, more = false;
  const draw = () => {
    const host = filters.elements.host.value.trim().toLowerCase();
    const type = filters.elements.type.value.trim().toLowerCase();
    const status = filters.elements.status.value;
    const shown = all.filter(x => (!host || hostOf(x.notificationUrl).toLowerCase().includes(host))
      && (!type || x.eventTypes.some(p => p.toLowerCase().includes(type) || (p === "*") || (p.endsWith(".*") && type.startsWith(p.slice(0, -1).toLowerCase()))))
      && (!status || x.status === status));
    body.replaceChildren(...shown.map(x => subscriptionRow(x, counts[x.id], load)));
    summary.textContent = `${shown.length} of ${all.length}${more ? "+" : ""} subscriptions shown.`;
  };
  const load = async () => {
    try {
      const [list, stats] = await Promise.all([allPages("subscriptions?limit=1000"), api("GET", "stats?window=24h")]);
      all = list.items; more = list.more; counts = stats.body.bySubscription;
      errors.hidden = true;
      draw();
    } catch (error) { errors.textContent = error.message; errors.hidden = false; }
  };
  filters.addEventListener("input", draw);
  filters.addEventListener("submit", e => e.preventDefault());
  await load();
}

// ---- deliveries ---------------------------------------------------------------------------------

function localInput(date) {
  const pad = n => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

function attemptsView(record) {
  const attempts = record.attempts.map((a, n) => h("li", { class: "attempt" },
    h("p", {}, h("strong", { text: `${n + 1}. ${a.kind}` }), " ", when(a.at), ` · ${a.durationMs} ms · `,
      a.statusCode == null ? "no answer" : `HTTP ${a.statusCode}`, a.error ? ` · ${a.error}` : ""),
    a.response ? h("pre", { class: "answer", "aria-label": `Answer to attempt ${n + 1} (${a.response.contentType || "no content type"})`,
      text: a.response.body || "(empty)" }) : null));
  return h("div", { class: "attempts" },
    h("h3", { text: `${record.attempts.length} attempt${record.attempts.length === 1 ? "" : "s"} kept` }),
    h("ol", {}, ...attempts),
    h("details", {}, h("summary", { text: "The event as delivered" }),
      h("pre", { class: "event", text: record.event ? JSON.stringify(record.event, null, 2) : "(past retention)" })));
}

async function viewDeliveries(id) {
  const { body: sub } = await api("GET", `subscriptions/${id}`);
  const output = h("div", { class: "row-output", role: "status", "aria-live": "polite", id: "sub-output" });
  const say = (text, isError = false) => { output.replaceChildren(h("span", { class: isError ? "error" : "", text })); };
  const controls = h("div", { class: "actions", id: "sub-actions" },
    ...controlButtons(sub, say, () => viewDeliveries(id)));
  const status = h("select", { id: "d-status", name: "status" },
    ["", "failed", "pending", "succeeded"].map(v => h("option", { value: v, text: v || "Any" })));
  const rows = h("tbody", {});
  const summary = h("p", { id: "deliveries-summary", role: "status", "aria-live": "polite" });
  const moreButton = h("button", { type: "button", hidden: true, text: "Load more" });
  const listError = errorSlot("_form", "deliveries-error");
  let next = null;
  let count = 0;
  const row = d => h("tr", { "data-event": d.eventId, class: d.status },
    h("td", { "data-label": "Event" }, h("code", { text: d.eventId }), h("span", { class: "muted block", text: d.eventType })),
    h("td", { "data-label": "Status" }, h("span", { class: `badge ${d.status}`, text: d.status })),
    h("td", { "data-label": "Attempts", text: d.attempts }),
    h("td", { "data-label": "Last code", text: d.lastStatusCode ?? "—" }),
    h("td", { "data-label": "Last error", text: d.lastError || "—" }),
    h("td", { "data-label": "Last attempt" }, when(d.lastAttemptAt)),
    h("td", { "data-label": "Next attempt" }, when(d.nextAttemptAt)),
    h("td", { "data-label": "Actions" }, detailsButton(d), resendButton(d)));
  // Details: every attempt kept (oldest first, the receiver's answer masked) and the event as
  // delivered, in a row under the delivery's own.
  const detailsButton = d => {
    const button = h("button", { type: "button", class: "quiet details", text: "Attempts", "aria-expanded": "false",
      "aria-label": `Attempts of event ${d.eventId}` });
    button.addEventListener("click", () => busy(button, async () => {
      const tr = button.closest("tr");
      const open = tr.nextElementSibling && tr.nextElementSibling.classList.contains("detail") ? tr.nextElementSibling : null;
      if (open) { open.remove(); button.setAttribute("aria-expanded", "false"); return; }
      try {
        const { body } = await api("GET", `subscriptions/${id}/deliveries/${encodeURIComponent(d.eventId)}`);
        tr.after(h("tr", { class: "detail", "data-detail": d.eventId }, h("td", { colspan: "8" }, attemptsView(body))));
        button.setAttribute("aria-expanded", "true");
      } catch (error) { say(error.message, true); }
    }));
    return button;
  };
  // Resend: this one event again, to this subscription alone (an operation, as a replay).
  const resendButton = d => {
    const button = h("button", { type: "button", class: "resend", text: "Resend", "aria-label": `Resend event ${d.eventId}` });
    button.addEventListener("click", () => busy(button, async () => {
      try {
        const { body } = await api("POST", `subscriptions/${id}/deliveries/${encodeURIComponent(d.eventId)}/resend`, {});
        say(`Event ${d.eventId} queued again for this subscription (operation ${body.id}).`);
      } catch (error) { say(error.message, true); }
    }));
    return button;
  };
  const load = async (append = false) => {
    if (append && !next) { moreButton.hidden = true; return; }  // nothing after the last page
    const path = append ? next : `subscriptions/${id}/deliveries?limit=50${status.value ? `&status=${status.value}` : ""}`;
    try {
      const { body } = await api("GET", path);
      if (!append) { rows.replaceChildren(); count = 0; }
      rows.append(...body.value.map(row));
      count += body.value.length;
      next = body.nextLink ? pathOf(body.nextLink) : null;
      moreButton.hidden = !next;
      summary.textContent = count ? `${count}${next ? "+" : ""} deliveries${status.value ? ` (${status.value})` : ""}.`
        : `No ${status.value || ""} deliveries.`.replace("  ", " ");
      listError.hidden = true;
    } catch (error) { listError.textContent = error.message; listError.hidden = false; }
  };
  status.addEventListener("change", () => load());
  moreButton.addEventListener("click", () => busy(moreButton, () => load(true)));
  const refresh = h("button", { type: "button", class: "quiet", text: "Refresh" });
  refresh.addEventListener("click", () => busy(refresh, () => load()));

  const since = new Date(Date.now() - 24 * 3600 * 1000);
  const replay = h("form", { class: "card replay", id: "replay", novalidate: true, "aria-labelledby": "replay-heading" },
    h("h2", { id: "replay-heading", text: "Replay" }),
    h("div", { class: "row" },
      h("div", {}, h("label", { for: "r-since", text: "Since (your local time)" }),
        h("input", { id: "r-since", name: "since", type: "datetime-local", value: localInput(since), required: true, "aria-describedby": "r-since-error" }),
        errorSlot("since", "r-since-error")),
      h("div", {}, h("label", { for: "r-status", text: "Which deliveries" }),
        h("select", { id: "r-status", name: "status" }, h("option", { value: "failed", text: "Failed only" }), h("option", { value: "all", text: "All events" })),
        errorSlot("status", "r-status-error")),
      h("div", {}, h("label", { for: "r-type", text: "Event type (optional)" }),
        h("input", { id: "r-type", name: "eventType", type: "text", placeholder: "e.g. order.*", "aria-describedby": "r-type-error" }),
        errorSlot("eventType", "r-type-error")),
      h("div", { class: "end" }, h("button", { type: "submit", text: "Replay failed since…", id: "replay-start" }))),
    h("div", { class: "progress", id: "replay-progress", hidden: true },
      h("progress", { id: "replay-bar", "aria-labelledby": "replay-text" }), h("span", { id: "replay-text", role: "status", "aria-live": "polite" })),
    errorSlot("_form", "replay-error"));
  replay.addEventListener("submit", async event => {
    event.preventDefault();
    clearErrors(replay);
    const value = replay.elements.since.value;
    const date = value ? new Date(value) : null;
    if (!date || isNaN(date)) { showError(replay, "since", "Choose a date and time."); replay.elements.since.focus(); return; }
    const button = replay.querySelector("button[type=submit]");
    const progress = replay.querySelector("#replay-progress");
    const bar = replay.querySelector("#replay-bar");
    const text = replay.querySelector("#replay-text");
    await busy(button, async () => {
      try {
        progress.hidden = false;
        bar.hidden = false;
        bar.removeAttribute("value");
        text.textContent = "Starting the replay…";
        // Each delivery's last attempt before the replay: one whose last attempt changes (and is
        // not a retry still to come) has the replay's outcome.
        const before = new Map((await allPages(`subscriptions/${id}/deliveries?limit=1000`, 5)).items
          .map(d => [d.eventId, d.lastAttemptAt]));
        let answer;
        try {
          const filters = { since: date.toISOString(), status: replay.elements.status.value };
          const type = replay.elements.eventType.value.trim();
          if (type) filters.eventType = type;
          answer = await api("POST", `subscriptions/${id}/replay`, filters);
        } catch (error) {
          // One replay per subscription at a time: a 409 names the running one; follow it.
          if (error.status !== 409 || !error.headers || !error.headers.get("Location")) throw error;
          answer = { status: 202, headers: error.headers, body: null };
          announce("A replay of this subscription is already running: following it.");
        }
        // When it started, by the relay's clock (its Date header, to the second), for deliveries
        // logged since the list above was read; the browser's clock may be off by more.
        const served = Date.parse(answer.headers.get("Date") || "");
        const startedAt = isNaN(served) ? Date.now() : served;
        let location_ = answer.headers.get("Location");
        const started = Date.now();
        while (answer.status === 202 && location_) {
          text.textContent = `Replay running… ${Math.round((Date.now() - started) / 1000)} s`;
          await sleep(Math.max(1, Number(answer.headers.get("Retry-After") || 1)) * 1000);
          answer = await api("GET", pathOf(location_));
          location_ = answer.headers.get("Location") || location_;
        }
        if (answer.body.status !== "succeeded") {
          text.textContent = `The replay did not finish: ${answer.body.error || answer.body.status}.`;
          return;
        }
        const replayed = answer.body.replayed;
        text.textContent = `Replay finished: ${replayed} deliveries queued again. Watching them…`;
        announce(text.textContent);
        // Watch the replayed deliveries until each has a new outcome (an attempt after the replay
        // started that is not a retry still to come), for at most a minute.
        let settled = [];
        for (let i = 0; i < 40; i++) {
          const { items } = await allPages(`subscriptions/${id}/deliveries?limit=1000`, 5);
          settled = items.filter(d => d.status !== "pending" && d.lastAttemptAt && d.lastAttemptAt !== before.get(d.eventId)
            && (before.has(d.eventId) || Date.parse(d.lastAttemptAt) >= startedAt));
          await load();
          if (settled.length >= replayed) break;
          await sleep(1500);
        }
        const again = settled.filter(d => d.status === "failed").length;
        const open = Math.max(0, replayed - settled.length);
        text.textContent = `Replay finished: ${replayed} deliveries queued again; ${again ? `${again} failed again` : "none failed again"}` +
          (open ? `, ${open} still being delivered.` : ".");
      } catch (error) {
        progress.hidden = true;
        showProblem(replay, error);
      } finally {
        bar.hidden = true;  // the bar moves only while a replay runs
      }
    });
  });
  main.replaceChildren(
    h("p", {}, h("a", { href: "#/subscriptions", text: "← Subscriptions" })),
    h("h1", { tabindex: "-1", text: "Deliveries" }),
    h("p", { class: "url", id: "deliveries-of" }, urlText(sub.notificationUrl)),
    h("p", {}, h("span", { class: `badge ${sub.status}`, text: sub.status }), " ",
      sub.disabledBy === "relay" ? h("span", {}, "disabled by the relay ", when(sub.disabledAt), ": ") : "",
      sub.disabledReason || "", " ", h("span", { class: "muted", text: `Event types: ${sub.eventTypes.join(", ")}` }),
      sub.maxPerSecond ? h("span", { class: "muted", text: ` · rate limit: at most ${sub.maxPerSecond} per second` }) : ""),
    ...(filtersText(sub) ? [h("p", { class: "muted", id: "sub-filters", text: `Filters: ${filtersText(sub)}` })] : []),
    controls, output,
    replay,
    h("div", { class: "filters card" },
      h("div", {}, h("label", { for: "d-status", text: "Status" }), status),
      h("div", { class: "end" }, refresh)),
    listError, summary,
    h("div", { class: "scroll" }, h("table", { class: "stack", id: "deliveries" },
      h("caption", { class: "visually-hidden", text: "Deliveries" }),
      h("thead", {}, h("tr", {}, ["Event", "Status", "Attempts", "Last code", "Last error", "Last attempt", "Next attempt", "Actions"].map(t => h("th", { scope: "col", text: t })))),
      rows)),
    moreButton);
  await load();
}

// ---- event types --------------------------------------------------------------------------------

async function viewEventTypes() {
  const { body } = await api("GET", "event-types");
  const create = h("form", { class: "card filters", id: "new-type", novalidate: true },
    h("div", {}, h("label", { for: "new-name", text: "New event type" }),
      h("input", { id: "new-name", name: "name", placeholder: "order.created", "aria-describedby": "new-name-error" }),
      errorSlot("name", "new-name-error")),
    h("div", { class: "end" }, h("button", { type: "submit", text: "Create" })));
  create.addEventListener("submit", event => {
    event.preventDefault();
    clearErrors(create);
    const name = create.elements.name.value.trim();
    if (!/^[A-Za-z0-9._:-]{1,128}$/.test(name) || /^\.+$/.test(name)) {
      showError(create, "name", "Use 1 to 128 letters, digits, '.', '_', '-' or ':'.");
      create.elements.name.focus();
      return;
    }
    location.hash = `#/event-types/${encodeURIComponent(name)}`;
  });
  main.replaceChildren(
    h("h1", { tabindex: "-1", text: "Event types" }),
    create,
    body.value.length ? h("div", { class: "scroll" }, h("table", { id: "event-types", class: "stack" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Name" }), h("th", { scope: "col", text: "Description" }), h("th", { scope: "col", text: "Schema" }))),
      h("tbody", {}, body.value.map(t => h("tr", {},
        h("td", { "data-label": "Name" }, h("a", { href: `#/event-types/${encodeURIComponent(t.name)}`, text: t.name })),
        h("td", { "data-label": "Description", text: t.description || "" }),
        h("td", { "data-label": "Schema", text: t.schema ? "yes" : "no" }))))))
      : h("p", { text: "No event types are registered. Publishing does not need one; a type with a schema has its data checked." }));
}

function sampleValue(schema) {
  if (!schema || typeof schema !== "object") return "";
  if ("default" in schema) return schema.default;
  if (Array.isArray(schema.examples) && schema.examples.length) return schema.examples[0];
  if (Array.isArray(schema.enum) && schema.enum.length) return schema.enum[0];
  switch (schema.type) {
    case "integer": return schema.minimum ?? 1;
    case "number": return schema.minimum ?? 1.5;
    case "boolean": return false;
    case "object": return {};
    case "array": return [];
    default: return schema.format === "date-time" ? new Date().toISOString() : "example";
  }
}

// A form for `data` from the type's schema: one control per property of an object schema;
// otherwise (no schema, or not an object) one JSON field.
function dataForm(type, schema) {
  const form = h("form", { class: "card", id: "publish", novalidate: true, "aria-labelledby": "publish-heading" },
    h("h2", { id: "publish-heading", text: "Publish a sample event" }),
    h("label", { for: "p-subject", text: "Subject (optional)" }),
    h("input", { id: "p-subject", name: "subject", value: "console-sample", "aria-describedby": "p-subject-error" }),
    errorSlot("subject", "p-subject-error"));
  const props = schema && schema.type === "object" && schema.properties && typeof schema.properties === "object" ? schema.properties : null;
  const required = new Set((schema && schema.required) || []);
  const readers = [];
  if (props) {
    for (const [name, prop] of Object.entries(props)) {
      const id = `p-data-${name.replace(/[^A-Za-z0-9_-]/g, "_")}`;
      const field = `data.${name}`;
      const label = h("label", { for: id }, name, required.has(name) ? h("span", { class: "req", text: " (required)" }) : null,
        prop && prop.description ? h("span", { class: "muted", text: ` ${prop.description}` }) : null);
      const sample = sampleValue(prop);
      let input;
      let read;
      const t = prop && (Array.isArray(prop.type) ? prop.type[0] : prop.type);
      if (prop && Array.isArray(prop.enum)) {
        input = h("select", { id, name: field }, prop.enum.map((v, i) => h("option", { value: String(i), text: JSON.stringify(v) })));
        read = () => prop.enum[Number(input.value)];
      } else if (t === "boolean") {
        input = h("input", { id, name: field, type: "checkbox" });
        input.checked = Boolean(sample);
        read = () => input.checked;
      } else if (t === "integer" || t === "number") {
        input = h("input", { id, name: field, type: "number", step: t === "integer" ? "1" : "any", value: String(sample) });
        read = () => input.value === "" ? undefined : Number(input.value);
      } else if (t === "object" || t === "array" || !t) {
        input = h("textarea", { id, name: field, rows: "3", class: "code" });
        input.value = JSON.stringify(sample);
        read = () => {
          if (input.value.trim() === "") return undefined;
          try { return JSON.parse(input.value); } catch { throw { field, message: "is not valid JSON" }; }
        };
      } else {
        input = h("input", { id, name: field, value: String(sample) });
        read = () => input.value === "" && !required.has(name) ? undefined : input.value;
      }
      input.setAttribute("aria-describedby", `${id}-error`);
      form.append(h("div", { class: "field" }, label, input, errorSlot(field, `${id}-error`)));
      readers.push([name, read]);
    }
  } else {
    const input = h("textarea", { id: "p-data", name: "data", rows: "6", class: "code", "aria-describedby": "p-data-error" });
    input.value = JSON.stringify(schema ? sampleValue(schema) : { hello: "world" }, null, 2);
    form.append(h("label", { for: "p-data", text: "Data (JSON)" }), input, errorSlot("data", "p-data-error"));
  }
  form.append(h("button", { type: "submit", text: "Publish" }), errorSlot("_form", "publish-error"),
    h("p", { id: "publish-result", role: "status", "aria-live": "polite" }));
  form.addEventListener("submit", async event => {
    event.preventDefault();
    clearErrors(form);
    form.querySelector("#publish-result").textContent = "";
    let data;
    try {
      if (props) {
        data = {};
        for (const [name, read] of readers) { const v = read(); if (v !== undefined) data[name] = v; }
      } else {
        try { data = JSON.parse(form.elements.data.value); } catch { throw { field: "data", message: "is not valid JSON" }; }
      }
    } catch (problem) {
      showError(form, problem.field, `${problem.field}: ${problem.message}`);
      form.elements[problem.field]?.focus();
      return;
    }
    const event_ = { type, data };
    if (form.elements.subject.value) event_.subject = form.elements.subject.value;
    await busy(form.querySelector("button[type=submit]"), async () => {
      try {
        const { body } = await api("POST", "events", event_);
        form.querySelector("#publish-result").textContent = `Published: event ${body.id} was accepted and is being delivered.`;
      } catch (error) {
        // `data.amount` goes next to its own control; a deeper path next to its top-level property.
        showProblem(form, error, f => {
          if (f.startsWith("data.") && props) return `data.${f.slice(5).split(/[.[]/)[0]}`;
          return f.startsWith("data") ? (props ? "_form" : "data") : f;
        });
      }
    });
  });
  return form;
}

async function viewEventType(name) {
  let type = { name };
  let exists = true;
  try { type = (await api("GET", `event-types/${encodeURIComponent(name)}`)).body; }
  catch (error) { if (error.status !== 404) throw error; exists = false; }
  const editor = h("form", { class: "card", id: "schema-editor", novalidate: true, "aria-labelledby": "editor-heading" },
    h("h2", { id: "editor-heading", text: exists ? "Definition" : "New event type" }),
    h("label", { for: "t-description", text: "Description" }),
    h("input", { id: "t-description", name: "description", value: type.description || "", maxlength: "1024", "aria-describedby": "t-description-error" }),
    errorSlot("description", "t-description-error"),
    h("label", { for: "t-schema", text: "JSON Schema of data (empty: any data)" }),
    h("textarea", { id: "t-schema", name: "schema", rows: "14", class: "code", spellcheck: "false", "aria-describedby": "t-schema-error" }),
    errorSlot("schema", "t-schema-error"),
    h("div", { class: "row" }, h("button", { type: "submit", text: "Save" }),
      exists ? confirmButton("Delete type", "Press again to delete", async () => {
        try { await api("DELETE", `event-types/${encodeURIComponent(name)}`); location.hash = "#/event-types"; }
        catch (error) { showProblem(editor, error); }
      }) : null),
    errorSlot("_form", "editor-error"),
    h("p", { id: "editor-result", role: "status", "aria-live": "polite" }));
  editor.elements.schema.value = type.schema ? JSON.stringify(type.schema, null, 2) : "";
  editor.addEventListener("submit", async event => {
    event.preventDefault();
    clearErrors(editor);
    editor.querySelector("#editor-result").textContent = "";
    const text = editor.elements.schema.value.trim();
    const request = {};
    if (editor.elements.description.value) request.description = editor.elements.description.value;
    if (text) {
      try { request.schema = JSON.parse(text); } catch (err) {
        showError(editor, "schema", `schema: is not valid JSON (${err.message}).`);
        editor.elements.schema.focus();
        return;
      }
      if (!request.schema || typeof request.schema !== "object" || Array.isArray(request.schema)) {
        showError(editor, "schema", "schema: must be a JSON object.");
        editor.elements.schema.focus();
        return;
      }
    }
    await busy(editor.querySelector("button[type=submit]"), async () => {
      try {
        await api("PUT", `event-types/${encodeURIComponent(name)}`, request);
        announce("Saved");
        await viewEventType(name);
        document.getElementById("editor-result").textContent = "Saved.";
      } catch (error) {
        showProblem(editor, error, f => f.split(/[.[]/)[0]);
      }
    });
  });
  main.replaceChildren(
    h("p", {}, h("a", { href: "#/event-types", text: "← Event types" })),
    h("h1", { tabindex: "-1", text: name }),
    h("div", { class: "two" }, editor, dataForm(name, type.schema)));
}

// ---- routing ------------------------------------------------------------------------------------

const routes = [
  [/^#\/overview$/, viewOverview],
  [/^#\/subscriptions$/, viewSubscriptions],
  [/^#\/subscriptions\/([0-9a-f]{32})\/deliveries$/, viewDeliveries],
  [/^#\/event-types$/, viewEventTypes],
  [/^#\/event-types\/([^/]+)$/, name => viewEventType(decodeURIComponent(name))],
];

let rendering = 0;
async function render() {
  const hash = location.hash || "#/overview";
  const ticket = ++rendering;
  if (hash === "#/signin" || !signedIn()) { viewSignIn(); return; }
  document.getElementById("nav").hidden = false;
  document.getElementById("signout").hidden = false;
  for (const link of document.querySelectorAll("#nav a")) {
    if (hash.startsWith(link.getAttribute("href"))) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const found = routes.find(([pattern]) => pattern.test(hash));
  main.setAttribute("aria-busy", "true");
  main.replaceChildren(h("p", { class: "loading" }, h("progress", { "aria-label": "Loading" }), " Loading…"));
  try {
    if (!found) { location.hash = "#/overview"; return; }
    await found[1](...hash.match(found[0]).slice(1));
    if (ticket === rendering) main.querySelector("h1")?.focus();
  } catch (error) {
    if (ticket !== rendering || error.status === 401) return;
    main.replaceChildren(h("h1", { tabindex: "-1", text: "Something went wrong" }),
      h("p", { class: "error", role: "alert", text: error.status === 404 ? "It does not exist (any more)." : error.message }),
      h("p", {}, h("a", { href: "#/overview", text: "Back to the overview" })));
  } finally {
    main.removeAttribute("aria-busy");
  }
}

document.getElementById("signout").addEventListener("click", () => {
  const entra = config.auth === "entra" && !sessionStorage.getItem(TOKEN);
  signOut("Signed out.");
  if (entra) location.href = `${config.logoutUrl}?post_logout_redirect_uri=${encodeURIComponent(location.pathname)}`;
});
window.addEventListener("hashchange", render);

(async () => {
  try {
    const response = await fetch(`${API}/console/config.json`, { cache: "no-store" });
    if (response.ok) config = { ...config, ...(await response.json()) };
  } catch { /* keys mode, the default */ }
  document.body.dataset.auth = config.auth;
  render();
})();
