package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/huddle-chat/huddle/internal/testfixture"
)

// compatGroups are the groups of a daemon fixture, and the retention its
// daemon ran with (--max-msgs 800: lobby's oldest hundred are past it).
var compatGroups = []string{"lobby", "secret"}

const compatMaxMessages = 800

// compatLog opens the log of group in the daemon fixture unpacked in dir.
func compatLog(t *testing.T, dir, fixture, group string) (*DiskLog, testfixture.Info) {
	t.Helper()
	info := testfixture.GroupInfo(t, fixture, group)
	d, _, err := Open(DiskConfig{Dir: filepath.Join(dir, "daemon", "logs", info.UUID.String()), Config: Config{MaxMessages: compatMaxMessages}})
	if err != nil {
		t.Fatalf("%s: open %s's log: %v", fixture, group, err)
	}
	return d, info
}

// checkServes fails t unless d holds exactly want, field by field.
func checkServes(t *testing.T, d *DiskLog, want []testfixture.Message) {
	t.Helper()
	got, cur, _ := d.After(0, len(want)+1, nil)
	if len(got) != len(want) || len(got) == 0 || cur.First != want[0].Seq {
		t.Fatalf("the log serves %d messages from seq %d, want %d from %d", len(got), cur.First, len(want), want[0].Seq)
	}
	for i, w := range want {
		m := got[i]
		if m.Seq != w.Seq || m.Time != w.Time.UnixNano() || m.ID != w.ID || m.From.Fingerprint != w.From ||
			m.From.Name != w.Name || string(m.Body) != w.Text {
			t.Fatalf("message %d: seq %d time %d id %x from %x %q body %q; the old daemon served seq %d time %d id %x from %x %q body %q",
				i, m.Seq, m.Time, m.ID, m.From.Fingerprint, m.From.Name, m.Body, w.Seq, w.Time.UnixNano(), w.ID[:], w.From[:], w.Name, w.Text)
		}
	}
}

// TestCompatOlderLogs: the group logs an older daemon wrote
// (testdata/compat/daemon-*: lobby in five segments, in records of one
// message and of up to 256, its oldest hundred past retention; secret in
// one) open under today's code with the
// same epoch and serve every message that daemon served, with its sequence
// number, time, ID, sender and body; a message appended then follows on, and
// all of it reads back after a reopen.
func TestCompatOlderLogs(t *testing.T) {
	for _, fx := range testfixture.Fixtures(t, "daemon") {
		t.Run(fx, func(t *testing.T) {
			dir := testfixture.Unpack(t, fx, "daemon.tar.gz")
			for _, group := range compatGroups {
				want := testfixture.Messages(t, fx, group)
				d, info := compatLog(t, dir, fx, group)
				if d.Epoch() != info.Epoch {
					t.Errorf("%s: epoch %d, the old daemon's %d", group, d.Epoch(), info.Epoch)
				}
				checkServes(t, d, want)
				last := want[len(want)-1]
				next := Entry{Seq: last.Seq + 1, Time: last.Time.UnixNano() + 1, ID: [16]byte{1, 2, 3},
					From: Sender{Fingerprint: last.From, Name: last.Name}, Body: []byte("after the upgrade")}
				if err := d.Append([]Entry{next}); err != nil {
					t.Fatalf("%s: append after the upgrade: %v", group, err)
				}
				// Retention may drop the oldest now (lobby holds its most):
				// what the log serves from then is what a reopen serves.
				want = append(want, testfixture.Message{Seq: next.Seq, Time: last.Time.Add(1), ID: next.ID,
					From: last.From, Name: last.Name, Text: "after the upgrade"})
				want = want[d.Stats().First-want[0].Seq:]
				checkServes(t, d, want)
				if err := d.Close(); err != nil {
					t.Fatal(err)
				}
				d, _ = compatLog(t, dir, fx, group)
				checkServes(t, d, want)
				d.Close()
			}
		})
	}
}

// TestCompatNewerVersionUntouched: a segment or checkpoint of a newer
// format version (an old fixture's file with its version raised and its
// header's checksum made good) is refused with ErrFutureVersion, naming the
// version, and nothing in the directory changes: no file written,
// truncated, removed or rebuilt. (An index of a newer version is not
// refused: TestCompatNewerIndexRebuilt.)
func TestCompatNewerVersionUntouched(t *testing.T) {
	fx := testfixture.Fixtures(t, "daemon")[0]
	for _, file := range []string{compatSealed + ".seg", cptName} {
		t.Run(file, func(t *testing.T) {
			dir := testfixture.Unpack(t, fx, "daemon.tar.gz")
			info := testfixture.GroupInfo(t, fx, "lobby")
			logDir := filepath.Join(dir, "daemon", "logs", info.UUID.String())
			raiseVersion(t, filepath.Join(logDir, file))
			before := dirContent(t, logDir)
			_, _, err := Open(DiskConfig{Dir: logDir, Config: Config{MaxMessages: compatMaxMessages}})
			if !errors.Is(err, ErrFutureVersion) || !strings.Contains(err.Error(), fmt.Sprintf("version %d", diskVersion+1)) {
				t.Fatalf("Open: %v, want ErrFutureVersion naming version %d", err, diskVersion+1)
			}
			if after := dirContent(t, logDir); after != before {
				t.Errorf("the refused directory changed:\nbefore: %s\nafter:  %s", before, after)
			}
		})
	}
}

// compatSealed is a sealed segment of the daemon fixture's lobby (one with
// an index).
const compatSealed = "00000000000000000277"

// raiseVersion makes the file at path, whose header is a segment's, an
// index's or a checkpoint's, one of the next format version, its header's
// checksum good.
func raiseVersion(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint32(data[8:], diskVersion+1)
	binary.LittleEndian.PutUint32(data[44:], crc32.Checksum(data[:44], castagnoli))
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCompatNewerIndexRebuilt: an index of a newer format version is not
// read (its entries could mean anything) but, as a damaged one, rebuilt
// from its segment, which is checked record by record: the log serves all
// it held, and the segments are untouched. An index is derived data
// (STORAGE.md, "Index files"), so a version that changes only the index
// stays readable by older daemons.
func TestCompatNewerIndexRebuilt(t *testing.T) {
	fx := testfixture.Fixtures(t, "daemon")[0]
	dir := testfixture.Unpack(t, fx, "daemon.tar.gz")
	info := testfixture.GroupInfo(t, fx, "lobby")
	logDir := filepath.Join(dir, "daemon", "logs", info.UUID.String())
	raiseVersion(t, filepath.Join(logDir, compatSealed+".idx"))
	segs, _ := filepath.Glob(filepath.Join(logDir, "*.seg"))
	before := make(map[string][]byte)
	for _, s := range segs {
		before[s], _ = os.ReadFile(s)
	}
	d, _ := compatLog(t, dir, fx, "lobby")
	defer d.Close()
	checkServes(t, d, testfixture.Messages(t, fx, "lobby"))
	for _, s := range segs {
		if after, _ := os.ReadFile(s); !bytes.Equal(after, before[s]) {
			t.Errorf("%s changed", filepath.Base(s))
		}
	}
}

// dirContent describes every file under dir by name, mode and content.
func dirContent(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %v", path, fi.Mode())
		if !e.IsDir() {
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " %d %x", len(data), crc32.Checksum(data, castagnoli))
		}
		b.WriteString("; ")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
