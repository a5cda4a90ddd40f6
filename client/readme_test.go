package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/identity"
)

// readmeGoAPI is README.md's "Go API" example, between the markers: it
// compiles with the package, and TestREADMEGoAPI checks that README.md
// shows it as it is here, so the README's example cannot drift from the
// API. (The package's examples, which run, show each call at length.)
func readmeGoAPI(ctx context.Context) {
	// README begins
	id, _ := identity.LoadOrCreate("/var/lib/buildbot")                           // its key (key.pem, made on first use): its member ID
	kh := identity.OpenKnownHosts("/var/lib/buildbot/" + identity.KnownHostsFile) // registries pinned on first use, as huddle's
	c, _ := client.New(client.Config{Identity: id, KnownHosts: kh})
	defer c.Close()
	reg, _ := c.Registry(ctx, "192.168.1.20:7373", client.Fingerprint{}) // pinned on first use
	list, _ := reg.List(ctx)
	g, _ := reg.Group(list.Groups[0])
	g.Join(ctx, "bot", nil)
	ack, err := g.Send(ctx, []byte("build 1234 passed")) // concurrent Sends share one operation
	if errors.Is(err, client.ErrInDoubt) {
		ack, err = g.SendWithID(ctx, ack.ID, []byte("build 1234 passed"))
	} // may be stored: ack.ID is set even on error, and its retry is stored once
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ack.Seq, ack.Epoch) // every ack carries the log's epoch
	cur, err := g.Fetch(ctx, client.Query{Since: time.Now().Add(-time.Hour)}, func(m client.Message) bool {
		fmt.Printf("%d %s: %s\n", m.Seq, m.Name, m.Body)
		return true
	})
	if err != nil {
		log.Fatal(err)
	} // cur is where the messages delivered end, even then
	for ev, err := range g.Watch(ctx, client.Query{After: cur.Next, Epoch: cur.Epoch}) { // reconnects and resumes by itself
		if err != nil {
			break
		} // an end for good: not a member, not found... (ctx ending ends the loop with no error)
		if ev.Kind == client.EventMessage {
			fmt.Println(ev.Message.Seq, ev.Message.Name, string(ev.Message.Body))
		}
	}
	// README ends
}

var _ = readmeGoAPI

// TestREADMEGoAPI checks that README.md's Go API example is readmeGoAPI's
// body, laid out apart (spaces, line breaks and semicolons aside).
func TestREADMEGoAPI(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "### Go API\n\n```go\n")
	block, _, ok2 := strings.Cut(block, "```")
	if !ok || !ok2 {
		t.Fatal(`README.md has no "### Go API" section opening with a go block`)
	}
	if body, same := sameCode(t, block, "readme_test.go", "README"); !same {
		t.Errorf("README.md's Go API example is not readmeGoAPI's body (client/readme_test.go): make them one\nREADME.md:\n%s\nreadme_test.go:\n%s", block, body)
	}
}

// sameCode reports whether shown, a snippet a document shows, is the code
// test file file holds between its lines "// NAME begins" and "// NAME
// ends", blanks, line breaks and semicolons aside (gofmt's layout against
// the document's), and returns that code.
func sameCode(t *testing.T, shown, file, name string) (string, bool) {
	t.Helper()
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	_, body, _ := strings.Cut(string(src), "// "+name+" begins\n")
	body, _, _ = strings.Cut(body, "// "+name+" ends")
	squeeze := strings.NewReplacer(" ", "", "\t", "", "\n", "", ";", "")
	return body, squeeze.Replace(shown) == squeeze.Replace(body)
}
