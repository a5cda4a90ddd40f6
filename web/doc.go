// Package web serves huddle's groups to a browser: `huddle web` runs a
// Server as the user (their key, their registries) on a local port, with a
// chat page embedded in the binary and the JSON and Server-Sent Events API
// the page (and scripts) use under /api/.
//
// # Security
//
// The Server acts with the user's key, so whoever can use it can read and
// send as the user. It therefore answers only requests that
//
//   - name a Host that is an IP address, "localhost", or one of
//     Config.Hosts: a DNS name an attacker controls and points at 127.0.0.1
//     (DNS rebinding) gets 403;
//   - come from its own origin: a request with an Origin other than its own,
//     or that the browser marks as cross-site or same-site (Sec-Fetch-Site;
//     another port of localhost is same-site, and cookies are shared across
//     ports), gets 403;
//   - carry the per-launch secret: a random 256-bit value in the URL the
//     Server prints (?k=...), which the first page load trades for an
//     HttpOnly, SameSite=Strict cookie named after the port, and a redirect
//     that takes it out of the address bar; scripts may send it as
//     "Authorization: Bearer SECRET". Without it: 401.
//
// It listens on loopback unless Config.AllowRemote says otherwise, and sets
// a strict Content-Security-Policy (scripts and styles only from itself).
//
// # API
//
// Every response is JSON, errors included ({"error": {"code", "message",
// "retry_after_ms"}}, code being the protocol's name or one of the Server's
// own: no_secret, forbidden_host, foreign_origin, unreachable, wrong_key,
// clash, bad_request).
// GET /api/events is a text/event-stream that holds one watch per group
// named in its watch parameter, and the live group list; README.md
// documents every route.
//
// # Layout
//
// server.go runs the HTTP server and owns every goroutine; guard.go is the
// security check every request passes; directory.go keeps the group list
// from every registry; groups.go is the thin layer over the client API's
// group operations (with directory.go, the only code that speaks in the
// client's types, so that a change of the client's vocabulary stays
// there); api.go and events.go are the routes; static/ is the page, plain
// ES modules with no build step (README.md says why).
package web
