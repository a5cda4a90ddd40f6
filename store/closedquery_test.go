package store

import (
	"errors"
	"testing"
)

// TestClosedLogQueriesRefused: a closed log's queries (a memory log's and a
// disk log's) return ErrClosed, with no message and dst as it was, and a
// watcher waiting on Changed when the log closes is woken to learn it.
// Until session 19 they returned an empty page with no error, which a
// reader cannot tell from being caught up: a fetch ended its reply as if it
// had everything, a watch waited on for appends that never came.
func TestClosedLogQueriesRefused(t *testing.T) {
	type closingLog interface {
		appender
		querier
		Since(int64, int, []Message) ([]Message, Cursor, error)
		Changed() <-chan struct{}
		Close() error
	}
	for _, tc := range []struct {
		name string
		open func(t *testing.T) closingLog
	}{
		{"memory", func(t *testing.T) closingLog {
			l, err := New(Config{})
			if err != nil {
				t.Fatal(err)
			}
			return l
		}},
		{"disk", func(t *testing.T) closingLog {
			d, _ := diskLog(t, DiskConfig{Dir: t.TempDir()})
			return d
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := tc.open(t)
			newWriter(1).fill(t, l, 50, 100)
			changed := l.Changed() // a watcher caught up, waiting
			if msgs, _, err := l.After(50, 10, nil); err != nil || len(msgs) != 0 {
				t.Fatalf("After(last) of the open log: %d messages, %v; want none, no error", len(msgs), err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-changed:
			default:
				t.Error("Close did not wake the watcher waiting on Changed")
			}
			prefix := []Message{{Seq: 12345}}
			for _, q := range []struct {
				what string
				run  func() ([]Message, Cursor, error)
			}{
				{"After(0)", func() ([]Message, Cursor, error) { return l.After(0, 100, prefix) }},
				{"After(last)", func() ([]Message, Cursor, error) { return l.After(50, 100, prefix) }},
				{"Since(0)", func() ([]Message, Cursor, error) { return l.Since(0, 100, prefix) }},
			} {
				got, cur, err := q.run()
				if !errors.Is(err, ErrClosed) {
					t.Errorf("%s of the closed log: %d messages, cursor %+v, error %v; want ErrClosed", q.what, len(got)-1, cur, err)
				}
				if len(got) != 1 || got[0].Seq != 12345 {
					t.Errorf("%s of the closed log appended %d messages to dst, want none", q.what, len(got)-1)
				}
			}
		})
	}
}
