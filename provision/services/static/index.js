// The farm page: one row per inventory host, kept current by server-sent events.
"use strict";

(() => {
  const {h, timeCell, until, stateBadge, hostLink, poolHealth} = dsas;
  const hosts = new Map();  // name -> view
  let discovered = [];
  const $ = (id) => document.getElementById(id);
  const STAGES = ["dhcp", "kernel", "initramfs", "dsas.conf", "image", "configured", "ready"];
  const STATE_ORDER = {failed: 0, booting: 1, unknown: 2, ready: 3};

  // Filters and sort live in the address (?role=web&state=failed&sort=since&desc=1).
  const params = new URLSearchParams(location.search);
  for (const id of ["role", "state", "sort", "find"]) {
    if (params.get(id)) $(id).value = params.get(id);
  }
  $("desc").checked = params.get("desc") === "1";

  function natural(a, b) {
    return String(a).localeCompare(String(b), undefined, {numeric: true});
  }
  function stageRank(v) {
    if (v.stage === "failed") return -1;
    const i = STAGES.indexOf(v.stage);
    return i < 0 ? -2 : i;
  }
  const KEYS = {
    host: (v) => v.host,
    role: (v) => v.role,
    state: (v) => STATE_ORDER[v.state] ?? 9,
    stage: stageRank,
    since: (v) => v.stage_at ?? -Infinity,
    last_seen: (v) => v.last_seen ?? -Infinity,
    lease: (v) => v.lease_expires ?? -Infinity,
  };
  function compare(a, b) {
    const key = KEYS[$("sort").value] || KEYS.host;
    const ka = key(a), kb = key(b);
    let c = typeof ka === "number" && typeof kb === "number" ? ka - kb : natural(ka, kb);
    if (c === 0) c = natural(a.host, b.host);
    return $("desc").checked ? -c : c;
  }
  function visible(v) {
    const role = $("role").value, state = $("state").value;
    const find = $("find").value.trim().toLowerCase();
    if (role && v.role !== role) return false;
    if (state && v.state !== state) return false;
    if (find) {
      const hay = [v.host, ...v.macs, ...Object.values(v.addresses), v.reported_from || ""]
        .join(" ").toLowerCase();
      if (!hay.includes(find)) return false;
    }
    return true;
  }

  function imageText(v) {
    if (!v.image) return "-";
    return v.version ? v.image + ":" + v.version : v.image;
  }
  // A cell: its content in one block, so a phone's card shows it beside its label.
  function cell(cls, label, ...children) {
    const mono = cls.includes("mono");
    return h("td", {class: cls.replace("mono", "").trim(), "data-label": label},
      h("div", {class: mono ? "v mono" : "v"}, ...children));
  }
  function releaseCell(v) {
    if (!v.releases.length) return cell("release", "Release", "-");
    return cell("release", "Release",
      v.releases.map((r) => h("div", {class: "drift drift-" + r.drift.split(" ")[0],
                                       title: r.to_path + " (latest " + (r.latest || "?") + ")"},
        (r.release || "none") + " ", h("span", {class: "tag"}, r.drift))));
  }
  function poolsCell(v) {
    if (!v.pools.length) return cell("pools", "Pools", "-");
    return cell("pools", "Pools", v.pools.map((p) =>
      h("div", {title: p.vip + ", " + p.as},
        p.service + (p.as === "real server" ? " " : " (director) "), poolHealth(p))));
  }

  function row(v) {
    const stage = v.stage || "-";
    return h("tr", {class: "state-" + v.state, dataset: {host: v.host, state: v.state}},
      cell("host", "Host", hostLink(v.host)),
      cell("role", "Role", v.role),
      cell("state", "State", stateBadge(v)),
      cell("stage", "Stage", stage,
        v.state === "failed" && v.reason ? h("div", {class: "reason"}, v.reason) : null),
      timeCell("td", {class: "since", "data-label": "Since"}, v.stage_at),
      cell("macs mono", "MACs", v.macs.map((m) => h("div", {}, m))),
      cell("addresses mono", "Addresses",
        Object.entries(v.addresses).map(([n, a]) => h("div", {title: n}, a))),
      cell("image", "Image", imageText(v)),
      releaseCell(v),
      poolsCell(v),
      timeCell("td", {class: "last-seen", "data-label": "Last seen"}, v.last_seen),
      timeCell("td", {class: "lease", "data-label": "Lease"}, v.lease_expires, until));
  }

  function renderSummary() {
    const counts = {failed: 0, booting: 0, ready: 0, unknown: 0};
    for (const v of hosts.values()) counts[v.state] = (counts[v.state] || 0) + 1;
    $("summary").replaceChildren(...Object.entries(counts).map(([s, n]) =>
      h("button", {type: "button", class: "count state-" + s, dataset: {state: s},
                   "aria-pressed": $("state").value === s ? "true" : "false"},
        h("strong", {}, String(n)), " " + s)));
  }

  function renderNow() {
    const all = [...hosts.values()];
    const shown = all.filter(visible).sort(compare);
    $("hosts").tBodies[0].replaceChildren(...shown.map(row));
    $("shown").textContent = shown.length === all.length ? all.length + " hosts"
      : shown.length + " of " + all.length + " hosts shown";
    for (const th of document.querySelectorAll("th[data-sort]")) {
      th.setAttribute("aria-sort", th.dataset.sort !== $("sort").value ? "none"
        : $("desc").checked ? "descending" : "ascending");
    }
    renderSummary();
    if (!document.body.dataset.ready) performance.mark("dsas-first-render");  // bench/status.py
    document.body.dataset.ready = "1";
  }
  // Live updates: at most one redraw per animation frame, however many arrive.
  let pending = false;
  function render() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; renderNow(); });
  }

  function renderDiscovered() {
    $("discovered-none").hidden = discovered.length > 0;
    $("discovered").hidden = discovered.length === 0;
    $("discovered").tBodies[0].replaceChildren(...discovered.map((d) =>
      h("tr", {dataset: {mac: d.mac}},
        h("td", {class: "mono", "data-label": "MAC"}, d.mac),
        h("td", {class: "mono", "data-label": "Address"}, d.address || "-"),
        h("td", {"data-label": "Network"}, d.network || "-"),
        timeCell("td", {"data-label": "First seen"}, d.first_seen),
        timeCell("td", {"data-label": "Last seen"}, d.last_seen),
        h("td", {"data-label": "Vendor class"}, d.vendor_class || "-"),
        h("td", {"data-label": "Seen"}, String(d.seen)))));
  }

  // A running (or paused) `dsas rollout`: one line, and one per host moving or failed.
  function renderRollout(r) {
    $("rollout").hidden = !r;
    if (!r) { $("rollout").replaceChildren(); return; }
    const by = {};
    for (const x of r.hosts) (by[x.outcome] = by[x.outcome] || []).push(x);
    const moved = (by.done || []).length;
    $("rollout").replaceChildren(
      h("h2", {}, "Rollout " + r.id + ": image " + r.image + (r.back ? " back to " : " to ") +
        r.version + (r.outcome === "paused" ? " (paused after its canary)" : "") +
        (r.outcome === "running" && r.live === false ? " (killed: owner PID " +
          (r.owner ? r.owner.pid : "?") + " gone; --resume goes on)" : "")),
      h("p", {}, moved + " of " + r.hosts.length + " hosts moved, by " + r.user),
      h("ul", {class: "plain"}, ...r.hosts.filter((x) => x.outcome === "moving" ||
        x.outcome === "failed").map((x) => h("li", {class: "state-" + (x.outcome ===
          "failed" ? "failed" : "booting")}, hostLink(x.host), " " + x.outcome + " " +
          x.detail))));
  }

  function options(select, values) {
    const keep = select.value;
    select.replaceChildren(h("option", {value: ""}, "all"),
      ...values.map((r) => h("option", {value: r}, r)));
    select.value = values.includes(keep) ? keep : "";
  }

  function snapshot(doc) {
    dsas.setServerNow(doc.now);
    $("cluster").textContent = doc.cluster;
    document.title = doc.cluster + " status";
    const want = {role: params.get("role"), state: params.get("state")};
    options($("role"), doc.roles);
    options($("state"), doc.states);
    if (want.role && !$("role").value) $("role").value = want.role;
    if (want.state && !$("state").value) $("state").value = want.state;
    hosts.clear();
    for (const v of doc.hosts) hosts.set(v.host, v);
    discovered = doc.discovered;
    renderMasters(doc.masters);
    renderDiscovered();
    renderRollout(doc.rollout);
    renderNow();
  }

  function renderMasters(masters) {
    $("masters").replaceChildren(...(masters.length ? masters.map((m) =>
      h("li", {}, hostLink(m.host), " " + m.role + " ",
        h("span", {class: m.state && m.state.includes("STALE") ? "tag stale" : "tag"},
          m.state === null ? "single master" : m.state)))
      : [h("li", {class: "muted"}, "no master host in the inventory")]));
  }

  function delta(doc) {
    dsas.setServerNow(doc.now);
    for (const v of doc.hosts) hosts.set(v.host, v);
    if (doc.masters) renderMasters(doc.masters);
    if (doc.discovered) { discovered = doc.discovered; renderDiscovered(); }
    if ("rollout" in doc) renderRollout(doc.rollout);
    render();
  }

  function saveParams() {
    const p = new URLSearchParams();
    for (const id of ["role", "state", "find"]) if ($(id).value) p.set(id, $(id).value);
    if ($("sort").value !== "host") p.set("sort", $("sort").value);
    if ($("desc").checked) p.set("desc", "1");
    history.replaceState(null, "", p.toString() ? "?" + p : location.pathname);
    renderNow();
  }
  for (const id of ["role", "state", "sort", "desc"]) $(id).addEventListener("change", saveParams);
  $("find").addEventListener("input", saveParams);
  $("filters").addEventListener("submit", (e) => e.preventDefault());
  for (const th of document.querySelectorAll("th[data-sort]")) {
    th.tabIndex = 0;
    const go = () => {
      if ($("sort").value === th.dataset.sort) $("desc").checked = !$("desc").checked;
      else { $("sort").value = th.dataset.sort; $("desc").checked = false; }
      saveParams();
    };
    th.addEventListener("click", go);
    th.addEventListener("keydown", (e) => { if (e.key === "Enter") go(); });
  }
  $("summary").addEventListener("click", (e) => {
    const b = e.target.closest("button[data-state]");
    if (!b) return;
    $("state").value = $("state").value === b.dataset.state ? "" : b.dataset.state;
    saveParams();
  });

  // The stream starts with a snapshot, so the first paint needs no separate fetch.
  dsas.live({snapshot, hosts: delta});
})();
