/* The dashboard: analytics KPIs as plotly charts, live panels from /live/summary. */
"use strict";

const $ = (id) => document.getElementById(id);
const ZONE = CONFIG.time_zone;
const LAYOUT = {
  margin: { l: 60, r: 16, t: 10, b: 40 }, paper_bgcolor: "#fff", plot_bgcolor: "#fff",
  font: { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 12, color: "#16202c" },
  // above the plot, from the chart's left edge: never over the axis labels
  legend: { orientation: "h", xref: "container", x: 0, yref: "container", y: 1, yanchor: "top" }, hoverlabel: { namelength: -1 },
};
const LEGEND_TOP = 34; // the top margin of a chart with a legend
const PLOT = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d"] };
const BLUE = "#1d4ed8", ORANGE = "#d97706", GREY = "#64748b";
const LIVE_POINTS = 150;

/** Draw (or redraw) one chart; marks the div so tests and people can tell it is done. */
function plot(id, traces, layout = {}) {
  const div = $(id);
  const merged = { ...LAYOUT, ...layout, xaxis: { automargin: true, ...(layout.xaxis || {}) }, yaxis: { automargin: true, ...(layout.yaxis || {}) } };
  return Plotly.react(div, traces, merged, PLOT).then(() => { div.dataset.rendered = "1"; });
}

function noData(id, text) {
  const div = $(id);
  div.dataset.rendered = "1";
  div.dataset.empty = "1";
  div.replaceChildren(el("p", { class: "meta", text }));
}

function table(name, answer) { return (answer.tables.find((t) => t.name === name) || { rows: [] }).rows; }
/** Axis labels fit a phone: fewer characters when the chart is narrow. */
function labelRoom(id, wide = 28) { return $(id).clientWidth < 500 ? Math.round(wide * 0.6) : wide; }
/** At most n characters; a category code loses its leading levels first ("…kitchen.dishwasher"). */
function short(text, n = 28) {
  if (!text || text.length <= n) return text;
  const parts = text.split(".");
  while (parts.length > 1 && parts.join(".").length + 1 > n) parts.shift();
  const tail = parts.join(".");
  return tail.length + 1 <= n ? `…${tail}` : `${tail.slice(0, n - 1)}…`;
}

// --- analytics -------------------------------------------------------------------------------------------

let analyticsVersion = null;

async function loadAnalytics() {
  const paths = { funnel: "/analytics/funnel", categories: "/analytics/categories?limit=10", brands: "/analytics/brands?limit=500",
    abandonment: "/analytics/abandonment?limit=10", prime: "/analytics/prime-time", revenue: "/analytics/revenue",
    customers: "/analytics/customers?limit=10" };
  const names = Object.keys(paths);
  const results = await Promise.all(names.map((n) => api(paths[n])));
  const a = Object.fromEntries(names.map((n, i) => [n, results[i]]));
  if (!a.funnel.ok) {
    setStatus($("analytics-status"), a.funnel.status === 503 ? "No analytics artifact yet: run `clickrec analytics`." : errorText(a.funnel), "error");
    for (const id of ["funnel", "categories", "brands", "abandonment", "hours", "daily", "customers"]) noData(`chart-${id}`, "No analytics yet.");
    return;
  }
  if (a.funnel.body.version === analyticsVersion) return;
  analyticsVersion = a.funnel.body.version;
  $("analytics-version").textContent = `version ${analyticsVersion}`;
  const range = a.funnel.body.data_range || {};
  $("analytics-range").textContent = range.first_event ? `${range.first_event} to ${range.last_event}` : "range unknown";
  setStatus($("analytics-status"), "");
  drawFunnel(a.funnel.body);
  drawCategories(a.categories.body);
  drawBrands(a.brands.body);
  drawAbandonment(a.abandonment.body);
  drawHours(a.prime.body);
  drawDaily(a.revenue.body);
  drawCustomers(a.customers.body);
}

function drawFunnel(answer) {
  const rows = table("funnel", answer);
  if (!rows.length) return noData("chart-funnel", "No funnel rows.");
  const stages = ["viewed", "carted", "purchased"];
  const traces = rows.map((r, i) => ({ type: "funnel", name: r.level, y: stages, x: stages.map((s) => r[s]),
    textinfo: "value+percent initial", textposition: "inside", connector: { visible: false },
    marker: { color: i ? ORANGE : BLUE } }));
  const sessions = rows.find((r) => r.level === "sessions");
  if (sessions) $("funnel-caption").textContent =
    `Sessions: ${percent(sessions.cart_rate)} of viewing sessions cart, ${percent(sessions.purchase_rate)} of carting ones buy; conversion ${percent(sessions.conversion, 2)}.`;
  return plot("chart-funnel", traces, { funnelmode: "group", margin: { l: 80, r: 16, t: LEGEND_TOP, b: 30 } });
}

function drawCategories(answer) {
  const rows = table("categories", answer).slice(0, 10).reverse();
  if (!rows.length) return noData("chart-categories", "No purchases by category.");
  const room = labelRoom("chart-categories");
  return plot("chart-categories", [{ type: "bar", orientation: "h", name: "revenue", y: rows.map((r) => short(r.category_code, room)),
    x: rows.map((r) => r.revenue), marker: { color: BLUE },
    customdata: rows.map((r) => [r.purchases, r.buyers, r.category_code]),
    hovertemplate: "%{customdata[2]}<br>revenue %{x:$,.2f}<br>%{customdata[0]} purchases by %{customdata[1]} buyers<extra></extra>" }],
  { xaxis: { title: { text: "revenue (USD)" }, nticks: 5 } });
}

function drawBrands(answer) {
  const rows = table("top_brands_by_category", answer).filter((r) => r.brand)
    .sort((p, q) => q.revenue - p.revenue).slice(0, 12).reverse();
  if (!rows.length) return noData("chart-brands", "No brand purchases.");
  const room = labelRoom("chart-brands", 20);
  return plot("chart-brands", [{ type: "bar", orientation: "h", y: rows.map((r) => `${r.brand} · ${short(r.category_code.split(".").pop(), room)}`),
    x: rows.map((r) => r.revenue), marker: { color: ORANGE }, customdata: rows.map((r) => [r.purchases, r.category_code, r.rank]),
    hovertemplate: "%{y}<br>revenue %{x:$,.2f}, %{customdata[0]} purchases<br>#%{customdata[2]} in %{customdata[1]}<extra></extra>" }],
  { xaxis: { title: { text: "revenue (USD)" }, nticks: 5 } });
}

function drawAbandonment(answer) {
  const byCategory = table("cart_conversion_by_category", answer).slice(0, 8);
  const byBrand = table("cart_conversion_by_brand", answer).slice(0, 8);
  if (!byCategory.length && !byBrand.length) return noData("chart-abandonment", "No group has enough carts yet.");
  const room = labelRoom("chart-abandonment", 26);
  // the legend tells categories (codes with dots) from brands
  const trace = (rows, key, name, color) => ({ type: "bar", orientation: "h", name, y: rows.map((r) => short(r[key], room)),
    x: rows.map((r) => 100 * r.abandonment_rate), marker: { color }, customdata: rows.map((r) => [r.carts, r.converted, `${name} ${r[key]}`]),
    hovertemplate: "%{customdata[2]}<br>%{x:.1f}% abandoned<br>%{customdata[0]} carts, %{customdata[1]} bought<extra></extra>" });
  return plot("chart-abandonment", [trace(byCategory.slice().reverse(), "category_code", "category", BLUE),
    trace(byBrand.slice().reverse(), "brand", "brand", ORANGE)],
  { xaxis: { title: { text: "abandoned carts (%)" }, range: [0, 100] }, margin: { l: 60, r: 16, t: LEGEND_TOP, b: 40 } });
}

function drawHours(answer) {
  const rows = table("purchases_by_hour", answer);
  if (!rows.length) return noData("chart-hours", "No purchases.");
  const zone = rows[0].time_zone || ZONE;
  const byHour = new Map(rows.map((r) => [r.hour, r]));
  const hours = [...Array(24).keys()];
  return plot("chart-hours", [{ type: "bar", x: hours, y: hours.map((h) => (byHour.get(h) || {}).purchases || 0), marker: { color: BLUE },
    customdata: hours.map((h) => (byHour.get(h) || {}).revenue || 0),
    hovertemplate: `%{x}:00 ${zone}<br>%{y} purchases, %{customdata:$,.2f}<extra></extra>` }],
  { xaxis: { title: { text: `hour of day (${zone})` }, dtick: 3 }, yaxis: { title: { text: "purchases" } } });
}

function drawDaily(answer) {
  const rows = table("revenue_daily", answer);
  if (!rows.length) return noData("chart-daily", "No daily revenue.");
  const days = rows.map((r) => r.date);
  return plot("chart-daily", [
    { type: "bar", name: "purchases", x: days, y: rows.map((r) => r.purchases), marker: { color: "#93c5fd" } },
    { type: "scatter", mode: "lines+markers", name: "revenue", x: days, y: rows.map((r) => r.revenue), yaxis: "y2", line: { color: ORANGE } },
  ], { yaxis: { title: { text: "purchases" } }, yaxis2: { title: { text: "revenue (USD)" }, overlaying: "y", side: "right", automargin: true },
       xaxis: { type: "category", title: { text: `day (${rows[0].time_zone || ZONE})` } }, margin: { l: 60, r: 60, t: LEGEND_TOP, b: 40 } });
}

function drawCustomers(answer) {
  const rows = table("top_customers", answer).slice(0, 10);
  const body = $("customers-table").tBodies[0];
  body.replaceChildren(...rows.map((r) => el("tr", {}, el("td", { class: "num", text: r.rank }),
    el("td", {}, el("a", { href: `/lookup?user=${r.user_id}`, text: r.user_id })),
    el("td", { class: "num", text: number(r.purchases) }), el("td", { class: "num", text: price(r.spend) }),
    el("td", { class: "num", text: number(r.sessions) }))));
  if (!rows.length) return noData("chart-customers", "No customers yet.");
  const shown = rows.slice().reverse();
  return plot("chart-customers", [{ type: "bar", orientation: "h", y: shown.map((r) => `user ${r.user_id}`), x: shown.map((r) => r.spend),
    marker: { color: BLUE }, customdata: shown.map((r) => [r.purchases, r.sessions]),
    hovertemplate: "%{y}<br>%{x:$,.2f} in %{customdata[0]} purchases, %{customdata[1]} sessions<extra></extra>" }],
  { xaxis: { title: { text: "spend (USD)" } } });
}

// --- live --------------------------------------------------------------------------------------------------

const liveSeries = { x: [], y: [] };

function cell(text, cls) { return el("td", { class: cls, text }); }

async function loadLive() {
  const result = await api("/live/summary");
  if (!result.ok) { setStatus($("live-status"), `Live figures unavailable: ${errorText(result)}`, "error"); return; }
  const s = result.body;
  setStatus($("live-status"), s.online_store_error ? s.online_store_error : `Updated ${clock(new Date(s.at * 1000))}` +
    (s.scan_truncated ? " (key scan capped: the counts are lower bounds)" : ""), s.online_store_error ? "error" : "");
  $("kpi-events-per-s").textContent = number(s.events_per_s, 2);
  $("kpi-active-users").textContent = number(s.active_users_2m);
  const windows = s.stream.windows || {};
  $("kpi-lag").textContent = number(windows.lag_s, 2);
  $("kpi-batch-age").textContent = number(windows.age_s, 1);
  $("kpi-heartbeat").textContent = s.heartbeat_age_s === null ? "never" : number(s.heartbeat_age_s, 1);

  liveSeries.x.push(new Date(s.at * 1000));
  liveSeries.y.push(s.events_per_s ?? 0);
  if (liveSeries.x.length > LIVE_POINTS) { liveSeries.x.shift(); liveSeries.y.shift(); }
  // at least the last two minutes on the axis, so the first samples do not fill it with one repeated tick
  const end = liveSeries.x[liveSeries.x.length - 1];
  const start = new Date(Math.min(liveSeries.x[0].getTime(), end.getTime() - 120_000));
  plot("chart-live-rate", [{ type: "scatter", mode: "lines+markers", x: liveSeries.x, y: liveSeries.y, line: { color: BLUE },
    hovertemplate: "%{x|%H:%M:%S}<br>%{y:.2f} events/s<extra></extra>" }],
  { xaxis: { type: "date", tickformat: "%H:%M:%S", range: [start, new Date(end.getTime() + 4_000)], nticks: 5 },
    yaxis: { rangemode: "tozero", title: { text: "events / s" } }, showlegend: false });

  $("trending").tBodies[0].replaceChildren(...(s.trending.length ? s.trending.map((p) => el("tr", { "data-product-id": p.product_id },
    el("td", {}, el("a", { href: `/#product/${p.product_id}`, text: p.name })), cell(number(p.views), "num"), cell(number(p.carts), "num"),
    cell(number(p.purchases), "num"), cell(number(p.distinct_users), "num")))
    : [el("tr", {}, el("td", { colspan: "5", class: "meta", text: "No product activity in the last two minutes." }))]));

  const fresh = [
    ...s.freshness.map((f) => el("tr", {}, cell(`${f.group} windows`), cell(number(f.entities), "num"), cell(number(f.newest_write_age_s, 1), "num"), cell("", "num"))),
    ...Object.entries(s.stream).map(([query, q]) => el("tr", {}, cell(`stream batch: ${query}`),
      cell(q.input_rows === null ? "–" : `${number(q.input_rows)} rows (#${q.batch_id})`, "num"), cell(number(q.age_s, 1), "num"), cell(number(q.lag_s, 2), "num"))),
  ];
  $("freshness").tBodies[0].replaceChildren(...fresh);

  $("versions").tBodies[0].replaceChildren(...Object.entries(s.artifacts).map(([kind, a]) => el("tr", { "data-kind": kind },
    cell(kind), el("td", {}, a.version ? el("code", { text: a.version }) : el("span", { class: "badge warn", text: "none" })),
    el("td", {}, a.latest && a.latest !== a.version ? el("code", { text: a.latest }) : el("span", { class: "meta", text: a.latest ? "same" : "–" })),
    cell(a.error ? `error: ${a.error}` : a.loaded_at ? clock(new Date(a.loaded_at * 1000)) : "–"))));

  renderOfflineMetrics(s.offline_metrics);
}

function renderOfflineMetrics(m) {
  const out = [];
  if (m.ranker && m.ranker.test) {
    const orders = ["reranked", "als", "popular"].filter((o) => m.ranker.test[o]);
    out.push(el("div", { class: "table-wrap" }, el("table", {},
      el("caption", { class: "meta", text: `Ranker, held-out queries (${number(m.ranker.test_queries)})` }),
      el("thead", {}, el("tr", {}, el("th", { text: "order" }), ...["NDCG@10", "Recall@20", "HR@10", "MAP@10"].map((h) => el("th", { class: "num", text: h })))),
      el("tbody", {}, ...orders.map((o) => { const r = m.ranker.test[o];
        return el("tr", {}, cell(o), ...["ndcg@10", "recall@20", "hr@10", "map@10"].map((k) => cell(number(r[k], 4), "num"))); })))));
  } else {
    out.push(el("p", { class: "meta", text: "No ranker loaded: recommendations come from ALS and the fallbacks (train one with `clickrec train ranker`)." }));
  }
  if (m.purchase_model && m.purchase_model.test) {
    const t = m.purchase_model.test;
    out.push(el("p", {}, el("strong", { text: "Purchase model: " }),
      `AUC ${number(t.auc, 3)}, PR-AUC ${number(t.pr_auc, 3)}, accuracy ${percent(t.accuracy)} (majority ${percent(t.majority_accuracy)}) on ${number(t.rows)} held-out rows`));
  }
  if (m.candidates) {
    const c = m.candidates;
    out.push(el("p", {}, el("strong", { text: "Candidates: " }),
      `catalogue coverage ${percent(c.candidate_catalogue_coverage)}, ${number(c.items_with_neighbours)} items with neighbours` +
      (c.rows ? `, ${number(c.rows.users)} users × ${number(c.rows.items)} items` : "")));
  }
  $("offline-metrics").replaceChildren(...out);
}

loadAnalytics();
loadLive();
setInterval(() => { if (!document.hidden) loadLive(); }, CONFIG.poll_ms);
setInterval(() => { if (!document.hidden) loadAnalytics(); }, 60_000);
