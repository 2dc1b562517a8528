// Which text from the remote desktop's clipboard the page offers to open as a link.
// The desktop is hostile: whatever it puts in its clipboard is an attacker's string. Only a
// plain https URL whose host is on the site's allow-list (settings: clipboard.url_hosts) is
// offered; anything else (javascript:, data:, other hosts, userinfo as in
// https://allowed@evil, escapes in the host, control or invisible characters, non-ASCII
// look-alikes, over-long text) is not. Pure: no DOM, tested under node and in the browser.

// Printable ASCII only: no control characters, no spaces, no Unicode (IDN look-alikes,
// bidirectional overrides and zero-width characters are all outside it).
const PRINTABLE = /^[\x21-\x7e]+$/;
// What may stand between "https://" and the path: a host name and an optional :443.
const AUTHORITY = /^([a-z0-9.-]+)(:443)?$/;
const LABEL = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;

export function hostAllowed(host, allowed) {
  for (const entry of allowed) {
    const rule = String(entry).toLowerCase();
    if (rule.startsWith("*.")) {
      const domain = rule.slice(2);
      if (host.endsWith("." + domain) && host.length > domain.length + 1) return true;
    } else if (host === rule) {
      return true;
    }
  }
  return false;
}

// The URL to offer (as the browser would open it), or null.
export function offerableUrl(text, allowed, maxChars = 2048) {
  if (typeof text !== "string" || !Array.isArray(allowed) || !allowed.length) return null;
  if (text.length > maxChars + 2) return null;
  // Copying a link often brings a final newline; nothing else around it is accepted.
  const raw = text.replace(/^[ \t\r\n]+|[ \t\r\n]+$/g, "");
  if (!raw || raw.length > maxChars || !PRINTABLE.test(raw)) return null;
  if (raw.includes("\\")) return null; // browsers read \ as / in http(s) URLs
  const m = /^https:\/\/([^/?#]*)([/?#].*)?$/i.exec(raw);
  if (!m) return null;
  // The authority exactly as written: no userinfo (@), no percent-escapes, no IP tricks in
  // another notation than the allow-list's own names, no port but the default one.
  const authority = m[1].toLowerCase();
  const am = AUTHORITY.exec(authority);
  if (!am) return null;
  const host = am[1];
  if (host.length > 253 || !host.split(".").every((label) => LABEL.test(label))) return null;
  let url;
  try {
    url = new URL(raw);
  } catch {
    return null;
  }
  // The parser must agree with what was checked (belt and braces against parser quirks).
  if (url.protocol !== "https:" || url.username || url.password || url.hostname !== host) return null;
  if (url.port && url.port !== "443") return null;
  if (!hostAllowed(host, allowed)) return null;
  if (url.href.length > maxChars + 1) return null;
  return url.href;
}
