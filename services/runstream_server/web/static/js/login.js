// The sign-in view, shown in #app when the API answers 401 (main.js): an API key field
// and a Sign in button. Submitting POSTs /api/v1/login; the server answers with the
// key's identity and sets the HttpOnly cookie runstream_key, which every later request
// of the page carries. A refused key shows the server's message and keeps the form.
//
//   mount(root, {onSignedIn}) → {unmount()}
//   onSignedIn(who): the key was accepted; who = {user, admin, teams, key_id}.
// Test hooks: login-form, login-key (also the input's id), login-submit, login-error
// (role=alert, hidden until a sign-in fails).

import { login } from "./api.js";
import { h, clear } from "./dom.js";

export function mount(root, { onSignedIn }) {
  let stopped = false;
  const key = h("input", {
    type: "password", id: "login-key", testid: "login-key", class: "login-key",
    autocomplete: "current-password", spellcheck: false, placeholder: "rsk_…",
    attrs: { "aria-label": "API key" },
  });
  const submit = h("button", { type: "submit", class: "btn primary", text: "Sign in", testid: "login-submit" });
  const error = h("div", { class: "form-error login-error", testid: "login-error", hidden: true, attrs: { role: "alert" } });
  const form = h("form", { class: "login-form", testid: "login-form", on: { submit: (ev) => { ev.preventDefault(); signIn(); } } },
    h("label", { class: "login-label", htmlFor: "login-key", text: "API key" }),
    h("div", { class: "login-row" }, key, submit),
    error,
    hint());

  const showError = (message) => {
    error.textContent = message;
    error.hidden = false;
    key.focus();
    key.select();
  };

  async function signIn() {
    const value = key.value.trim();
    if (!value) {
      showError("Enter an API key.");
      return;
    }
    submit.disabled = true;
    try {
      const who = await login(value);
      if (!stopped) onSignedIn(who);
    } catch (e) {
      if (!stopped) showError(e.message);
    } finally {
      submit.disabled = false;
    }
  }

  clear(root);
  root.append(h("div", { class: "login-page" },
    h("div", { class: "login-card" }, h("h2", { text: "Sign in to Runstream" }), form)));
  key.focus();
  return { unmount: () => { stopped = true; } };
}

// Where keys come from.
function hint() {
  return h("p", { class: "login-hint muted" },
    "The embedded server writes the admin key to ", h("code", { text: "<data dir>/admin-key" }),
    "; ", h("code", { text: "runstream key create" }), " makes more.");
}
