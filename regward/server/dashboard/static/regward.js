// Progressive enhancement only: every page works without this file.
document.addEventListener("DOMContentLoaded", () => {
  // After a form is sent, the page that answers puts the focus where the result is: the first
  // field it refused, else what it says happened (a keyboard or screen-reader user would
  // otherwise start again at the top of the page). A page that chose a field keeps it.
  const target = document.querySelector('[aria-invalid="true"]') ||
    (document.querySelector("[autofocus]") ? null : document.querySelector("[data-result]"));
  if (target) {
    target.focus();
  }
  // Copy a token shown once.
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.hidden = false;
    button.addEventListener("click", () => {
      const field = document.getElementById(button.dataset.copy);
      navigator.clipboard.writeText(field.value).then(() => { button.textContent = "Copied"; });
    });
  }
  // Ask before destructive actions, here instead of on the server's confirmation page.
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) {
        event.preventDefault();
        return;
      }
      const confirmed = document.createElement("input");
      Object.assign(confirmed, { type: "hidden", name: "confirmed", value: "yes" });
      form.append(confirmed);
    });
  }
});
