/* dicomflow processing desk: small progressive enhancements, no framework, no CDN.
   Every value shown comes from the server as text (textContent), never as HTML, except the
   server-rendered (autoescaped) "Why?" fragment. */
(function () {
  "use strict";
  var script = document.getElementById("df-desk-script");
  var data = script ? script.dataset : {};

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }
  function getJSON(url) {
    return fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}}).then(function (r) {
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.json();
    });
  }
  function poll(fn, ms) {
    var timer = null;
    function tick() { fn().then(function (again) { if (again !== false) { timer = setTimeout(tick, ms); } })
                          .catch(function () { timer = setTimeout(tick, ms * 3); }); }
    timer = setTimeout(tick, ms);
  }

  /* ticked rows: a counter, a select-all box, the bulk button enabled only with a selection */
  function selection(button, counter) {
    var picks = $all(".df-pick"), all = $("#df-all");
    function update() {
      var n = picks.filter(function (p) { return p.checked; }).length;
      if (counter) { counter.textContent = n + " selected"; }
      if (button) { button.disabled = n === 0; }
    }
    picks.forEach(function (p) { p.addEventListener("change", update); });
    if (all) { all.addEventListener("change", function () { picks.forEach(function (p) { p.checked = all.checked; }); update(); }); }
    update();
  }

  /* --- series for processing ------------------------------------------------------------------- */
  if (data.statusUrl) {
    selection($("#df-send"), $("#df-selected"));
    var rows = $all("tr[data-uid]");
    if (rows.length) {
      var query = rows.map(function (r) { return "uid=" + encodeURIComponent(r.dataset.uid); }).join("&");
      poll(function () {
        return getJSON(data.statusUrl + "?" + query).then(function (doc) {
          rows.forEach(function (row) {
            var s = doc.series[row.dataset.uid]; if (!s) { return; }
            var badge = $(".df-status", row), link = $(".df-job", row);
            if (badge.dataset.status !== s.status) {
              badge.dataset.status = s.status; badge.textContent = s.label;
              badge.className = "badge df-status " + (BADGES[s.status] || "");
            }
            if (s.job && link) { link.hidden = false; link.href = "/jobs/" + s.job + "/"; link.textContent = "job #" + s.job; }
          });
        });
      }, 3000);
    }
    var dialog = $("#df-why-dialog");
    $all(".df-why").forEach(function (a) {
      a.addEventListener("click", function (ev) {
        if (!dialog || typeof dialog.showModal !== "function") { return; }
        ev.preventDefault();
        fetch(a.href + "?fragment=1", {credentials: "same-origin"}).then(function (r) {
          if (!r.ok) { throw new Error("HTTP " + r.status); }
          return r.text();
        }).then(function (html) {
          $("#df-why-body").innerHTML = html;  /* server-rendered, autoescaped */
          dialog.showModal();
        }).catch(function () { window.location.href = a.href; });
      });
    });
  }
  var BADGES = {matched: "ok", processed: "ok", failed: "bad", not_matched: "muted", not_evaluated: "muted",
                multiple: "warn", no_template: "warn", sent: "run", processing: "run",
                done: "ok", running: "run", waiting: "warn", skipped: "muted", cancelled: "muted", pending: "muted"};

  /* --- one job: the stage timeline follows the job; a new status reloads the page ------------- */
  if (data.jobUrl && data.jobEnded !== "1") {
    var shown = $("#df-job-status").dataset.status, logBody = $("#df-job-log tbody");
    function lastLogId() {
      var rows = $all("tr[data-id]", logBody);
      return rows.length ? rows[rows.length - 1].dataset.id : "0";
    }
    function appendLog(lines) {
      lines.forEach(function (e) {
        var empty = $(".df-empty", logBody); if (empty) { empty.remove(); }
        var tr = document.createElement("tr"); tr.dataset.id = e.id;
        var badge = document.createElement("span");
        badge.className = "badge " + ({ERROR: "bad", WARNING: "warn"}[e.level] || ""); badge.textContent = e.level;
        [e.time, badge, e.stage, e.message].forEach(function (value, i) {
          var td = document.createElement("td");
          if (i === 0) { td.className = "nowrap"; }
          if (i === 3) { td.className = "msg"; }
          if (typeof value === "string") { td.textContent = value; } else { td.appendChild(value); }
          tr.appendChild(td);
        });
        logBody.appendChild(tr);
      });
    }
    poll(function () {
      return getJSON(data.jobUrl + "?after=" + lastLogId()).then(function (doc) {
        appendLog(doc.log);
        doc.stages.forEach(function (s) {
          var li = $('li[data-stage="' + s.name + '"]'); if (!li) { return; }
          li.className = "st st-" + s.status;
          $(".st-status", li).textContent = s.status_label;
          $(".st-count", li).textContent = s.total ? s.done + "/" + s.total : "";
          $(".st-error", li).textContent = s.error;
        });
        if (doc.status !== shown) { window.location.reload(); return false; }
        return !doc.ended;
      });
    }, 1500);
  }

  /* --- QC: look through the slices with buttons or the arrow keys ------------------------------ */
  var qc = $("#df-qc-image");
  if (qc) {
    var slices = qc.dataset.slices.split(",").map(Number), at = 0;
    var base = qc.dataset.url.replace(/0\.png$/, "");
    var caption = $("#df-qc-caption"), total = caption.textContent.split(" of ")[1];
    function show(i) {
      at = (i + slices.length) % slices.length;
      qc.src = base + slices[at] + ".png";
      caption.textContent = "slice " + (slices[at] + 1) + " of " + total + " (" + (at + 1) + "/" + slices.length + " with contours)";
    }
    $("#df-qc-prev").addEventListener("click", function () { show(at - 1); });
    $("#df-qc-next").addEventListener("click", function () { show(at + 1); });
    document.addEventListener("keydown", function (ev) {
      var tag = (ev.target.tagName || "").toLowerCase();
      if (tag === "textarea" || tag === "input" || tag === "select") { return; }
      if (ev.key === "ArrowLeft") { show(at - 1); ev.preventDefault(); }
      if (ev.key === "ArrowRight") { show(at + 1); ev.preventDefault(); }
    });
  }

  /* --- template form: add a row (ROI, destination, parameter) ---------------------------------- */
  $all(".df-add-row").forEach(function (button) {
    button.addEventListener("click", function () {
      var body = $("#" + button.dataset.table + " tbody"), last = body.lastElementChild;
      var copy = last.cloneNode(true);
      $all("input", copy).forEach(function (i) { if (i.type === "color") { i.value = "#ff0000"; } else { i.value = ""; } });
      body.appendChild(copy);
      var first = $("input", copy); if (first) { first.focus(); }
    });
  });

  /* --- rule builder: AND/OR groups of conditions, posted as the core's JSON -------------------- */
  var builder = $("#df-builder");
  if (builder) {
    var hidden = $("#df-match"), ruleTpl = $("#df-rule-tpl");
    var NO_VALUE = {exists: 1, not_exists: 1}, NUMBER = {gt: 1, gte: 1, lt: 1, lte: 1};

    function ruleNode(rule) {
      var node = ruleTpl.content.firstElementChild.cloneNode(true);
      $(".r-attr", node).value = rule.attribute || "";
      $(".r-op", node).value = rule.operator || "equals";
      var v = rule.value;
      $(".r-value", node).value = v === undefined || v === null ? "" : (Array.isArray(v) ? v.join(", ") : String(v));
      $(".r-case", node).checked = !!rule.ignore_case;
      $(".r-remove", node).addEventListener("click", function () { node.remove(); });
      return node;
    }
    function groupNode(group, top) {
      var op = group.or ? "or" : "and", items = group[op] || [];
      var node = document.createElement("div");
      node.className = "group"; node.setAttribute("role", "group"); node.setAttribute("aria-label", "Group of conditions");
      var head = document.createElement("div"); head.className = "g-head";
      var label = document.createElement("label"); label.textContent = "Match ";
      var select = document.createElement("select"); select.className = "g-op"; select.setAttribute("aria-label", "Group operator");
      [["and", "ALL of (AND)"], ["or", "ANY of (OR)"]].forEach(function (o) {
        var opt = document.createElement("option"); opt.value = o[0]; opt.textContent = o[1]; select.appendChild(opt);
      });
      select.value = op; label.appendChild(select); head.appendChild(label);
      var list = document.createElement("div"); list.className = "g-items";
      function button(text, fn, cls) {
        var b = document.createElement("button"); b.type = "button"; b.className = "secondary " + (cls || "");
        b.textContent = text; b.addEventListener("click", fn); head.appendChild(b); return b;
      }
      button("Add condition", function () { var n = ruleNode({}); list.appendChild(n); $(".r-attr", n).focus(); });
      button("Add group", function () { list.appendChild(groupNode({and: [{}]}, false)); });
      if (!top) { button("Remove group", function () { node.remove(); }); }
      items.forEach(function (item) {
        list.appendChild(item.and || item.or ? groupNode(item, false) : ruleNode(item));
      });
      node.appendChild(head); node.appendChild(list);
      return node;
    }
    function typed(text) {
      var t = text.trim();
      return t !== "" && !isNaN(Number(t)) && /^-?\d+(\.\d+)?$/.test(t) ? Number(t) : t;
    }
    function ruleValue(node) {
      var attr = $(".r-attr", node).value.trim(), op = $(".r-op", node).value, raw = $(".r-value", node).value;
      if (!attr) { return null; }
      var rule = {attribute: attr, operator: op};
      if (!NO_VALUE[op]) {
        if (op === "in") { rule.value = raw.split(",").map(function (s) { return typed(s); }).filter(function (s) { return s !== ""; }); }
        else if (NUMBER[op]) { rule.value = typed(raw); }
        else { rule.value = raw.trim(); }
      }
      if ($(".r-case", node).checked) { rule.ignore_case = true; }
      return rule;
    }
    function groupValue(node) {
      var op = $(".g-op", node).value, items = [];
      Array.prototype.forEach.call($(".g-items", node).children, function (child) {
        var v = child.classList.contains("group") ? groupValue(child) : ruleValue(child);
        if (v) { items.push(v); }
      });
      if (!items.length) { return null; }
      var out = {}; out[op] = items; return out;
    }
    var initial = {and: []};
    try { initial = JSON.parse(hidden.value) || initial; } catch (e) { initial = {and: []}; }
    if (!initial.and && !initial.or) { initial = {and: [initial]}; }
    builder.appendChild(groupNode(initial, true));
    $("#df-ruleset-form").addEventListener("submit", function () {
      hidden.value = JSON.stringify(groupValue(builder.firstElementChild));
    });
  }

  /* --- ZIP uploads: the list's selection; one progress page for all the chosen uploads --------- */
  if ($("#df-zip-form")) { selection(null, null); }
  var progress = $("#df-zip-progress");
  if (progress && $all("tr[data-upload]", progress).length) {
    poll(function () {
      return getJSON(progress.dataset.url).then(function (doc) {
        var open = 0;
        doc.uploads.forEach(function (u) {
          var row = $('tr[data-upload="' + u.id + '"]', progress); if (!row) { return; }
          var badge = $(".z-status", row);
          badge.textContent = u.status_label; badge.className = "badge z-status " + (u.failed ? "bad" : u.ended ? "ok" : "run");
          $(".z-stage", row).textContent = u.stage_label;
          $(".z-percent", row).textContent = u.percent;
          $(".bar > div", row).style.width = u.percent + "%";
          $(".bar", row).setAttribute("aria-valuenow", u.percent);
          var link = $(".z-link", row);
          link.hidden = !u.ended; link.textContent = u.failed ? "Error" : "Result";
          if (!u.ended) { open += 1; }
        });
        if (!open) { $("#df-zip-all-done").hidden = false; }
        return open > 0;
      });
    }, 1000);
  }
})();
