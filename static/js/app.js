/* OTRS Bridge console: the little JavaScript the pages want. Everything works without it;
   htmx does the live updates, and the server chooses how often (it slows down while
   nothing changes). This file only keeps a refresh from wiping out what someone is doing,
   opens the menu on phones, closes a confirm step with Escape, sends a poll that finds
   the session ended to the login page, and takes a field's error away once it is filled. */
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  // Someone is working inside the live region: a confirm step is open, a failed task is
  // ticked for bulk retry, or a comment is being typed. A swap now would throw that away,
  // so this poll is skipped; the next one (same interval) tries again.
  function busy(region) {
    if (region.querySelector("details[open]")) return true;
    if (region.querySelector("input[type=checkbox]:checked")) return true;
    const active = document.activeElement;
    if (active && region.contains(active) && /^(TEXTAREA|INPUT|SELECT)$/.test(active.tagName)) return true;
    return Array.from(region.querySelectorAll("textarea")).some(function (t) { return t.value.trim() !== ""; });
  }

  document.addEventListener("htmx:beforeRequest", function (event) {
    const region = event.detail.elt;
    if (region && region.classList && region.classList.contains("live") && busy(region)) {
      event.preventDefault();
    }
  });

  // A poll after the session ended comes back as the login page: show it as a page,
  // not squeezed into the live region.
  document.addEventListener("htmx:beforeSwap", function (event) {
    const url = event.detail.xhr && event.detail.xhr.responseURL;
    if (url && new URL(url).pathname === "/login/") {
      event.detail.shouldSwap = false;
      window.location.reload();
    }
  });

  document.addEventListener("click", function (event) {
    const toggle = event.target.closest(".nav-toggle");
    if (!toggle) return;
    const nav = document.getElementById(toggle.getAttribute("aria-controls"));
    const open = nav.classList.toggle("open");
    toggle.setAttribute("aria-expanded", open ? "true" : "false");
  });

  // A field the server refused keeps its message until the form is sent again; once the
  // person fills it, the message speaks of a value that is no longer there.
  function clearAnswered(event) {
    const control = event.target;
    const field = control.closest && control.closest(".has-error");
    if (!field) return;
    const filled = control.type === "checkbox"
      ? field.querySelector("input:checked") !== null
      : control.value.trim() !== "";
    if (!filled) return;
    field.classList.remove("has-error");
    field.querySelectorAll(".field-errors, .errorlist").forEach(function (list) { list.remove(); });
    field.querySelectorAll("[aria-invalid]").forEach(function (el) {
      el.removeAttribute("aria-invalid");
      const described = (el.getAttribute("aria-describedby") || "").split(" ")
        .filter(function (id) { return id && !id.endsWith("-errors") && document.getElementById(id); });
      if (described.length) el.setAttribute("aria-describedby", described.join(" "));
      else el.removeAttribute("aria-describedby");
    });
  }
  document.addEventListener("input", clearAnswered);
  document.addEventListener("change", clearAnswered);

  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    const open = document.activeElement && document.activeElement.closest("details.confirm[open]");
    if (open) {
      open.removeAttribute("open");
      open.querySelector("summary").focus();
    }
  });
})();
