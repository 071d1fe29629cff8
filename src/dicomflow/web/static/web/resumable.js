// A client of the resumable upload API (/api/uploads/) for the pages that send files (the folder
// upload and the research uploader): JSON calls with
// the CSRF token, chunks from the offset the server holds (retrying network errors and lost
// answers), and one hook for an expired session (``onAuthLost`` returns a promise of a fresh CSRF
// token once the user logged in again; the failed request is then repeated).
(function () {
  "use strict";
  const RETRIES = 6;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  class Client {
    constructor(options) {
      this.api = options.api; this.csrf = options.csrf; this.chunk = options.chunk;
      this.onAuthLost = options.onAuthLost || null; this.sessionUrl = options.sessionUrl || "";
      this.relogin = null;
    }

    async call(method, url, body, headers) {
      for (let attempt = 0; ; attempt++) {
        const response = await fetch(url, {
          method, body, credentials: "same-origin",
          headers: Object.assign({ "X-CSRFToken": this.csrf, "Accept": "application/json" }, headers || {}),
        });
        let data = null;
        try { data = await response.json(); } catch (e) { data = null; }
        if (response.ok) return data;
        if ((response.status === 401 || response.status === 403) && attempt < 3 && await this.sessionLost()) {
          await this.loginAgain();
          continue;
        }
        const err = new Error((data && data.detail) || ("the server answered HTTP " + response.status));
        err.status = response.status; err.offset = data && data.offset; err.data = data;
        throw err;
      }
    }

    async sessionLost() {  // a 401/403 means an expired session only when the server says we are logged out
      if (!this.onAuthLost || !this.sessionUrl) return false;
      try {
        const r = await fetch(this.sessionUrl, { credentials: "same-origin", headers: { "Accept": "application/json" } });
        const state = await r.json();
        return !state.authenticated;
      } catch (e) { return false; }
    }

    async loginAgain() {  // one dialog for every request that noticed
      if (!this.relogin) this.relogin = this.onAuthLost().finally(() => { this.relogin = null; });
      this.csrf = await this.relogin;
    }

    json(method, url, data) {
      return this.call(method, url, data === undefined ? undefined : JSON.stringify(data), { "Content-Type": "application/json" });
    }

    // Send ``file`` as file ``entry.index`` of session ``sessionId`` from ``entry.received``;
    // ``progress(bytesDelta)`` after each chunk; resolves with the server's last answer.
    async send(sessionId, file, entry, progress) {
      let offset = entry.received, failures = 0, resent = false, last = null;
      if (offset >= entry.size && entry.complete) return { complete: true, received: entry.size };
      const url = this.api + sessionId + "/files/" + entry.index + "/";
      do {
        const end = Math.min(entry.size, offset + this.chunk);
        try {
          last = await this.call("PUT", url, file.slice(offset, end),
            { "Upload-Offset": String(offset), "Content-Type": "application/octet-stream" });
          progress(last.received - offset);
          offset = last.received; failures = 0;
        } catch (err) {
          if (err.status === 409 && typeof err.offset === "number" && failures < RETRIES) {
            failures++; progress(err.offset - offset); offset = err.offset; continue;
          }
          if (err.status === 422 && !resent) { resent = true; progress(-offset); offset = 0; continue; }
          if (err.status && err.status < 500) throw err;
          if (++failures > RETRIES) throw err;
          await sleep(400 * failures);
          const state = await this.call("GET", this.api + sessionId + "/");
          const now = state.files[entry.index].received;
          progress(now - offset); offset = now;
        }
      } while (offset < entry.size);
      return last || { complete: true, received: offset };
    }
  }

  // The file's sha256 (hex) for the server to verify; "" (the server computes it) without WebCrypto
  // or above ``limit`` bytes, which would be read into memory whole.
  async function sha256(file, limit) {
    if (!(window.crypto && crypto.subtle) || file.size > (limit || 256 * 1024 * 1024)) return "";
    const digest = await crypto.subtle.digest("SHA-256", await file.arrayBuffer());
    return Array.from(new Uint8Array(digest)).map((b) => b.toString(16).padStart(2, "0")).join("");
  }

  window.DfResumable = { Client, sleep, sha256 };
})();
