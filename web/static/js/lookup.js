/* User lookup: recommendations with their sources and reasons, online features, the session's events. */
"use strict";

const $ = (id) => document.getElementById(id);

function featureValue(name, value) {
  if (value === null || value === undefined) return "missing";
  // epoch seconds as a time, ids as they are (no thousands separators)
  if (typeof value === "number" && name.endsWith("_time")) return new Date(value * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  if (typeof value === "number" && name.endsWith("_id")) return String(value);
  if (Array.isArray(value)) return value.join(", ") || "[]";
  if (typeof value === "object") return Object.entries(value).map(([k, v]) => `${k}: ${typeof v === "number" ? number(v, 3) : v}`).join(", ") || "{}";
  if (typeof value === "number") return number(value, Number.isInteger(value) ? 0 : 3);
  return String(value);
}

function groupTable(name, group) {
  if (!group) return el("p", { class: "meta", "data-group": name }, el("strong", { text: name }), ": nothing in the online store (features missing: the ranker sees NaN).");
  return el("div", { class: "table-wrap", "data-group": name }, el("table", { class: "group-table" },
    el("caption", {}, `${name} `, el("span", { class: "meta" }, el("code", { text: group.key }), ` · written ${number(group.age_s, 1)} s ago`)),
    el("tbody", {}, ...Object.entries(group.features).map(([k, v]) => el("tr", {}, el("th", { scope: "row", text: k }), el("td", { text: featureValue(k, v) }))))));
}

async function lookup(user, session) {
  const status = $("lookup-status");
  setStatus(status, "Looking up…");
  const sessionParam = session ? `&session_id=${encodeURIComponent(session)}` : "";
  const [recs, features, journey] = await Promise.all([
    api(`/recommendations/${user}?k=10${sessionParam}`),
    api(`/users/${user}/features?${sessionParam.slice(1)}`),
    session ? api(`/analytics/sessions/${encodeURIComponent(session)}/journey`) : Promise.resolve(null),
  ]);
  $("lookup-results").hidden = false;
  if (recs.ok) {
    $("lookup-source").textContent = recs.body.source;
    $("lookup-versions").textContent = `· candidates ${recs.body.candidates_version || "–"}` + (recs.body.model_version ? ` · ranker ${recs.body.model_version}` : "");
    $("lookup-fallbacks").textContent = fallbackText(recs.body);
    renderRecommendations($("lookup-recs"), recs.body);
  } else {
    $("lookup-source").textContent = "unavailable";
    $("lookup-fallbacks").textContent = errorText(recs);
    $("lookup-recs").replaceChildren();
  }
  if (features.ok) {
    const f = features.body;
    $("lookup-flags").textContent = [f.bot ? "Flagged as a bot (gets non-personalised answers)." : "Not flagged as a bot.",
      f.in_candidates === null ? "" : f.in_candidates ? "Known to ALS." : "Unknown to ALS (no factors: new or anonymous)."].join(" ");
    $("lookup-features").replaceChildren(...Object.entries(f.groups).map(([name, group]) => groupTable(name, group)));
  } else {
    $("lookup-flags").textContent = errorText(features);
    $("lookup-features").replaceChildren();
  }
  const body = $("lookup-journey").tBodies[0];
  if (!session) {
    setStatus($("lookup-journey-status"), "Give a session id to see its events (the shop links here with yours).");
    body.replaceChildren();
  } else if (journey.ok) {
    setStatus($("lookup-journey-status"), `${journey.body.steps.length} events of session ${session}, from the ${journey.body.source.replace("_", " ")}.`);
    body.replaceChildren(...journey.body.steps.map((s) => el("tr", { "data-event": s.event_type },
      el("td", { class: "num", text: s.step }), el("td", { text: s.event_time.replace("T", " ").slice(0, 19) }),
      el("td", { class: "num", text: number(s.seconds_since_start, 1) }), el("td", { text: s.event_type.replaceAll("_", " ") }),
      el("td", {}, el("a", { href: `/#product/${s.product_id}`, text: productName(s) })), el("td", { class: "num", text: price(s.price) }))));
  } else {
    setStatus($("lookup-journey-status"), journey.status === 404 ? `No events of session ${session} yet.` : errorText(journey));
    body.replaceChildren();
  }
  setStatus(status, `User ${user}${session ? `, session ${session}` : ""}: looked up at ${clock()}.`, "ok");
}

$("lookup-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const user = $("lookup-user").value.trim();
  const session = $("lookup-session").value.trim();
  if (!/^[0-9]{1,16}$/.test(user)) {
    setStatus($("lookup-status"), "A user id is a whole number (digits only).", "error");
    $("lookup-user").focus();
    return;
  }
  const query = new URLSearchParams({ user, ...(session ? { session } : {}) });
  history.replaceState(null, "", `?${query}`);
  lookup(user, session);
});

const params = new URLSearchParams(location.search);
if (params.get("user")) {
  $("lookup-user").value = params.get("user");
  $("lookup-session").value = params.get("session") || "";
  $("lookup-form").requestSubmit();
}
