// The research uploader: drop → headers read here (DfHeaders) → choose a study → select series (the
// RT tab selects what a series references) → sanity check against the subject (Issues, override with
// a reason) → Upload (Analysed: hashed; Uploaded: every byte sent; Verified: sha256 confirmed by the
// server, then the import into the project checked) → Finish (the study linked to the slot).
// Every DICOM string reaches the page through textContent only.
(function () {
  "use strict";
  const root = document.getElementById("df-uploader");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const d = root.dataset;
  const slots = JSON.parse($("df-slots-data").textContent);
  // the one status vocabulary of long jobs (dicomflow.progress): a session waits for its bytes, then
  // is pending/running (the import and the staging into the project), then finished, failed or cancelled
  const DONE = ["finished"], FAILED = ["failed", "cancelled"], RECEIVING = ["waiting"];
  const PARALLEL_READ = 8, PARALLEL_SEND = 4, HASH_LIMIT = 512 * 1024 * 1024;

  const state = {
    entries: [], ignored: [], studies: new Map(), study: null, selected: new Set(), overridden: new Set(),
    busy: false, session: null, sendList: [], errors: [], log: [], finished: false, reading: 0,
  };
  const client = new DfResumable.Client({
    api: d.api, csrf: d.csrf, chunk: parseInt(d.chunk, 10), sessionUrl: d.sessionUrl, onAuthLost: askPassword,
  });

  // --- small helpers ---------------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => {
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
    });
    children.forEach((c) => node.append(c));
    return node;
  }
  const da = (v) => (/^\d{8}$/.test(v || "") ? v.slice(0, 4) + "-" + v.slice(4, 6) + "-" + v.slice(6) : v || "");
  const nameOf = (f) => f.webkitRelativePath || f.relativePath || f.name;
  function log(line) {
    state.log.push(new Date().toISOString() + " " + line);
    const link = $("df-log-link");
    if (link.href && link.href.startsWith("blob:")) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(new Blob([state.log.join("\n") + "\n"], { type: "text/plain" }));
    link.hidden = false;
  }
  function status(text) { $("df-status").textContent = text; }
  function step(name, how) {  // how: "on" | "done" | "failed"
    const li = document.querySelector('#df-steps li[data-step="' + name + '"]');
    li.className = how || ""; li.setAttribute("aria-current", how === "on" ? "step" : "false");
  }
  function count(id, n) { $(id).textContent = String(n); }
  function slot() { return slots.find((s) => String(s.id) === $("df-slot-select").value) || null; }

  // --- choosing files ----------------------------------------------------------------------------------
  async function walk(entry, prefix, out) {  // a dropped folder, recursively
    if (entry.isFile) {
      const file = await new Promise((res, rej) => entry.file(res, rej));
      file.relativePath = prefix + file.name; out.push(file);
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
        if (!batch.length) break;
        for (const child of batch) await walk(child, prefix + entry.name + "/", out);
      }
    }
  }
  const drop = $("df-drop");
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (ev) => { ev.preventDefault(); drop.classList.add("over"); }));
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", async (ev) => {
    ev.preventDefault(); drop.classList.remove("over");
    const out = [], items = Array.from(ev.dataTransfer.items || []);
    const entries = items.map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
    if (entries.length) { for (const e of entries) await walk(e, "", out); } else out.push(...Array.from(ev.dataTransfer.files));
    analyse(out);
  });
  drop.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); $("df-folder").click(); } });
  $("df-folder").addEventListener("change", (ev) => analyse(Array.from(ev.target.files)));
  $("df-files").addEventListener("change", (ev) => analyse(Array.from(ev.target.files)));
  $("df-slot-select").addEventListener("change", () => { showExpectation(); render(); });

  function showExpectation() {
    const s = slot();
    $("df-expect").textContent = s ? "Enrolled: sex " + (s.sex || "?") + ", born " + (s.birth_date || s.birth_year || "?")
      + (s.linked ? " · this slot holds a study: Finish will ask before replacing it" : "") : "";
  }

  // --- reading headers -------------------------------------------------------------------------------
  async function analyse(files) {
    if (state.busy) return;  // not while an upload runs
    const reading = ++state.reading;  // a later drop wins over one still being read
    $("df-finish-button").disabled = true;
    Object.assign(state, { entries: [], ignored: [], studies: new Map(), study: null, selected: new Set(),
      overridden: new Set(), session: null, errors: [], finished: false });
    ["df-analysed", "df-uploaded", "df-verified"].forEach((id) => count(id, 0));
    $("df-done").hidden = true; $("df-errors-panel").hidden = true; $("df-retry-button").hidden = true;
    ["analyse", "upload", "verify", "finish"].forEach((s) => step(s, ""));
    const total = files.reduce((n, f) => n + f.size, 0);
    $("df-selection").textContent = files.length + " file" + (files.length === 1 ? "" : "s") + " chosen; reading headers…";
    log("chose " + files.length + " files (" + total + " bytes)");
    let next = 0, read = 0;
    const results = new Array(files.length);
    await Promise.all(Array.from({ length: PARALLEL_READ }, async () => {
      while (next < files.length) {
        const i = next++;
        try { results[i] = await DfHeaders.read(files[i]); } catch (err) { results[i] = { reason: "unreadable (" + err.message + ")" }; }
        count("df-read", ++read);
      }
    }));
    if (reading !== state.reading) return;
    files.forEach((file, i) => {
      const r = results[i], entry = { file, name: nameOf(file), header: r.header, reason: r.reason };
      state.entries.push(entry);
      if (r.reason) { state.ignored.push(entry); log("ignored " + entry.name + ": " + r.reason); return; }
      const h = r.header;
      if (!state.studies.has(h.StudyInstanceUID)) {
        state.studies.set(h.StudyInstanceUID, { uid: h.StudyInstanceUID, patient: h.PatientID, date: h.StudyDate,
          description: h.StudyDescription, series: new Map() });
      }
      const study = state.studies.get(h.StudyInstanceUID);
      if (!study.series.has(h.SeriesInstanceUID)) {
        study.series.set(h.SeriesInstanceUID, { uid: h.SeriesInstanceUID, modality: h.Modality, number: h.SeriesNumber,
          description: h.SeriesDescription || h.RTPlanLabel || h.StructureSetLabel, headers: [], entries: [] });
      }
      const series = study.series.get(h.SeriesInstanceUID);
      series.headers.push(h); series.entries.push(entry);
    });
    state.studies.forEach((s) => DfHeaders.graph(Array.from(s.series.values())));
    count("df-ignored", state.ignored.length);
    $("df-selection").textContent = files.length + " files: " + (files.length - state.ignored.length) + " DICOM in "
      + state.studies.size + " stud" + (state.studies.size === 1 ? "y" : "ies") + ", " + state.ignored.length + " ignored";
    log("read " + files.length + " headers: " + state.studies.size + " studies, " + state.ignored.length + " ignored");
    renderIgnored(); renderStudies();
    if (state.studies.size === 1) choose(state.studies.keys().next().value);
  }

  function renderIgnored() {
    const body = $("df-ignored-table").tBodies[0];
    body.replaceChildren(...state.ignored.map((e) => el("tr", {}, el("td", { class: "uid", text: e.name }), el("td", { text: e.reason }))));
  }
  $("df-ignored-button").addEventListener("click", () => $("df-ignored-dialog").showModal());

  function renderStudies() {
    const body = $("df-studies").tBodies[0];
    $("df-studies-panel").hidden = state.studies.size < 2;
    body.replaceChildren(...Array.from(state.studies.values()).map((s) => {
      const files = Array.from(s.series.values()).reduce((n, x) => n + x.entries.length, 0);
      const modalities = Array.from(new Set(Array.from(s.series.values()).map((x) => x.modality))).join(", ");
      const label = "Choose study " + (s.description || "(no description)") + " (" + modalities + ")";
      const button = el("button", { type: "button", class: "df-choose", "aria-label": label, "aria-pressed": String(state.study === s),
        disabled: state.busy || !!state.session }, "Choose");
      button.addEventListener("click", () => choose(s.uid));
      return el("tr", { class: state.study === s ? "chosen" : "" }, el("td", {}, button), el("td", { text: s.patient }),
        el("td", { text: da(s.date) }), el("td", { text: (s.description || "(no description)") + " · " + modalities }),
        el("td", { class: "num", text: String(s.series.size) }), el("td", { class: "num", text: String(files) }));
    }));
  }

  function choose(uid) {
    state.study = state.studies.get(uid);
    state.selected = new Set(); state.overridden = new Set(); state.session = null; state.finished = false;
    $("df-study-panel").hidden = false;
    $("df-study-name").textContent = "— " + (state.study.description || "(no description)") + ", " + da(state.study.date);
    log("chose a study with " + state.study.series.size + " series");
    $("df-finish-button").disabled = true;
    render();
  }

  // --- series table, RT tree, sanity -----------------------------------------------------------------
  function seriesList() { return state.study ? Array.from(state.study.series.values()) : []; }

  function conflictsOf(series) {
    const s = slot();
    if (!s) return [];
    const found = (attr) => Array.from(new Set(series.headers.map((h) => h[attr]).filter(Boolean)));
    const out = [];
    const sexes = found("PatientSex").map((x) => x.toUpperCase());
    if (s.sex && sexes.some((x) => x !== s.sex)) out.push({ kind: "sex", expected: s.sex, found: sexes.join(", ") });
    const births = found("PatientBirthDate");
    if (s.birth_date && births.some((b) => b !== s.birth_date)) out.push({ kind: "birth_date", expected: s.birth_date, found: births.join(", ") });
    else if (!s.birth_date && s.birth_year && births.some((b) => b.slice(0, 4) !== String(s.birth_year))) {
      out.push({ kind: "birth_year", expected: String(s.birth_year), found: births.map((b) => b.slice(0, 4)).join(", ") });
    }
    return out;
  }
  function openIssues() {
    return seriesList().filter((s) => state.selected.has(s.uid))
      .flatMap((s) => conflictsOf(s).map((c) => Object.assign({ series: s }, c)))
      .filter((c) => !state.overridden.has(c.kind));
  }

  function toggle(uid, on) {
    if (on) DfHeaders.closure(seriesList(), uid).forEach((u) => state.selected.add(u));
    else state.selected.delete(uid);
    render();
  }

  function checkbox(series, where) {
    const box = el("input", { type: "checkbox", class: "df-pick", "data-uid": series.uid,
      "aria-label": "Select " + series.modality + " " + (series.description || "series " + (series.number || "")) + (where ? " in the " + where : "") });
    box.checked = state.selected.has(series.uid);
    box.disabled = state.busy || state.finished;
    box.addEventListener("change", () => toggle(series.uid, box.checked));
    return box;
  }

  function approvalBadge(series) {
    const status = series.headers.map((h) => h.ApprovalStatus).find(Boolean);
    if (!status) return "";
    return el("span", { class: "badge " + (status === "APPROVED" ? "ok" : "warn"), text: status });
  }

  function render() {
    const list = seriesList();
    const body = $("df-series").tBodies[0];
    body.replaceChildren(...list.map((s) => {
      const issues = conflictsOf(s);
      const details = el("button", { type: "button", class: "df-details", "aria-label": "Details of " + s.modality + " " + (s.description || "") }, "Details");
      details.addEventListener("click", () => showDetails(s));
      const check = issues.length ? el("span", { class: "badge " + (issues.every((c) => state.overridden.has(c.kind)) ? "warn" : "bad"),
        text: issues.map((c) => c.kind.replace("_", " ")).join(", ") + (issues.every((c) => state.overridden.has(c.kind)) ? " (overridden)" : " conflict") })
        : el("span", { class: "badge ok", text: "ok" });
      return el("tr", { class: "df-series-row" + (issues.length ? " conflict" : ""), "data-uid": s.uid, "data-modality": s.modality },
        el("td", {}, checkbox(s)), el("td", { class: "num", text: s.number || "" }),
        el("td", {}, el("span", { class: "badge", text: s.modality })), el("td", { text: s.description || "(no description)" }, " ", approvalBadge(s)),
        el("td", { class: "num", text: String(s.entries.length) }), el("td", {}, check), el("td", {}, details));
    }));
    const tree = $("df-rt-tree");
    tree.replaceChildren(...DfHeaders.treeRows(list).map(({ series, depth }) => el("li", { style: "padding-left:" + depth * 24 + "px",
      class: "df-rt-node", "data-uid": series.uid, "data-modality": series.modality },
      el("label", {}, checkbox(series, "RT tree"), " ", depth ? el("span", { class: "note", text: "└ " }) : "",
        el("span", { class: "badge", text: series.modality }), " ", series.description || "(no description)",
        " ", el("span", { class: "note", text: series.entries.length + " file" + (series.entries.length === 1 ? "" : "s") })), " ", approvalBadge(series))));
    const issues = openIssues(), all = list.filter((s) => state.selected.has(s.uid)).flatMap((s) => conflictsOf(s));
    $("df-issues-button").hidden = all.length === 0;
    count("df-issue-count", issues.length);
    renderIssues(all);
    const why = !slot() ? "Choose the upload slot first." : !state.selected.size ? "Select the series to send."
      : issues.length ? "Resolve the Issues first." : "";
    $("df-why-not").textContent = state.busy || state.finished ? "" : why;
    $("df-upload-button").disabled = !!why || state.busy || state.finished || !!state.session;
    $("df-slot-select").disabled = state.busy || !!state.session;  // the upload is for this slot's subject
    renderStudies();
  }

  function showDetails(series) {
    const h = series.headers[0], dl = $("df-details");
    dl.replaceChildren();
    Object.keys(DfHeaders.ATTRS).forEach((k) => { if (h[k]) dl.append(el("dt", { text: k }), el("dd", { text: h[k] })); });
    dl.append(el("dt", { text: "Files" }), el("dd", { text: String(series.entries.length) }));
    dl.append(el("dt", { text: "References" }), el("dd", { text: series.references.length ? series.references.join(", ") : "none" }));
    $("df-details-title").textContent = "Series details: " + series.modality + " " + (series.description || "");
    $("df-details-dialog").showModal();
  }

  // --- Issues: overriding a conflict with a reason ------------------------------------------------------
  function renderIssues(all) {
    $("df-issues").tBodies[0].replaceChildren(...all.map((c) => el("tr", {},
      el("td", { text: c.series ? c.series.modality + " " + (c.series.description || "") : "" }),
      el("td", { text: c.kind.replace("_", " ") + (state.overridden.has(c.kind) ? " (overridden)" : "") }),
      el("td", { text: c.expected }), el("td", { text: c.found }))));
    $("df-override-button").disabled = openIssues().length === 0;
  }
  $("df-issues-button").addEventListener("click", () => {
    renderIssues(seriesList().filter((s) => state.selected.has(s.uid)).flatMap((s) => conflictsOf(s).map((c) => Object.assign({ series: s }, c))));
    $("df-issues-dialog").showModal();
  });
  $("df-override-button").addEventListener("click", async () => {
    const kinds = Array.from(new Set(openIssues().map((c) => c.kind)));
    const reason = $("df-override-reason").value.trim();
    $("df-override-error").hidden = true;
    try {
      await client.json("POST", d.overrideUrl, { slot: slot().id, conflicts: kinds, reason });
      kinds.forEach((k) => state.overridden.add(k));
      log("overrode " + kinds.join(", ") + " with a reason");
      $("df-issues-dialog").close();
      render();
    } catch (err) {
      $("df-override-error").textContent = err.message; $("df-override-error").hidden = false;
    }
  });

  // --- the tabs -----------------------------------------------------------------------------------------
  function tab(which) {
    [["series", $("df-tab-series"), $("df-pane-series")], ["rt", $("df-tab-rt"), $("df-pane-rt")]].forEach(([name, button, pane]) => {
      button.setAttribute("aria-selected", String(name === which)); pane.hidden = name !== which;
    });
  }
  $("df-tab-series").addEventListener("click", () => tab("series"));
  $("df-tab-rt").addEventListener("click", () => tab("rt"));

  // --- the password dialog (a session that expired during the upload) ---------------------------------
  function askPassword() {
    log("the session expired; asking for the password");
    status("Your session has expired: enter your password to carry on.");
    const dialog = $("df-reauth-dialog");
    $("df-reauth-password").value = ""; $("df-reauth-error").hidden = true;
    if (!dialog.open) dialog.showModal();
    $("df-reauth-password").focus();
    return new Promise((resolve) => {
      const submit = async () => {
        const r = await fetch(d.reauthUrl, { method: "POST", credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRFToken": client.csrf, "Accept": "application/json" },
          body: JSON.stringify({ username: d.username, password: $("df-reauth-password").value }) });
        const data = await r.json().catch(() => ({}));
        if (!r.ok) { $("df-reauth-error").textContent = data.detail || "wrong password"; $("df-reauth-error").hidden = false; return; }
        $("df-reauth-button").removeEventListener("click", submit);
        dialog.close(); log("logged in again; carrying on"); status("Logged in again; carrying on.");
        resolve(data.csrf);
      };
      $("df-reauth-button").addEventListener("click", submit);
      $("df-reauth-password").onkeydown = (ev) => { if (ev.key === "Enter") { ev.preventDefault(); submit(); } };
    });
  }
  $("df-reauth-dialog").addEventListener("cancel", (ev) => ev.preventDefault());  // the upload waits for it

  // --- Upload, verify ------------------------------------------------------------------------------------
  function error(file, where, message) {
    state.errors.push({ file, where, message });
    log("error in " + where + (file ? " (" + file + ")" : "") + ": " + message);
    $("df-errors").tBodies[0].replaceChildren(...state.errors.map((e) => el("tr", {},
      el("td", { class: "uid", text: e.file || "" }), el("td", { text: e.where }), el("td", { text: e.message }))));
    $("df-errors-panel").hidden = false;
  }

  async function upload() {
    state.busy = true; state.errors = []; $("df-errors-panel").hidden = true; $("df-retry-button").hidden = true;
    render();
    try {
      if (state.session) {  // a Retry: an import that failed starts again with a new session
        const now = await client.call("GET", d.api + state.session.id + "/?files=0").catch(() => null);
        if (!now || FAILED.includes(now.status)) state.session = null;
      }
      if (!state.session) await prepare();
      await sendMissing();
      await verify();
      $("df-finish-button").disabled = false;
      status("Verified: every file arrived and the study is in the project. Finish links it to the slot.");
    } catch (err) {
      if (err.step) step(err.step, "failed");
      error(err.file || "", err.step || "upload", err.message);
      $("df-retry-button").hidden = false;
      status("Stopped with errors; the steps already passed are kept. Retry sends only what is missing.");
    } finally {
      state.busy = false; render();
    }
  }

  function fail(stepName, err, file) { err.step = stepName; if (file) err.file = file; return err; }

  async function prepare() {  // Analyse: the selected series' files hashed and declared in one session
    step("analyse", "on");
    state.sendList = seriesList().filter((s) => state.selected.has(s.uid)).flatMap((s) => s.entries);
    const declared = [];
    let analysed = 0;
    for (const entry of state.sendList) {
      declared.push({ name: entry.name, size: entry.file.size, sha256: await DfResumable.sha256(entry.file, HASH_LIMIT) });
      count("df-analysed", ++analysed);
    }
    log("analysed " + analysed + " files of " + state.selected.size + " series");
    step("analyse", "done");
    const s = slot();
    try {
      state.session = await client.json("POST", d.api, { files: declared, source: "browser", project: d.project, subject: s.subject });
    } catch (err) { throw fail("upload", err); }
    log("upload session " + state.session.id + " created for " + declared.length + " files");
  }

  async function sendMissing() {
    step("upload", "on");
    const session = state.session;
    let now;
    try { now = await client.call("GET", d.api + session.id + "/"); } catch (err) { throw fail("upload", err); }
    if (!RECEIVING.includes(now.status)) { step("upload", "done"); return; }  // finalized already
    const files = now.files;
    let uploaded = files.filter((f) => f.received >= f.size).length, verified = files.filter((f) => f.complete).length;
    count("df-uploaded", uploaded); count("df-verified", verified);
    let next = 0, failed = 0;
    const todo = files.filter((f) => !f.complete);
    await Promise.all(Array.from({ length: PARALLEL_SEND }, async () => {
      while (next < todo.length) {  // a file that fails is reported; the others go on
        const entry = todo[next++], file = state.sendList[entry.index];
        try {
          const last = await client.send(session.id, file.file, entry, () => {});
          count("df-uploaded", ++uploaded);
          if (last.complete) count("df-verified", ++verified);
        } catch (err) { failed++; error(file.name, "upload", err.message); }
      }
    }));
    if (failed) throw fail("upload", new Error(failed + " file(s) not sent; Retry sends them"));
    step("upload", "done");
    log("uploaded " + uploaded + " files");
  }

  async function verify() {
    step("verify", "on");
    let s;
    try {
      s = await client.call("GET", d.api + state.session.id + "/");
      count("df-verified", s.files ? s.files.filter((f) => f.complete).length : s.files_complete);
      const incomplete = (s.files || []).filter((f) => !f.complete);
      if (incomplete.length) throw new Error(incomplete.length + " file(s) not verified by the server");
      if (RECEIVING.includes(s.status)) s = await client.call("POST", d.api + state.session.id + "/finalize/");
    } catch (err) { throw fail("verify", err); }
    status("Importing into the project…");
    for (;;) {
      const t = await client.call("GET", d.api + state.session.id + "/?files=0").catch((err) => { throw fail("verify", err); });
      const p = t.progress;  // the one progress format of long jobs
      if (DONE.includes(p.status)) { s = t; break; }
      if (FAILED.includes(p.status)) throw fail("verify", new Error(p.error || "the import failed"));
      if (p.total) status("Importing into the project: " + p.done + " / " + p.total + " files");
      await DfResumable.sleep(500);
    }
    const r = s.result || {}, sent = state.sendList.length;
    const imported = (r.instances_new || 0) + (r.instances_duplicate || 0);
    (r.conflicts || []).concat(r.ignored || []).forEach((c) => error(c.path, "verify", c.reason));
    if (imported !== sent) throw fail("verify", new Error(imported + " of " + sent + " files imported"));
    step("verify", "done");
    log("verified: " + imported + " files imported into the project");
  }

  async function finish(confirm) {
    $("df-finish-button").disabled = true;
    step("finish", "on");
    try {
      await client.json("POST", d.finishUrl, { session: state.session.id, slot: slot().id, confirm: !!confirm });
    } catch (err) {
      if (err.status === 409 && !confirm) {
        $("df-replace-message").textContent = err.message;
        $("df-replace-dialog").showModal();
        $("df-finish-button").disabled = false;
        return;
      }
      step("finish", "failed"); error("", "finish", err.message); $("df-finish-button").disabled = false;
      return;
    }
    state.finished = true;
    step("finish", "done");
    log("finished: the study is linked to " + slot().subject + " / " + slot().event + " / " + slot().slot);
    status("Finished: the study is linked to the slot.");
    const done = $("df-done");
    done.replaceChildren(el("strong", { text: "Finished." }), " The study is linked to " + slot().subject + " / " + slot().event + " / " + slot().slot + ". ",
      el("a", { href: d.subjectsUrl + "#df-slot-" + slot().id, id: "df-back-to-subjects" }, "Back to the subjects"));
    done.hidden = false;
    render();
  }

  $("df-upload-button").addEventListener("click", () => upload());
  $("df-retry-button").addEventListener("click", () => upload());
  $("df-finish-button").addEventListener("click", () => finish(false));
  $("df-replace-button").addEventListener("click", () => { $("df-replace-dialog").close(); finish(true); });
  showExpectation();
})();
