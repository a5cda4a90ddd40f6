package cell

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"io"
	"reflect"
	"testing"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"

	"github.com/huddle-chat/huddle/store"
	"github.com/huddle-chat/huddle/wire"
)

var testGroup = uuid.MustParse("0190a5d2-7c4e-7b3a-9f10-2c3d4e5f6a7b")

func testEntries() []store.Entry {
	bob := store.Sender{Fingerprint: [32]byte{2}, Name: "bob"}
	return []store.Entry{
		{Seq: 7, Time: 1000, ID: [16]byte{1}, From: alice, Body: []byte("hi")},
		{Seq: 8, Time: 1001, ID: [16]byte{2}, From: bob, Body: []byte("")},
		{Seq: 9, Time: 5000, ID: [16]byte{3}, From: alice, Body: []byte("third")},
	}
}

// testCommands are one command of each kind, encoded.
func testCommands() map[string][]byte {
	return map[string][]byte{
		"create":         encodeCreate(nil, GroupSpec{ID: testGroup, Name: "lobby", Epoch: 9, DedupWindow: 65536}),
		"create private": encodeCreate(nil, GroupSpec{ID: testGroup, Name: "den", Epoch: 9, DedupWindow: 16, Private: true, SecretSHA256: [32]byte{0xaa}}),
		"send":           newEncoder().encodeSend(nil, testGroup, 3, testEntries()),
		"join":           encodeJoin(nil, testGroup, Member{Fingerprint: wire.Fingerprint{5}, Name: "carol", Joined: 77}, 8192),
		"leave":          encodeLeave(nil, testGroup, wire.Fingerprint{5}),
	}
}

func TestCommandRoundTrip(t *testing.T) {
	for name, data := range testCommands() {
		c, err := decodeCommand(data, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var again []byte
		switch c.kind {
		case cmdCreate:
			again = encodeCreate(nil, c.spec)
		case cmdSend:
			again = newEncoder().encodeSend(nil, c.group, c.term, c.entries)
			if !reflect.DeepEqual(c.entries, testEntries()) {
				t.Fatalf("send decoded to %+v", c.entries)
			}
		case cmdJoin:
			again = encodeJoin(nil, c.group, c.member, c.max)
		case cmdLeave:
			again = encodeLeave(nil, c.group, c.member.Fingerprint)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("%s: re-encoded\n%x\nwant\n%x", name, again, data)
		}
	}
}

// TestCommandBytes pins the send layout PROTOCOL.md documents.
func TestCommandBytes(t *testing.T) {
	e := []store.Entry{{Seq: 1, Time: 2, ID: [16]byte{0xee}, From: store.Sender{Fingerprint: [32]byte{0xff}, Name: "a"}, Body: []byte("b")}}
	got := hex.EncodeToString(newEncoder().encodeSend(nil, testGroup, 4, e))
	want := "02" + "0190a5d27c4e7b3a9f102c3d4e5f6a7b" + "0400000000000000" + "01" + "0100000000000000" + "0200000000000000" +
		"01" + "ff" + "00000000000000000000000000000000000000000000000000000000000000" + "0161" +
		"00" + "ee000000000000000000000000000000" + "00" + "0162"
	if got != want {
		t.Fatalf("send\n%s\nwant\n%s", got, want)
	}
}

func TestCommandMalformed(t *testing.T) {
	send := testCommands()["send"]
	cases := map[string][]byte{
		"empty":         nil,
		"unknown kind":  append([]byte{9}, testGroup[:]...),
		"truncated":     send[:len(send)-1],
		"trailing byte": append(bytes.Clone(send), 0),
		"zero epoch":    encodeCreate(nil, GroupSpec{ID: testGroup, Name: "x"}),
		"bad private": func() []byte {
			b := encodeCreate(nil, GroupSpec{ID: testGroup, Name: "x", Epoch: 1})
			b[1+16+8+1] = 2
			return b
		}(),
		"zero count": func() []byte { b := bytes.Clone(send); b[1+16+8] = 0; return b }(),
		"first dt": func() []byte {
			e := []store.Entry{{Seq: 1, Time: 2, From: store.Sender{Name: "a"}}}
			b := newEncoder().encodeSend(nil, testGroup, 1, e)
			b[1+16+8+1+8+8+1+32+1+1] = 1 // the first message's dt
			return b
		}(),
		"name not utf8": encodeJoin(nil, testGroup, Member{Name: "\xff"}, 1),
		"huge body len": append(append([]byte{cmdSend}, testGroup[:]...), make([]byte, 8+1)...),
	}
	for name, data := range cases {
		if _, err := decodeCommand(data, nil); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: %v, want ErrBadCommand", name, err)
		}
	}
}

func FuzzDecodeCommand(f *testing.F) {
	for _, c := range testCommands() {
		f.Add(c)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := decodeCommand(data, nil)
		if err != nil {
			if !errors.Is(err, ErrBadCommand) {
				t.Fatalf("error %v does not wrap ErrBadCommand", err)
			}
			return
		}
		// What decodes is well formed: a send's stamps follow on.
		for i := 1; i < len(c.entries); i++ {
			if c.entries[i].Seq != c.entries[i-1].Seq+1 || c.entries[i].Time <= c.entries[i-1].Time {
				t.Fatalf("decoded entries out of order: %+v", c.entries)
			}
		}
	})
}

func TestSnapshotRoundTrip(t *testing.T) {
	groups := []snapGroup{
		{spec: GroupSpec{ID: testGroup, Name: "lobby", Epoch: 3, DedupWindow: 10}, seq: 100, time: 5,
			members: []Member{{Fingerprint: wire.Fingerprint{1}, Name: "a", Joined: 1}, {Fingerprint: wire.Fingerprint{2}, Name: "b", Joined: 2}}},
		{spec: GroupSpec{ID: uuid.New(), Name: "den", Epoch: 4, DedupWindow: 10, Private: true, SecretSHA256: [32]byte{9}}},
	}
	p := encodeSnapshot(nil, groups)
	got, err := decodeSnapshot(p)
	if err != nil {
		t.Fatal(err)
	}
	for i := range groups {
		if got[i].spec != groups[i].spec || got[i].seq != groups[i].seq || got[i].time != groups[i].time || len(got[i].members) != len(groups[i].members) {
			t.Fatalf("group %d: %+v, want %+v", i, got[i], groups[i])
		}
	}
	p[20] ^= 1
	if _, err := decodeSnapshot(p); !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("a flipped byte: %v, want ErrBadSnapshot", err)
	}
}

func FuzzDecodeSnapshot(f *testing.F) {
	f.Add(encodeSnapshot(nil, []snapGroup{{spec: GroupSpec{ID: testGroup, Name: "x", Epoch: 1}, members: []Member{{Name: "m"}}}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := decodeSnapshot(data); err != nil && !errors.Is(err, ErrBadSnapshot) {
			t.Fatalf("error %v does not wrap ErrBadSnapshot", err)
		}
	})
}

// TestSendRunsOfSenders: a send whose messages come in runs from one
// sender, as gathered client batches do, names each sender once and
// decodes to the same messages.
func TestSendRunsOfSenders(t *testing.T) {
	bob := store.Sender{Fingerprint: [32]byte{2}, Name: "bob"}
	renamed := store.Sender{Fingerprint: alice.Fingerprint, Name: "alice2"}
	var entries []store.Entry
	for i, from := range []store.Sender{alice, alice, bob, bob, bob, alice, renamed, renamed, bob} {
		entries = append(entries, store.Entry{Seq: 10 + uint64(i), Time: 100 + int64(i), ID: [16]byte{byte(i + 1)}, From: from, Body: []byte{byte(i)}})
	}
	e := newEncoder()
	for range 2 { // the encoder's dictionary is reused
		data := e.encodeSend(nil, testGroup, 3, entries)
		c, err := decodeCommand(data, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(c.entries, entries) {
			t.Fatalf("decoded to %+v, want %+v", c.entries, entries)
		}
		if got := bytes.Count(data, []byte("bob")); got != 1 {
			t.Fatalf("bob named %d times, want once", got)
		}
	}
}

// FuzzAppendMessages: a send's messages decode alike by the fast loop
// (appendMessages) and the careful one (readMessages): the same messages
// and the same rest when both accept them, and neither accepts what the
// other refuses. The fuzzer picks the loop's bytes and the header's
// values, within what decodeEntries checks before the loop.
func FuzzAppendMessages(f *testing.F) {
	msg := func(p []byte, dt uint64, id byte, sender uint64, body string) []byte {
		p = binary.AppendUvarint(p, dt)
		p = append(p, bytes.Repeat([]byte{id}, 16)...)
		p = binary.AppendUvarint(p, sender)
		p = binary.AppendUvarint(p, uint64(len(body)))
		return append(p, body...)
	}
	two := msg(msg(nil, 0, 1, 0, "hi"), 5, 2, 1, "there")
	f.Add(two, uint16(2), uint64(7), int64(100), uint8(2))
	f.Add(append(two, 9), uint16(2), uint64(7), int64(100), uint8(2)) // a byte left over
	f.Add(two, uint16(3), uint64(7), int64(100), uint8(2))            // one message short
	f.Add(two, uint16(2), uint64(7), int64(100), uint8(1))            // a sender out of range
	f.Add(msg(nil, 1, 1, 0, ""), uint16(1), uint64(1), int64(0), uint8(1))
	f.Add(msg(msg(nil, 0, 1, 0, ""), 1<<62, 2, 0, ""), uint16(2), uint64(1), int64(1), uint8(1))
	f.Fuzz(func(t *testing.T, p []byte, count uint16, seq uint64, t0 int64, nsenders uint8) {
		if count == 0 || count > maxCommandMessages || seq == 0 || seq > 1<<62 || t0 < 0 || t0 > 1<<62 || nsenders == 0 {
			return // decodeEntries refuses these before the loop
		}
		senders := make([]store.Sender, nsenders)
		for i := range senders {
			senders[i] = store.Sender{Fingerprint: [32]byte{byte(i)}, Name: string(rune('a' + i%26))}
		}
		got, rest, ok := appendMessages(nil, p, uint64(count), seq, t0, senders)
		r := reader{p: p}
		want := readMessages(&r, nil, uint64(count), seq, t0, senders)
		if ok != (r.err == nil) {
			t.Fatalf("appendMessages ok %v, readMessages %v", ok, r.err)
		}
		if !ok {
			return
		}
		if !reflect.DeepEqual(got, want) || !bytes.Equal(rest, r.p) {
			t.Fatalf("appendMessages = %+v, rest %x; readMessages = %+v, rest %x", got, rest, want, r.p)
		}
	})
}

// TestCheckedSnapshotSink: the snapshot store keeps a snapshot whose bytes
// are a cell snapshot, however they are cut into writes, byte for byte,
// and refuses (keeping nothing) one whose magic, version or checksum is
// wrong, or that is cut short.
func TestCheckedSnapshotSink(t *testing.T) {
	good := encodeSnapshot(nil, []snapGroup{{spec: GroupSpec{ID: testGroup, Name: "lobby", Epoch: 3}, seq: 9,
		members: []Member{{Fingerprint: wire.Fingerprint{1}, Name: "a", Joined: 1}}}})
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 1
		return b
	}
	v2 := bytes.Clone(good)
	binary.LittleEndian.PutUint32(v2[len(snapMagic):], 2)
	binary.LittleEndian.PutUint32(v2[len(v2)-4:], crc32.Checksum(v2[:len(v2)-4], castagnoli))
	for _, tc := range []struct {
		name string
		data []byte
		ok   bool
	}{
		{"a cell snapshot", good, true},
		{"a byte flipped in the magic", flip(0), false},
		{"a byte flipped in the middle", flip(len(good) / 2), false},
		{"a byte flipped in the checksum", flip(len(good) - 1), false},
		{"cut short by a byte", good[:len(good)-1], false},
		{"another version, its checksum right", v2, false},
		{"nothing", nil, false},
		{"the magic alone", []byte(snapMagic), false},
	} {
		for _, chunk := range []int{1, 2, 3, 5, 7, len(good)} {
			files, err := raft.NewFileSnapshotStore(t.TempDir(), 2, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			store := checkedSnapshots{files}
			sink, err := store.Create(raft.SnapshotVersionMax, 10, 2, raft.Configuration{}, 1, nil)
			if err != nil {
				t.Fatal(err)
			}
			for p := tc.data; len(p) > 0; p = p[min(chunk, len(p)):] {
				if _, err := sink.Write(p[:min(chunk, len(p))]); err != nil {
					t.Fatal(err)
				}
			}
			err = sink.Close()
			metas, _ := store.List()
			if tc.ok {
				if err != nil || len(metas) != 1 {
					t.Fatalf("%s in writes of %d: %v, %d kept; want kept", tc.name, chunk, err, len(metas))
				}
				_, rc, _ := store.Open(metas[0].ID)
				kept, _ := io.ReadAll(rc)
				if !bytes.Equal(kept, tc.data) {
					t.Fatalf("%s: kept other bytes", tc.name)
				}
				continue
			}
			if !errors.Is(err, ErrBadSnapshot) || len(metas) != 0 {
				t.Fatalf("%s in writes of %d: %v, %d kept; want ErrBadSnapshot, none kept", tc.name, chunk, err, len(metas))
			}
		}
	}
}
