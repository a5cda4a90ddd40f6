package client

import (
	"errors"
	"fmt"
	"testing"

	"github.com/huddle-chat/huddle/wire"
)

// fakeRegistry is a handle that only knows its fingerprint, for Merge.
func fakeRegistry(addr string, fp byte) *Registry {
	return &Registry{addr: addr, p: &peer{pin: wire.Fingerprint{fp}}}
}

func TestMerge(t *testing.T) {
	r1, r2, r3 := fakeRegistry("r1", 1), fakeRegistry("r2", 2), fakeRegistry("r3", 3)
	uuid := func(b byte) wire.UUID { return wire.UUID{b} }
	daemonA, daemonB := wire.Fingerprint{0xa}, wire.Fingerprint{0xb}
	answers := []RegistryListing{
		{Registry: r1, Listing: Listing{Groups: []wire.GroupEntry{
			{Group: uuid(1), Name: "lobby", Addrs: []string{"10.0.0.1:7374"}, Fingerprint: daemonA, Members: 1, LastSeq: 5, ExpiresMS: 3000},
			{Group: uuid(2), Name: "dev", Addrs: []string{"10.0.0.2:7374"}, Fingerprint: daemonA, ExpiresMS: 9000},
		}}},
		{Registry: r2, Err: fmt.Errorf("list: %w", ErrUnreachable)},
		{Registry: r3, Listing: Listing{Groups: []wire.GroupEntry{
			// Renewed later here: its counters win, and its address comes first.
			{Group: uuid(1), Name: "lobby", Addrs: []string{"10.1.0.1:7374", "10.0.0.1:7374"}, Fingerprint: daemonA, Members: 2, LastSeq: 7, ExpiresMS: 14000},
			// The same UUID under another daemon key: a separate entry.
			{Group: uuid(1), Name: "lobby", Addrs: []string{"10.9.9.9:7374"}, Fingerprint: daemonB, ExpiresMS: 15000},
			{Group: uuid(3), Name: "alpha", Addrs: []string{"10.0.0.3:7374"}, Fingerprint: daemonB, ExpiresMS: 1000},
		}}},
	}
	got := Merge(answers)
	want := []ListedGroup{
		{GroupEntry: wire.GroupEntry{Group: uuid(3), Name: "alpha", Addrs: []string{"10.0.0.3:7374"}, Fingerprint: daemonB, ExpiresMS: 1000}, ListedBy: []wire.Fingerprint{r3.Fingerprint()}},
		{GroupEntry: wire.GroupEntry{Group: uuid(2), Name: "dev", Addrs: []string{"10.0.0.2:7374"}, Fingerprint: daemonA, ExpiresMS: 9000}, ListedBy: []wire.Fingerprint{r1.Fingerprint()}},
		{GroupEntry: wire.GroupEntry{Group: uuid(1), Name: "lobby", Addrs: []string{"10.1.0.1:7374", "10.0.0.1:7374"}, Fingerprint: daemonA, Members: 2, LastSeq: 7, ExpiresMS: 14000}, ListedBy: []wire.Fingerprint{r1.Fingerprint(), r3.Fingerprint()}},
		{GroupEntry: wire.GroupEntry{Group: uuid(1), Name: "lobby", Addrs: []string{"10.9.9.9:7374"}, Fingerprint: daemonB, ExpiresMS: 15000}, ListedBy: []wire.Fingerprint{r3.Fingerprint()}},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Merge =\n%+v\nwant\n%+v", got, want)
	}

	if _, err := Listed(answers); err != nil {
		t.Errorf("Listed with two answers: %v", err)
	}
	_, err := Listed([]RegistryListing{{Registry: r2, Err: fmt.Errorf("list: %w", ErrUnreachable)}})
	if !errors.Is(err, ErrNoListing) || !errors.Is(err, ErrUnreachable) {
		t.Errorf("Listed with no answer: %v, want ErrNoListing and the registry's ErrUnreachable", err)
	}
}
