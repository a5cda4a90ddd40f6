package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/wire"
)

// joinedFile, in $HUDDLE_HOME, remembers the groups the user joined: one
// line per group, "UUID DAEMON-FINGERPRINT NAME". GROUP references resolve
// among these first, so that a stranger who registers another group of the
// same name (or one named like a UUID prefix) cannot take a member's
// commands elsewhere or make them ambiguous.
const joinedFile = "joined"

// joinedGroup is one group the user joined: its UUID under one daemon's key.
type joinedGroup struct {
	Group  wire.UUID
	Daemon wire.Fingerprint
}

// joinedSet is the content of the joined file.
type joinedSet map[joinedGroup]string // -> the group's name when joined

func (j joinedSet) has(e wire.GroupEntry) bool {
	_, ok := j[joinedGroup{e.Group, e.Fingerprint}]
	return ok
}

// nameOf returns the name e's group had when the user joined it; "" if
// they did not.
func (j joinedSet) nameOf(e wire.GroupEntry) string {
	return j[joinedGroup{e.Group, e.Fingerprint}]
}

// named returns the joined group ref names (its name when joined, its UUID,
// or a UUID prefix of minPrefix characters or more), if exactly one does.
func (j joinedSet) named(ref string) (joinedGroup, string, bool) {
	lower := strings.ToLower(strings.TrimSpace(ref))
	var found []joinedGroup
	for k, name := range j {
		id := k.Group.String()
		if name == strings.TrimSpace(ref) || id == lower || len(lower) >= minPrefix && strings.HasPrefix(id, lower) {
			found = append(found, k)
		}
	}
	if len(found) != 1 {
		return joinedGroup{}, "", false
	}
	return found[0], j[found[0]], true
}

// loadJoined reads the joined file in dir; a missing file is an empty set.
// Lines it cannot read are skipped: the file is a hint, not the truth
// (the daemon's membership is).
func loadJoined(dir string) (joinedSet, error) {
	set := joinedSet{}
	f, err := os.Open(filepath.Join(dir, joinedFile))
	if errors.Is(err, fs.ErrNotExist) {
		return set, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.SplitN(sc.Text(), " ", 3)
		if len(fields) < 2 {
			continue
		}
		id, err1 := uuid.Parse(fields[0])
		fp, err2 := wire.ParseFingerprint(fields[1])
		if err1 != nil || err2 != nil {
			continue
		}
		name := ""
		if len(fields) == 3 {
			name = fields[2]
		}
		set[joinedGroup{id, fp}] = name
	}
	return set, sc.Err()
}

// saveJoined writes set to the joined file in dir, atomically (a file
// beside it, renamed over it).
func saveJoined(dir string, set joinedSet) error {
	var b strings.Builder
	for k, name := range set {
		fmt.Fprintf(&b, "%s %s %s\n", k.Group, k.Daemon, name)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, joinedFile+".*")
	if err != nil {
		return err
	}
	if _, err := tmp.WriteString(b.String()); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, joinedFile))
}

// remember records that the user is a member of e (after a join, or any
// operation only members may do). Failing to write the file costs only
// the preference it gives: it is not an error of the command.
func (s *session) remember(e wire.GroupEntry) {
	if s.joined == nil || s.joined.has(e) {
		return
	}
	s.joined[joinedGroup{e.Group, e.Fingerprint}] = e.Name
	saveJoined(s.home, s.joined)
}

// forget records that the user left e.
func (s *session) forget(e wire.GroupEntry) {
	if s.joined == nil || !s.joined.has(e) {
		return
	}
	delete(s.joined, joinedGroup{e.Group, e.Fingerprint})
	saveJoined(s.home, s.joined)
}

// joinedRecord is the joined file as huddle web keeps it (web.Joined): the
// groups joined through the page are recorded there, and a UUID that
// registries list under several daemon keys resolves to the key the user
// joined under, through the page or a command. It reads the file again
// when it changed (a command run beside the page).
type joinedRecord struct {
	dir string

	mu      sync.Mutex
	set     joinedSet
	mod     time.Time // of the file set was read from
	size    int64
	checked time.Time // when load last looked at the file
}

// joinedRecheck is how often joinedRecord looks whether the file changed:
// huddle web asks Has for each group registries list under several keys
// at every poll, and a rogue registry can list every group so.
const joinedRecheck = time.Second

// load reads the file again if it changed since it was read, looking at
// most every joinedRecheck unless fresh is set (a change is written over
// what the file holds now: a join a command made beside the page stays).
// j.mu is held.
func (j *joinedRecord) load(fresh bool) {
	if !fresh && j.set != nil && time.Since(j.checked) < joinedRecheck {
		return
	}
	j.checked = time.Now()
	st, err := os.Stat(filepath.Join(j.dir, joinedFile))
	if err == nil && j.set != nil && st.ModTime().Equal(j.mod) && st.Size() == j.size {
		return
	}
	set, lerr := loadJoined(j.dir)
	if lerr != nil {
		if j.set == nil {
			j.set = joinedSet{}
		}
		return // what was read before stands
	}
	j.set = set
	if err == nil {
		j.mod, j.size = st.ModTime(), st.Size()
	}
}

func (j *joinedRecord) Has(group client.UUID, daemon client.Fingerprint) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.load(false)
	_, ok := j.set[joinedGroup{group, daemon}]
	return ok
}

func (j *joinedRecord) Add(e client.GroupEntry) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.load(true)
	if j.set.has(e) {
		return
	}
	j.set[joinedGroup{e.Group, e.Fingerprint}] = e.Name
	saveJoined(j.dir, j.set) // failing costs only the preference, as for a command
}

func (j *joinedRecord) Remove(e client.GroupEntry) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.load(true)
	if !j.set.has(e) {
		return
	}
	delete(j.set, joinedGroup{e.Group, e.Fingerprint})
	saveJoined(j.dir, j.set)
}
