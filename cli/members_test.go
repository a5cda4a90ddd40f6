package cli

import (
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
)

func TestMemberSeen(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return now.Add(-d) }
	for _, c := range []struct {
		m    client.Member
		want string
	}{
		{client.Member{Online: true, LastSeen: at(time.Hour)}, "online"},
		{client.Member{}, "-"},
		{client.Member{LastSeen: at(40 * time.Second)}, "40s ago"},
		{client.Member{LastSeen: at(-time.Second)}, "0s ago"}, // the daemon's clock is ahead
		{client.Member{LastSeen: at(5*time.Minute + 59*time.Second)}, "5m ago"},
		{client.Member{LastSeen: at(47 * time.Hour)}, "47h ago"},
		{client.Member{LastSeen: at(50 * time.Hour)}, "2d ago"},
	} {
		if got := seen(c.m, now); got != c.want {
			t.Errorf("seen(%+v) = %q, want %q", c.m, got, c.want)
		}
	}
}
