// postbox admin page: endpoints, deliveries with every attempt, event types,
// and a live view of the backlog. Plain DOM, no framework, no CDN. With a
// tenant token it is that tenant's portal: its endpoints, their deliveries
// and attempts, and the event type catalog to read; nothing of the relay's.
//
// Everything shown comes from /api/v1 and may hold untrusted text (payloads,
// response bodies, headers), so the page only ever sets textContent: `h()`
// turns strings into text nodes, never into markup.
"use strict";

const TOKEN_KEY = "postbox.token";
const REFRESH_MS = 2000;

// An app links its users here as /?token=…: the token goes out of the URL
// before anything else happens (so that no history entry, bookmark or
// Referer keeps it) and into this tab's session storage, like a sign-in.
(function takeTokenFromUrl() {
  const params = new URLSearchParams(location.search);
  if (!params.has("token")) return;
  const token = params.get("token");
  params.delete("token");
  const query = params.toString();
  history.replaceState(null, "", `${location.pathname}${query ? `?${query}` : ""}${location.hash}`);
  if (!token) return;
  // A link must not silently swap the sign-in of a tab already in use: a
  // page that navigates this tab to /?token=<its own> would otherwise have
  // the user act in a tenant of its choosing.
  const current = sessionStorage.getItem(TOKEN_KEY);
  if (current && current !== token
      && !confirm("This link signs in with another token (a portal link). Sign out of the current session and use it?")) {
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
})();

// ---------------------------------------------------------------- helpers

/** Creates an element; string children become text nodes. */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value == null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "value") el.value = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** The same for SVG elements. */
function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, value);
  el.append(...children);
  return el;
}

function when(text) {
  if (!text) return "–";
  const date = new Date(text);
  if (Number.isNaN(date.getTime())) return text;
  if (date.getFullYear() > 9000) return "never (endpoint disabled)";
  return date.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

function ago(seconds) {
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function badge(status) {
  return h("span", { class: `badge ${status}` }, status);
}

/**
 * The request body as signed, byte for byte (what a receiver must verify
 * against), with a pretty view to read it by.
 */
function requestBody(body) {
  const pre = h("pre", { id: "request-body", "data-view": "exact" }, body);
  const toggle = h("button", {
    type: "button",
    id: "request-body-view",
    class: "link",
    onclick: () => {
      const exact = pre.dataset.view === "exact";
      pre.dataset.view = exact ? "pretty" : "exact";
      pre.textContent = exact ? pretty(body) : body;
      toggle.textContent = exact ? "Show exact bytes" : "Pretty-print";
    },
  }, "Pretty-print");
  return h(
    "section",
    { class: "card" },
    h("div", { class: "title-row" }, h("h2", {}, "Request body (exactly as signed)"), toggle),
    pre,
  );
}

/** Pretty-prints JSON text; anything else is shown as it is. */
function pretty(text) {
  if (text == null || text === "") return "(empty)";
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

function headerTable(headers) {
  if (!headers || Object.keys(headers).length === 0) return h("p", { class: "muted" }, "(none recorded)");
  return h(
    "table",
    { class: "headers" },
    Object.entries(headers).map(([name, value]) =>
      h("tr", {}, h("th", {}, name), h("td", {}, Array.isArray(value) ? value.join(", ") : String(value))),
    ),
  );
}

function hashParams() {
  const [, query = ""] = location.hash.split("?");
  return new URLSearchParams(query);
}

function setMain(...children) {
  const main = document.getElementById("main");
  main.replaceChildren(...children);
}

function notice(text, kind = "info") {
  return h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

// ---------------------------------------------------------------- API

class Unauthorized extends Error {}

async function api(method, path, body) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(`/api/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { error: text };
  }
  if (response.status === 401) {
    showLogin(data && data.error);
    throw new Unauthorized();
  }
  if (!response.ok) throw new Error((data && data.error) || `${response.status} ${response.statusText}`);
  return data;
}

// ---------------------------------------------------------------- scope

/** What the token may do ({scope: "admin"} or {scope: "tenant", tenant, expires_at}), and for which token. */
let access = null;
let accessToken = null;

function isTenant() {
  return access?.scope === "tenant";
}

/** Asks the API once per token, and shows the page for that scope. */
async function loadAccess() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (access && accessToken === token) return;
  access = await api("GET", "/access");
  accessToken = token;
  // A tenant's portal: no overview (the relay's backlog is not theirs).
  for (const link of document.querySelectorAll("nav a[data-admin-only]")) link.hidden = isTenant();
  const scope = document.getElementById("scope");
  scope.hidden = !isTenant();
  scope.textContent = isTenant() ? `Tenant ${access.tenant} · until ${when(access.expires_at)}` : "";
}

// ---------------------------------------------------------------- login

function showLogin(reason) {
  stopTimers();
  const input = h("input", { id: "token", type: "password", autocomplete: "current-password", required: true });
  const form = h(
    "form",
    {
      id: "login",
      class: "card narrow",
      onsubmit: (event) => {
        event.preventDefault();
        // Kept in this tab only (sessionStorage), never in the URL.
        sessionStorage.setItem(TOKEN_KEY, input.value);
        route();
      },
    },
    h("h2", {}, "Sign in"),
    h("p", {}, "The admin API needs the relay's bearer token (", h("code", {}, "admin.token"), ") or a tenant token."),
    // First visit: just the prompt. A refused token, or a relay that has no
    // token to check against (off loopback), says why.
    sessionStorage.getItem(TOKEN_KEY) || /admin\.token is not set/.test(reason || "")
      ? notice(reason || "That token was not accepted.", "error")
      : null,
    h("label", {}, "Token", input),
    h("button", { type: "submit" }, "Sign in"),
  );
  setMain(form);
  input.focus();
}

// ---------------------------------------------------------------- overview

/** The history chart's window: "1h" (per minute) or "24h" (per 15 minutes). */
let historyWindow = "1h";
const HISTORY_REFRESH_MS = 30000;

async function overview() {
  const live = h("div", { id: "live" }, h("p", { class: "muted" }, "Loading…"));
  const history = h("section", { class: "card", id: "history" }, h("p", { class: "muted" }, "Loading…"));
  setMain(h("h1", {}, "Overview"), live, history);
  let historyAt = 0;
  const refresh = async () => {
    const status = await api("GET", "/status");
    live.replaceChildren(...overviewCards(status));
    if (Date.now() - historyAt > HISTORY_REFRESH_MS) {
      historyAt = Date.now();
      await drawHistory(history);
    }
  };
  await refresh();
  every(refresh);
}

/** Attempts by outcome and the backlog, from the database's own records. */
async function drawHistory(section) {
  const data = await api("GET", `/history?window=${historyWindow}`);
  const choose = (window) =>
    h("button", {
      type: "button",
      class: `link window${window === historyWindow ? " current" : ""}`,
      "data-window": window,
      onclick: () => {
        historyWindow = window;
        drawHistory(section).catch(report);
      },
    }, window === "1h" ? "last hour" : "last 24 hours");
  const first = data.points[0], last = data.points[data.points.length - 1];
  section.replaceChildren(
    h("div", { class: "title-row" }, h("h2", {}, "Attempts and backlog"), h("div", {}, choose("1h"), " · ", choose("24h"))),
    historyChart(data),
    h("p", { class: "legend" },
      h("span", { class: "key succeeded" }), "attempts succeeded  ",
      h("span", { class: "key failed" }), "attempts failed  ",
      h("span", { class: "key pending" }), "deliveries pending  ",
      h("span", { class: "muted" }, first ? `${when(first.at)} to ${when(last.at)}, ${data.bucket_seconds / 60} min per bar` : "")),
  );
}

/** Stacked bars of attempts (succeeded under failed) and the backlog as a line, each on its own scale. */
function historyChart(data) {
  const width = 1200, height = 160, top = 18;
  const box = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": "attempts and backlog over time" });
  box.append(svg("line", { x1: 0, y1: height - 1, x2: width, y2: height - 1, class: "axis" }));
  const points = data.points;
  const slot = width / Math.max(1, points.length);
  const maxAttempts = Math.max(1, ...points.map((p) => p.succeeded + p.failed));
  const maxBacklog = Math.max(1, ...points.map((p) => p.backlog));
  const scale = (value, max) => (value / max) * (height - top - 2);
  points.forEach((p, i) => {
    const x = i * slot + 1, w = Math.max(1, slot - 2);
    const ok = scale(p.succeeded, maxAttempts), bad = scale(p.failed, maxAttempts);
    if (ok > 0) box.append(svg("rect", { x, y: height - 1 - ok, width: w, height: ok, class: "bar succeeded" }));
    if (bad > 0) box.append(svg("rect", { x, y: height - 1 - ok - bad, width: w, height: bad, class: "bar failed" }));
  });
  const line = points.map((p, i) => `${(i * slot + slot / 2).toFixed(1)},${(height - 1 - scale(p.backlog, maxBacklog)).toFixed(1)}`);
  box.append(svg("polyline", { points: line.join(" "), class: "line pending" }));
  box.append(svg("text", { x: 4, y: 12, class: "max" }, `max ${maxAttempts.toLocaleString()} attempts per bar, ${maxBacklog.toLocaleString()} pending`));
  return box;
}

function overviewCards(s) {
  const m = s.last_minute;
  const troubles = [
    ...s.failing_endpoints.map((e) => ({ ...e, state: "failing" })),
    ...s.disabled_endpoints.map((e) => ({ ...e, state: "disabled" })),
  ];
  return [
    h(
      "div",
      { class: "cards" },
      stat("Events to dispatch", s.undispatched_events, `oldest ${ago(s.oldest_undispatched_age_seconds)}`, "stat-undispatched"),
      stat("Deliveries pending", s.pending_deliveries, `${s.due_deliveries} due now, lag ${ago(s.delivery_lag_seconds)}`, "stat-pending"),
      stat(
        "Attempts, last minute",
        m.attempts,
        `${m.succeeded} succeeded; ${m.failed} failed: ${m.retrying} to be retried, ${m.deliveries_failed} deliveries failed`,
        "stat-attempts",
      ),
      stat("Endpoints", s.endpoints, `${s.failing_endpoints.length} failing, ${s.disabled_endpoints.length} disabled`, "stat-endpoints"),
    ),
    h(
      "section",
      { class: "card" },
      h("h2", {}, "Endpoints needing attention"),
      troubles.length === 0
        ? h("p", { class: "muted" }, "None: every endpoint is enabled and its last attempt succeeded.")
        : h("table", {}, troubles.map((t) =>
            h("tr", {}, h("td", {}, badge(t.state)), h("td", {}, h("a", { href: `#/deliveries?endpoint_id=${encodeURIComponent(t.id)}` }, t.url)), h("td", {}, t.detail)))),
    ),
  ];
}

function stat(label, value, detail, id) {
  return h("div", { class: "card stat", id }, h("div", { class: "label" }, label), h("div", { class: "value" }, value.toLocaleString()), h("div", { class: "detail" }, detail));
}

// ---------------------------------------------------------------- endpoints

async function endpoints() {
  const [list, types] = await Promise.all([api("GET", "/endpoints"), api("GET", "/event-types")]);
  const message = h("div", { id: "endpoint-message" });
  setMain(
    h("h1", {}, "Endpoints"),
    message,
    newEndpointForm(types, message),
    list.length === 0
      ? h("p", { class: "muted" }, "No endpoints yet.")
      : h("table", { id: "endpoints", class: "list" },
          h("thead", {}, h("tr", {}, ["URL", "Events", "Tenant", "State", "Last 24 h", "Last failure", ""].map((t) => h("th", {}, t)))),
          h("tbody", {}, list.map((e) => endpointRow(e, message)))),
  );
}

function newEndpointForm(types, message) {
  const url = h("input", { id: "new-url", type: "url", required: true, placeholder: "https://example.com/webhooks" });
  const tenant = h("input", { id: "new-tenant", placeholder: "all tenants" });
  const filter = h("textarea", { id: "new-filter", rows: 2, placeholder: '{"currency": "EUR"}' });
  const description = h("input", { id: "new-description" });
  const rateLimit = h("input", { id: "new-rate-limit", type: "number", min: 1, step: 1, placeholder: "no limit" });
  const choices = [{ name: "*", description: "every event type" }, ...types.filter((t) => !t.archived)];
  const boxes = choices.map((t) =>
    h("label", { class: "choice", title: t.description || "" },
      h("input", { type: "checkbox", name: "event-type", value: t.name, checked: t.name === "*" }), t.name));
  const form = h(
    "form",
    {
      id: "new-endpoint",
      class: "card",
      onsubmit: async (event) => {
        event.preventDefault();
        const body = { url: url.value.trim() };
        body.event_types = boxes.map((b) => b.querySelector("input")).filter((i) => i.checked).map((i) => i.value);
        if (body.event_types.length === 0) body.event_types = ["*"];
        if (tenant.value.trim()) body.tenant = tenant.value.trim();
        if (description.value.trim()) body.description = description.value.trim();
        if (rateLimit.value.trim()) body.rate_limit = Number(rateLimit.value);
        try {
          if (filter.value.trim()) body.filter = JSON.parse(filter.value);
        } catch (err) {
          message.replaceChildren(notice(`The filter is not JSON: ${err.message}`, "error"));
          return;
        }
        try {
          const created = await api("POST", "/endpoints", body);
          await endpoints();
          document.getElementById("endpoint-message").replaceChildren(secretNotice(`Endpoint ${created.url} created.`, created.secret));
        } catch (err) {
          if (!(err instanceof Unauthorized)) message.replaceChildren(notice(err.message, "error"));
        }
      },
    },
    h("h2", {}, "New endpoint"),
    h("label", {}, "URL", url),
    h("fieldset", {}, h("legend", {}, "Event types"), boxes),
    // A tenant's endpoints are its own: the server sets the tenant.
    h("div", { class: "row" }, isTenant() ? null : h("label", {}, "Tenant", tenant), h("label", {}, "Description", description),
      h("label", {}, "Rate limit (requests/s, all relays)", rateLimit)),
    h("label", {}, "Filter (JSON the payload must contain)", filter),
    h("button", { type: "submit", id: "create-endpoint" }, "Create endpoint"),
  );
  return form;
}

function secretNotice(text, secret) {
  return h("div", { class: "notice secret", role: "status" },
    h("p", {}, text, " Its signing secret is shown this once:"),
    h("code", { id: "secret-once" }, secret));
}

function endpointRow(e, message) {
  const health = e.health || { attempts_24h: 0, succeeded_24h: 0 };
  const rate = health.attempts_24h === 0 ? "no attempts" : `${Math.round((100 * health.succeeded_24h) / health.attempts_24h)}% of ${health.attempts_24h}`;
  const act = (label, action, cls) =>
    h("button", {
      class: cls || "small",
      onclick: async (event) => {
        event.target.disabled = true;
        try {
          const text = await action();
          if (text !== undefined) {
            await endpoints();
            document.getElementById("endpoint-message").replaceChildren(text instanceof Node ? text : notice(text));
          }
        } catch (err) {
          if (!(err instanceof Unauthorized)) message.replaceChildren(notice(err.message, "error"));
          event.target.disabled = false;
        }
      },
    }, label);
  const path = `/endpoints/${encodeURIComponent(e.id)}`;
  const rateLimit = h("input", { class: "rate-limit", type: "number", min: 1, step: 1, value: e.rate_limit ?? "", placeholder: "req/s", title: "requests per second across all relays; empty: no limit", "aria-label": "rate limit" });
  const since = h("input", { class: "since", placeholder: "since: 1h", title: "a duration back from now (1h, 30m) or a time", "aria-label": "recover or replay since" });
  let confirmDelete = false;
  return h("tr", { "data-endpoint": e.id },
    h("td", {}, h("a", { href: `#/deliveries?endpoint_id=${encodeURIComponent(e.id)}`, class: "url" }, e.url), e.description ? h("div", { class: "muted" }, e.description) : null),
    h(
      "td",
      {},
      e.event_types.join(", "),
      e.filter ? h("div", { class: "muted" }, `filter ${JSON.stringify(e.filter)}`) : null,
      (e.unmatched_patterns || []).length
        ? h("div", { class: "warning unmatched" }, `${e.unmatched_patterns.join(", ")}: matches no registered event type`)
        : null,
    ),
    h("td", {}, e.tenant || h("span", { class: "muted" }, "all")),
    h("td", {}, e.enabled ? badge(e.failing_since ? "failing" : "enabled") : badge("disabled"), e.disabled_reason ? h("div", { class: "muted" }, e.disabled_reason) : null,
      e.rate_limit ? h("div", { class: "muted rate" }, `at most ${e.rate_limit}/s`) : null),
    h("td", { class: "health" }, rate),
    h("td", { class: "last-failure" }, health.last_failure ? [h("div", {}, health.last_failure), h("div", { class: "muted" }, when(health.last_failure_at))] : h("span", { class: "muted" }, "–")),
    h("td", { class: "actions" },
      act("Send test", async () => { await api("POST", `${path}/test`); return `Test event sent to ${e.url}.`; }),
      e.enabled
        ? act("Disable", async () => { await api("POST", `${path}/disable`); return `${e.url} disabled.`; })
        : act("Enable", async () => { await api("POST", `${path}/enable`); return `${e.url} enabled.`; }),
      act("Rotate secret", async () => {
        const rotated = await api("POST", `${path}/rotate-secret`);
        return secretNotice(`Secret of ${e.url} rotated; the old one keeps signing for ${rotated.previous_secret_valid_for}.`, rotated.secret);
      }),
      h("span", { class: "rate-limit" }, rateLimit,
        act("Set limit", async () => {
          const limit = rateLimit.value.trim() ? Number(rateLimit.value) : null;
          await api("PATCH", path, { rate_limit: limit });
          return limit ? `${e.url}: at most ${limit} requests/s.` : `${e.url}: no rate limit.`;
        })),
      h("span", { class: "replay" }, since,
        act("Recover", async () => {
          const done = await api("POST", `${path}/recover`, { since: since.value.trim() || "1h" });
          return `${done.recovered} failed deliveries queued again for ${e.url}.`;
        }),
        act("Replay", async () => {
          const done = await api("POST", `${path}/replay`, { since: since.value.trim() || "1h" });
          return `${done.replayed} events queued again for ${e.url}.`;
        })),
      act("Delete", async () => {
        if (!confirmDelete) {
          confirmDelete = true;
          const button = document.querySelector(`tr[data-endpoint="${CSS.escape(e.id)}"] button.danger`);
          button.textContent = "Really delete?";
          button.disabled = false;
          return undefined;
        }
        await api("DELETE", path);
        return `${e.url} deleted.`;
      }, "small danger"),
    ),
  );
}

// ---------------------------------------------------------------- deliveries

const FILTERS = ["endpoint_id", "event_id", "status", "event_type", "tenant", "since"];

async function deliveries() {
  const params = hashParams();
  const [endpointList, types] = await Promise.all([api("GET", "/endpoints"), api("GET", "/event-types")]);
  const select = (name, options) =>
    h("select", { name, id: `filter-${name}` }, h("option", { value: "" }, "any"),
      options.map(([value, label]) => h("option", { value, selected: params.get(name) === value }, label)));
  const sinceValue = params.get("since");
  const form = h(
    "form",
    {
      id: "delivery-filters",
      class: "card filters",
      onsubmit: async (event) => {
        event.preventDefault();
        // An id a customer quotes: a delivery's opens it, an event's
        // (webhook-id) lists its deliveries.
        const id = form.elements.lookup.value.trim();
        if (id) {
          const delivery = await api("GET", `/deliveries/${encodeURIComponent(id)}`).catch(() => null);
          if (delivery) {
            location.hash = `#/deliveries/${encodeURIComponent(id)}`;
            return;
          }
          form.elements.event_id.value = id;
        }
        const query = new URLSearchParams();
        for (const name of FILTERS) {
          let value = form.elements[name].value.trim();
          if (name === "since" && value) value = new Date(value).toISOString();
          if (value) query.set(name, value);
        }
        location.hash = `#/deliveries?${query}`;
      },
    },
    h("label", {}, "Endpoint", select("endpoint_id", endpointList.map((e) => [e.id, e.url]))),
    h("label", {}, "Status", select("status", ["pending", "succeeded", "failed", "cancelled"].map((s) => [s, s]))),
    h("label", {}, "Event type", select("event_type", types.map((t) => [t.name, t.name]))),
    isTenant() ? h("input", { type: "hidden", name: "tenant", value: "" }) : h("label", {}, "Tenant", h("input", { name: "tenant", value: params.get("tenant") || "" })),
    h("label", {}, "Since", h("input", { name: "since", type: "datetime-local", value: sinceValue ? localInput(sinceValue) : "" })),
    h("label", {}, "Event or delivery id", h("input", { name: "lookup", id: "filter-lookup", placeholder: "webhook-id or delivery id", size: 36 })),
    h("input", { type: "hidden", name: "event_id", value: params.get("event_id") || "" }),
    h("button", { type: "submit" }, "Filter"),
  );
  const body = h("tbody", {});
  const more = h("button", { id: "more", hidden: true }, "Older deliveries");
  const table = h("table", { id: "deliveries", class: "list clickable" },
    h("thead", {}, h("tr", {}, ["Created", "Event type", "Endpoint", "Tenant", "Status", "Attempts", "Next attempt / last error"].map((t) => h("th", {}, t)))),
    body);
  setMain(h("h1", {}, "Deliveries"), form, table, more);

  const query = new URLSearchParams();
  for (const name of FILTERS) if (params.get(name)) query.set(name, params.get(name));
  query.set("limit", "50");
  const load = async (before) => {
    if (before) query.set("before", before);
    const page = await api("GET", `/deliveries?${query}`);
    body.append(...page.map(deliveryRow));
    if (body.children.length === 0) body.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No deliveries match.")));
    more.hidden = page.length < 50;
    more.onclick = () => load(page[page.length - 1].id);
  };
  await load();
}

function localInput(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 16);
}

/** Why a delivery waits, with its times in the page's one format. */
function waitingText(waiting) {
  return waiting ? waiting.replace(/\d{4}-\d\d-\d\dT[\d:.]+Z/g, (time) => when(time)) : waiting;
}

function deliveryRow(d) {
  const href = `#/deliveries/${encodeURIComponent(d.id)}`;
  const next = d.status === "pending" ? waitingText(d.waiting) || `next ${when(d.next_attempt_at)}` : "";
  return h("tr", { "data-delivery": d.id, onclick: () => { location.hash = href; } },
    h("td", {}, h("a", { href }, when(d.created_at))),
    h("td", {}, d.event_type),
    h("td", { class: "url" }, d.endpoint_url),
    h("td", {}, d.tenant || ""),
    h("td", {}, badge(d.status)),
    h("td", {}, d.attempt_count),
    h("td", {}, next, d.last_error ? h("div", { class: "error-text" }, d.last_error) : null),
  );
}

async function deliveryDetail(id) {
  const path = `/deliveries/${encodeURIComponent(id)}`;
  const message = h("div", { id: "delivery-message" });
  const content = h("div", { id: "delivery" });
  setMain(h("p", {}, h("a", { href: "#/deliveries" }, "← Deliveries")), message, content);
  const show = async () => {
    const d = await api("GET", path);
    content.replaceChildren(...deliveryView(d, path, message, show).flat());
  };
  await show();
  // Pending deliveries change on their own (retries, a redelivery): follow them.
  every(async () => {
    if (document.getElementById("delivery-status")?.textContent === "pending") await show();
  });
}

function deliveryView(d, path, message, refresh) {
  const redeliver = h("button", {
    id: "redeliver",
    onclick: async () => {
      redeliver.disabled = true;
      try {
        await api("POST", `${path}/redeliver`);
        message.replaceChildren(notice("Redelivery scheduled: one more attempt now."));
        await refresh();
      } catch (err) {
        if (!(err instanceof Unauthorized)) message.replaceChildren(notice(err.message, "error"));
        redeliver.disabled = false;
      }
    },
  }, "Redeliver");
  const summary = [
    ["Delivery", d.id],
    ["Event", `${d.event_id} (${d.event_type})`],
    ["Endpoint", h("a", { href: `#/deliveries?endpoint_id=${encodeURIComponent(d.endpoint_id)}` }, d.endpoint_url)],
    ["Tenant", d.tenant || "–"],
    ["Status", h("span", { id: "delivery-status", class: `badge ${d.status}` }, d.status)],
    ["Attempts", d.attempt_count],
    ["Next attempt", d.status === "pending" ? when(d.next_attempt_at) : "–"],
    ["Why pending", h("span", { id: "delivery-waiting" }, waitingText(d.waiting) || "–")],
    ["Created", when(d.created_at)],
  ];
  const attempts = [...d.attempts].reverse();
  return [
    h("div", { class: "title-row" }, h("h1", {}, d.event_type), redeliver),
    h("dl", { class: "card summary" }, summary.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    requestBody(d.request_body),
    h("h2", {}, `Attempts (${d.attempts.length}), newest first`),
    attempts.length === 0 ? h("p", { class: "muted" }, "No attempt yet.") : attempts.map(attemptView),
  ];
}

function attemptView(a) {
  const ok = a.response_status != null && a.response_status >= 200 && a.response_status < 300;
  const outcome = a.response_status != null ? `HTTP ${a.response_status}` : "no response";
  return h("details", { class: `card attempt ${ok ? "ok" : "bad"}`, open: true, "data-attempt": a.attempt_number },
    h("summary", {},
      h("strong", {}, `Attempt ${a.attempt_number}`), " · ",
      h("span", { class: "response-status" }, outcome), " · ",
      `${a.duration_ms} ms`, " · ", when(a.started_at)),
    a.error ? h("p", { class: "error-text attempt-error" }, a.error) : null,
    h("div", { class: "columns" },
      h("div", {}, h("h3", {}, "Request headers"), headerTable(a.request_headers)),
      h("div", {}, h("h3", {}, "Response headers"), a.response_status != null ? headerTable(a.response_headers) : h("p", { class: "muted" }, "–")),
    ),
    h("h3", {}, "Response body"),
    h("pre", { class: "response-body" }, a.response_status != null ? pretty(a.response_body) : "–"),
  );
}

// ---------------------------------------------------------------- event types

async function eventTypes() {
  const types = await api("GET", "/event-types");
  const path = (t) => `/event-types/${encodeURIComponent(t.name)}`;
  const toggle = (t) =>
    h("button", {
      type: "button",
      class: "link archive",
      onclick: async () => {
        await api("POST", `${path(t)}/${t.archived ? "unarchive" : "archive"}`);
        await eventTypes();
      },
    }, t.archived ? "Offer again" : "Archive");
  const message = h("div", { id: "event-type-message" });
  setMain(
    h("h1", {}, "Event types"),
    message,
    isTenant() ? null : eventTypeForm(message),
    h("table", { id: "event-types", class: "list" },
      h("thead", {}, h("tr", {}, ["Name", "Description and example payload", "Deliveries, last 24 h", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, types.map((t) =>
        h("tr", { "data-event-type": t.name },
          h("td", {}, h("code", {}, t.name), t.archived ? [" ", badge("archived")] : null),
          h("td", {}, t.description || "", t.example ? h("pre", { class: "example" }, JSON.stringify(t.example, null, 2)) : null),
          h("td", { class: "number" }, t.deliveries_24h.toLocaleString()),
          h("td", {}, h("a", { href: `#/deliveries?event_type=${encodeURIComponent(t.name)}` }, "deliveries"), isTenant() ? null : [" · ", toggle(t)]))))),
  );
}

/**
 * Registers a type, or describes one already registered (same name): its
 * description and an example payload for the people who subscribe.
 */
function eventTypeForm(message) {
  const name = h("input", { id: "type-name", required: true, placeholder: "order.created" });
  const description = h("input", { id: "type-description", placeholder: "An order was placed" });
  const example = h("textarea", { id: "type-example", rows: 3, placeholder: '{"id": 42, "total_cents": 1250}' });
  const form = h(
    "form",
    {
      id: "new-event-type",
      class: "card",
      onsubmit: async (event) => {
        event.preventDefault();
        const body = { name: name.value.trim() };
        if (description.value.trim()) body.description = description.value.trim();
        try {
          if (example.value.trim()) body.example = JSON.parse(example.value);
        } catch (err) {
          message.replaceChildren(notice(`The example is not JSON: ${err.message}`, "error"));
          return;
        }
        try {
          await api("POST", "/event-types", body);
          await eventTypes();
          document.getElementById("event-type-message").replaceChildren(notice(`Event type ${body.name} saved.`));
        } catch (err) {
          if (!(err instanceof Unauthorized)) message.replaceChildren(notice(err.message, "error"));
        }
      },
    },
    h("h2", {}, "Add or describe an event type"),
    h("div", { class: "row" }, h("label", {}, "Name", name), h("label", {}, "Description", description)),
    h("label", {}, "Example payload (JSON object)", example),
    h("button", { type: "submit" }, "Save"),
  );
  return form;
}

// ---------------------------------------------------------------- routing

let timers = [];

function every(task) {
  const timer = setInterval(() => task().catch(report), REFRESH_MS);
  timers.push(timer);
}

function stopTimers() {
  timers.forEach(clearInterval);
  timers = [];
}

function report(err) {
  if (err instanceof Unauthorized) return;
  console.error(err);
  const main = document.getElementById("main");
  main.querySelector(".notice.load-error")?.remove();
  main.prepend(h("p", { class: "notice error load-error", role: "alert" }, err.message));
}

async function route() {
  stopTimers();
  const [path] = location.hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean);
  document.getElementById("sign-out").hidden = !sessionStorage.getItem(TOKEN_KEY);
  try {
    await loadAccess();
    // A tenant starts at its endpoints: the overview is the relay's.
    const view = parts[0] || (isTenant() ? "endpoints" : "overview");
    for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.view === view);
    if (view === "endpoints") await endpoints();
    else if (view === "deliveries" && parts[1]) await deliveryDetail(decodeURIComponent(parts[1]));
    else if (view === "deliveries") await deliveries();
    else if (view === "event-types") await eventTypes();
    else if (isTenant()) await endpoints();
    else await overview();
  } catch (err) {
    report(err);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    access = null;
    route();
  });
  window.addEventListener("hashchange", route);
  route();
});
