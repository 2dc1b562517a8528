// An invitation link: joining spends it, then the instance's page opens.
import { api, toast } from "./app.js";

const box = document.getElementById("invitation");
const button = document.getElementById("invite-accept");
button.addEventListener("click", async () => {
  button.disabled = true;
  try {
    const joined = await api("POST", "/api/invitations/redeem", { token: box.dataset.token });
    location.assign(`/instances/${encodeURIComponent(joined.uid)}`);
  } catch (err) {
    toast(err.message, "error");
  }
});
