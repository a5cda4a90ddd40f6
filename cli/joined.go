package cli

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/huddle-chat/huddle/client"
	"github.com/huddle-chat/huddle/internal/lockfile"
	"github.com/huddle-chat/huddle/wire"
)

// joinedFile, in $HUDDLE_HOME, remembers the groups the user joined: one
// line per group, "UUID DAEMON-FINGERPRINT NAME". GROUP references resolve
// among these first, so that a stranger who registers another group of the
// same name (or one named like a UUID prefix) cannot take a member's
// commands elsewhere or make them ambiguous.
//
// A cell's group (PROTOCOL.md §13) has a second line, "cell UUID
// DAEMON-FINGERPRINT KEY...", after its own: the keys of the cell's
// replica set, as listed when the user joined, and kept since from the
// members' own word (followCell). Huddle binaries before it skip the line
// (its first field is no UUID) and drop it when they write the file; a
// group without one is taken as before: listed under its daemon key, or
// with it among its replicas.
const joinedFile = "joined"

// cellLine begins the line of a cell's replica set in the joined file.
const cellLine = "cell"

// joinedGroup is one group the user joined: its UUID under one daemon's key.
type joinedGroup struct {
	Group  wire.UUID
	Daemon wire.Fingerprint
}

// joinedLine is what the joined file records of a group joined.
type joinedLine struct {
	name string // the group's name when joined
	// cell, for a cell's group, are the keys of its replica set (cell
	// UUID DAEMON KEY...); nil for a group of one daemon, or a cell's
	// group recorded without them (by a binary before session 15).
	cell []wire.Fingerprint
}

// joinedSet is the content of the joined file.
type joinedSet map[joinedGroup]joinedLine

func (j joinedSet) has(e wire.GroupEntry) bool {
	_, ok := j.find(e)
	return ok
}

// nameOf returns the name e's group had when the user joined it; "" if
// they did not.
func (j joinedSet) nameOf(e wire.GroupEntry) string {
	k, _ := j.find(e)
	return j[k].name
}

// trusts reports whether the line k of the joined file takes fp for a
// key of its group: one of its cell's recorded replica set, else its own.
func (j joinedSet) trusts(k joinedGroup, fp wire.Fingerprint) bool {
	if l := j[k]; l.cell != nil {
		return slices.Contains(l.cell, fp)
	}
	return k.Daemon == fp
}

// find returns the line of the joined file that records e's group, if
// one does: e is listed under a key the line trusts, or names one among
// its replicas.
//
// A cell's group is listed under the key of the member that leads it
// now: it is joined under any of its replicas' keys. Until session 15 it
// was looked up by the listing's key alone, so after an election the
// group the user joined was no longer theirs: named by its joined name it
// was not found, and a group a rogue registry listed under that name was
// the name's only one, the user's sends going there (the owner having
// renamed the real one); a leave left it joined. And it was looked up by
// the key the user joined it at alone: once that member was removed from
// the cell (a host replaced), the group was another key's, refused until
// the user took one (huddle join --daemon); a cell's line now trusts its
// replica set.
//
// Of several lines that take e (a cell's group recorded under two
// members' keys, as binaries before session 15 recorded it at each leader
// a join met), the same one is found at every call (first): the map's
// order, anew at each call, had trusted look for a group's listings under
// one line and find them under the other, and give an empty entry in the
// group's place.
func (j joinedSet) find(e wire.GroupEntry) (joinedGroup, bool) {
	if k := (joinedGroup{e.Group, e.Fingerprint}); j.trusts(k, e.Fingerprint) {
		if _, ok := j[k]; ok {
			return k, true
		}
	}
	return j.first(func(k joinedGroup) bool {
		return k.Group == e.Group && (j.trusts(k, e.Fingerprint) || slices.ContainsFunc(e.Replicas, func(r wire.Replica) bool { return j.trusts(k, r.Fingerprint) }))
	})
}

// first returns, of the lines that match, the one recording a cell's
// replica set if any does, else the one of the lowest daemon key: the
// same line whatever the map's order.
func (j joinedSet) first(match func(joinedGroup) bool) (joinedGroup, bool) {
	var found joinedGroup
	ok := false
	for k := range j {
		if match(k) && (!ok || j.before(k, found)) {
			found, ok = k, true
		}
	}
	return found, ok
}

// before reports whether line a comes before line b for first.
func (j joinedSet) before(a, b joinedGroup) bool {
	if ac, bc := j[a].cell != nil, j[b].cell != nil; ac != bc {
		return ac
	}
	return slices.Compare(a.Daemon[:], b.Daemon[:]) < 0
}

// pinned returns the keys line k takes for its group's members: the
// replica set it records, else its daemon key alone (a line written by a
// binary before session 15, or a group of one daemon).
func (j joinedSet) pinned(k joinedGroup) []wire.Fingerprint {
	if c := j[k].cell; c != nil {
		return c
	}
	return []wire.Fingerprint{k.Daemon}
}

// trusted returns groups, a merged listing, with each cell's group the
// user joined made one entry naming only the members its line takes
// (pinned; client.TrustedCell): the listings of its UUID that name one of
// them, under whatever set, are that group. A listing of its UUID that
// names none is left as it is: another group (an impostor, or the group
// moved to keys the user has not taken).
//
// Why: a rogue registry listing the UUID with a set of one real member's
// key and one of its own counted as the joined group, and the CLI found
// two groups joined (ambiguous), huddle web took the first registry's:
// the rogue's key was dialled. And a line without a replica set (written
// by a binary before session 15) took the listing as it was until its
// first follow (followCell) was answered: the member it was joined at
// unreachable, or not answering alike with the others, a rogue's listing
// of that key beside one of its own, leading, had the command dial the
// rogue. Such a line now trusts the key it holds alone, until a follow
// records the set (followed).
func (j joinedSet) trusted(groups []client.ListedGroup) []client.ListedGroup {
	var out []client.ListedGroup
	done := make(map[joinedGroup]bool)
	for _, g := range groups {
		k, ok := j.find(g.GroupEntry)
		if !ok || len(g.Replicas) == 0 {
			out = append(out, g)
			continue
		}
		if done[k] {
			continue
		}
		done[k] = true
		var es []wire.GroupEntry
		var names []string
		at := make(map[wire.Fingerprint][]string)
		for _, o := range groups {
			if len(o.Replicas) == 0 || o.Group != k.Group {
				continue
			}
			if ko, ok := j.find(o.GroupEntry); !ok || ko != k {
				continue
			}
			es = append(es, o.GroupEntry)
			for _, n := range append([]string{o.Name}, o.OtherNames...) {
				if !slices.Contains(names, n) {
					names = append(names, n)
				}
			}
			for fp, addrs := range o.MemberAddrs {
				if j.trusts(k, fp) {
					for _, a := range addrs {
						if !slices.Contains(at[fp], a) {
							at[fp] = append(at[fp], a)
						}
					}
				}
			}
		}
		e, _ := client.TrustedCell(es, j.pinned(k))
		t := client.ListedGroup{GroupEntry: e, ListedBy: g.ListedBy, MemberAddrs: at}
		for _, n := range names {
			if n != e.Name {
				t.OtherNames = append(t.OtherNames, n)
			}
		}
		out = append(out, t)
	}
	return out
}

// listedKeys returns the keys of the members every listing in groups of
// k's group names (as find takes them), each once.
func (j joinedSet) listedKeys(groups []client.ListedGroup, k joinedGroup) []wire.Fingerprint {
	var keys []wire.Fingerprint
	for _, g := range groups {
		if ko, ok := j.find(g.GroupEntry); !ok || ko != k {
			continue
		}
		for _, r := range g.Replicas {
			if !slices.Contains(keys, r.Fingerprint) {
				keys = append(keys, r.Fingerprint)
			}
		}
	}
	return keys
}

// named returns the joined group ref names (its name when joined, its UUID,
// or a UUID prefix of minPrefix characters or more), if exactly one does.
func (j joinedSet) named(ref string) (joinedGroup, string, bool) {
	lower := strings.ToLower(strings.TrimSpace(ref))
	var found []joinedGroup
	for k, l := range j {
		id := k.Group.String()
		if l.name == strings.TrimSpace(ref) || id == lower || len(lower) >= minPrefix && strings.HasPrefix(id, lower) {
			found = append(found, k)
		}
	}
	if len(found) != 1 {
		return joinedGroup{}, "", false
	}
	return found[0], j[found[0]].name, true
}

// meant returns the joined group ref names (named), or else the one the
// user joined whose UUID a candidate ref matched has (cands, none of them
// joined): a group the user joined, named by a name a registry lists it
// under now at another key. Of a UUID joined at several keys, the key
// first in text order is returned, so the error naming it is stable.
func (j joinedSet) meant(ref string, cands []wire.GroupEntry) (joinedGroup, string, bool) {
	if k, name, ok := j.named(ref); ok {
		return k, name, true
	}
	for _, c := range cands {
		var found []joinedGroup
		for k := range j {
			if k.Group == c.Group {
				found = append(found, k)
			}
		}
		if len(found) > 0 {
			k := slices.MinFunc(found, func(a, b joinedGroup) int { return strings.Compare(a.Daemon.String(), b.Daemon.String()) })
			return k, j[k].name, true
		}
	}
	return joinedGroup{}, "", false
}

// loadJoined reads the joined file in dir; a missing file is an empty set.
// Lines it cannot read are skipped: the file is a hint, not the truth
// (the daemon's membership is).
func loadJoined(dir string) (joinedSet, error) {
	set := joinedSet{}
	f, err := lockfile.Open(filepath.Join(dir, joinedFile))
	if errors.Is(err, fs.ErrNotExist) {
		return set, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	cells := make(map[joinedGroup][]wire.Fingerprint)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), cellLine+" "); ok {
			if k, keys, ok := parseCellLine(rest); ok {
				cells[k] = keys
			}
			continue
		}
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
		set[joinedGroup{id, fp}] = joinedLine{name: name}
	}
	for k, keys := range cells {
		if l, ok := set[k]; ok && slices.Contains(keys, k.Daemon) {
			l.cell = keys
			set[k] = l
		}
	}
	return set, sc.Err()
}

// maxCellKeys bounds the keys of a cell line read: a cell has at most 9
// members (PROTOCOL.md §13).
const maxCellKeys = 9

// parseCellLine reads a cell line of the joined file after its "cell ":
// the group's UUID, its daemon key, and the keys of its replica set,
// which must hold that key.
func parseCellLine(rest string) (joinedGroup, []wire.Fingerprint, bool) {
	fields := strings.Fields(rest)
	if len(fields) < 3 || len(fields) > 2+maxCellKeys {
		return joinedGroup{}, nil, false
	}
	id, err := uuid.Parse(fields[0])
	if err != nil {
		return joinedGroup{}, nil, false
	}
	fp, err := wire.ParseFingerprint(fields[1])
	if err != nil {
		return joinedGroup{}, nil, false
	}
	keys := make([]wire.Fingerprint, 0, len(fields)-2)
	for _, f := range fields[2:] {
		k, err := wire.ParseFingerprint(f)
		if err != nil {
			return joinedGroup{}, nil, false
		}
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	return joinedGroup{id, fp}, keys, true
}

// saveJoined writes set to the joined file in dir, atomically and durably
// (lockfile.Replace). Changes are made through updateJoined,
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
	for k, l := range set {
		name := l.name
		if !utf8.ValidString(name) || strings.ContainsFunc(name, unicode.IsControl) {
			name = ""
		}
		fmt.Fprintf(&b, "%s %s %s\n", k.Group, k.Daemon, name)
		if l.cell != nil {
			fmt.Fprintf(&b, "%s %s %s", cellLine, k.Group, k.Daemon)
			for _, fp := range l.cell {
				fmt.Fprintf(&b, " %s", fp)
			}
			b.WriteByte('\n')
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// Durably (synced, renamed, the directory synced): a crash leaves the
	// old file or the new one, never an empty one.
	return lockfile.Replace(joinedPath(dir), []byte(b.String()), 0o600)
}

// joinedPath returns the path of the joined file in dir, or of the file a
// symbolic link there names (lockfile.Target): changes are written, and
// locked, there.
func joinedPath(dir string) string { return lockfile.Target(filepath.Join(dir, joinedFile)) }

// errJoinedLocked: another process held the joined file's lock longer than
// the command's bound (Env.LockWait; a command stopped with ^Z mid-write,
// or hostile).
var errJoinedLocked = errors.New("the joined file is locked by another process")

// updateJoined makes a change to the joined file in dir: under the
// writers' lock (joined.lock beside it, taken with locker, waited for at
// most its Wait,
// errJoinedLocked), change is given the file read
// again, and what it changed (it reports whether it did) is written. It
// returns the set as written.
//
// Why: every command that learns the user is a member writes the file,
// and huddle web too. Each wrote the set it had read at its start, so a
// long command (a huddle send reading its input, a chat) dropped every
// join made beside it since, and commands run at once each other's; a
// group dropped so no longer resolves among the joined first.
func updateJoined(ctx context.Context, dir string, locker lockfile.Locker, change func(joinedSet) bool) (joinedSet, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	lf, err := os.OpenFile(joinedPath(dir)+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	defer lf.Close() // releases the lock
	if err := locker.Lock(ctx, lf); err != nil {
		if errors.Is(err, lockfile.ErrHeld) {
			err = errJoinedLocked
		}
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
		l := joinedLine{name: e.Name}
		for _, r := range e.Replicas {
			if !slices.Contains(l.cell, r.Fingerprint) {
				l.cell = append(l.cell, r.Fingerprint)
			}
		}
		if l.cell != nil && !slices.Contains(l.cell, e.Fingerprint) {
			l.cell = nil // not a listing the client takes (client.Merge refuses it)
		}
		set[joinedGroup{e.Group, e.Fingerprint}] = l
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
// first time only, waited for at most rememberInfoWait.
func (s *session) remember(ctx context.Context, g *client.Group, e wire.GroupEntry) {
	if s.joined == nil || s.joined.has(e) || s.unwritable {
		return
	}
	ictx, cancel := context.WithTimeout(ctx, rememberInfoWait)
	defer cancel()
	if info, err := g.Info(ictx); err != nil || info.Name != e.Name {
		e.Name = ""
	}
	s.record(ctx, e)
}

// rememberInfoWait bounds remember's info request. The command has done
// what it was asked (a send acknowledged): a daemon that stopped
// answering just then (killed, cut off) held it until its --timeout, 30 s
// by default, after its acknowledgment was printed (until session 16).
// Unanswered, the group is recorded with no name, as when the daemon
// names it otherwise: it resolves by its UUID and the registries' names.
const rememberInfoWait = 2 * time.Second

// record writes e to the joined file, under e.Name, and keeps the set
// written.
func (s *session) record(ctx context.Context, e wire.GroupEntry) {
	s.update(ctx, joining(e), "that you joined "+groupShown(e))
}

// forget records that the user left e.
func (s *session) forget(ctx context.Context, e wire.GroupEntry) {
	if s.joined == nil || !s.joined.has(e) {
		return
	}
	s.update(ctx, leaving(e), "that you left "+groupShown(e))
}

// update makes change to the joined file and keeps the set written; what
// says what it records, for the warning if it cannot: the command goes
// on (it did what it was asked), says so once, and tries no other
// change. Until session 16 the failure was said nowhere, and a piped
// huddle send tried again after every send of lines, each waiting the
// whole lock wait (Env.LockWait) for a lock another process held (a command
// stopped with ^Z mid-write): 5 s a line, for a person typing.
func (s *session) update(ctx context.Context, change func(joinedSet) bool, what string) {
	if s.unwritable {
		return
	}
	set, err := updateJoined(ctx, s.home, s.env.locker(), change)
	if err != nil {
		s.unwritten(err, what)
		return
	}
	s.joined = set
}

// unwritten says, once, that the joined file could not be changed to
// record what, and has the command try no other change.
func (s *session) unwritten(err error, what string) {
	s.unwritable = true
	if s.env.Stderr != nil {
		fmt.Fprintf(s.env.Stderr, "huddle %s: warning: cannot record %s (%s); the next command tries again\n", s.verb, what, plainErr(err))
	}
}

// follow is followCells of ks in joined, unless a change of the joined
// file failed in this command already: a command following several cells
// (huddle groups) waited Env.LockWait for each, a held lock's 5 s, and
// then its record of a join as long again (until session 16).
func (s *session) follow(ctx context.Context, joined joinedSet, ks []joinedGroup, groups []client.ListedGroup) (joinedSet, bool) {
	if s.unwritable || len(ks) == 0 {
		return joined, false
	}
	set, changed, err := followCells(ctx, s.client, s.home, s.env.locker(), joined, ks, groups)
	if err != nil {
		what := "the members of the cell of " + groupShown(wire.GroupEntry{Group: ks[0].Group, Name: joined[ks[0]].name})
		if len(ks) > 1 {
			what += fmt.Sprintf(" and of %d more", len(ks)-1)
		}
		s.unwritten(err, what)
	}
	return set, changed
}

// groupShown names e for people: its name and UUID, or its UUID.
func groupShown(e wire.GroupEntry) string {
	if e.Name == "" {
		return "group " + e.Group.String()
	}
	return fmt.Sprintf("group %s (%s)", shown(e.Name), e.Group)
}

// joinedRecord is the joined file as huddle web keeps it (web.Joined): the
// groups joined through the page are recorded there, and a UUID that
// registries list under several daemon keys resolves to the key the user
// joined under, through the page or a command. It reads the file again
// when it changed (a command run beside the page).
type joinedRecord struct {
	dir string
	// locker takes the file's lock for a change; its Wait 0: Env.LockWait's
	// default, 5 s.
	locker lockfile.Locker
	// log, if set, is told when a change cannot be written (saidUnwritten);
	// huddle web's logger.
	log *slog.Logger
	// wmu orders the record's changes; a change waits for another
	// process's lock under it alone, so that Has and Groups (huddle web
	// asks Has under its directory's lock) never wait for that.
	wmu sync.Mutex

	// saidUnwritten: the last change failed, and log was told; the next
	// failure is said only after a change is written again, so that a
	// lock held for hours is said once, not at every join or leave.
	// Under wmu.
	saidUnwritten bool

	mu  sync.Mutex
	set joinedSet
	// read is the file set was read from, as load found it; nil to read
	// it again at the next look.
	read    os.FileInfo
	checked time.Time // when load last looked at the file
}

// joinedRecheck is how often joinedRecord looks whether the file changed:
// huddle web asks Has for each group registries list under several keys
// at every poll, and a rogue registry can list every group so.
const joinedRecheck = time.Second

// load reads the file again if it changed since it was read, looking at
// most every joinedRecheck. j.mu is held.
//
// Every writer replaces the file (saveJoined renames a new one over it),
// so a file that is not the one read (os.SameFile) has changed, whatever
// its size and time: those alone took a file written within the same
// tick of the file clock (a few milliseconds) as the one read, of the
// same size (a join of a name of the same length, one cell key followed
// for another), for the one read, and the page kept the old set until
// another change (until session 16).
func (j *joinedRecord) load() {
	if j.set != nil && time.Since(j.checked) < joinedRecheck {
		return
	}
	j.checked = time.Now()
	st, err := os.Stat(filepath.Join(j.dir, joinedFile))
	if err == nil && j.set != nil && j.read != nil && os.SameFile(st, j.read) &&
		st.ModTime().Equal(j.read.ModTime()) && st.Size() == j.read.Size() {
		return
	}
	set, lerr := loadJoined(j.dir)
	if lerr != nil {
		if j.set == nil {
			j.set = joinedSet{}
		}
		return // what was read before stands
	}
	j.set, j.read = set, nil
	if err == nil {
		j.read = st
	}
}

func (j *joinedRecord) Has(group client.UUID, daemon client.Fingerprint) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.load()
	for k := range j.set {
		if k.Group == group && j.set.trusts(k, daemon) {
			return true
		}
	}
	return false
}

// Groups returns the groups joined, each under the name it was joined
// under: huddle web shows them, listed or not, by those names.
func (j *joinedRecord) Groups() []client.GroupEntry {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.load()
	out := make([]client.GroupEntry, 0, len(j.set))
	for k, l := range j.set {
		out = append(out, client.GroupEntry{Group: k.Group, Fingerprint: k.Daemon, Name: l.name})
	}
	return out
}

func (j *joinedRecord) Add(e client.GroupEntry) error {
	return j.update(joining(e), "that you joined "+groupShown(e))
}

func (j *joinedRecord) Remove(e client.GroupEntry) error {
	return j.update(leaving(e), "that you left "+groupShown(e))
}

// update makes change to the file (updateJoined) and keeps what was
// written; failing costs only the preference, as for a command, and is
// logged, once until a change is written again, and returned: the page
// says it for its join or leave (web.Joined). Until session 16 it was
// said nowhere: after a 5 s wait for a lock another process held, the
// page's join was not recorded, and nothing said why; until session 17
// only the log said it.
func (j *joinedRecord) update(change func(joinedSet) bool, what string) error {
	j.wmu.Lock()
	defer j.wmu.Unlock()
	// The page's join or leave is done: its record waits for the lock
	// at most its bound, not the request's context.
	l := j.locker
	l.Wait = cmp.Or(l.Wait, defaultLockWait)
	set, err := updateJoined(context.Background(), j.dir, l, change)
	if err != nil {
		if !j.saidUnwritten && j.log != nil {
			j.log.Warn("cannot record "+what+" in the joined file; the next join or leave tries again", "err", err)
		}
		j.saidUnwritten = true
		return err
	}
	j.saidUnwritten = false
	j.mu.Lock()
	j.set, j.read = set, nil // read again at the next look
	j.mu.Unlock()
	return nil
}

// cellFollowWait bounds followCells' questions, all of them: the
// command waits for them once, at most.
const cellFollowWait = 4 * time.Second

// cellFollowsAtOnce bounds the cells followCells asks at once: each asks
// its members at up to 4 addresses each (client.CellMembers), and a user
// may have joined many cells.
const cellFollowsAtOnce = 8

// stale reports whether the replica set recorded for k, a cell's group the
// user joined, is not the set the listings in groups name (a line without
// one, written before session 15, is).
func (j joinedSet) stale(groups []client.ListedGroup, k joinedGroup) bool {
	listed := j.listedKeys(groups, k)
	if len(listed) == 0 {
		return false // a group of one daemon
	}
	cell := j[k].cell
	return len(cell) != len(listed) || slices.ContainsFunc(listed, func(fp wire.Fingerprint) bool { return !slices.Contains(cell, fp) })
}

// followCell brings the replica set the joined file in dir records for k,
// a cell's group, to the cell's own word: it asks the members of the set
// recorded (its daemon key alone for a line without one) cell_status, at
// the addresses the listings in groups name for each, each key pinned
// (the daemon must present it in the handshake, and the answer's self
// name it), and records the members that a majority of them answer alike
// (client.CellMembers), under an answering member's key if the one
// recorded is no longer among them. It returns the set as written, and
// whether it changed. Its questions take cellFollowWait at most, all of
// them.
//
// Why: the set comes from the members, over connections authenticated
// as members the user already trusts, never from a registry's listing:
// anyone may list any UUID with any keys. A member replaced by the cell's
// operator (README, "A three-host cell") is so followed to its
// successor. A majority, not the first to answer: a member removed from
// the cell (its host taken out, its key stolen since) answered a set of
// its own keys, recorded, and then dialled.
//
// The error is the joined file's, written (or locked) in vain; the
// members' not answering alike is none: nothing is followed.
func followCell(ctx context.Context, c *client.Client, dir string, locker lockfile.Locker, set joinedSet, k joinedGroup, groups []client.ListedGroup) (joinedSet, bool, error) {
	return followCells(ctx, c, dir, locker, set, []joinedGroup{k}, groups)
}

// followCells is followCell of each of ks, asked at once
// (cellFollowsAtOnce at most), within cellFollowWait in all, their
// answers recorded in one change of the joined file, in the order of ks.
// A follow not begun by then is not asked: the next command asks again.
//
// Why: huddle groups followed each cell the user joined one after the
// other, up to 4 s each (until session 17).
func followCells(ctx context.Context, c *client.Client, dir string, locker lockfile.Locker, set joinedSet, ks []joinedGroup, groups []client.ListedGroup) (joinedSet, bool, error) {
	qctx, cancel := context.WithTimeout(ctx, cellFollowWait)
	changes := make([]func(joinedSet) bool, len(ks))
	var wg sync.WaitGroup
	slots := make(chan struct{}, cellFollowsAtOnce)
	for i, k := range ks {
		select {
		case slots <- struct{}{}:
		case <-qctx.Done():
		}
		if qctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-slots }()
			changes[i] = askCell(qctx, c, set, k, groups)
		})
	}
	wg.Wait()
	cancel()
	changes = slices.DeleteFunc(changes, func(f func(joinedSet) bool) bool { return f == nil })
	if len(changes) == 0 {
		return set, false, nil
	}
	changed := false
	written, err := updateJoined(ctx, dir, locker, func(set joinedSet) bool {
		for _, change := range changes {
			if change(set) {
				changed = true
			}
		}
		return changed
	})
	if err != nil {
		return set, false, err
	}
	return written, changed, nil
}

// askCell asks the members of the set set records for k for the cell's
// members (followCell) and returns the change recording what a majority
// of them answered alike; nil if they did not.
func askCell(ctx context.Context, c *client.Client, set joinedSet, k joinedGroup, groups []client.ListedGroup) func(joinedSet) bool {
	at := make(map[wire.Fingerprint][]string)
	add := func(fp wire.Fingerprint, addr string) {
		if set.trusts(k, fp) && addr != "" && !slices.Contains(at[fp], addr) {
			at[fp] = append(at[fp], addr)
		}
	}
	for _, g := range groups {
		if ko, ok := set.find(g.GroupEntry); !ok || ko != k {
			continue
		}
		for _, r := range g.Replicas {
			add(r.Fingerprint, r.Addr)
		}
		for fp, addrs := range g.MemberAddrs {
			for _, a := range addrs {
				add(fp, a)
			}
		}
	}
	keys, from, err := c.CellMembers(ctx, set.pinned(k), at)
	if err != nil {
		return nil
	}
	return followed(k.Group, from, keys)
}

// followed is updateJoined's change recording keys, the members of a
// cell as member answered cell_status, as the replica set of group's
// line that trusts member, under member's key if the key recorded is no
// longer among them (the first of keys if member is not either).
func followed(group wire.UUID, member wire.Fingerprint, keys []wire.Fingerprint) func(joinedSet) bool {
	return func(set joinedSet) bool {
		if len(keys) == 0 || len(keys) > maxCellKeys {
			return false
		}
		k, ok := set.first(func(k joinedGroup) bool { return k.Group == group && set.trusts(k, member) })
		if !ok {
			return false // left, or followed, meanwhile
		}
		l := set[k]
		if l.cell != nil && len(l.cell) == len(keys) && !slices.ContainsFunc(keys, func(fp wire.Fingerprint) bool { return !slices.Contains(l.cell, fp) }) {
			return false
		}
		l.cell = nil
		for _, fp := range keys {
			if !slices.Contains(l.cell, fp) {
				l.cell = append(l.cell, fp)
			}
		}
		if !slices.Contains(keys, k.Daemon) {
			delete(set, k)
			k.Daemon = keys[0]
			if slices.Contains(keys, member) {
				k.Daemon = member
			}
		}
		set[k] = l
		return true
	}
}

// Cell returns the keys of the replica set recorded for group, a cell's
// group joined (web.JoinedCells); for a line without one, its daemon key
// alone (pinned: the page took such a group's listings as they were);
// nil for a group not joined. A group of one daemon so has its key: its
// listings name no replicas, which the page leaves as they are.
func (j *joinedRecord) Cell(group client.UUID) []client.Fingerprint {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.load()
	if k, ok := j.set.first(func(k joinedGroup) bool { return k.Group == group }); ok {
		return slices.Clone(j.set.pinned(k))
	}
	return nil
}

// Follow records members as group's replica set, member's word
// (web.JoinedCells).
func (j *joinedRecord) Follow(group client.UUID, member client.Fingerprint, members []client.Fingerprint) {
	j.update(followed(group, member, members), "the members of the cell of group "+group.String()) // logged: a page's follow has no one to tell
}
