// One host: facts, boot timeline on a time axis, recent events, rendered files (masked).
"use strict";

(() => {
  const {h, timeCell, until, stateBadge, clock, secs, poolHealth} = dsas;
  const $ = (id) => document.getElementById(id);
  const name = decodeURIComponent(location.pathname.split("/").pop());
  const api = "/api/v1/status/hosts/" + encodeURIComponent(name);
  $("name").textContent = name;
  document.title = name + " - dsas";

  function fact(label, ...value) {
    return [h("dt", {}, label), h("dd", {}, ...value)];
  }

  function renderFacts(v) {
    $("badge").replaceChildren(stateBadge(v));
    document.body.className = "state-" + v.state;
    $("reason").hidden = !(v.state === "failed" && v.reason);
    $("reason").textContent = v.reason || "";
    const rel = v.releases.length ? v.releases.map((r) => h("div", {},
      h("span", {class: "mono"}, r.to_path), ": " + (r.release || "none") + " ",
      h("span", {class: "tag drift-" + r.drift.split(" ")[0]}, r.drift),
      r.latest && r.latest !== r.release ? " (latest " + r.latest + ")" : "")) : ["never pushed"];
    $("facts").replaceChildren(
      ...fact("Role", v.role),
      ...fact("Stage", v.stage || "none reported", " ", timeCell("span", {class: "muted"}, v.stage_at)),
      ...fact("Last seen", timeCell("span", {}, v.last_seen)),
      ...fact("MACs", ...v.macs.map((m) => h("div", {class: "mono"}, m))),
      ...fact("Addresses", ...Object.entries(v.addresses).map(([n, a]) =>
        h("div", {class: "mono"}, a + " ", h("span", {class: "muted"}, n)))),
      ...fact("Reported from", v.reported_from || "-"),
      ...fact("Image", v.image ? v.image + (v.version ? ":" + v.version : "") : "-",
              " (" + v.boot + ")"),
      ...fact("Release", ...rel),
      ...fact("Lease", timeCell("span", {}, v.lease_expires, until)));
    $("pools-none").hidden = v.pools.length > 0;
    $("pools").hidden = v.pools.length === 0;
    $("pools").tBodies[0].replaceChildren(...v.pools.map((p) => h("tr", {},
      h("td", {"data-label": "Service"}, p.service),
      h("td", {class: "mono", "data-label": "VIP"}, p.vip),
      h("td", {"data-label": "As"}, p.as),
      h("td", {"data-label": "Weight"}, p.weight === null ? "-" : String(p.weight)),
      h("td", {class: "pool-health", "data-label": "As last read"}, poolHealth(p)))));
  }

  // Stages on one time axis: each bar starts where the stage was reached and lasts
  // until the next one (the newest, if still booting, until now), so a slow one stands out.
  function renderTimeline(stages, now, state) {
    $("timeline-none").hidden = stages.length > 0;
    $("stages").hidden = stages.length === 0;
    if (!stages.length) { $("timeline").replaceChildren(); $("axis").replaceChildren(); return; }
    const t0 = stages[0].ts;
    const ends = stages.map((s, i) => i + 1 < stages.length ? stages[i + 1].ts
      : (state === "booting" ? Math.max(now, s.ts) : s.ts));
    const span = Math.max(0.001, ends[ends.length - 1] - t0);
    const took = stages.map((s, i) => ends[i] - s.ts);
    const slowest = took.indexOf(Math.max(...took));
    $("timeline").replaceChildren(...stages.map((s, i) => {
      const left = (100 * (s.ts - t0)) / span, width = (100 * took[i]) / span;
      const bar = h("div", {class: "seg stage-" + s.stage.replace(".", "-") +
                                    (i === slowest && took[i] > 0 ? " slowest" : "") +
                                    (took[i] > 0 ? "" : " mark"),
                            title: s.stage + ": " + secs(took[i]), dataset: {stage: s.stage}},
        h("span", {}, s.stage));
      // A zero-length last stage (ready, failed) is a mark at the end, inside the axis.
      bar.style.left = took[i] > 0 ? left + "%" : "calc(" + left + "% - 6px)";
      bar.style.width = "max(" + width + "%, 6px)";
      return bar;
    }));
    $("axis").replaceChildren(...[0, 0.25, 0.5, 0.75, 1].map((f) => {
      const t = h("span", {}, "+" + secs(f * span));
      t.style.left = f * 100 + "%";
      return t;
    }));
    $("stages").tBodies[0].replaceChildren(...stages.map((s, i) => h("tr",
      {class: (s.stage === "failed" ? "state-failed" : "") + (i === slowest ? " slowest" : ""),
       dataset: {stage: s.stage}},
      h("td", {"data-label": "Stage"}, s.stage),
      h("td", {"data-label": "At"}, "+" + secs(s.ts - t0)),
      h("td", {"data-label": "Took"}, i + 1 < stages.length ? secs(took[i])
        : state === "booting" ? secs(took[i]) + " so far" : "-"),
      h("td", {"data-label": "Detail"}, s.reason || ""))));
  }

  function renderEvents(events) {
    $("events").tBodies[0].replaceChildren(...events.map((e) => h("tr",
      {class: e.stage === "failed" ? "state-failed" : ""},
      h("td", {class: "mono", "data-label": "Time"}, clock(e.ts)),
      h("td", {"data-label": "Stage"}, e.stage),
      h("td", {"data-label": "Detail"}, e.reason || ""),
      h("td", {class: "mono", "data-label": "From"}, e.address || ""))));
  }

  function renderFiles(files) {
    $("files").replaceChildren(...Object.entries(files).map(([n, text]) =>
      h("details", {open: n === "dsas.conf" ? "" : null},
        h("summary", {}, n + " (as rendered now, secrets masked)"),
        h("pre", {class: "file"}, text))));
  }

  let loading = null, again = false;
  async function load() {
    if (loading) { again = true; return; }
    loading = (async () => {
      try {
        const doc = await dsas.getJSON(api);
        dsas.setServerNow(doc.now);
        renderFacts(doc.host);
        renderTimeline(doc.timeline, doc.now, doc.host.state);
        renderEvents(doc.events);
        renderFiles(doc.files);
        document.body.dataset.ready = "1";
      } catch (e) {
        $("reason").hidden = false;
        $("reason").textContent = String(e);
      }
    })();
    await loading;
    loading = null;
    if (again) { again = false; load(); }
  }
  load();
  dsas.live({
    snapshot: () => load(),
    hosts: (doc) => { if (doc.hosts.some((v) => v.host === name)) load(); },
  });
})();
