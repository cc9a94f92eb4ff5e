/* The shop: identity and session per tab, browsing, product pages, live click events, the recommendation panel. */
"use strict";

const $ = (id) => document.getElementById(id);
const store = window.sessionStorage; // per browser tab: a new tab is a new session
const KEYS = { user: "clickrec.user", session: "clickrec.session", cart: "clickrec.cart" };
const CATEGORIES_SHOWN = 30;

/** 16 random bytes as a v4 UUID (crypto.randomUUID needs a secure context; this works over plain http too). */
function uuid4() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
function eventId() { return [...crypto.getRandomValues(new Uint8Array(8))].map((x) => x.toString(16).padStart(2, "0")).join(""); }
function anonymousId() {
  const [low, high] = CONFIG.anonymous_ids;
  const r = crypto.getRandomValues(new Uint32Array(2));
  return low + ((r[0] * 2 ** 32 + r[1]) % (high - low + 1));
}

const state = {
  user: null, // {id: number, anonymous: bool}
  session: null,
  product: null, // the product page's catalogue card
  list: { path: null, offset: 0, total: 0 },
  listHash: "", // the list the shopper came from ("Back to the list" returns there, even on a shared product link)
  recsSignature: null,
  recsInFlight: false,
  recsAgain: false,
  lastClickAt: null,
  cart: [],
};

// --- identity --------------------------------------------------------------------------------------------

function newSession() {
  state.session = uuid4();
  store.setItem(KEYS.session, state.session);
}

function setUser(user) {
  state.user = user;
  store.setItem(KEYS.user, JSON.stringify(user));
  renderIdentity();
  state.recsSignature = null;
  refreshRecommendations();
}

function renderIdentity() {
  const who = $("who");
  who.textContent = state.user.anonymous
    ? `Browsing anonymously as #${state.user.id} (a random anonymous id)`
    : `Signed in as user ${state.user.id}`;
  $("session-id").textContent = state.session;
  $("anonymous").textContent = state.user.anonymous ? "New anonymous visit" : "Sign out (browse anonymously)";
  $("lookup-me").href = `/lookup?user=${state.user.id}&session=${encodeURIComponent(state.session)}`;
}

function loadIdentity() {
  state.session = store.getItem(KEYS.session);
  if (!state.session) newSession();
  try { state.user = JSON.parse(store.getItem(KEYS.user)); } catch (_) { state.user = null; }
  if (!state.user || !Number.isSafeInteger(state.user.id)) {
    state.user = { id: anonymousId(), anonymous: true };
    store.setItem(KEYS.user, JSON.stringify(state.user));
  }
  try { state.cart = JSON.parse(store.getItem(KEYS.cart)) || []; } catch (_) { state.cart = []; }
  renderIdentity();
}

$("signin-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("user-id").value.trim();
  const id = Number(text);
  if (!/^[0-9]{1,16}$/.test(text) || !Number.isSafeInteger(id)) {
    setStatus($("signin-status"), "A user id is a whole number (digits only).", "error");
    $("user-id").focus();
    return;
  }
  setUser({ id, anonymous: false }); // the session goes on: signing in mid-visit keeps this tab's session
  setStatus($("signin-status"), `Signed in as user ${id}. Your clicks now count for this user.`, "ok");
});

$("anonymous").addEventListener("click", () => {
  newSession();
  state.cart = []; saveCart();
  setUser({ id: anonymousId(), anonymous: true });
  setStatus($("signin-status"), "New anonymous visit: a new random user id and a new session.", "ok");
});

// --- events ----------------------------------------------------------------------------------------------

const VERBS = { view: "Viewed", like: "Liked", wishlist: "Wishlisted", save_for_later: "Saved for later",
  cart: "Added to cart", remove_from_cart: "Removed from cart", purchase: "Bought" };

async function sendEvent(type, product) {
  const event = {
    event_time: new Date().toISOString(),
    event_type: type,
    product_id: product.product_id,
    category_id: product.category_id ?? null,
    category_code: product.category_code ?? null,
    brand: product.brand ?? null,
    price: product.price ?? 0,
    user_id: state.user.id,
    user_session: state.session,
    event_id: eventId(),
  };
  const result = await api("/events", { json: event });
  const line = `${clock()} ${VERBS[type]} ${productName(product)}`;
  const entry = el("li", { "data-event": type, "data-ok": result.ok ? "1" : "0" },
    result.ok ? `${line} (sent)` : `${line}: not sent, ${errorText(result)}`);
  $("activity-log").prepend(entry);
  return result;
}

async function act(type) {
  const product = state.product;
  if (!product) return;
  const status = $("action-status");
  setStatus(status, "Sending…");
  state.lastClickAt = Date.now();
  const result = await sendEvent(type, product);
  if (!result.ok) {
    setStatus(status, `Could not send: ${errorText(result)}`, "error");
    return;
  }
  if (type === "cart" && !state.cart.some((p) => p.product_id === product.product_id)) state.cart.push(product);
  if (type === "remove_from_cart" || type === "purchase") state.cart = state.cart.filter((p) => p.product_id !== product.product_id);
  saveCart();
  setStatus(status, `${VERBS[type]} ${productName(product)}. Recommendations follow within seconds.`, "ok");
  refreshRecommendations();
}

document.querySelectorAll(".actions button[data-event]").forEach((button) =>
  button.addEventListener("click", () => act(button.dataset.event)));

// --- cart ------------------------------------------------------------------------------------------------

function saveCart() {
  store.setItem(KEYS.cart, JSON.stringify(state.cart));
  const list = $("cart-list");
  list.replaceChildren(...state.cart.map((p) => el("li", {},
    el("a", { href: `#product/${p.product_id}`, text: productName(p) }),
    el("span", { class: "price", text: price(p.price) }),
    el("button", { type: "button", class: "link", text: "Remove", "aria-label": `Remove ${productName(p)} from the cart`,
      onclick: async () => {
        state.lastClickAt = Date.now();
        const result = await sendEvent("remove_from_cart", p);
        if (result.ok) { state.cart = state.cart.filter((c) => c.product_id !== p.product_id); saveCart(); refreshRecommendations(); }
      } }))));
  $("cart-empty").hidden = state.cart.length > 0;
}

// --- catalogue -------------------------------------------------------------------------------------------

function card(item) {
  return el("li", { class: "card", "data-product-id": item.product_id },
    el("a", { href: `#product/${item.product_id}` },
      el("span", { class: "name", text: productName(item) }),
      el("span", { class: "cat", text: item.category_code ? item.category_code.replaceAll(".", ".\u200b") : "no category" }),
      el("span", { class: "price", text: price(item.price) })));
}

async function loadCategories() {
  const result = await api("/categories");
  const list = $("categories");
  if (!result.ok) { list.replaceChildren(el("li", { class: "meta", text: errorText(result) })); return; }
  const all = result.body.categories;
  const button = (code, label) => el("li", {}, el("button", { type: "button", "data-category": code ?? "", "aria-pressed": "false",
    text: label.replaceAll(".", ".\u200b"), // a line may break after a dot
    onclick: () => { location.hash = code ? `category/${encodeURIComponent(code)}` : ""; } }));
  const items = [button(null, "All products"), ...all.slice(0, CATEGORIES_SHOWN).map((c) => button(c.category_code, `${c.category_code} (${c.products})`))];
  if (all.length > CATEGORIES_SHOWN) {
    items.push(el("li", {}, el("button", { type: "button", class: "link", text: `Show all ${all.length} categories`, onclick: (e) => {
      e.target.parentElement.replaceWith(...all.slice(CATEGORIES_SHOWN).map((c) => button(c.category_code, `${c.category_code} (${c.products})`)));
      markCategory();
    } })));
  }
  list.replaceChildren(...items);
  markCategory();
}

function markCategory() {
  const current = location.hash.startsWith("#category/") ? decodeURIComponent(location.hash.slice(10)) : "";
  document.querySelectorAll("#categories button[data-category]").forEach((b) =>
    b.setAttribute("aria-pressed", String(b.dataset.category === current && !location.hash.startsWith("#search/") && !location.hash.startsWith("#product/"))));
}

async function showList(params, title) {
  $("product").hidden = true;
  $("catalogue").hidden = false;
  state.product = null;
  $("catalogue-h").textContent = title;
  state.list = { params, offset: 0, total: 0 };
  $("products").replaceChildren();
  await loadMore();
}

async function loadMore() {
  const query = new URLSearchParams({ ...state.list.params, k: "24", offset: String(state.list.offset) });
  setStatus($("catalogue-status"), "Loading…");
  const result = await api(`/products?${query}`);
  if (!result.ok) { setStatus($("catalogue-status"), errorText(result), "error"); return; }
  const body = result.body;
  $("products").append(...body.items.map(card));
  state.list.offset += body.items.length;
  state.list.total = body.total;
  setStatus($("catalogue-status"), body.total ? `${number(body.total)} products, most bought first` : "No product matches.");
  $("more").hidden = state.list.offset >= body.total;
}
$("more").addEventListener("click", loadMore);

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const q = $("q").value.trim();
  location.hash = q ? `search/${encodeURIComponent(q)}` : "";
});

async function showProduct(id) {
  const result = await api(`/products/${id}`);
  if (!result.ok) {
    await showList({}, "Popular products");
    setStatus($("catalogue-status"), `Product ${id}: ${errorText(result)}`, "error");
    return;
  }
  const product = result.body;
  state.product = product;
  $("catalogue").hidden = true;
  $("product").hidden = false;
  $("product-name").textContent = product.name;
  $("product-meta").textContent = [product.brand ? `Brand ${product.brand}` : "No brand", product.category_code || "no category",
    `${number(product.views)} views, ${number(product.purchases)} purchases in the data`].join(" · ");
  $("product-price").textContent = price(product.price);
  setStatus($("action-status"), "");
  $("product-name").focus();
  state.lastClickAt = Date.now();
  sendEvent("view", product).then(refreshRecommendations);
  const similar = await api(`/products/${id}/similar?k=8`);
  if (state.product !== product) return; // the shopper moved on
  if (!similar.ok) { setStatus($("similar-status"), errorText(similar)); $("similar").replaceChildren(); return; }
  $("similar").replaceChildren(...similar.body.items.map(card));
  setStatus($("similar-status"), similar.body.items.length ? "" : "No similar products in the data yet.");
}

function route() {
  const hash = decodeURIComponent(location.hash.replace(/^#/, ""));
  markCategory();
  if (hash.startsWith("product/")) return showProduct(Number(hash.slice(8)));
  state.listHash = location.hash;
  if (hash.startsWith("category/")) return showList({ category: hash.slice(9) }, `Category ${hash.slice(9)}`);
  if (hash.startsWith("search/")) { $("q").value = hash.slice(7); return showList({ q: hash.slice(7) }, `Search: ${hash.slice(7)}`); }
  return showList({}, "Popular products");
}
window.addEventListener("hashchange", route);
$("back").addEventListener("click", (event) => { event.preventDefault(); location.hash = state.listHash; });

// --- recommendations and the purchase probability ------------------------------------------------------------

async function refreshRecommendations() {
  if (state.recsInFlight) { state.recsAgain = true; return; }
  state.recsInFlight = true;
  try {
    const user = state.user.id;
    const [recs, features] = await Promise.all([
      api(`/recommendations/${user}?k=8&session_id=${encodeURIComponent(state.session)}`),
      api(`/users/${user}/features?session_id=${encodeURIComponent(state.session)}`),
    ]);
    if (user !== state.user.id) return; // signed in or out meanwhile: the next round shows the new user
    if (recs.ok) showRecommendations(recs.body);
    else { $("recs-source").textContent = "unavailable"; $("recs-fallbacks").textContent = errorText(recs); }
    await refreshProbability(features);
  } finally {
    state.recsInFlight = false;
    if (state.recsAgain) { state.recsAgain = false; refreshRecommendations(); }
  }
}

function showRecommendations(answer) {
  const signature = `${answer.source}|${answer.items.map((i) => i.product_id).join(",")}`;
  const panel = $("recs");
  $("recs-source").textContent = answer.source;
  $("recs-fallbacks").textContent = fallbackText(answer);
  if (signature !== state.recsSignature) {
    renderRecommendations($("recs-list"), answer, { link: false });
    // links within the shop: the same page, no reload
    $("recs-list").querySelectorAll("li").forEach((li) => {
      const span = li.firstChild;
      span.replaceWith(el("a", { href: `#product/${li.dataset.productId}`, text: span.textContent }));
    });
    let when = `updated ${clock()}`;
    if (state.recsSignature !== null && state.lastClickAt && Date.now() - state.lastClickAt < 60_000) {
      when = `changed ${((Date.now() - state.lastClickAt) / 1000).toFixed(1)} s after your last click`;
    }
    $("recs-updated").textContent = `· ${when}`;
    if (state.recsSignature !== null) {
      panel.classList.remove("changed"); void panel.offsetWidth; panel.classList.add("changed");
    }
    panel.dataset.signature = signature;
    state.recsSignature = signature;
  }
}

async function refreshProbability(features) {
  const out = $("purchase-probability");
  const detail = $("purchase-detail");
  const session = features.ok ? features.body.groups.session : null;
  if (!features.ok) { out.textContent = "not enough data yet"; detail.textContent = "The online store does not answer."; return; }
  if (!session) {
    out.textContent = "not enough data yet";
    detail.textContent = "Your clicks of this session have not reached the online store yet.";
    return;
  }
  const result = await api(`/sessions/${encodeURIComponent(state.session)}/purchase-probability`);
  if (result.ok) {
    out.textContent = percent(result.body.probability);
    detail.textContent = `after ${result.body.events} events of this session · model ${result.body.model_version}`;
  } else if (result.status === 404) {
    out.textContent = "not enough data yet";
    detail.textContent = "";
  } else {
    out.textContent = "not enough data yet";
    detail.textContent = result.status === 503 ? "No purchase model is loaded." : errorText(result);
  }
}

// --- start -----------------------------------------------------------------------------------------------

loadIdentity();
saveCart();
loadCategories();
route();
refreshRecommendations();
setInterval(() => { if (!document.hidden) refreshRecommendations(); }, CONFIG.poll_ms);
