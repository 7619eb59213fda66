// The pairing page: trade the code from `edgectl panel pair ROOM` for this
// screen's token (an HttpOnly cookie the page never sees), then open its page.

const form = document.getElementById("pair-form");
const input = document.getElementById("code");
const error = document.getElementById("pair-error");
const submit = document.getElementById("pair-submit");

input.addEventListener("input", () => {
  input.value = input.value.toUpperCase();
  error.textContent = "";
});

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const code = input.value.trim();
  if (code.length < 4) {
    error.textContent = "Type the whole code, like ABCD-EFGH.";
    return;
  }
  submit.disabled = true;
  error.textContent = "";
  try {
    const r = await fetch("/api/pair", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ code }),
      credentials: "same-origin",
      cache: "no-store",
    });
    if (r.ok) {
      const { page } = await r.json();
      // Only a page of this gateway: the answer names a path, never a site.
      location.replace(typeof page === "string" && page.startsWith("/") && !page.startsWith("//") ? page : "/");
      return;
    }
    const text = (await r.text()).replace(/^\d+: /, "") || r.statusText;
    error.textContent =
      r.status === 401
        ? "That code is unknown or expired. Ask for a new one."
        : r.status === 429
          ? `Too many tries: ${text}.`
          : `Refused: ${text}.`;
  } catch {
    error.textContent = "The gateway cannot be reached. Check the network and try again.";
  } finally {
    submit.disabled = false;
  }
});

input.focus();
