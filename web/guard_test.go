package web

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestGuard checks every way a request is turned away before any route:
// without the secret (401), from a foreign origin or another site (403),
// under a host name that is not the server's (403, DNS rebinding); and
// that the link's secret becomes a cookie scoped to this port.
func TestGuard(t *testing.T) {
	r := startRegistry(t)
	s := startWeb(t, newClient(t), r.Addr().String())
	base := "http://" + s.Addr().String()
	port := s.guard.port
	cookie := "huddle-" + port + "=" + testSecret
	tests := []struct {
		name     string
		method   string
		path     string
		header   map[string]string
		status   int
		code     string // the API error code, if any
		location string
		page     string // words the refusal page for a browser says
	}{
		{name: "no secret", path: "/api/groups", status: 401, code: "no_secret"},
		{name: "wrong bearer", path: "/api/groups", header: map[string]string{"Authorization": "Bearer " + testSecret + "x"}, status: 401, code: "no_secret"},
		{name: "secret in the query of an API call", path: "/api/groups?k=" + testSecret, status: 401, code: "no_secret"},
		{name: "bearer", path: "/api/groups", header: map[string]string{"Authorization": "Bearer " + testSecret}, status: 200},
		{name: "cookie", path: "/api/groups", header: map[string]string{"Cookie": cookie}, status: 200},
		{name: "another port's cookie", path: "/api/groups", header: map[string]string{"Cookie": "huddle-1=" + testSecret}, status: 401, code: "no_secret"},
		{name: "foreign origin", path: "/api/groups", header: map[string]string{"Cookie": cookie, "Origin": "http://evil.example"}, status: 403, code: "foreign_origin"},
		{name: "another port of this host", path: "/api/groups", header: map[string]string{"Cookie": cookie, "Origin": "http://127.0.0.1:1"}, status: 403, code: "foreign_origin"},
		{name: "foreign origin without the secret", path: "/api/groups", header: map[string]string{"Origin": "http://evil.example"}, status: 403, code: "foreign_origin"},
		{name: "own origin", path: "/api/groups", header: map[string]string{"Cookie": cookie, "Origin": base}, status: 200},
		{name: "cross-site", path: "/api/groups", header: map[string]string{"Cookie": cookie, "Sec-Fetch-Site": "cross-site"}, status: 403, code: "foreign_origin"},
		{name: "same-site", path: "/api/groups", header: map[string]string{"Cookie": cookie, "Sec-Fetch-Site": "same-site"}, status: 403, code: "foreign_origin"},
		{name: "same-origin", path: "/api/groups", header: map[string]string{"Cookie": cookie, "Sec-Fetch-Site": "same-origin"}, status: 200},
		{name: "cross-site send", method: "POST", path: "/api/groups/00000000-0000-0000-0000-000000000000/messages", header: map[string]string{"Cookie": cookie, "Sec-Fetch-Site": "cross-site"}, status: 403, code: "foreign_origin"},
		{name: "rebinding host", path: "/api/groups", header: map[string]string{"Cookie": cookie, "Host": "evil.example:" + port}, status: 403, code: "forbidden_host"},
		{name: "rebinding host, page", path: "/", header: map[string]string{"Host": "attacker&example"}, status: 403, page: "&#34;attacker&amp;example&#34;"},
		{name: "localhost", path: "/api/groups", header: map[string]string{"Cookie": cookie, "Host": "localhost:" + port}, status: 200},
		{name: "page without the secret", path: "/", status: 200},
		{name: "page, cross-site navigation", path: "/", header: map[string]string{"Sec-Fetch-Site": "cross-site"}, status: 200},
		{name: "link with a wrong secret", path: "/?k=nope", status: 401, page: "Open the link huddle web printed when it last started"},
		{name: "link", path: "/?k=" + testSecret, status: 303, location: "/"},
		{name: "post to the page", method: "POST", path: "/", header: map[string]string{"Cookie": cookie}, status: 405},
		{name: "unknown API route", path: "/api/nope", header: map[string]string{"Cookie": cookie}, status: 404, code: "not_found"},
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = "GET"
			}
			req, err := http.NewRequestWithContext(testCtx(t), method, base+tt.path, nil)
			must(t, err)
			for k, v := range tt.header {
				if k == "Host" {
					req.Host = v
				} else {
					req.Header.Set(k, v)
				}
			}
			res, err := noRedirect.Do(req)
			must(t, err)
			defer res.Body.Close()
			if res.StatusCode != tt.status {
				t.Fatalf("HTTP %d, want %d", res.StatusCode, tt.status)
			}
			if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "require-trusted-types-for 'script'") {
				t.Errorf("Content-Security-Policy %q", csp)
			}
			if tt.code != "" {
				var e errorReply
				decodeBody(t, res, &e)
				if e.Error.Code != tt.code || e.Error.Message == "" {
					t.Errorf("error %+v, want code %s with a message", e.Error, tt.code)
				}
			}
			if tt.page != "" {
				// A page in the app's look (its stylesheet), saying what to
				// do; what it quotes of the request escaped.
				body, err := io.ReadAll(res.Body)
				must(t, err)
				if ct := res.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" || !strings.Contains(string(body), `href="/style.css"`) || !strings.Contains(string(body), tt.page) {
					t.Errorf("the refusal page (%s):\n%s\nwant HTML with the app's stylesheet, saying %q", ct, body, tt.page)
				}
			}
			if tt.location != "" {
				if got := res.Header.Get("Location"); got != tt.location {
					t.Errorf("Location %q, want %q", got, tt.location)
				}
				c := res.Cookies()
				if len(c) != 1 || c[0].Name != "huddle-"+port || c[0].Value != testSecret || !c[0].HttpOnly || c[0].SameSite != http.SameSiteStrictMode {
					t.Errorf("cookies %+v, want huddle-%s, HttpOnly, SameSite=Strict", c, port)
				}
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	c := newClient(t)
	ok := Config{Client: c, Registries: []string{"127.0.0.1:7373"}}
	for _, tt := range []struct {
		name string
		edit func(*Config)
		bad  bool
	}{
		{"defaults", func(*Config) {}, false},
		{"loopback v6", func(c *Config) { c.Listen = "[::1]:0" }, false},
		{"localhost", func(c *Config) { c.Listen = "localhost:0" }, false},
		{"all addresses", func(c *Config) { c.Listen = "0.0.0.0:7380" }, true},
		{"all addresses, allowed", func(c *Config) { c.Listen, c.AllowRemote = "0.0.0.0:7380", true }, false},
		{"a LAN address", func(c *Config) { c.Listen = "192.168.1.5:7380" }, true},
		{"a host name", func(c *Config) { c.Listen = "myhost:7380" }, true},
		{"no port", func(c *Config) { c.Listen = "127.0.0.1" }, true},
		{"no client", func(c *Config) { c.Client = nil }, true},
		{"no registry", func(c *Config) { c.Registries = nil }, true},
		{"short secret", func(c *Config) { c.Secret = "short" }, true},
		{"a name", func(c *Config) { c.Name = "alice" }, false},
		{"a name no join takes", func(c *Config) { c.Name = "alice\u202e" }, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			tt.edit(&cfg)
			err := cfg.Validate()
			if tt.bad != (err != nil) || (err != nil && !errors.Is(err, ErrInvalidConfig)) {
				t.Fatalf("Validate: %v, want an error: %v", err, tt.bad)
			}
		})
	}
}

func decodeBody(t *testing.T, res *http.Response, v any) {
	t.Helper()
	if err := jsonDecode(res.Body, v); err != nil {
		t.Fatalf("decode reply: %v", err)
	}
}
