package registry

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/huddle-chat/huddle/daemon/internal/peertest"
	"github.com/huddle-chat/huddle/internal/netlab"
	"github.com/huddle-chat/huddle/internal/testlog"
)

// holdAdvertising is a log that holds the mDNS advertiser in its record of
// advertising on an interface (its responder there answers already) until
// release, as a machine too loaded to run it would hold it.
type holdAdvertising struct {
	next             slog.Handler
	once             *sync.Once
	reached, release chan struct{}
}

func (h *holdAdvertising) Enabled(context.Context, slog.Level) bool { return true }
func (h *holdAdvertising) WithAttrs(as []slog.Attr) slog.Handler {
	return &holdAdvertising{next: h.next.WithAttrs(as), once: h.once, reached: h.reached, release: h.release}
}
func (h *holdAdvertising) WithGroup(g string) slog.Handler {
	return &holdAdvertising{next: h.next.WithGroup(g), once: h.once, reached: h.reached, release: h.release}
}

func (h *holdAdvertising) Handle(ctx context.Context, rec slog.Record) error {
	if rec.Message == "discovery: advertising registry" {
		h.once.Do(func() {
			close(h.reached)
			<-h.release
		})
	}
	return h.next.Handle(ctx, rec)
}

// TestCloseKeepsTheDirectoryWhileAdvertising: a registry whose mDNS
// advertiser does not stop within the bound once told to (held here in
// its log as it starts advertising) stops without it, naming it, and
// keeps its state directory until the advertiser has stopped: a registry
// started on the directory meanwhile (in this process: a restart) is
// refused, state directory in use, rather than run beside an advertiser
// still answering for the old one's name and port, as it did until
// session 21, the directory released at once. In a network namespace of
// its own (multicast).
func TestCloseKeepsTheDirectoryWhileAdvertising(t *testing.T) {
	netlab.RunInLoopbackNS(t, func(t *testing.T) {
		var logged testlog.Buffer
		held := &holdAdvertising{next: slog.NewTextHandler(io.MultiWriter(testlog.Output(t), &logged), nil),
			once: new(sync.Once), reached: make(chan struct{}), release: make(chan struct{})}
		var releaseOnce sync.Once
		letGo := func() { releaseOnce.Do(func() { close(held.release) }) }
		t.Cleanup(letGo) // if the test failed before
		cfg := Config{StateDir: t.TempDir(), Listen: "127.0.0.1:0", MDNS: true, Logger: slog.New(held)}
		r, err := New(cfg)
		peertest.Must(t, err)
		peertest.Must(t, r.Listen())
		served := make(chan error, 1)
		go func() { served <- r.Serve(context.Background()) }()
		<-held.reached // advertising on lo

		peertest.Must(t, peertest.OnHungDisk(t, "the registry's Close, its advertiser held,", r.Close, letGo))
		peertest.Must(t, <-served)
		if !strings.Contains(logged.String(), `running="[mDNS advertiser]"`) {
			t.Errorf("the registry went on without its advertiser and logged:\n%s\nwant it named", logged.String())
		}
		cfg.Logger = peertest.Logger(t)
		second, err := New(cfg)
		peertest.Must(t, err)
		if err := second.Listen(); !errors.Is(err, ErrStateDirInUse) {
			t.Errorf("a registry on the directory of one whose advertiser still runs: %v, want ErrStateDirInUse", err)
		}
		peertest.Must(t, second.Close())

		letGo()
		peertest.Eventually(t, "a registry started on the directory once the advertiser stopped", func() bool {
			again, err := New(cfg)
			peertest.Must(t, err)
			err = again.Listen()
			peertest.Must(t, again.Close())
			if err != nil && !errors.Is(err, ErrStateDirInUse) {
				t.Fatalf("a registry on the directory once the advertiser stopped: %v", err)
			}
			return err == nil
		})
	})
}
