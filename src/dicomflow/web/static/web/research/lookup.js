// DICOM lookup: patient autocomplete (≤10 suggestions), expanding patient rows, the edit dialog
// (paginated table and RT tree; selecting a parent selects its children) and Stage with a progress
// view that ends in the staging job's verification. DICOM strings reach the page via textContent.
(function () {
  "use strict";
  const root = document.getElementById("df-lookup");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const d = root.dataset, PAGE = 10;
  const edit = { study: null, series: [], selected: new Set(), page: 0 };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => {
      if (k === "text") node.textContent = v; else if (k === "class") node.className = v;
      else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
    });
    children.forEach((c) => node.append(c));
    return node;
  }
  async function call(method, url, body) {
    const r = await fetch(url, { method, credentials: "same-origin", body: body && JSON.stringify(body),
      headers: { "Accept": "application/json", "Content-Type": "application/json", "X-CSRFToken": d.csrf } });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.detail || ("the server answered HTTP " + r.status));
    return data;
  }

  // --- autocomplete ---------------------------------------------------------------------------------
  const input = $("df-patient-search"), list = $("df-suggestions");
  let timer = null, asked = 0;
  input.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(suggest, 200); });
  async function suggest() {
    const q = input.value.trim(), mine = ++asked;
    if (!q) { list.hidden = true; input.setAttribute("aria-expanded", "false"); return; }
    const data = await call("GET", d.suggestUrl + "?q=" + encodeURIComponent(q));
    if (mine !== asked) return;
    list.replaceChildren(...data.suggestions.map((s, i) => {
      const li = el("li", { role: "option", id: "df-suggestion-" + i, class: "df-suggestion", tabindex: "-1" },
        el("strong", { text: s.patient_id }), s.subject ? el("span", { class: "note", text: " · " + s.subject }) : "");
      li.addEventListener("click", () => pick(s));
      li.addEventListener("keydown", (ev) => { if (ev.key === "Enter") pick(s); });
      return li;
    }));
    if (!data.suggestions.length) list.append(el("li", { class: "note", text: "No patient matches." }));
    list.hidden = false; input.setAttribute("aria-expanded", "true");
  }
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "ArrowDown" && !list.hidden) { ev.preventDefault(); const first = list.querySelector("[role=option]"); if (first) first.focus(); }
    if (ev.key === "Enter") { ev.preventDefault(); search(input.value.trim()); }
    if (ev.key === "Escape") { list.hidden = true; input.setAttribute("aria-expanded", "false"); }
  });
  list.addEventListener("keydown", (ev) => {
    const now = document.activeElement;
    if (ev.key === "ArrowDown" && now.nextElementSibling) { ev.preventDefault(); now.nextElementSibling.focus(); }
    if (ev.key === "ArrowUp") { ev.preventDefault(); (now.previousElementSibling || input).focus(); }
  });
  function pick(s) { search(s.patient_id); }
  function search(ids) { if (ids) window.location.search = "?ids=" + encodeURIComponent(ids); }

  // --- patient rows expand to their studies ----------------------------------------------------------
  document.querySelectorAll(".df-expand").forEach((button) => button.addEventListener("click", () => {
    const row = $(button.getAttribute("aria-controls")), open = button.getAttribute("aria-expanded") !== "true";
    row.hidden = !open; button.setAttribute("aria-expanded", String(open)); button.textContent = open ? "▾" : "▸";
  }));
  if (document.querySelectorAll(".df-expand").length === 1) document.querySelector(".df-expand").click();

  // --- the edit dialog -------------------------------------------------------------------------------
  document.querySelectorAll(".df-edit").forEach((button) => button.addEventListener("click", () => openEdit(button.dataset.study)));
  async function openEdit(studyUid) {
    const data = await call("GET", d.seriesUrl + "?study=" + encodeURIComponent(studyUid));
    Object.assign(edit, { study: studyUid, series: data.series, selected: new Set(), page: 0 });
    $("df-edit-title").textContent = "Series of the study " + (data.description || "(no description)");
    render();
    $("df-edit-dialog").showModal();
  }
  const byUid = () => new Map(edit.series.map((s) => [s.uid, s]));
  function descendants(uid) {  // the series and every series that builds on it
    const map = byUid(), seen = new Set(), stack = [uid];
    while (stack.length) { const u = stack.pop(); if (seen.has(u) || !map.has(u)) continue; seen.add(u); stack.push(...map.get(u).referenced_by); }
    return seen;
  }
  function toggle(uid, on, withChildren) {
    (withChildren ? descendants(uid) : new Set([uid])).forEach((u) => (on ? edit.selected.add(u) : edit.selected.delete(u)));
    render();
  }
  function box(s, where) {
    const b = el("input", { type: "checkbox", class: "df-stage-pick", "data-uid": s.uid,
      "aria-label": "Select " + s.modality + " " + (s.description || "series " + (s.number || "")) + " in the " + where });
    b.checked = edit.selected.has(s.uid);
    b.addEventListener("change", () => toggle(s.uid, b.checked, where === "RT tree"));
    return b;
  }
  const approval = (s) => s.approval_status ? el("span", { class: "badge " + (s.approval_status === "APPROVED" ? "ok" : "warn"), text: s.approval_status }) : "";
  function render() {
    const pages = Math.max(1, Math.ceil(edit.series.length / PAGE));
    edit.page = Math.min(edit.page, pages - 1);
    $("df-edit-series").tBodies[0].replaceChildren(...edit.series.slice(edit.page * PAGE, (edit.page + 1) * PAGE).map((s) => el("tr", { "data-uid": s.uid },
      el("td", {}, box(s, "table")), el("td", { class: "num", text: s.number === null ? "" : String(s.number) }),
      el("td", {}, el("span", { class: "badge", text: s.modality })), el("td", { text: s.description || "(no description)" }),
      el("td", { class: "num", text: String(s.instances) }), el("td", {}, approval(s)))));
    $("df-page-info").textContent = "page " + (edit.page + 1) + " of " + pages;
    $("df-page-prev").disabled = edit.page === 0; $("df-page-next").disabled = edit.page >= pages - 1;
    // tree: roots are series that reference nothing in the study; children are those referencing them
    const map = byUid(), placed = new Set(), rows = [];
    const depthOf = { RTSTRUCT: 1, RTPLAN: 2, RTDOSE: 3, RTIMAGE: 3 };
    const parentOf = (s) => s.references.slice().sort((a, b) => (depthOf[map.get(b).modality] || 0) - (depthOf[map.get(a).modality] || 0))[0];
    const visit = (s, depth) => {
      if (placed.has(s.uid)) return;
      placed.add(s.uid); rows.push([s, depth]);
      edit.series.filter((c) => c.references.length && parentOf(c) === s.uid).forEach((c) => visit(c, depth + 1));
    };
    edit.series.filter((s) => !s.references.length).concat(edit.series).forEach((s) => visit(s, 0));
    $("df-edit-tree").replaceChildren(...rows.map(([s, depth]) => el("li", { style: "padding-left:" + depth * 24 + "px", "data-uid": s.uid, "data-modality": s.modality },
      el("label", {}, box(s, "RT tree"), " ", el("span", { class: "badge", text: s.modality }), " ", s.description || "(no description)"), " ", approval(s))));
    $("df-edit-count").textContent = edit.selected.size + " of " + edit.series.length + " series selected (what they reference is staged with them)";
    $("df-stage-button").disabled = edit.selected.size === 0;
  }
  $("df-page-prev").addEventListener("click", () => { edit.page--; render(); });
  $("df-page-next").addEventListener("click", () => { edit.page++; render(); });
  function tab(which) {
    [["table", $("df-etab-table"), $("df-epane-table")], ["tree", $("df-etab-tree"), $("df-epane-tree")]].forEach(([n, b, p]) => {
      b.setAttribute("aria-selected", String(n === which)); p.hidden = n !== which;
    });
  }
  $("df-etab-table").addEventListener("click", () => tab("table"));
  $("df-etab-tree").addEventListener("click", () => tab("tree"));

  // --- Stage → progress → verification -------------------------------------------------------------
  $("df-stage-button").addEventListener("click", async () => {
    $("df-stage-button").disabled = true;
    const panel = $("df-staging");
    panel.hidden = false; $("df-verification").hidden = true; $("df-staging-error").hidden = true;
    try {
      const job = await call("POST", d.stageUrl, { study: edit.study, series: Array.from(edit.selected) });
      $("df-edit-dialog").close();
      await watch(job.progress, edit.study);
    } catch (err) {
      $("df-staging-error").textContent = err.message; $("df-staging-error").hidden = false;
      $("df-stage-button").disabled = false;
    }
  });
  async function watch(url, studyUid) {
    for (;;) {
      const s = await call("GET", url);
      $("df-staging-status").textContent = s.status;  // the one status vocabulary of long jobs
      $("df-staging-stage").textContent = s.stage + " " + s.done + " / " + s.total;
      const over = s.verification.finished || ["failed", "cancelled"].includes(s.status);
      $("df-staging-bar").style.width = (s.verification.finished ? 100 : s.percent) + "%";
      if (over) { verification(s, studyUid); return; }
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  function verification(s, studyUid) {
    const v = s.verification, mark = (ok, text) => el("span", { class: "badge " + (ok ? "ok" : "bad"), text });
    $("df-v-files").replaceChildren(mark(v.files_ok, v.files_out + " of " + v.files_in + " files released"), v.quarantined ? " " + v.quarantined + " quarantined" : "");
    $("df-v-rt").replaceChildren(mark(v.rt_ok, v.resolved + " of " + v.references + " references resolved"));
    $("df-v-leak").replaceChildren(mark(v.leak_ok, v.leak_findings + " findings"));
    $("df-v-verified").replaceChildren(mark(v.verified, v.verified ? "yes" : "no"));
    $("df-v-pseudonymized").replaceChildren(mark(s.pseudonymized, s.pseudonymized ? "yes" : "no"));
    $("df-staging-stage").textContent = "";  // the stage counters matter only while it runs
    $("df-verification").hidden = false;
    if (s.error) { $("df-staging-error").textContent = s.error; $("df-staging-error").hidden = false; }
    const cell = document.querySelector('.df-study[data-study="' + CSS.escape(studyUid) + '"] .df-pseudonymized');
    if (cell) cell.replaceChildren(el("span", { class: "badge " + (s.pseudonymized ? "ok" : "muted"), text: s.pseudonymized ? "yes" : "no" }));
  }
})();
