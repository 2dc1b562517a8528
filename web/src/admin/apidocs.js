// /api/docs: Swagger UI when it was installed (scripts/build-apidocs.sh), else a plain list of
// the operations read from /api/openapi.json. Nothing is loaded from outside this server.
const root = document.getElementById("swagger-ui");
const url = root.dataset.spec;

if (window.SwaggerUIBundle) {
  window.SwaggerUIBundle({ url, dom_id: "#swagger-ui", deepLinking: true, tryItOutEnabled: false });
} else {
  fetch(url).then((r) => r.json()).then((doc) => {
    const h = document.createElement("h1");
    h.textContent = `${doc.info.title} ${doc.info.version}`;
    root.append(h);
    const p = document.createElement("p");
    p.textContent = doc.info.description;
    root.append(p);
    const table = document.createElement("table");
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        const tr = table.insertRow();
        tr.insertCell().textContent = method.toUpperCase();
        tr.insertCell().textContent = path;
        tr.insertCell().textContent = op.summary || "";
      }
    }
    root.append(table);
  });
}
