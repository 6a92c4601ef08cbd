/* ItemGate web: progressive enhancement only. Uploads in place with progress; pages work without it. */
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function extensionOf(name) {
    var dot = name.lastIndexOf(".");
    return dot < 0 ? "" : name.slice(dot).toLowerCase();
  }

  function setupUpload(form) {
    var input = form.querySelector(".file-input");
    var zone = form.querySelector(".dropzone");
    var bar = form.querySelector(".upload-progress");
    var msg = form.querySelector(".upload-msg");
    var submit = form.querySelector(".upload-submit");
    var accepted = (form.dataset.accept || "").split(",");
    var maxBytes = parseInt(form.dataset.maxBytes || "0", 10);
    if (submit) { submit.hidden = true; }  // with script, choosing a file uploads it at once
    form.classList.add("enhanced");

    function say(text, isError) {
      msg.textContent = text;
      msg.classList.toggle("error", !!isError);
    }

    function send(file) {
      if (!file) { return; }
      // Checked here to save a pointless transfer; the server checks again from the bytes.
      if (accepted.indexOf(extensionOf(file.name)) < 0) { say(msg.dataset.badType, true); return; }
      if (maxBytes && file.size > maxBytes) { say(msg.dataset.tooBig, true); return; }
      var data = new FormData(form);
      data.set("file", file, file.name);
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.setRequestHeader("X-CSRFToken", csrfToken());
      bar.hidden = false;
      bar.value = 0;
      form.classList.add("busy");
      say(msg.dataset.uploading, false);
      xhr.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) { bar.value = Math.round((e.loaded / e.total) * 100); }
      });
      xhr.addEventListener("load", function () {
        form.classList.remove("busy");
        if (xhr.responseURL && xhr.responseURL.indexOf("/login") >= 0) {
          window.location.assign(xhr.responseURL);  // the session timed out: sign in again
          return;
        }
        if (xhr.status === 201) {
          bar.value = 100;
          say(msg.dataset.done + ": " + file.name, false);
          // The checklist and the Complete button depend on what is now stored: read them afresh from the task
          // page and swap them in, leaving the form (and what was typed into it) as it is.
          // (From the task's own address: this page may be the answer to a refused form post.)
          var kind = form.querySelector('input[name="kind"]');
          var next = form.querySelector('input[name="next"]');
          refreshGate(next ? next.value.split("#")[0] : window.location.pathname, kind ? kind.value : "",
                      msg.dataset.done + ": " + file.name);
          return;
        }
        var detail = "";
        try { detail = JSON.parse(xhr.responseText).detail || ""; } catch (err) { detail = ""; }
        bar.hidden = true;
        say(msg.dataset.failed + (detail ? "：" + detail : ""), true);
      });
      xhr.addEventListener("error", function () {
        form.classList.remove("busy");
        bar.hidden = true;
        say(msg.dataset.failed, true);
      });
      xhr.send(data);
    }

    input.addEventListener("change", function () { send(input.files[0]); });
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.remove("over"); });
    });
    zone.addEventListener("drop", function (e) {
      if (e.dataTransfer && e.dataTransfer.files.length) { send(e.dataTransfer.files[0]); }
    });
  }

  function refreshGate(taskUrl, kind, done) {
    saveDraftNow();
    var here = document.getElementById("gate");
    if (!here || !window.fetch || !window.DOMParser) { window.location.assign(taskUrl); return; }
    fetch(taskUrl, {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (r) { return r.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("gate");
        if (!fresh) { return; }
        here.replaceWith(fresh);
        fresh.querySelectorAll("form.upload").forEach(setupUpload);
        var row = fresh.querySelector('.gate-row[data-kind="' + kind + '"] .upload-msg');
        if (row) { row.textContent = done; }
        var button = document.getElementById("complete-button"), newButton = doc.getElementById("complete-button");
        if (button && newButton) {
          button.disabled = newButton.disabled;
          if (newButton.hasAttribute("aria-describedby")) {
            button.setAttribute("aria-describedby", newButton.getAttribute("aria-describedby"));
          } else { button.removeAttribute("aria-describedby"); }
        }
        var reason = document.getElementById("complete-reason"), newReason = doc.getElementById("complete-reason");
        if (reason && newReason) { reason.replaceWith(newReason); }
        else if (reason) { reason.remove(); }
        else if (newReason && button) { button.parentNode.insertBefore(newReason, button); }
      })
      .catch(function () { window.location.assign(taskUrl); });
  }

  // The task form's draft: sent to the server as people type (and before an upload), restored on reload.
  var draftTimer = null;
  var saveDraftNow = function () {};

  function setupDraft(form) {
    var url = form.dataset.draftUrl;
    var status = document.getElementById("draft-status");
    if (!url || !window.fetch) { return; }
    saveDraftNow = function () {
      if (draftTimer) { clearTimeout(draftTimer); draftTimer = null; }
      var data = new FormData(form);
      data.delete("csrf_token");
      return fetch(url, {method: "POST", body: data, credentials: "same-origin",
                         headers: {"Accept": "application/json", "X-CSRFToken": csrfToken()}})
        .then(function (r) {
          if (status) { status.textContent = r.ok ? status.dataset.saved : status.dataset.failed; }
        })
        .catch(function () { if (status) { status.textContent = status.dataset.failed; } });
    };
    function later() {
      if (draftTimer) { clearTimeout(draftTimer); }
      draftTimer = setTimeout(saveDraftNow, 600);
    }
    form.addEventListener("input", later);
    form.addEventListener("change", later);
    window.addEventListener("pagehide", function () { if (draftTimer) { saveDraftNow(); } });
  }

  function setupReview(form) {
    var comment = form.querySelector('[name="comment"]');
    var choices = form.querySelectorAll('input[name="decision"]');
    if (!comment || !choices.length) { return; }
    function sync() {
      var chosen = form.querySelector('input[name="decision"]:checked');
      var returning = chosen && chosen.value === "return";
      comment.setAttribute("aria-required", returning ? "true" : "false");
      comment.closest(".field").classList.toggle("required-now", !!returning);
    }
    choices.forEach(function (c) { c.addEventListener("change", sync); });
    sync();
  }

  function setupZoom(button) {
    var box = document.getElementById(button.getAttribute("aria-controls"));
    if (!box) { return; }
    button.hidden = false;
    if (window.matchMedia && window.matchMedia("(max-width: 760px)").matches) {
      // On a phone the diagram starts large and scrollable: bring the current step into view.
      var here = box.querySelector(".ig-current");
      if (here && here.getBoundingClientRect) {
        var r = here.getBoundingClientRect(), b = box.getBoundingClientRect();
        box.scrollLeft = Math.max(0, r.left - b.left - b.width / 3);
      }
    }
    button.addEventListener("click", function () {
      var zoomed = box.classList.toggle("zoomed");
      button.setAttribute("aria-pressed", zoomed ? "true" : "false");
      button.textContent = zoomed ? button.dataset.zoomOut : button.dataset.zoomIn;
      var current = box.querySelector(".ig-current");
      if (zoomed && current && current.scrollIntoView) {
        current.scrollIntoView({block: "center", inline: "center"});
      }
    });
  }

  // On a phone a table reads as a list of cards: each cell is labelled with its column's head (CSS shows it).
  function labelCells(table) {
    var heads = table.querySelectorAll("thead th");
    if (!heads.length) { return; }
    table.querySelectorAll("tbody tr").forEach(function (row) {
      var col = 0;
      Array.prototype.forEach.call(row.children, function (cell) {
        var head = heads[col];
        var text = head ? head.textContent.trim() : "";
        if (text && !cell.hasAttribute("data-label")) { cell.setAttribute("data-label", text); }
        col += cell.colSpan || 1;
      });
    });
  }

  // Registration (登记事项, accepting a service order): show only the fields the chosen line's rules read, and
  // only the channels it is offered on; a metered line's record (units in a period) has no channels, mode or
  // difficulty. Without script every field shows until a submit, and the server decides.
  function setupLineForm(form) {
    var select = form.querySelector("select[name=line], select[name=service_line]");
    if (!select) { return; }
    function sync() {
      var option = select.options[select.selectedIndex];
      var wanted = option && option.dataset.fields !== undefined ? option.dataset.fields.split(",") : null;
      var offered = option && option.dataset.channels ? option.dataset.channels.split(",") : null;
      form.querySelectorAll(".line-field").forEach(function (box) {
        var show = wanted !== null && wanted.indexOf(box.dataset.field) >= 0;
        box.hidden = !show;
        box.querySelectorAll("input").forEach(function (input) { input.disabled = !show; });
      });
      var metered = !!option && option.dataset.kind === "metered";
      var noChannels = !!option && option.value !== "" && option.dataset.channels === "";
      form.querySelectorAll("[data-hide-for]").forEach(function (box) {
        var reasons = box.dataset.hideFor.split(" ");
        var hide = (metered && reasons.indexOf("metered") >= 0) || (noChannels && reasons.indexOf("nochannels") >= 0);
        box.hidden = hide;
        box.querySelectorAll("input, textarea, select").forEach(function (input) { input.disabled = hide; });
      });
      form.querySelectorAll("label[data-channel]").forEach(function (label) {
        var input = label.querySelector("input");
        var off = offered !== null && offered.indexOf(label.dataset.channel) < 0;
        input.disabled = off || metered || noChannels;
        if (off) { input.checked = false; }
        label.classList.toggle("muted", off);
      });
    }
    select.addEventListener("change", sync);
    sync();
  }

  // Rework: a completed step in the diagram picks it as the step to go back to.
  function setupReworkPick(select) {
    var values = Array.prototype.map.call(select.options, function (o) { return o.value; });
    document.querySelectorAll(".itemgate-diagram .ig-shape.ig-done[data-element-id]").forEach(function (shape) {
      var id = shape.getAttribute("data-element-id");
      if (values.indexOf(id) < 0) { return; }
      shape.classList.add("ig-pickable");
      shape.addEventListener("click", function () {
        select.value = id;
        select.dispatchEvent(new Event("change"));
        var reason = document.getElementById("rw-reason");
        if (reason) { reason.focus(); }
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("table.grid").forEach(labelCells);
    document.querySelectorAll("#register-form, #accept-form").forEach(setupLineForm);
    var reworkTo = document.getElementById("rw-to");
    if (reworkTo) { setupReworkPick(reworkTo); }
    document.querySelectorAll(".zoom-toggle").forEach(setupZoom);
    document.querySelectorAll("form.upload").forEach(setupUpload);
    var taskForm = document.getElementById("task-form");
    if (taskForm) { setupReview(taskForm); setupDraft(taskForm); }
  });
})();

// Forms that change something hard to undo ask first (data-confirm holds the question).
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (form && form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
}, true);
