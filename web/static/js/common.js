/* Shared by every page: configuration, the JSON API, DOM building, names and numbers. No framework. */
"use strict";

const CONFIG = JSON.parse(document.getElementById("config").textContent);

// The skip link moves the focus without touching the URL: the shop routes on the hash, and "#main" is no page.
document.querySelector("a.skip").addEventListener("click", (event) => {
  event.preventDefault();
  document.getElementById("main").focus();
});

/** GET/POST JSON; never throws on an HTTP error: {ok, status, body} (body null when not JSON). */
async function api(path, options = {}) {
  const init = { headers: { Accept: "application/json" }, ...options };
  if (options.json !== undefined) {
    init.method = init.method || "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.json);
    delete init.json;
  }
  try {
    const response = await fetch(path, init);
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    return { ok: response.ok, status: response.status, body };
  } catch (error) {
    return { ok: false, status: 0, body: { detail: `network error: ${error.message}` } };
  }
}

/** el("li", {class: "x", text: "hi"}, child, ...): text goes through textContent (never HTML). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function capitalise(text) { return text ? text[0].toUpperCase() + text.slice(1) : text; }

/** "Samsung smartphone #1002099": the same rule as services/api/catalog.product_name. */
function productName(item) {
  if (item.name) return item.name;
  const kind = item.category_code ? item.category_code.split(".").pop().replaceAll("_", " ") : "";
  const text = [item.brand ? capitalise(item.brand) : "", kind].filter(Boolean).join(" ");
  return `${text ? capitalise(text) : "Product"} #${item.product_id}`;
}

const money = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });
function price(value) { return value === null || value === undefined ? "price unknown" : money.format(value); }
function number(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}
function percent(value, digits = 1) { return value === null || value === undefined ? "–" : `${(100 * value).toFixed(digits)}%`; }
function clock(date = new Date()) { return date.toLocaleTimeString("en-GB", { hour12: false }); }

function setStatus(node, text, kind = "") {
  node.textContent = text;
  node.classList.remove("error", "ok");
  if (kind) node.classList.add(kind);
}

/** A readable message from an API error body ({error, detail} or FastAPI's 422 list). */
function errorText(result) {
  const body = result.body || {};
  if (Array.isArray(body.detail)) return body.detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  return body.detail || body.error || `HTTP ${result.status}`;
}

/** Render a recommendations answer into an <ol> (shop and lookup). */
function renderRecommendations(list, answer, { link = true } = {}) {
  list.replaceChildren(...answer.items.map((item) => {
    const name = productName(item);
    return el("li", { "data-product-id": item.product_id },
      link ? el("a", { href: `/#product/${item.product_id}`, text: name }) : el("span", { text: name }),
      " ", el("span", { class: "price", text: price(item.price) }),
      el("span", { class: "reason", text: item.reason }));
  }));
}

function fallbackText(answer) {
  if (!answer.fallbacks || !answer.fallbacks.length) return "";
  return "Tried first: " + answer.fallbacks.map((f) => `${f.source} (${f.reason.replaceAll("_", " ")})`).join(", ");
}
