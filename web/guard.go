package web

import (
	"crypto/subtle"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// guard is the check every request passes before any route (see the
// package comment, "Security").
type guard struct {
	secret string
	hosts  []string // extra host names allowed in Host
	port   string   // the listening port: names the cookie
	log    *slog.Logger
}

// secretParam is the query parameter of the URL the Server prints.
const secretParam = "k"

// cookieName is the secret's cookie. Cookies are not kept apart by port,
// so each port gets its own name: two servers on one host (two users, or
// one user twice) do not overwrite each other's.
func (g guard) cookieName() string { return "huddle-" + g.port }

// contentSecurityPolicy lets the page load scripts, styles and data only
// from the server itself, and be framed by nobody. It also requires
// Trusted Types with no policy allowed: a browser that knows them
// (Chromium) throws on any string given to an HTML or script sink
// (innerHTML, insertAdjacentHTML, document.write, eval), so the page can
// only build what it shows from text nodes, as it does: every name,
// message and error in it is a peer's word, and a rogue registry's or
// member's markup must show as the characters it is (TestWebHostileMarkup).
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; " +
	"require-trusted-types-for 'script'; trusted-types 'none'"

func (g guard) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")

		if !g.hostOK(r.Host) {
			g.refuse(w, r, http.StatusForbidden, "forbidden_host", "the Host header names "+quote(r.Host)+
				", not this server's address (a DNS name pointing at it is refused, against DNS rebinding)")
			return
		}
		if why := g.foreign(r); why != "" {
			g.refuse(w, r, http.StatusForbidden, "foreign_origin", why)
			return
		}
		if !isAPI(r) {
			// The page's files are the same in every huddle binary and hold
			// nothing of the user's: they need no secret. The link the
			// server printed trades its secret for the cookie the API
			// needs, and is taken out of the address bar.
			if k := r.URL.Query().Get(secretParam); k != "" {
				if !g.match(k) {
					g.refuse(w, r, http.StatusUnauthorized, "no_secret", "this link's secret is not this server's: "+
						"huddle web prints a new link each time it starts")
					return
				}
				trustConn(r)
				http.SetCookie(w, &http.Cookie{Name: g.cookieName(), Value: g.secret, Path: "/",
					HttpOnly: true, SameSite: http.SameSiteStrictMode})
				q := r.URL.Query()
				q.Del(secretParam)
				u := *r.URL
				u.RawQuery = q.Encode()
				http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
				return
			}
			if g.authorized(r) {
				trustConn(r) // the page's own connection: kept in a flood of others
			}
			next.ServeHTTP(w, r)
			return
		}
		if !g.authorized(r) {
			g.refuse(w, r, http.StatusUnauthorized, "no_secret", "this server needs the secret of the link huddle web printed "+
				"(open that link once; scripts send Authorization: Bearer SECRET)")
			return
		}
		trustConn(r)
		next.ServeHTTP(w, r)
	})
}

// hostOK accepts a Host that is an IP address, localhost, or a configured
// name, with any port.
func (g guard) hostOK(host string) bool {
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	}
	name = strings.TrimSuffix(strings.Trim(name, "[]"), ".")
	if name == "" {
		return false
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return true
	}
	name = strings.ToLower(name)
	return name == "localhost" || slices.ContainsFunc(g.hosts, func(h string) bool { return strings.EqualFold(h, name) })
}

// foreign says why r comes from another site, or "" if it does not. A
// browser sends Origin with every request a script makes across origins
// and with every POST, and Sec-Fetch-Site with every request; programs
// that send neither are judged by the secret alone. Another port of
// localhost is "same-site" (and cookies do not tell ports apart), so only
// same-origin requests may use the API. A page may be navigated to from
// anywhere (a link, the file --open writes): its files are public.
func (g guard) foreign(r *http.Request) string {
	if o := r.Header.Get("Origin"); o != "" && o != "http://"+r.Host {
		return "requests from " + quote(o) + " are refused: only this server's own page may use it"
	}
	if !isAPI(r) && r.Method == http.MethodGet {
		return ""
	}
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "", "same-origin", "none":
		return ""
	default:
		return "a " + site + " request is refused: only this server's own page may use it"
	}
}

// authorized reports whether r carries the secret, in the cookie or as a
// bearer token.
func (g guard) authorized(r *http.Request) bool {
	if c, err := r.Cookie(g.cookieName()); err == nil && g.match(c.Value) {
		return true
	}
	auth := r.Header.Get("Authorization")
	if token, ok := strings.CutPrefix(auth, "Bearer "); ok && g.match(strings.TrimSpace(token)) {
		return true
	}
	return false
}

func (g guard) match(s string) bool {
	return subtle.ConstantTimeCompare([]byte(s), []byte(g.secret)) == 1
}

// refuse answers a request the guard turned away: JSON for the API, a
// short page for a browser, in the app's look (its stylesheet needs no
// secret), saying what happened and what to do. It was plain text until
// session 22: a newcomer opening an old link met a bare line.
func (g guard) refuse(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	g.log.Debug("web request refused", "code", code, "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
	if isAPI(r) {
		writeError(w, apiError{Status: status, Code: code, Message: msg})
		return
	}
	p := refusal{Title: "Refused", Why: msg, Code: code}
	switch code {
	case "no_secret":
		p.Title = "This link is not this huddle web's"
		p.Why = "Its secret is not the one huddle web made when it started: it makes a new one each time, " +
			"so a link from an earlier run, or one mistyped, does not open the page."
		p.Do = "Open the link huddle web printed when it last started, in the terminal where it runs " +
			"(the line \"huddle web: http://…/?k=…\"). Lost it? Stop huddle web (Ctrl-C) and start it again: " +
			"it prints a new link (with --open, it opens it in your browser)."
	case "forbidden_host":
		p.Title = "This address is not huddle web's"
		p.Do = "Open the link huddle web printed (its address is an IP address or localhost), " +
			"or start huddle web with --host NAME to allow this name."
	case "foreign_origin":
		p.Do = "Use huddle web from its own page: open the link huddle web printed."
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := refusalPage.Execute(w, p); err != nil {
		g.log.Debug("web refusal page not written", "err", err)
	}
}

// refusal is what refusalPage shows: Title and Why say what happened, Do
// what to do; Code is the API's word for it.
type refusal struct {
	Title, Why, Do, Code string
}

// refusalPage is the page of a browser's request the guard refused, built
// as the app's page is (its stylesheet, its header), with nothing of the
// user's: html/template escapes the request's words it quotes (a Host).
var refusalPage = template.Must(template.New("refusal").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>huddle: {{.Title}}</title>
<link rel="icon" href="/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/style.css">
</head>
<body>
<header class="top"><span class="brand">huddle</span></header>
<main class="refused" data-code="{{.Code}}">
<h1>{{.Title}}</h1>
<p class="why">{{.Why}}</p>
{{if .Do}}<p class="do">{{.Do}}</p>{{end}}
</main>
</body>
</html>
`))

func isAPI(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/api/") }

// quote quotes s for an error message, bounded so a huge header cannot
// make a huge reply.
func quote(s string) string {
	if len(s) > 100 {
		s = s[:100] + "..."
	}
	return strconv.Quote(s)
}
