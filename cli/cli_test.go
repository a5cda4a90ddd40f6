package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/pflag"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
)

func TestParseTime(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want time.Time
		bad  bool
	}{
		{in: "2026-11-24T09:15:00Z", want: time.Date(2026, 11, 24, 9, 15, 0, 0, time.UTC)},
		{in: "2026-11-24T09:15:00.5+01:00", want: time.Date(2026, 11, 24, 8, 15, 0, 5e8, time.UTC)},
		{in: "10m", want: now.Add(-10 * time.Minute)},
		{in: "1795000000", want: time.Unix(1795000000, 0)},
		{in: "1795000000.25", want: time.Unix(1795000000, 25e7)},
		{in: "-5m", bad: true},
		{in: "yesterday", bad: true},
		{in: "12abc", bad: true},
		{in: "", bad: true},
	} {
		got, err := parseTime(c.in, now)
		if c.bad {
			if err == nil {
				t.Errorf("parseTime(%q) = %v, want an error", c.in, got)
			}
			continue
		}
		if err != nil || !got.Equal(c.want) {
			t.Errorf("parseTime(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{in: "1048576", want: 1 << 20},
		{in: "64KiB", want: 64 << 10},
		{in: "256MiB", want: 256 << 20},
		{in: "1GiB", want: 1 << 30},
		{in: "2 MB", want: 2e6},
		{in: "16k", want: 16 << 10},
		{in: "12B", want: 12},
		{in: "-1", bad: true},
		{in: "lots", bad: true},
		{in: "99999999999GiB", bad: true},
	} {
		got, err := parseSize(c.in)
		if (err != nil) != c.bad || got != c.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d (error %v)", c.in, got, err, c.want, c.bad)
		}
	}
}

func TestResolveGroup(t *testing.T) {
	a := wire.GroupEntry{Group: uuid.MustParse("0193a4f2-7c2e-7d3a-9b1e-5f2d8c6a4e10"), Name: "lobby"}
	b := wire.GroupEntry{Group: uuid.MustParse("0193a4f2-aaaa-7d3a-9b1e-5f2d8c6a4e11"), Name: "lobby"}
	c := wire.GroupEntry{Group: uuid.MustParse("77777777-7c2e-7d3a-9b1e-5f2d8c6a4e12"), Name: "builds"}
	groups := []wire.GroupEntry{a, b, c}
	for _, tc := range []struct {
		ref       string
		want      uuid.UUID
		ambiguous bool
		missing   bool
	}{
		{ref: "builds", want: c.Group},
		{ref: "7777", want: c.Group},
		{ref: a.Group.String(), want: a.Group},
		{ref: strings.ToUpper(b.Group.String()), want: b.Group},
		{ref: "lobby", ambiguous: true},
		{ref: "0193a4f2", ambiguous: true},
		{ref: "019", missing: true}, // prefixes need 4 characters
		{ref: "nope", missing: true},
	} {
		got, err := resolveGroup(groups, tc.ref)
		var ue *usageError
		switch {
		case tc.ambiguous:
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), a.Group.String()) {
				t.Errorf("resolveGroup(%q): err = %v, want an ambiguity listing the candidates", tc.ref, err)
			}
		case tc.missing:
			if !errors.Is(err, errNoGroup) {
				t.Errorf("resolveGroup(%q): err = %v, want errNoGroup", tc.ref, err)
			}
		case err != nil || got.Group != tc.want:
			t.Errorf("resolveGroup(%q) = %s, %v; want %s", tc.ref, got.Group, err, tc.want)
		}
	}
}

func TestExplainExitCodes(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{fmt.Errorf("send: %w", wire.Errorf(wire.CodeNotMember, "not a member")), ExitRefused},
		{fmt.Errorf("x: %w", client.ErrUnreachable), ExitUnreachable},
		{context.DeadlineExceeded, ExitUnreachable},
		{&usageError{"ambiguous"}, ExitUsage},
		{fmt.Errorf("%w \"x\"", errNoGroup), ExitRefused},
		{errors.New("disk full"), ExitRefused},
	} {
		if _, got := explain(c.err); got != c.want {
			t.Errorf("explain(%v) exit code = %d, want %d", c.err, got, c.want)
		}
	}
	msg, _ := explain(wire.Errorf(wire.CodeNotMember, "fetch group lobby: not a member"))
	if !strings.Contains(msg, "huddle join") {
		t.Errorf("not-member message %q gives no advice", msg)
	}
}

func TestFromEnv(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	listen := fs.String("listen", ":7373", "")
	groups := fs.StringArray("group", nil, "")
	noMDNS := fs.Bool("no-mdns", false, "")
	if err := fs.Parse([]string{"--listen", "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"HUDDLE_LISTEN": "ignored:2", "HUDDLE_GROUP": "lobby, dev", "HUDDLE_NO_MDNS": "true"}
	if err := fromEnv(Env{Getenv: func(k string) string { return env[k] }}, fs); err != nil {
		t.Fatal(err)
	}
	if *listen != "127.0.0.1:1" {
		t.Errorf("--listen = %q: the command line must win over the environment", *listen)
	}
	if fmt.Sprint(*groups) != "[lobby dev]" || !*noMDNS {
		t.Errorf("groups %v, no-mdns %v from the environment", *groups, *noMDNS)
	}
	env = map[string]string{"HUDDLE_NO_MDNS": "perhaps"}
	fs2 := pflag.NewFlagSet("y", pflag.ContinueOnError)
	fs2.Bool("no-mdns", false, "")
	if err := fromEnv(Env{Getenv: func(k string) string { return env[k] }}, fs2); err == nil {
		t.Error("a bad boolean in the environment was accepted")
	}
}

func TestUsage(t *testing.T) {
	var out, errb bytes.Buffer
	env := Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }}
	if code := Main(context.Background(), nil, env); code != ExitUsage || !strings.Contains(errb.String(), "watch") {
		t.Errorf("no arguments: code %d, usage %q on stderr", code, errb.String())
	}
	if code := Main(context.Background(), []string{"frobnicate"}, env); code != ExitUsage {
		t.Errorf("unknown verb: code %d", code)
	}
	for name := range verbs {
		out.Reset()
		if code := Main(context.Background(), []string{name, "--help"}, env); code != ExitOK || !strings.Contains(out.String(), "Example:") {
			t.Errorf("huddle %s --help: code %d, no example in %q", name, code, out.String())
		}
	}
}

func TestHeld(t *testing.T) {
	for _, c := range []struct {
		in   wire.Info
		want string
	}{
		{wire.Info{Epoch: 7}, "none yet (epoch 7)"},
		{wire.Info{First: 1, Last: 3, Epoch: 7}, "#1..#3 (epoch 7)"},
		{wire.Info{First: 6, Last: 5, Epoch: 7}, "none (retention dropped #1..#5; epoch 7)"},
	} {
		if got := held(c.in); got != c.want {
			t.Errorf("held(%+v) = %q, want %q", c.in, got, c.want)
		}
	}
}
