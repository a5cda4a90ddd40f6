package registry

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/huddle-chat/huddle/daemon/internal/peertest"
	"github.com/huddle-chat/huddle/internal/netlab"
	"github.com/huddle-chat/huddle/internal/testlog"
)

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
		// The advertiser held in its record of advertising on lo (its
		// responder there answers already), as a machine too loaded to
		// run it would hold it.
		advertising, release := make(chan struct{}), make(chan struct{})
		var releaseOnce sync.Once
		letGo := func() { releaseOnce.Do(func() { close(release) }) }
		t.Cleanup(letGo) // if the test failed before
		held := peertest.NewHook(slog.NewTextHandler(io.MultiWriter(testlog.Output(t), &logged), nil),
			peertest.Message("discovery: advertising registry"), func() { close(advertising); <-release })
		cfg := Config{StateDir: t.TempDir(), Listen: "127.0.0.1:0", MDNS: true, Logger: slog.New(held)}
		r, err := New(cfg)
		peertest.Must(t, err)
		peertest.Must(t, r.Listen())
		served := make(chan error, 1)
		go func() { served <- r.Serve(context.Background()) }()
		<-advertising

		peertest.Must(t, peertest.OnHungDisk(t, "the registry's Close, its advertiser held,", r.Close, letGo))
		peertest.Must(t, <-served)
		if !strings.Contains(logged.String(), `running="[mDNS advertiser]"`) {
			t.Errorf("the registry went on without its advertiser and logged:\n%s\nwant it named", logged.String())
		}
		cfg.Logger = peertest.Logger(t)
		stillLocked(t, cfg, "of one whose advertiser still runs")
		letGo()
		startsOnceFree(t, cfg, "the advertiser stopped")
	})
}
