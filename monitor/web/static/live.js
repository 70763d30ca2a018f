// The board's live updates: reload when the store changes (server-sent events from /board/events).
// The board works without this file; it only saves pressing reload. A form being typed in is not
// interrupted: the reload waits until no field has the focus.
"use strict";
(function () {
  let pending = false;
  function reload() {
    const active = document.activeElement;
    if (active && (active.tagName === "INPUT" || active.tagName === "TEXTAREA")) {
      pending = true;
      return;
    }
    location.reload();
  }
  document.addEventListener("focusout", function () { if (pending) { setTimeout(reload, 500); } });
  new EventSource("/board/events").addEventListener("changed", reload);
})();
