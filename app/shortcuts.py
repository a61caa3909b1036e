"""Keyboard shortcuts of the page (space run/pause, → step, r reset), as a tiny JS component:
the browser reports the key, Python decides what it does (:meth:`MNEExplorer.shortcut`)."""
from __future__ import annotations

import param
from panel.custom import JSComponent

#: key (as the browser's KeyboardEvent.key names it) -> action of MNEExplorer.shortcut
KEYS = {" ": "run_pause", "ArrowRight": "step", "r": "reset"}


class KeyShortcuts(JSComponent):
    """Invisible; each press of a key in KEYS (outside text inputs) bumps ``presses`` with ``key``."""

    key = param.String(default="", doc="The last shortcut key pressed.")
    presses = param.Integer(default=0, doc="How many shortcut keys were pressed (an event counter).")

    _esm = """
const KEYS = [" ", "ArrowRight", "r"];
export function render({ model }) {
  const typing = (e) => (e.composedPath ? e.composedPath() : [e.target]).some(
    (el) => el && (el.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName)));
  const handler = (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || !KEYS.includes(e.key) || typing(e)) return;
    e.preventDefault();
    model.key = e.key;
    model.presses = model.presses + 1;
  };
  document.addEventListener("keydown", handler);
  model.on("remove", () => document.removeEventListener("keydown", handler));
  const el = document.createElement("span");
  el.title = "Keyboard: space run/pause, → step, r reset";
  return el;
}
"""

    def press(self, key: str) -> None:
        """What the browser does on a key press (for tests and notebooks)."""
        self.param.update(key=key, presses=self.presses + 1)
