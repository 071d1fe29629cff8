// Browser folder upload over the resumable REST API: declare the files (size, sha256) in one
// session, send each in chunks from the offset the server reports (retrying after network
// errors; the client is resumable.js, shared with the research uploader), finalize, then poll
// the session until the import's result is there.
(function () {
  "use strict";
  const root = document.getElementById("df-upload");
  const $ = (id) => document.getElementById(id);
  const api = root.dataset.api, csrf = root.dataset.csrf, chunk = parseInt(root.dataset.chunk, 10);
  const maxBytes = parseInt(root.dataset.maxBytes, 10), maxFiles = parseInt(root.dataset.maxFiles, 10);
  const PARALLEL = 4, HASH_LIMIT = 256 * 1024 * 1024;
  const client = new DfResumable.Client({ api, csrf, chunk });
  const call = client.call.bind(client), sleep = DfResumable.sleep;
  let files = [];

  const human = (n) => n < 1024 ? n + " B" : n < 1048576 ? (n / 1024).toFixed(1) + " KB"
    : n < 1073741824 ? (n / 1048576).toFixed(1) + " MB" : (n / 1073741824).toFixed(2) + " GB";
  function show(stage, detail, fraction) {
    $("df-stage").textContent = stage;
    $("df-detail").textContent = detail || "";
    const pct = Math.max(0, Math.min(100, Math.floor(100 * fraction)));
    $("df-bar").style.width = pct + "%";
    $("df-percent").textContent = pct;
  }
  function fail(message) {
    $("df-error").textContent = message;
    $("df-error").hidden = false;
    $("df-start").disabled = false;
  }

  const nameOf = (f) => f.webkitRelativePath || f.name;
  function fingerprint(list) {  // names, sizes and times of the chosen files (FNV-1a), to find an unfinished upload
    let h = 0x811c9dc5;
    const text = list.map((f) => nameOf(f) + "|" + f.size + "|" + f.lastModified).join("\n");
    for (let i = 0; i < text.length; i++) { h ^= text.charCodeAt(i); h = Math.imul(h, 0x01000193) >>> 0; }
    return list.length + "-" + h.toString(16);
  }
  async function unfinished(id) {  // the earlier session for these files, if it is still receiving them
    if (!id) return null;
    try {
      const s = await call("GET", api + id + "/");
      const same = s.status === "waiting" && s.files.length === files.length &&
        s.files.every((f, i) => f.name === nameOf(files[i]) && f.size === files[i].size);
      return same ? s : null;
    } catch (e) { return null; }
  }

  $("df-folder").addEventListener("change", (ev) => {
    files = Array.from(ev.target.files);
    const total = files.reduce((s, f) => s + f.size, 0);
    let text = files.length + " file" + (files.length === 1 ? "" : "s") + ", " + human(total);
    let ok = files.length > 0;
    if (files.length > maxFiles) { text += " — too many files for one upload"; ok = false; }
    if (total > maxBytes) { text += " — larger than this server accepts"; ok = false; }
    $("df-selection").textContent = text;
    $("df-start").disabled = !ok;
  });

  async function run() {
    $("df-start").disabled = true;
    $("df-error").hidden = true;
    $("df-result").hidden = true;
    $("df-progress").hidden = false;
    const key = "dicomflow-upload:" + fingerprint(files);
    let session = await unfinished(localStorage.getItem(key));
    if (!session) {
      const declared = [];
      for (let i = 0; i < files.length; i++) {
        show("Preparing", "checksums " + (i + 1) + " / " + files.length, i / files.length);
        const f = files[i];
        declared.push({ name: nameOf(f), size: f.size, sha256: await DfResumable.sha256(f, HASH_LIMIT) });
      }
      session = await call("POST", api, JSON.stringify({ files: declared, source: "browser" }),
        { "Content-Type": "application/json" });
      localStorage.setItem(key, session.id);  // the same folder chosen again resumes this session
    }
    root.dataset.session = session.id;
    const total = session.files.reduce((s, f) => s + f.size, 0) || 1;
    const sent = { bytes: session.files.reduce((s, f) => s + f.received, 0),
      report() { show("Uploading", human(this.bytes) + " of " + human(total), this.bytes / total); } };
    let next = 0;
    const workers = [];
    for (let w = 0; w < PARALLEL; w++) {
      workers.push((async () => {
        while (next < files.length) {
          const i = next++;
          await client.send(session.id, files[i], session.files[i], (delta) => { sent.bytes += delta; sent.report(); });
        }
      })());
    }
    await Promise.all(workers);
    show("Importing", "queued", 0);
    await call("POST", api + session.id + "/finalize/");
    localStorage.removeItem(key);
    for (;;) {
      const state = await call("GET", api + session.id + "/?files=0");
      const p = state.progress;  // the one progress format of long jobs
      if (p.status === "finished") { show("Done", "", 1); result(state); return; }
      if (p.status === "failed" || p.status === "cancelled") { throw new Error(p.error || "the import failed"); }
      show("Importing", p.total ? p.done + " / " + p.total + " files" : p.status, p.total ? p.done / p.total : 0);
      await sleep(500);
    }
  }

  function result(state) {
    const r = state.result;
    const set = (id, v) => { $(id).textContent = v; };
    set("df-r-files", r.files_seen); set("df-r-new", r.instances_new); set("df-r-duplicate", r.instances_duplicate);
    set("df-r-conflicts", r.conflicts.length); set("df-r-ignored", r.ignored.length);
    set("df-r-patients", r.patients); set("df-r-studies", r.studies); set("df-r-series", r.series);
    $("df-r-run").href = root.dataset.importUrl.replace("/0/", "/" + state.import_run + "/");
    const list = $("df-r-series-list");
    list.innerHTML = "";
    const touched = r.series_list || [];
    if (touched.length) {
      const h = document.createElement("h2"); h.textContent = "Series imported"; list.appendChild(h);
      const table = document.createElement("table"); table.id = "df-r-series-table";
      table.innerHTML = "<thead><tr><th>Modality</th><th>Description</th><th>Series UID</th></tr></thead>";
      const body = document.createElement("tbody");
      touched.forEach((s) => {
        const tr = document.createElement("tr"), mod = document.createElement("td"), desc = document.createElement("td");
        const uid = document.createElement("td"), badge = document.createElement("span"), a = document.createElement("a");
        badge.className = "badge"; badge.textContent = s.modality; mod.appendChild(badge);
        a.href = root.dataset.seriesUrl.replace("UID", encodeURIComponent(s.uid));
        a.textContent = s.description || "(no description)"; a.className = "df-series-link"; desc.appendChild(a);
        uid.className = "uid"; uid.textContent = s.uid;
        tr.append(mod, desc, uid); body.appendChild(tr);
      });
      table.appendChild(body); list.appendChild(table);
    }
    const problems = $("df-r-problems");
    problems.innerHTML = "";
    const rows = r.conflicts.map((c) => ["conflict", c]).concat(r.ignored.map((c) => ["ignored", c]));
    if (rows.length) {
      const h = document.createElement("h2"); h.textContent = "Not imported"; problems.appendChild(h);
      const table = document.createElement("table"); table.id = "df-r-problem-table";
      table.innerHTML = "<thead><tr><th>File</th><th>Outcome</th><th>Reason</th></tr></thead>";
      const body = document.createElement("tbody");
      rows.forEach(([kind, c]) => {
        const tr = document.createElement("tr");
        [c.path, kind, c.reason].forEach((text, k) => {
          const td = document.createElement("td"); td.textContent = text; if (k === 0) td.className = "uid"; tr.appendChild(td);
        });
        body.appendChild(tr);
      });
      table.appendChild(body); problems.appendChild(table);
    }
    $("df-result").hidden = false;
    $("df-start").disabled = false;
  }

  $("df-start").addEventListener("click", () => { run().catch((err) => fail(err.message)); });
})();
