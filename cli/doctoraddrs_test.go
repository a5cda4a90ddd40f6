package cli

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
)

// TestDoctorUnlistedAddrsBounded: when a lone daemon answers at none of
// its listed addresses, doctor asks its port at the host of the
// registries that list its group, and nowhere else: a rogue registry
// listing a group at 16 ports had doctor ask each of them at every other
// registry's host too (a port scan of hosts it does not run).
func TestDoctorUnlistedAddrsBounded(t *testing.T) {
	var rogue, honest wire.Fingerprint
	rogue[0], honest[0] = 1, 2
	l := &listing{reports: []registryReport{
		{addr: "127.0.0.5:7373", fp: rogue},
		{addr: "127.0.0.6:7373", fp: honest},
	}}
	var listed []string
	for i := range wire.MaxAddrs {
		listed = append(listed, fmt.Sprintf("10.9.0.%d:%d", i+1, 9000+i))
	}
	g := client.ListedGroup{ListedBy: []wire.Fingerprint{rogue}}
	got := unlistedAddrs(l, g, listed)
	for _, a := range got {
		if a != "127.0.0.5:9000" && a != "127.0.0.5:9001" {
			t.Errorf("asks %s: want only the listing registry's host, at the first %d ports", a, maxUnlistedPorts)
		}
	}
	if !slices.Contains(got, "127.0.0.5:9000") {
		t.Errorf("asks %v: want the daemon's first port at its registry's host, 127.0.0.5:9000", got)
	}
}

// TestDoctorChecksGroupsAtOnce: huddle doctor checks several groups'
// daemons at once. The daemon here answers no info until four groups'
// are asked together (each group is asked twice: as the commands reach
// it, and at its address alone); checked one after another, each group
// waited out the timeout and was said not to answer.
func TestDoctorChecksGroupsAtOnce(t *testing.T) {
	const groups = 4
	all, stop := make(chan struct{}), make(chan struct{})
	var arrived atomic.Int64
	var once sync.Once
	addr, fp := infoDaemon(t, func(ctx context.Context) error {
		if arrived.Add(1) == 2*groups {
			once.Do(func() { close(all) })
		}
		select {
		case <-all:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-stop:
			return &wire.Error{Code: wire.CodeUnavailable}
		}
	})
	defer close(stop)
	l := &listing{}
	for i := range groups {
		l.groups = append(l.groups, client.ListedGroup{GroupEntry: wire.GroupEntry{Group: wire.UUID{byte(i + 1)}, Name: fmt.Sprintf("g%d", i),
			Addrs: []string{addr}, Fingerprint: fp, ExpiresMS: 20000}})
	}
	var out bytes.Buffer
	d := doctorFor(t, &out, 3*time.Second)
	if code := d.daemons(context.Background(), l); code != ExitOK {
		t.Errorf("doctor: exit %d:\n%s\nwant every group's daemon asked at once, and answering", code, out.String())
	}
}
