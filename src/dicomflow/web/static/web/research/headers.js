// DICOM headers read in the browser with the vendored dicom-parser: only the first bytes of each
// file (16 KB, growing ×4 while the header does not fit), parsing stops at Pixel Data, so pixels
// are never read before upload. Also the RT references between series and their closure.
(function () {
  "use strict";
  const PIXEL_DATA = "x7fe00010", DICOMDIR_CLASS = "1.2.840.10008.1.3.10";
  const FIRST_READ = 16 * 1024;
  // sequences we walk; implicit-VR files need their VR told (dicom-parser cannot guess SQ there)
  const SQ = new Set(["x30060010", "x30060012", "x30060014", "x300c0060", "x300c0002", "x00081115", "x00081140",
    "x300a0010", "x300a00b0", "x30060020", "x30060080", "x30060039"]);
  const vrCallback = (tag) => (SQ.has(tag) ? "SQ" : undefined);

  const ATTRS = {  // name -> tag of the header attributes kept (shown in the details popup)
    PatientID: "x00100020", PatientName: "x00100010", PatientSex: "x00100040", PatientBirthDate: "x00100030",
    StudyInstanceUID: "x0020000d", StudyDate: "x00080020", StudyDescription: "x00081030", AccessionNumber: "x00080050",
    SeriesInstanceUID: "x0020000e", SeriesNumber: "x00200011", SeriesDescription: "x0008103e", Modality: "x00080060",
    SOPClassUID: "x00080016", SOPInstanceUID: "x00080018", FrameOfReferenceUID: "x00200052",
    Manufacturer: "x00080070", StationName: "x00081010", BodyPartExamined: "x00180015", Rows: "x00280010",
    Columns: "x00280011", SliceThickness: "x00180050", ApprovalStatus: "x300e0002", RTPlanLabel: "x300a0002",
    StructureSetLabel: "x30060002", DoseSummationType: "x3004000a",
  };
  const NUMERIC = { Rows: "uint16", Columns: "uint16" };

  class NotDicom extends Error {}

  function parse(bytes) {
    try {
      return dicomParser.parseDicom(bytes, { untilTag: PIXEL_DATA, vrCallback });
    } catch (err) {
      const text = String((err && err.exception) || (err && err.message) || err);
      if (/DICM prefix not found/i.test(text)) throw new NotDicom("not DICOM (no DICM prefix)");
      throw new Error(text);
    }
  }

  function str(ds, tag) {
    const v = ds.string(tag);
    return v === undefined ? "" : v;
  }
  function items(ds, tag) {
    const el = ds.elements[tag];
    return (el && el.items) ? el.items.map((i) => i.dataSet).filter(Boolean) : [];
  }
  function uidsIn(ds, path, leaf) {  // leaf UIDs under a chain of sequences
    let level = [ds];
    for (const tag of path) level = level.flatMap((d) => items(d, tag));
    return level.map((d) => str(d, leaf)).filter(Boolean);
  }

  function summarise(ds) {
    const h = {};
    for (const [name, tag] of Object.entries(ATTRS)) {
      if (NUMERIC[name] && ds.elements[tag]) h[name] = String(ds.uint16(tag));
      else h[name] = str(ds, tag);
    }
    h.refSeries = uidsIn(ds, ["x30060010", "x30060012", "x30060014"], "x0020000e");  // RTSTRUCT → images
    h.refInstances = [].concat(
      uidsIn(ds, ["x300c0060"], "x00081155"),   // → structure set (plan, dose)
      uidsIn(ds, ["x300c0002"], "x00081155"),   // → plan (dose, RT image)
    );
    return h;
  }

  async function read(file) {  // {header} or {reason} for an ignored file
    if (/(^|\/)DICOMDIR$/i.test(file.webkitRelativePath || file.name)) return { reason: "DICOMDIR (a media index, not an image)" };
    if (file.size < 132) return { reason: "not DICOM (too short)" };
    let size = Math.min(file.size, FIRST_READ);
    for (;;) {
      const bytes = new Uint8Array(await file.slice(0, size).arrayBuffer());
      let ds = null, error = null;
      try { ds = parse(bytes); } catch (err) {
        if (err instanceof NotDicom) return { reason: err.message };
        error = err;
      }
      const whole = size >= file.size;
      if (ds && (whole || ds.elements[PIXEL_DATA])) {
        const mediaClass = str(ds, "x00020002");
        if (mediaClass === DICOMDIR_CLASS) return { reason: "DICOMDIR (a media index, not an image)" };
        const h = summarise(ds);
        if (!h.SOPInstanceUID || !h.SeriesInstanceUID || !h.StudyInstanceUID) {
          return { reason: "unreadable (no SOP Instance, Series or Study Instance UID)" };
        }
        return { header: h, bytesRead: size };
      }
      if (whole) return { reason: "unreadable (" + (error ? error.message : "damaged header") + ")" };
      size = Math.min(file.size, size * 4);
    }
  }

  // --- RT references between the series of one study ---------------------------------------------
  const DEPTH = { RTSTRUCT: 1, RTPLAN: 2, RTDOSE: 3, RTIMAGE: 3 };

  function graph(seriesList) {  // seriesList: [{uid, modality, headers: [...]}] → adds .references
    const bySop = new Map();
    seriesList.forEach((s) => s.headers.forEach((h) => bySop.set(h.SOPInstanceUID, s.uid)));
    const known = new Set(seriesList.map((s) => s.uid));
    seriesList.forEach((s) => {
      const refs = new Set();
      s.headers.forEach((h) => {
        h.refSeries.forEach((u) => { if (known.has(u) && u !== s.uid) refs.add(u); });
        h.refInstances.forEach((sop) => { const u = bySop.get(sop); if (u && u !== s.uid) refs.add(u); });
      });
      s.references = Array.from(refs).sort();
    });
    seriesList.forEach((s) => { s.referencedBy = seriesList.filter((o) => o.references.includes(s.uid)).map((o) => o.uid); });
    return seriesList;
  }

  function closure(seriesList, uid) {  // the series and everything it references, transitively
    const byUid = new Map(seriesList.map((s) => [s.uid, s]));
    const seen = new Set(), stack = [uid];
    while (stack.length) {
      const u = stack.pop();
      if (seen.has(u) || !byUid.has(u)) continue;
      seen.add(u);
      stack.push(...byUid.get(u).references);
    }
    return seen;
  }

  function treeRows(seriesList) {  // pre-order [{series, depth}]: images, then what references them
    const byUid = new Map(seriesList.map((s) => [s.uid, s]));
    const children = new Map(), roots = [];
    seriesList.forEach((s) => {
      if (s.references.length) {
        const parent = s.references.slice().sort((a, b) => (DEPTH[byUid.get(b).modality] || 0) - (DEPTH[byUid.get(a).modality] || 0))[0];
        if (!children.has(parent)) children.set(parent, []);
        children.get(parent).push(s.uid);
      } else roots.push(s.uid);
    });
    const rows = [], placed = new Set();
    const visit = (u, depth) => {
      if (placed.has(u)) return;
      placed.add(u); rows.push({ series: byUid.get(u), depth });
      (children.get(u) || []).forEach((c) => visit(c, depth + 1));
    };
    roots.concat(seriesList.map((s) => s.uid)).forEach((u) => visit(u, 0));
    return rows;
  }

  window.DfHeaders = { read, graph, closure, treeRows, ATTRS };
})();
