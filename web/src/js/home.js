// The list of the user's instances, kept live by the event stream.
import { bindInstanceActions, onEvent, refreshFragment } from "./app.js";

const list = document.getElementById("instances");
const refresh = () => refreshFragment(list);

bindInstanceActions(refresh);
onEvent("instances", refresh);
onEvent("instance", refresh);
onEvent("stale", refresh);
onEvent("thumbnail", ({ uid, url }) => {
  const img = list.querySelector(`img[data-thumb="${CSS.escape(uid)}"]`);
  if (img) img.src = url;
  else refresh();
});
