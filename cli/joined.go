package cli

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

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
	_, ok := j.find(e)
	return ok
}

// nameOf returns the name e's group had when the user joined it; "" if
// they did not.
func (j joinedSet) nameOf(e wire.GroupEntry) string {
	k, _ := j.find(e)
	return j[k]
}

// find returns the line of the joined file that records e's group, if
// one does. A cell's group (PROTOCOL.md §13) is recorded under the key of
// the member that led it when the user joined, and listed under the key
// of the one that leads it now: it is joined under any of its replicas'
// keys. Until session 15 it was looked up by the listing's key alone, so
// after an election the group the user joined was no longer theirs: named
// by its joined name it was not found, and a group a rogue registry
// listed under that name was the name's only one, the user's sends going
// there (the owner having renamed the real one); a leave left it joined.
func (j joinedSet) find(e wire.GroupEntry) (joinedGroup, bool) {
	k := joinedGroup{e.Group, e.Fingerprint}
	if _, ok := j[k]; ok {
		return k, true
	}
	for _, r := range e.Replicas {
		if k := (joinedGroup{e.Group, r.Fingerprint}); r.Fingerprint != e.Fingerprint {
			if _, ok := j[k]; ok {
				return k, true
			}
		}
	}
	return joinedGroup{}, false
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
// beside it, renamed over it). Changes are made through updateJoined,
// which holds the writers' lock.
//
// A name is written only if it reads back as it was (UTF-8, no control
// character), else the group is recorded without one (it resolves by its
// UUID): the names come from registries' listings, whose characters the
// client does not check (a registry of an earlier version may list a
// name the rules refuse now), and a rogue registry listing a group the
// user is in under a name holding a line break had the file record a
// line of its making, a join of another UUID under its impostor's key,
// which the CLI and huddle web then preferred over every registry's.
func saveJoined(dir string, set joinedSet) error {
	var b strings.Builder
	for k, name := range set {
		if !utf8.ValidString(name) || strings.ContainsFunc(name, unicode.IsControl) {
			name = ""
		}
		fmt.Fprintf(&b, "%s %s %s\n", k.Group, k.Daemon, name)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	path := joinedPath(dir)
	tmp, err := os.CreateTemp(filepath.Dir(path), joinedFile+".*")
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
	return os.Rename(tmp.Name(), path)
}

// joinedPath returns the path of the joined file in dir, or of the file a
// symbolic link there names (through up to 8 links, relative ones from
// the link's directory): changes are written, and locked, there. Renamed
// over the link, the first change replaced it with a file of its own, and
// the file it named (kept with other dotfiles) got no more joins.
func joinedPath(dir string) string {
	path := filepath.Join(dir, joinedFile)
	for range 8 {
		to, err := os.Readlink(path)
		if err != nil {
			break // not a link (or none yet)
		}
		if !filepath.IsAbs(to) {
			to = filepath.Join(filepath.Dir(path), to)
		}
		path = to
	}
	return path
}

// joinedLockWait bounds how long a change of the joined file waits for
// another process's lock: a writer holds it for a read and a rename.
const joinedLockWait = 5 * time.Second

// errJoinedLocked: another process held the joined file's lock longer than
// joinedLockWait (a command stopped with ^Z mid-write, or hostile).
var errJoinedLocked = errors.New("the joined file is locked by another process")

// updateJoined makes a change to the joined file in dir: under the
// writers' lock (joined.lock beside it, waited for at most wait,
// errJoinedLocked), change is given the file read
// again, and what it changed (it reports whether it did) is written. It
// returns the set as written.
//
// Why: every command that learns the user is a member writes the file,
// and huddle web too. Each wrote the set it had read at its start, so a
// long command (a huddle send reading its input, a chat) dropped every
// join made beside it since, and commands run at once each other's; a
// group dropped so no longer resolves among the joined first.
func updateJoined(dir string, wait time.Duration, change func(joinedSet) bool) (joinedSet, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	lf, err := os.OpenFile(joinedPath(dir)+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	defer lf.Close() // releases the lock
	if err := lockJoinedFile(lf, wait); err != nil {
		return nil, fmt.Errorf("lock %s: %w", lf.Name(), err)
	}
	set, err := loadJoined(dir)
	if err != nil {
		return nil, err // a file it cannot read is not written over
	}
	if change(set) {
		if err := saveJoined(dir, set); err != nil {
			return nil, err
		}
	}
	return set, nil
}

// joining and leaving are updateJoined's changes: e joined, or left.
func joining(e wire.GroupEntry) func(joinedSet) bool {
	return func(set joinedSet) bool {
		if set.has(e) {
			return false
		}
		set[joinedGroup{e.Group, e.Fingerprint}] = e.Name
		return true
	}
}

func leaving(e wire.GroupEntry) func(joinedSet) bool {
	return func(set joinedSet) bool {
		left := false
		for k, ok := set.find(e); ok; k, ok = set.find(e) {
			delete(set, k) // a cell's group may be recorded under several members' keys
			left = true
		}
		return left
	}
}

// remember records that the user is a member of e, whose daemon g is
// (after a join, or any operation only members may do), under e's name if
// the daemon gives the group that name too (its info), else under none
// (it resolves by its UUID, and the names registries list). Failing to
// write the file costs only the preference it gives: it is not an error
// of the command.
//
// Why both: the name recorded is the one the group resolves under among
// the joined groups, before any other, whatever registries say later.
// The listing's name is a registry's word: a rogue registry listing the
// user's lobby as "dev" (its lease the longest, so its name the merged
// entry's) when the user first named lobby by its UUID (as the CLI asks
// when a name is ambiguous) had lobby recorded as "dev", and "dev" then
// resolved to lobby, ahead of the user's dev group if that was not
// recorded yet: what was meant for dev went to lobby's members. And the
// daemon's is its own word, which may differ from what it registered (a
// group listed as "chess" whose daemon says "dev"). One info request, the
// first time only.
func (s *session) remember(ctx context.Context, g *client.Group, e wire.GroupEntry) {
	if s.joined == nil || s.joined.has(e) {
		return
	}
	if info, err := g.Info(ctx); err != nil || info.Name != e.Name {
		e.Name = ""
	}
	s.record(e)
}

// record writes e to the joined file, under e.Name, and keeps the set
// written.
func (s *session) record(e wire.GroupEntry) {
	if set, err := updateJoined(s.home, joinedLockWait, joining(e)); err == nil {
		s.joined = set
	}
}

// forget records that the user left e.
func (s *session) forget(e wire.GroupEntry) {
	if s.joined == nil || !s.joined.has(e) {
		return
	}
	if set, err := updateJoined(s.home, joinedLockWait, leaving(e)); err == nil {
		s.joined = set
	}
}

// joinedRecord is the joined file as huddle web keeps it (web.Joined): the
// groups joined through the page are recorded there, and a UUID that
// registries list under several daemon keys resolves to the key the user
// joined under, through the page or a command. It reads the file again
// when it changed (a command run beside the page).
type joinedRecord struct {
	dir string
	// lockWait bounds a change's wait for another process's lock; 0:
	// joinedLockWait (tests set it).
	lockWait time.Duration
	// wmu orders the record's changes; a change waits for another
	// process's lock under it alone, so that Has and Groups (huddle web
	// asks Has under its directory's lock) never wait for that.
	wmu sync.Mutex

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
// most every joinedRecheck. j.mu is held.
func (j *joinedRecord) load() {
	if j.set != nil && time.Since(j.checked) < joinedRecheck {
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
	j.load()
	_, ok := j.set[joinedGroup{group, daemon}]
	return ok
}

// Groups returns the groups joined, each under the name it was joined
// under: huddle web shows them, listed or not, by those names.
func (j *joinedRecord) Groups() []client.GroupEntry {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.load()
	out := make([]client.GroupEntry, 0, len(j.set))
	for k, name := range j.set {
		out = append(out, client.GroupEntry{Group: k.Group, Fingerprint: k.Daemon, Name: name})
	}
	return out
}

func (j *joinedRecord) Add(e client.GroupEntry) { j.update(joining(e)) }

func (j *joinedRecord) Remove(e client.GroupEntry) { j.update(leaving(e)) }

// update makes change to the file (updateJoined) and keeps what was
// written; failing costs only the preference, as for a command.
func (j *joinedRecord) update(change func(joinedSet) bool) {
	j.wmu.Lock()
	defer j.wmu.Unlock()
	set, err := updateJoined(j.dir, cmp.Or(j.lockWait, joinedLockWait), change)
	if err != nil {
		return
	}
	j.mu.Lock()
	j.set, j.mod, j.size = set, time.Time{}, 0 // read again at the next look
	j.mu.Unlock()
}
