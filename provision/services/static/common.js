// Shared by the dsas status pages. No framework, nothing fetched from elsewhere.
// Every string that came from the network is put in the page as text (textContent,
// text nodes), never as HTML.
"use strict";

const dsas = (() => {
  // h("td", {class: "x"}, "text", child, ...): an element; strings become text nodes.
  function h(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "dataset") Object.assign(e.dataset, v);
      else e.setAttribute(k, String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  // The server's clock minus ours, so "ago" is right even if this machine's is off.
  let skew = 0;
  function setServerNow(now) {
    if (typeof now === "number") skew = now - Date.now() / 1000;
  }
  function serverNow() {
    return Date.now() / 1000 + skew;
  }

  function dur(s) {
    s = Math.max(0, Math.floor(s));
    if (s >= 86400) return Math.floor(s / 86400) + "d";
    if (s >= 3600) return Math.floor(s / 3600) + "h";
    if (s >= 60) return Math.floor(s / 60) + "m";
    return s + "s";
  }
  function ago(ts) {
    return ts === null || ts === undefined ? "never" : dur(serverNow() - ts) + " ago";
  }
  function until(ts) {
    if (ts === null || ts === undefined) return "none";
    const left = ts - serverNow();
    return left <= 0 ? "expired" : "in " + dur(left);
  }
  function clock(ts) {
    if (ts === null || ts === undefined) return "";
    return new Date(ts * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }
  function secs(s) {
    if (s === null || s === undefined) return "";
    if (s < 1) return Math.round(s * 1000) + " ms";
    return s < 10 ? s.toFixed(1) + " s" : dur(s);
  }

  // Cells that say "N ago" carry their timestamp and are refreshed every second.
  function timeCell(tag, attrs, ts, fmt) {
    const e = h(tag, attrs, (fmt || ago)(ts));
    if (ts !== null && ts !== undefined) {
      e.dataset.ts = String(ts);
      e.dataset.fmt = fmt === until ? "until" : "ago";
      e.title = clock(ts);
    }
    return e;
  }
  function tick() {
    for (const e of document.querySelectorAll("[data-ts]")) {
      const ts = Number(e.dataset.ts);
      e.textContent = e.dataset.fmt === "until" ? until(ts) : ago(ts);
    }
  }
  setInterval(tick, 1000);

  function stateBadge(v) {
    return h("span", {class: "badge state-" + v.state}, v.state);
  }

  function hostLink(name) {
    return h("a", {href: "/status/host/" + encodeURIComponent(name)}, name);
  }

  async function getJSON(url) {
    const r = await fetch(url, {cache: "no-store"});
    if (!r.ok) throw new Error(url + ": HTTP " + r.status);
    return r.json();
  }

  // Server-sent events, with a visible connection state. EventSource retries a broken
  // connection by itself but gives up on an HTTP error (503: too many viewers), so
  // then we start a new one after a while.
  function live(handlers, retry) {
    const dot = document.getElementById("live");
    const show = (cls, text) => {
      if (dot) { dot.className = "live " + cls; dot.textContent = text; }
    };
    const es = new EventSource("/api/v1/status/stream");
    es.onopen = () => show("on", "live");
    es.onerror = () => {
      show("off", "reconnecting");
      if (es.readyState === EventSource.CLOSED) {
        const wait = Math.min(30000, (retry || 1000) * 2);
        setTimeout(() => live(handlers, wait), wait);
      }
    };
    for (const [name, fn] of Object.entries(handlers)) {
      es.addEventListener(name, (ev) => fn(JSON.parse(ev.data)));
    }
    // A page left (or kept in the back-forward cache) must not hold a viewer's slot.
    const hide = () => { es.close(); window.removeEventListener("pagehide", hide); };
    window.addEventListener("pagehide", hide);
    if (!retry) {
      window.addEventListener("pageshow", (e) => { if (e.persisted) live(handlers, 1); });
    }
    return es;
  }

  // A balancer pool as `dsas lb status` last read it: health, live weight and
  // connections from which director, and how long ago; or why it could not be read.
  function poolHealth(p) {
    const when = p.read_at === null ? null
      : h("span", {class: "read-at muted"}, " read ", timeCell("span", {}, p.read_at),
          p.director && !p.error ? " from " + p.director : "");
    const box = (...c) => h("span", {class: "pool-health"}, ...c);
    if (p.error) return box(h("span", {class: "tag lb-down"}, p.error), when);
    if (p.health === null) return box(h("span", {class: "tag"}, "not read"));
    let text = p.health;
    if (p.live_weight !== null) text += " w" + p.live_weight;
    if (p.active !== null) text += " " + p.active + "/" + p.inactive + " conn";
    return box(h("span", {class: "tag lb-" + p.health.replace(/[^a-z0-9]+/gi, "-")}, text), when);
  }

  return {h, ago, until, clock, secs, dur, timeCell, stateBadge, hostLink, getJSON, live,
          setServerNow, serverNow, tick, poolHealth};
})();
