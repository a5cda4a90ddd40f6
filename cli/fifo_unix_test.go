//go:build unix

package cli

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/identity"
)

// TestNamedPipeInHome puts a named pipe where huddle reads each of its
// files in HUDDLE_HOME (the groups joined, the registries' pins, the
// listing cache, the key): os.Open waited there for a writer, for ever,
// and the command with it (huddle groups hung until SIGKILL: ^C and
// SIGTERM end a command only once its main goroutine returns). Each is
// now refused at once as not a regular file, and the command says so.
func TestNamedPipeInHome(t *testing.T) {
	t.Parallel()
	registry := startUp(t, "lobby")
	for _, file := range []string{joinedFile, identity.KnownHostsFile, listCacheFile, identity.KeyFile} {
		t.Run(file, func(t *testing.T) {
			u := newTestUser(t, registry)
			if file != identity.KeyFile {
				u.ok(t, "groups") // the key made, the registry pinned, the listing cached
			}
			path := filepath.Join(u.home, file)
			if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			if err := os.MkdirAll(u.home, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Mkfifo(path, 0o600); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			var code int
			var stderr string
			go func() {
				defer close(done)
				code, _, stderr = u.run(t, "groups")
			}()
			select {
			case <-done:
			case <-time.After(waitTimeout):
				// Let the open that waits go: a writer comes and goes.
				if w, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
					w.Close()
				}
				<-done
				t.Fatalf("huddle groups with a named pipe as %s did not end", file)
			}
			if !strings.Contains(stderr, "not a regular file") {
				t.Errorf("huddle groups with a named pipe as %s: exit %d, stderr does not say it is not a regular file:\n%s", file, code, stderr)
			}
		})
	}
}
