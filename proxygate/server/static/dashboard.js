// proxygate dashboard: plain ES module, no build. Pages are server-rendered shells; this fills
// them from /admin/api with the session cookie, sending the page's CSRF token on every change.
// Everything from the server is put in the page as text (never as HTML).

const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
const page = document.body.dataset.page;
const $ = (sel, root = document) => root.querySelector(sel);

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { accept: "application/json" };
  if (method !== "GET") {
    headers["x-csrf-token"] = csrf;
    headers["content-type"] = "application/json";
  }
  const resp = await fetch(path, {
    method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await resp.json(); } catch { data = null; }
  if (resp.status === 401) {
    location.assign("/login?next=" + encodeURIComponent(location.pathname));
    throw new Error("logged out");
  }
  if (!resp.ok) {
    const err = data?.error;
    throw new Error((typeof err === "string" ? err : err?.message) || `HTTP ${resp.status}`);
  }
  return data;
}

function say(text, isError = false) {
  const el = $("#status");
  if (!el) return;
  el.textContent = text;
  el.className = isError ? "error" : "";
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  let s = Math.max(0, Math.round(seconds));
  const d = Math.floor(s / 86400); s -= d * 86400;
  const hh = Math.floor(s / 3600); s -= hh * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d) return `${d}d ${hh}h`;
  if (hh) return `${hh}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}
const num = (n) => (n ?? 0).toLocaleString("en-US");
const usd = (v) => (v === null || v === undefined ? "—" : `$${v < 1 ? v.toFixed(4) : v.toFixed(2)}`);
const ms = (v) => (v ? `${Math.round(v)} ms` : "—");

// -- Pool ------------------------------------------------------------------------------------

const STATE_CLASS = {
  ready: "ready", "cooling down": "cooling", held: "cooling", "needs re-auth": "reauth", quarantined: "reauth",
  disabled: "disabled",
};
const pct = (v) => (v === null || v === undefined ? "—" : `${Math.round(v * 100)}%`);

function windowRow(w) {
  const label = w.model ? `${w.window} (${w.model})` : w.window;
  const left = w.left_pct;
  const text = left === null ? "unknown" : `${left}% left`;
  const reset = w.resets_in_s !== null ? ` · resets in ${duration(w.resets_in_s)}` : "";
  return h("div", { class: "window" },
    h("span", {}, label),
    left === null ? h("span", {}, "—")
      : h("meter", { min: 0, max: 100, low: 15, high: 40, optimum: 100, value: left, "aria-label": `${label}: ${text}` }),
    h("span", {}, text + reset + (w.rejected ? " · refused" : "")));
}

function accountCard(a, costs, index) {
  const headingId = `acct-${index}`;
  const cls = STATE_CLASS[a.state] ?? "invalid";
  let state = a.state;
  if (a.state === "cooling down") state += ` · ${duration(a.cooldown_s)} left`;
  const today = a.today ?? {};
  const cost = costs[a.id];
  const actions = h("div", { class: "actions", role: "group", "aria-label": `Actions for ${a.id}` },
    h("button", { type: "button", dataset: { action: a.enabled ? "disable" : "enable", id: a.id, key: `toggle:${a.id}` } },
      a.enabled ? "Disable" : "Enable"),
    h("button", { type: "button", dataset: { action: "reset", id: a.id, key: `reset:${a.id}` } }, "Reset"),
    h("button", { type: "button", dataset: { action: "check", id: a.id, key: `check:${a.id}` } }, "Check"),
    h("button", { type: "button", class: "danger", dataset: { action: "delete", id: a.id, key: `delete:${a.id}` } }, "Delete"));
  return h("article", { class: "card", "aria-labelledby": headingId, dataset: { account: a.id } },
    h("h2", { id: headingId }, a.id),
    h("p", { class: "meta" }, [...new Set([a.kind, a.provider])].concat([a.plan, a.email !== a.id ? a.email : ""]).filter(Boolean).join(" · ")),
    h("p", {}, h("span", { class: `state state-${cls}` }, state)),
    a.reason ? h("p", { class: "meta" }, a.reason) : null,
    ...(a.windows ?? []).map(windowRow),
    h("dl", { class: "nums" },
      h("div", {}, h("dt", {}, "in flight"), h("dd", {}, num(a.inflight))),
      h("div", {}, h("dt", {}, "pinned"), h("dd", {}, num(a.pins))),
      h("div", {}, h("dt", {}, "requests today"), h("dd", {}, num(today.requests))),
      h("div", {}, h("dt", {}, "tokens today"), h("dd", {}, num(today.tokens))),
      h("div", {}, h("dt", {}, a.kind === "apikey" ? "cost today" : "API value today"), h("dd", {}, usd(cost))),
      h("div", {}, h("dt", {}, "errors today"), h("dd", {}, num(today.errors))),
      h("div", {}, h("dt", {}, "cache hit rate"), h("dd", {}, pct(a.cache_hit_rate))),
      a.reserve_pct ? h("div", {}, h("dt", {}, "reserve"), h("dd", {}, `${a.reserve_pct}%`)) : null,
      a.kind === "claude" || a.overage_requests
        ? h("div", {}, h("dt", {}, "overage"), h("dd", {}, `${a.overage ?? "never"} · ${num(a.overage_requests)} answered`))
        : null),
    actions);
}

async function renderPool(focusKey = document.activeElement?.dataset?.key) {
  const [status, usage] = await Promise.all([
    api("/admin/api/status"),
    api("/admin/api/usage?by=account").catch(() => ({ rows: [] })),
  ]);
  const costs = Object.fromEntries((usage.rows ?? []).map((r) => [r.account, r.cost_usd]));
  const focused = document.activeElement?.dataset?.key ?? focusKey; // re-rendered controls keep the focus
  const wrap = $("#accounts");
  wrap.replaceChildren(...status.accounts.map((a, i) => accountCard(a, costs, i)));
  if (!status.accounts.length) {
    wrap.append(h("p", {}, "The pool is empty: ", h("a", { href: "/add" }, "add an account"), "."));
  }
  const lost = status.cache ?? {};
  if (lost.lost_count) {  // conversations moved off the account holding their prompt cache
    wrap.append(h("p", { class: "hint" }, `Prompt cache lost by moving conversations: ${num(lost.lost_count)} move(s), ` +
      `${usd(lost.lost_usd)} of cache written again.`));
  }
  const invalid = $("#invalid");
  invalid.replaceChildren();
  if (status.invalid_files.length) {
    invalid.append(h("h2", {}, "Files that failed to load"),
      h("ul", {}, ...status.invalid_files.map((f) => h("li", {}, h("code", {}, f.path), ": ", f.reason))));
  }
  if (focused) document.querySelector(`[data-key="${CSS.escape(focused)}"]`)?.focus();
  const route = $("#route-label");
  if (!route) $("h1").after(h("p", { class: "hint", id: "route-label" }, `Routing: ${status.route}`));
  else route.textContent = `Routing: ${status.route}`;
}

function confirmDelete(id) {
  const dialog = $("#confirm");
  $("#confirm-text").textContent = `Delete ${id}? Its file is removed from the pool.`;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
    dialog.showModal();
    $("#confirm-ok").focus();
  });
}

async function poolAction(button) {
  const { action, id, key } = button.dataset;
  const path = `/admin/api/accounts/${encodeURIComponent(id)}/${action}`;
  if (action === "delete" && !(await confirmDelete(id))) return;
  button.disabled = true;
  try {
    const result = await api(path, { method: "POST" });
    if (action === "check") {
      say(`${id} (${result.model}): HTTP ${result.status} in ${result.latency_ms} ms — ${result.said}`, result.status >= 400);
    } else {
      say({ enable: `${id} enabled`, disable: `${id} disabled`, reset: `${id} reset`, delete: `${id} deleted` }[action]);
    }
  } catch (e) {
    say(`${action} ${id}: ${e.message}`, true);
  } finally {
    button.disabled = false;
    await renderPool(key).catch(() => {});
  }
}

function initPool() {
  $("#accounts").addEventListener("click", (ev) => {
    const button = ev.target.closest("button[data-action]");
    if (button) poolAction(button);
  });
  const refresh = () => renderPool().catch((e) => say(`cannot load the pool: ${e.message}`, true));
  refresh();
  setInterval(refresh, 3000);
}

// -- Add account -----------------------------------------------------------------------------

let currentLogin = null;

async function startLogin(provider) {
  try {
    currentLogin = await api("/admin/api/logins", { method: "POST", body: { provider } });
  } catch (e) {
    say(`cannot start the login: ${e.message}`, true);
    return;
  }
  $("#login-steps").hidden = false;
  $("#login-link").href = currentLogin.url;
  $("#login-link").textContent = provider === "chatgpt" ? "Open the ChatGPT sign-in page" : "Open the Claude sign-in page";
  $("#login-text").textContent = provider === "chatgpt"
    ? "Sign in in the new tab; this page follows by itself. Signing in on another device? Paste the address its browser ends on below."
    : "Sign in in the new tab, then paste the code Claude shows (code#state) below.";
  $("#login-link").focus();
  if (provider === "chatgpt") pollLogin(currentLogin.id);
}

function loginDone(status) {
  say(`Added ${status.account_id}. Opening the Pool page…`);
  setTimeout(() => location.assign("/"), 600);
}

async function pollLogin(id) {
  while (currentLogin?.id === id) {
    await new Promise((r) => setTimeout(r, 2000));
    let status;
    try { status = await api(`/admin/api/logins/${encodeURIComponent(id)}`); } catch { return; }
    if (status.status === "done") { loginDone(status); return; }
    if (status.status === "failed") { say(`login failed: ${status.message}`, true); return; }
    if (status.message) $("#login-text").textContent = status.message;
  }
}

function initLogins() {
  for (const button of document.querySelectorAll("button[data-login]")) {
    button.addEventListener("click", () => startLogin(button.dataset.login));
  }
  $("#login-paste").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!currentLogin) return;
    const form = ev.target;
    try {
      const status = await api(`/admin/api/logins/${encodeURIComponent(currentLogin.id)}/code`, {
        method: "POST", body: { code: form.elements.code.value, email: form.elements.email.value },
      });
      form.reset();
      if (status.status === "done") loginDone(status);
      else say(`login ${status.status}: ${status.message}`, status.status === "failed");
    } catch (e) {
      say(`not finished: ${e.message}`, true);
    }
  });
}

function initAdd() {
  initLogins();
  const form = $("#add-key");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const data = Object.fromEntries(new FormData(form).entries());
    try {
      const added = await api("/admin/api/accounts", { method: "POST", body: data });
      form.reset();
      say(`Added ${added.id} (key ${added.key}). Opening the Pool page…`);
      setTimeout(() => location.assign("/"), 600);
    } catch (e) {
      form.elements.api_key.value = "";
      say(`Not added: ${e.message}`, true);
    }
  });
}

// -- Traffic ---------------------------------------------------------------------------------

const MAX_ROWS = 500;

function tokensOf(r) {
  return r.total_tokens ?? (r.input_tokens ?? 0) + (r.output_tokens ?? 0) + (r.cache_read_tokens ?? 0) + (r.cache_write_tokens ?? 0);
}

function trafficRows(r, isNew) {
  const time = new Date((r.ts ?? 0) * 1000).toLocaleTimeString();
  const ok = r.status > 0 && r.status < 400;
  const model = r.model_asked && r.model_asked !== r.model ? `${r.model_asked} → ${r.model}` : r.model;
  const detailId = `d-${r.request_id}`;
  const row = h("tr", {
    class: isNew ? "new" : "", dataset: { account: r.account_id ?? "", model: `${r.model_asked ?? ""} ${r.model ?? ""}`, ok: ok ? "ok" : "error" },
  },
  h("td", {}, time),
  h("td", {}, h("button", { type: "button", class: "link", "aria-expanded": "false", "aria-controls": detailId }, r.request_id)),
  h("td", {}, r.client_format ?? ""),
  h("td", {}, model ?? ""),
  h("td", {}, r.account_id || "—"),
  h("td", {}, r.route ?? ""),
  h("td", { class: "num" }, r.attempts ?? ""),
  h("td", { class: ok ? "" : "error" }, r.status || "—"),
  h("td", { class: "num" }, ms(r.first_byte_ms)),
  h("td", { class: "num" }, ms(r.latency_ms)),
  h("td", { class: "num" }, num(tokensOf(r))),
  h("td", { class: "num" }, usd(r.cost_usd)));
  const tried = (r.failovers ?? []).map((f, i) =>
    h("li", {}, `attempt ${i + 1}: ${f.account_id}: ${f.status ? `HTTP ${f.status}` : "no answer"}: ${f.error}`));
  const detail = h("tr", { class: "detail", id: detailId, hidden: true },
    h("td", { colspan: 12 },
      tried.length ? h("ol", { class: "attempts" }, ...tried) : null,
      `${r.attempts ?? 1} attempt(s); served by ${r.account_id || "no account"}` +
      ` (${r.upstream_format ?? r.client_format ?? "?"}), status ${r.status}` +
      (r.error_class ? `; error ${r.error_class}: ${r.error ?? ""}` : "") +
      `; tokens in ${num(r.input_tokens)}, out ${num(r.output_tokens)}, cache read ${num(r.cache_read_tokens)}, cache write ${num(r.cache_write_tokens)}` +
      (r.is_stream ? "; streamed" : "")));
  return [row, detail];
}

function applyFilters() {
  const f = Object.fromEntries(new FormData($("#filters")).entries());
  for (const row of document.querySelectorAll("#traffic tbody tr:not(.detail)")) {
    const show = (!f.account || row.dataset.account.includes(f.account)) &&
      (!f.model || row.dataset.model.includes(f.model)) && (!f.status || row.dataset.ok === f.status);
    row.hidden = !show;
    if (!show) row.nextElementSibling.hidden = true;
  }
}

function initTraffic() {
  const body = $("#traffic tbody");
  const seen = new Set();
  const add = (r, isNew) => {
    if (seen.has(r.request_id)) return;
    seen.add(r.request_id);
    const rows = trafficRows(r, isNew);
    if (isNew) body.prepend(...rows); else body.append(...rows);
    while (body.rows.length > MAX_ROWS * 2) body.lastElementChild.remove();
  };
  body.addEventListener("click", (ev) => {
    const button = ev.target.closest("button[aria-controls]");
    if (!button) return;
    const detail = document.getElementById(button.getAttribute("aria-controls"));
    detail.hidden = !detail.hidden;
    button.setAttribute("aria-expanded", String(!detail.hidden));
  });
  $("#filters").addEventListener("input", applyFilters);
  $("#filters").addEventListener("submit", (ev) => ev.preventDefault());
  const state = $("#feed-state");
  const feed = new EventSource("/admin/api/traffic/stream");
  feed.onopen = () => { state.textContent = "Live: new requests appear at the top."; };
  feed.onerror = () => { state.textContent = "Live feed interrupted; reconnecting…"; };
  feed.onmessage = (ev) => { add(JSON.parse(ev.data), true); applyFilters(); };
  window.addEventListener("pagehide", () => feed.close());
  api("/admin/api/requests?limit=100").then((page) => {
    for (const r of page.requests) add(r, false);
    applyFilters();
  }).catch((e) => say(`cannot load recent requests: ${e.message}`, true));
}

// -- Usage & cost ----------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  el.append(...children);
  return el;
}

function barChart(items, label, format) {
  const width = 640, height = 220, left = 60, bottom = 40, top = 10;
  const max = Math.max(...items.map((i) => i.value), 0) || 1;
  const bw = (width - left - 10) / Math.max(items.length, 1);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label });
  for (const frac of [0, 0.5, 1]) {
    const y = top + (height - top - bottom) * (1 - frac);
    svg.append(s("line", { class: "grid", x1: left, x2: width - 5, y1: y, y2: y }),
      s("text", { class: "axis", x: left - 6, y: y + 3, "text-anchor": "end" }, format(max * frac)));
  }
  items.forEach((item, i) => {
    const bh = ((height - top - bottom) * item.value) / max;
    const x = left + i * bw + bw * 0.15;
    svg.append(s("rect", { class: "bar", x, y: height - bottom - bh, width: Math.max(bw * 0.7, 1), height: bh },
      s("title", {}, `${item.label}: ${format(item.value)}`)));
    if (items.length <= 14 || i % Math.ceil(items.length / 12) === 0) {
      svg.append(s("text", { class: "axis", x: x + bw * 0.35, y: height - bottom + 14, "text-anchor": "middle" },
        item.label.length > 12 ? item.label.slice(0, 11) + "…" : item.label));
    }
  });
  return svg;
}

let usageRows = [];

async function renderUsage() {
  const f = Object.fromEntries(new FormData($("#usage-form")).entries());
  const timeBy = f.since === "24h" ? "hour" : "day";
  const [series, groups] = await Promise.all([
    api(`/admin/api/usage?since=${f.since}&by=${timeBy}`),
    api(`/admin/api/usage?since=${f.since}&by=${f.by}`),
  ]);
  const t = groups.total;
  const totals = [
    ["Requests", num(t.requests)], ["Errors", num(t.errors)], ["Tokens", num(t.total_tokens)],
    ["API cost", usd(t.api_cost_usd)], ["Subscription API value", usd(t.subscription_value_usd)],
    ["Cache hit rate", t.cache_hit_rate === null ? "—" : `${(t.cache_hit_rate * 100).toFixed(1)}%`],
    ["Cost (all)", usd(t.cost_usd) + (t.cost_is_partial ? " (partial)" : "")],
  ];
  $("#totals").replaceChildren(h("dl", { class: "totals" }, ...totals.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v)))));
  const costOrTokens = (rows, key) => rows.map((r) => ({ label: String(r[key]), value: r.cost_usd ?? 0 }));
  const timeItems = costOrTokens(series.rows, timeBy).map((i) => ({ ...i, label: timeBy === "hour" ? i.label.slice(11, 16) : i.label.slice(5) }));
  $("#chart-time").replaceChildren(timeItems.length
    ? barChart(timeItems, `Cost by ${timeBy}`, (v) => usd(v)) : h("p", { class: "hint" }, "No traffic in this period."));
  $("#chart-group").replaceChildren(groups.rows.length
    ? barChart(groups.rows.map((r) => ({ label: String(r[f.by] || "—"), value: r.total_tokens })), `Tokens by ${f.by}`, (v) => num(Math.round(v)))
    : h("p", { class: "hint" }, "No traffic in this period."));
  usageRows = groups.rows.map((r) => ({ [f.by]: r[f.by], requests: r.requests, errors: r.errors, input_tokens: r.input_tokens,
    output_tokens: r.output_tokens, cache_read_tokens: r.cache_read_tokens, cache_write_tokens: r.cache_write_tokens,
    total_tokens: r.total_tokens, cache_hit_rate: r.cache_hit_rate, cost_usd: r.cost_usd }));
  const cols = usageRows.length ? Object.keys(usageRows[0]) : [f.by, "requests", "total_tokens", "cost_usd"];
  $("#usage-rows thead").replaceChildren(h("tr", {}, ...cols.map((c) => h("th", { scope: "col" }, c.replaceAll("_", " ")))));
  $("#usage-rows tbody").replaceChildren(...usageRows.map((r) => h("tr", {}, ...cols.map((c) =>
    h("td", { class: c === cols[0] ? "" : "num" }, c === "cost_usd" ? usd(r[c]) : c === "cache_hit_rate" ? (r[c] === null ? "—" : `${(r[c] * 100).toFixed(1)}%`) : typeof r[c] === "number" ? num(r[c]) : (r[c] || "—"))))));
}

function exportCsv() {
  if (!usageRows.length) { say("Nothing to export for this period."); return; }
  const cols = Object.keys(usageRows[0]);
  const cell = (v) => (v === null || v === undefined ? "" : /[",\n]/.test(String(v)) ? `"${String(v).replaceAll('"', '""')}"` : String(v));
  const text = [cols.join(","), ...usageRows.map((r) => cols.map((c) => cell(r[c])).join(","))].join("\n") + "\n";
  const url = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
  const a = h("a", { href: url, download: `proxygate-usage.csv` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function initUsage() {
  const refresh = () => renderUsage().catch((e) => say(`cannot load usage: ${e.message}`, true));
  $("#usage-form").addEventListener("change", refresh);
  $("#usage-form").addEventListener("submit", (ev) => ev.preventDefault());
  $("#csv").addEventListener("click", exportCsv);
  refresh();
}

// -- Routing ---------------------------------------------------------------------------------

async function renderRouting() {
  const cfg = await api("/admin/api/config");
  const box = $("#aliases-form").elements.aliases;
  if (document.activeElement !== box) box.value = aliasesText(cfg.aliases);
  $("#routes").replaceChildren(...cfg.routes.map((r) => {
    const tiers = Object.entries(r.tiers);
    return h("article", { class: "card", "aria-label": `Routing config ${r.name}` },
      h("h3", {}, r.name, r.active ? " (active)" : ""),
      h("p", { class: "meta" }, `strategy: ${r.strategy}`),
      tiers.length ? h("div", { class: "scroll" }, h("table", {},
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "tier"), h("th", { scope: "col" }, "accounts"),
          h("th", { scope: "col" }, "model"), h("th", { scope: "col" }, "fallback"))),
        h("tbody", {}, ...tiers.map(([name, t]) => h("tr", {}, h("td", {}, name), h("td", {}, t.accounts.join(", ")),
          h("td", {}, t.model || "(the client's)"), h("td", {}, t.fallback.join(", ") || "—"))))))
        : h("p", { class: "hint" }, "Every account, for every model."),
      r.active ? null : h("button", { type: "button", dataset: { use: r.name, key: `use:${r.name}` } }, `Use ${r.name}`));
  }));
  const aliases = Object.entries(cfg.aliases);
  const budgets = Object.entries(cfg.budgets);
  $("#rules").replaceChildren(
    h("h3", {}, "Aliases"),
    aliases.length ? h("ul", {}, ...aliases.map(([k, v]) => h("li", {}, h("code", {}, k), " → ", h("code", {}, v))))
      : h("p", { class: "hint" }, "None: clients' model names go to the pool as they are."),
    h("h3", {}, "Budgets"),
    budgets.length ? h("ul", {}, ...budgets.map(([k, b]) => h("li", {}, h("code", {}, k), ": ",
      [b.daily_usd && `${usd(b.daily_usd)}/day`, b.monthly_usd && `${usd(b.monthly_usd)}/month`,
        b.daily_tokens && `${num(b.daily_tokens)} tokens/day`, b.monthly_tokens && `${num(b.monthly_tokens)} tokens/month`]
        .filter(Boolean).join(", ") || "no limit")))
      : h("p", { class: "hint" }, "None."),
    h("p", { class: "hint" }, `Configured in ${cfg.config_path ?? "(no config file: defaults)"}. ` +
      "Switching the active config applies at once and is remembered across restarts."));
}

function aliasesText(aliases) {
  return Object.entries(aliases).map(([k, v]) => `${k} = ${v}`).join("\n");
}

async function saveAliases(ev) {
  ev.preventDefault();
  const aliases = {};
  for (const line of ev.target.elements.aliases.value.split("\n")) {
    if (!line.trim()) continue;
    const [name, target] = line.split("=").map((part) => part.trim());
    if (!name || !target) { say(`not "name = model": ${line}`, true); return; }
    aliases[name] = target;
  }
  try {
    const saved = await api("/admin/api/config/routing", { method: "POST", body: { aliases } });
    say(`Saved to ${saved.config_path} (previous file: ${saved.backup}); applied now.`);
  } catch (e) {
    say(`not saved: ${e.message}`, true);
  }
  await renderRouting().catch(() => {});
}

async function saveBudget(ev) {
  ev.preventDefault();
  const form = ev.target;
  const limits = {};
  for (const key of ["daily_usd", "monthly_usd", "daily_tokens", "monthly_tokens"]) {
    const value = form.elements[key].value;
    limits[key] = value === "" ? null : Number(value);
  }
  const account = form.elements.account.value.trim();
  try {
    const saved = await api("/admin/api/config/routing", { method: "POST", body: { budgets: { [account]: limits } } });
    say(`Budget of ${account} saved to ${saved.config_path} (previous file: ${saved.backup}); applied now.`);
  } catch (e) {
    say(`not saved: ${e.message}`, true);
  }
  await renderRouting().catch(() => {});
}

function initRouting() {
  $("#aliases-form").addEventListener("submit", saveAliases);
  $("#budget-form").addEventListener("submit", saveBudget);
  $("#routes").addEventListener("click", async (ev) => {
    const button = ev.target.closest("button[data-use]");
    if (!button) return;
    try {
      const result = await api("/admin/api/route", { method: "POST", body: { name: button.dataset.use } });
      say(`Routing now: ${result.route}`);
    } catch (e) {
      say(`cannot switch: ${e.message}`, true);
    }
    await renderRouting().catch(() => {});
    $("#routes button")?.focus();
  });
  renderRouting().catch((e) => say(`cannot load routing: ${e.message}`, true));
}

// -- Setup -----------------------------------------------------------------------------------

function initSetup() {
  document.addEventListener("click", async (ev) => {
    const button = ev.target.closest("button[data-copy]");
    if (!button) return;
    const text = document.getElementById(button.dataset.copy).textContent;
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
      say("Copied to the clipboard.");
    } catch {
      say("The browser refused the clipboard: select the text and copy it.", true);
    }
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  });
}

// -- Login -----------------------------------------------------------------------------------

function initLogin() {
  const form = $("#login-form");
  if (form?.elements.code) form.requestSubmit(); // a one-time link: log in at once (a POST)
}

const INIT = { pool: initPool, add: initAdd, traffic: initTraffic, usage: initUsage, routing: initRouting, setup: initSetup, login: initLogin };
INIT[page]?.();
