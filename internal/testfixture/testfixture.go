// Package testfixture gives tests the data directories that older huddles
// wrote (the module's testdata/compat, whose README says which commit and
// command wrote each) and what those huddles served from them then, so that
// a test can check that today's code opens each directory and serves the
// same. A fixture is always unpacked into the test's temporary directory:
// the tests never open one in place.
package testfixture

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/huddle-chat/huddle/wire"
)

// Root is the module's testdata/compat directory.
func Root(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("testfixture: cannot locate its own source file")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "compat")
}

// Fixtures returns the names of the fixtures of a kind ("daemon", "cell"):
// the directories kind-<commit> of testdata/compat. It fails the test if
// there are none.
func Fixtures(t testing.TB, kind string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(Root(t), kind+"-*"))
	if err != nil || len(names) == 0 {
		t.Fatalf("testfixture: no %s fixtures in %s (%v)", kind, Root(t), err)
	}
	for i, n := range names {
		names[i] = filepath.Base(n)
	}
	return names
}

// Unpack unpacks fixture's archive (a gzipped tar: the directories, keys
// and their modes as the old huddle left them) into a new temporary
// directory of t and returns it.
func Unpack(t testing.TB, fixture, archive string) string {
	t.Helper()
	f, err := os.Open(filepath.Join(Root(t), fixture, archive))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("testfixture: %s/%s: %v", fixture, archive, err)
	}
	dir := t.TempDir()
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return dir
		}
		if err != nil {
			t.Fatalf("testfixture: %s/%s: %v", fixture, archive, err)
		}
		if !filepath.IsLocal(h.Name) {
			t.Fatalf("testfixture: %s/%s holds %q, outside its directory", fixture, archive, h.Name)
		}
		path := filepath.Join(dir, h.Name)
		mode := os.FileMode(h.Mode).Perm()
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(path, mode)
		case tar.TypeReg:
			err = writeFile(path, tr, mode)
		default:
			t.Fatalf("testfixture: %s/%s: %q is neither a file nor a directory", fixture, archive, h.Name)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func writeFile(path string, r io.Reader, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Message is one message as the old daemon served it (fetch --json).
type Message struct {
	Seq  uint64           `json:"seq"`
	Time time.Time        `json:"ts"`
	ID   uuid.UUID        `json:"msg_id"`
	From wire.Fingerprint `json:"from"`
	Name string           `json:"name"`
	Text string           `json:"text"`
}

// Member is one member as the old daemon listed it (members --json).
type Member struct {
	Fingerprint wire.Fingerprint `json:"fingerprint"`
	Name        string           `json:"name"`
	Joined      time.Time        `json:"joined"`
}

// Info is a group as the old daemon described it (info --json).
type Info struct {
	UUID        uuid.UUID        `json:"uuid"`
	Name        string           `json:"name"`
	Epoch       uint64           `json:"epoch"`
	FirstSeq    uint64           `json:"first_seq"`
	LastSeq     uint64           `json:"last_seq"`
	Members     uint64           `json:"members"`
	Private     bool             `json:"private"`
	Fingerprint wire.Fingerprint `json:"fingerprint"`
}

// Group is a group as the old registry listed it (groups --json).
type Group struct {
	UUID        uuid.UUID          `json:"uuid"`
	Name        string             `json:"name"`
	Fingerprint wire.Fingerprint   `json:"fingerprint"`
	ListedBy    []wire.Fingerprint `json:"listed_by"`
}

// Groups returns the groups the old registry listed.
func Groups(t testing.TB, fixture string) []Group {
	t.Helper()
	return lines[Group](t, fixture, "groups.jsonl")
}

// Messages returns what the old daemon served of group, oldest first.
func Messages(t testing.TB, fixture, group string) []Message {
	t.Helper()
	return lines[Message](t, fixture, group+".jsonl")
}

// Members returns the members the old daemon listed in group.
func Members(t testing.TB, fixture, group string) []Member {
	t.Helper()
	return lines[Member](t, fixture, "members-"+group+".jsonl")
}

// GroupInfo returns what the old daemon said of group.
func GroupInfo(t testing.TB, fixture, group string) Info {
	t.Helper()
	return lines[Info](t, fixture, "info-"+group+".json")[0]
}

// Lines returns the lines of the file name of fixture's expect directory
// (alice.id, bob.id: the users' fingerprints; peers: a cell's --cell-peer
// values).
func Lines(t testing.TB, fixture, name string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(Root(t), fixture, "expect", name))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.TrimRight(string(data), "\n")
	if text == "" {
		return nil
	}
	return strings.Split(text, "\n")
}

// lines decodes the expect file name of fixture, one JSON object a line,
// and fails the test if it holds none.
func lines[T any](t testing.TB, fixture, name string) []T {
	t.Helper()
	var vs []T
	for _, l := range Lines(t, fixture, name) {
		var v T
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("testfixture: %s/expect/%s: %v", fixture, name, err)
		}
		vs = append(vs, v)
	}
	if len(vs) == 0 {
		t.Fatalf("testfixture: %s/expect/%s is empty", fixture, name)
	}
	return vs
}
