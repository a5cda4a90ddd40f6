package identity

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/huddle-chat/huddle/internal/lockfile"
	"github.com/huddle-chat/huddle/wire"
)

// KnownHostsFile is the name of the known-hosts file inside a user's
// identity directory.
const KnownHostsFile = "known_registries"

// ChangedError is returned when a registry presents another fingerprint than
// the one pinned for its name. It says, like ssh, what happened and how to
// accept the new key if the change is expected.
type ChangedError struct {
	Name      string // the address or discovery name the pin is kept under
	Pinned    wire.Fingerprint
	Presented wire.Fingerprint
	File      string
}

// Error shows the name as wire.Shown does: an mDNS instance name is anyone's
// to choose on the LAN, and until session 19 Check refused only control
// characters in it (a file pinned then may hold any other); a
// bidirectional override or a line separator in it turned the lines of
// this message around, or faked one (until session 18). The command to
// forget such a name would paste what is not shown: the line to delete
// from the file is named instead.
func (e *ChangedError) Error() string {
	name, forget := wire.Shown(e.Name), "run: "+e.ForgetCommand()
	if name != e.Name {
		forget = fmt.Sprintf("delete the line ending in %s from %s (the name holds characters not shown here)", e.Pinned, e.File)
	}
	return fmt.Sprintf(`the registry at %s presented fingerprint
    %s
but %s pins it to
    %s
Someone may be impersonating the registry, or it was reinstalled with a new key.
If you know the change is expected, %s`,
		name, e.Presented, e.File, e.Pinned, forget)
}

// ForgetCommand is the command that drops the pin, ready to paste into a
// POSIX shell: the name is quoted when it holds anything a shell would
// read otherwise (an mDNS instance name has spaces and parentheses).
func (e *ChangedError) ForgetCommand() string {
	return "huddle forget-registry " + shellQuote(e.Name)
}

// shellQuote quotes s for a POSIX shell when it needs it: in single quotes,
// each single quote in s written as quote, backslash, quote, quote.
func shellQuote(s string) string {
	safe := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.:/@%+=,", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// DiscoveredPrefix starts the names registries found over mDNS are pinned
// under ("mdns:INSTANCE"); other names are addresses.
const DiscoveredPrefix = "mdns:"

// MaxDiscoveredPins bounds the pins of registries found over mDNS: anyone
// on a LAN advertises registries under names of their choosing, each
// verified one pinned by a long-running huddle web or a client's listing.
// Once the file holds that many, Check pins no new one (ErrPinsFull) and
// drops none: a pin is only ever removed by the user (Forget). Dropping
// the one unused longest, as in session 13 until this was found, let
// anyone on a hostile LAN push out the user's pin of, say, mdns:office by
// advertising 256 new names, then pin a key of theirs under it (one whose
// fingerprint starts as the instance name says: 40 bits to match), and
// any rule for which pin to drop is one an advertiser can play: names
// they advertise are used as often as the user's. Pins of addresses are
// bounded apart (MaxAddressPins), so that a flood of names takes none of
// their room.
const MaxDiscoveredPins = 256

// MaxAddressPins bounds the pins of registries named by address. Only the
// user names those (--registry, HUDDLE_REGISTRY, huddle web's registries,
// this machine's 127.0.0.1:7373): nothing a stranger sends adds one. Yet
// scripts that name ever new addresses (a test registry on a new port each
// run) grew the file without end, each command reading all of it. As with
// names found over mDNS, a full file pins no new address (ErrPinsFull) and
// drops none: the user's pins are only ever removed by the user (Forget),
// so no address they rely on is trusted on first use again behind their
// back. A new address is then used unpinned, with a warning naming
// huddle forget-registry.
const MaxAddressPins = 1024

// KnownHosts remembers which fingerprint each registry presented the first
// time it was used (trust on first use), in a text file of lines
// "NAME FINGERPRINT", oldest first. It is safe for concurrent use, also by
// several processes (commands, huddle web) at once: a change is made with
// the file locked (known_registries.lock beside it; lockFile), read
// again under the lock, and written whole by rename, so no writer loses
// another's pin and a reader never sees half a file.
type KnownHosts struct {
	path string
	// wmu orders this value's changes (where the system has no flock,
	// the only order). Readers take no lock: the file is only ever
	// replaced whole, and a Lookup, or a Check of a name pinned already,
	// never waits for a change waiting for another process's lock.
	wmu sync.Mutex
	// locker takes the writers' lock; its Wait 0: pinsLockWait (tests set
	// it: OpenKnownHostsWith).
	locker lockfile.Locker
}

// pinsLockWait bounds how long a change waits for the writers' lock held
// by another process. A writer holds it for a read and a rename of a file
// of at most some 1,300 lines; one that holds it longer is stopped (a
// command suspended with ^Z in the middle) or hostile (any process of the
// user may lock the file). Waited for without a bound, as until session
// 15, it held up every first use of a registry for ever, in every command,
// and in huddle web every other lookup of a pin, which waited behind the
// change until then too (readers take no lock now: wmu).
const pinsLockWait = 5 * time.Second

// OpenKnownHosts returns the known-hosts file at path; the file is created
// on the first pin.
func OpenKnownHosts(path string) *KnownHosts { return &KnownHosts{path: path} }

// OpenKnownHostsWaiting is OpenKnownHosts whose changes wait at most wait
// for another process's lock of the file (ErrPinsLocked after), not 5 s;
// 0: 5 s. (The CLI's tests shorten it: a wait out is what they check.)
func OpenKnownHostsWaiting(path string, wait time.Duration) *KnownHosts {
	return OpenKnownHostsWith(path, lockfile.Locker{Wait: wait})
}

// OpenKnownHostsWith is OpenKnownHosts whose changes take the writers'
// lock with l (its Wait 0: 5 s): the CLI's, whose tests count the tries.
func OpenKnownHostsWith(path string, l lockfile.Locker) *KnownHosts {
	return &KnownHosts{path: path, locker: l}
}

// Path returns the file's path.
func (k *KnownHosts) Path() string { return k.path }

// Lookup returns the fingerprint pinned for name, and whether there is one.
func (k *KnownHosts) Lookup(name string) (wire.Fingerprint, bool, error) {
	pins, err := k.read()
	if err != nil {
		return wire.Fingerprint{}, false, err
	}
	if i := pins.index(name); i >= 0 {
		return pins[i].fp, true, nil
	}
	return wire.Fingerprint{}, false, nil
}

// Check pins fp for name if name has no pin yet, and returns a *ChangedError
// if name is pinned to another fingerprint. A registry found over mDNS
// (a name that starts with DiscoveredPrefix) new to a file that holds
// MaxDiscoveredPins of them, or an address new to one that holds
// MaxAddressPins addresses, is not pinned: ErrPinsFull, nothing written.
// A name the file cannot hold as the first field of one line (empty,
// invalid UTF-8, a control character, blanks around it), or one that
// could pass for another (a format character, a line or paragraph
// separator: checkPinName), is refused with ErrBadPinName and pins
// nothing: an mDNS instance name is anyone's to choose on the LAN, and
// one with a line break in it would add lines of the advertiser's own to
// the file. A new pin waits at most 5 s (or
// OpenKnownHostsWaiting's bound) for another process holding the writers'
// lock: ErrPinsLocked after, nothing written (a name pinned already takes
// no lock); ctx's error, nothing written, if ctx ends first.
func (k *KnownHosts) Check(ctx context.Context, name string, fp wire.Fingerprint) error {
	if err := checkPinName(name); err != nil {
		return err
	}
	// A name pinned already (every command's case) writes nothing, so it
	// takes no lock: the file is only ever replaced whole (write), and a
	// directory where no lock can be made (read-only) still serves.
	pins, err := k.read()
	if err != nil {
		return err
	}
	if done, err := k.checked(pins, name, fp); done {
		return err
	}
	k.wmu.Lock()
	defer k.wmu.Unlock()
	unlock, err := k.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if pins, err = k.read(); err != nil { // another writer's pins since
		return err
	}
	if done, err := k.checked(pins, name, fp); done {
		return err
	}
	return k.write(append(pins, pin{name, fp}))
}

// checked is Check's answer from pins alone, if it needs no write (done):
// name is pinned (to fp: nil; else a *ChangedError), or the file holds as
// many pins of name's kind as it may (ErrPinsFull).
func (k *KnownHosts) checked(pins pinList, name string, fp wire.Fingerprint) (done bool, err error) {
	if i := pins.index(name); i >= 0 {
		if old := pins[i].fp; old != fp {
			return true, &ChangedError{Name: name, Pinned: old, Presented: fp, File: k.path}
		}
		return true, nil
	}
	switch found := pins.discovered(); {
	case strings.HasPrefix(name, DiscoveredPrefix) && found >= MaxDiscoveredPins:
		return true, fmt.Errorf("%w: %s holds %d registries found over mDNS, its most; %s is not pinned", ErrPinsFull, k.path, MaxDiscoveredPins, name)
	case !strings.HasPrefix(name, DiscoveredPrefix) && len(pins)-found >= MaxAddressPins:
		return true, fmt.Errorf("%w: %s holds %d registry addresses, its most; %s is not pinned", ErrPinsFull, k.path, MaxAddressPins, name)
	}
	return false, nil
}

// pin is one line of the file.
type pin struct {
	name string
	fp   wire.Fingerprint
}

// pinList is the file's lines, oldest first.
type pinList []pin

func (ps pinList) index(name string) int {
	return slices.IndexFunc(ps, func(p pin) bool { return p.name == name })
}

// discovered counts the pins of registries found over mDNS.
func (ps pinList) discovered() int {
	n := 0
	for _, p := range ps {
		if strings.HasPrefix(p.name, DiscoveredPrefix) {
			n++
		}
	}
	return n
}

// Forget removes name's pin, so the next use pins afresh. It reports whether
// there was one. It waits at most 5 s (or OpenKnownHostsWaiting's bound)
// for another process holding the writers' lock: ErrPinsLocked after,
// nothing removed; ctx's error if ctx ends first.
func (k *KnownHosts) Forget(ctx context.Context, name string) (bool, error) {
	return k.forget(ctx, name, nil)
}

// ForgetPin removes name's pin if it pins fp (read under the writers'
// lock), and reports whether it did; ErrPinsLocked as Forget. A program
// taking back a pin it made (client.Client, of a key refused under another
// name) so removes no pin another process made since: one the user made
// after forgetting the first (TestRefusedKeyTakesBackOnlyItsPin).
func (k *KnownHosts) ForgetPin(ctx context.Context, name string, fp wire.Fingerprint) (bool, error) {
	return k.forget(ctx, name, &fp)
}

// forget removes name's pin, if it pins *fp when fp is not nil.
func (k *KnownHosts) forget(ctx context.Context, name string, fp *wire.Fingerprint) (bool, error) {
	k.wmu.Lock()
	defer k.wmu.Unlock()
	unlock, err := k.lock(ctx)
	if err != nil {
		return false, err
	}
	defer unlock()
	pins, err := k.read()
	if err != nil {
		return false, err
	}
	i := pins.index(name)
	if i < 0 || fp != nil && pins[i].fp != *fp {
		return false, nil
	}
	return true, k.write(slices.Delete(pins, i, i+1))
}

// checkPinName returns ErrBadPinName, saying why, if name cannot be read
// back from the file as it was written, or holds a character that
// wire.Unshown shows as U+FFFD: a format character (a bidirectional
// override such as U+202E, a zero-width space or joiner, the BOM) or a
// line or paragraph separator. Those are invisible, or turn the text
// around them, so that "mdns:office" and "mdns:office\u200b" read alike in
// the file and in every message that names them, each pinned to its own
// key; group and member names refuse them for the same reason
// (wire.CheckName), and until session 19 pin names took them. A filler
// (wire.Filler: the Hangul filler U+3164, the Braille blank U+2800...),
// drawn as nothing or as a blank, is refused for the same reason, as
// names refuse it (until session 20 pins took them). A file written before
// may hold such a name: it reads, and the messages that name it say which
// line to delete (ChangedError).
func checkPinName(name string) error {
	switch {
	case name == "" || wire.BlankAtEnd(name):
		return fmt.Errorf("%w: %q is empty or starts or ends with a blank", ErrBadPinName, name)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: %q is not UTF-8", ErrBadPinName, name)
	case strings.ContainsFunc(name, unicode.IsControl):
		return fmt.Errorf("%w: %q holds a control character", ErrBadPinName, name)
	case strings.ContainsFunc(name, wire.Unshown):
		return fmt.Errorf("%w: %q holds an invisible format character or a line separator (U+%04X), which would let it pass for another name", ErrBadPinName, name, first(name, wire.Unshown))
	case strings.ContainsFunc(name, wire.Filler):
		return fmt.Errorf("%w: %q holds a character shown as nothing or as a blank (U+%04X), which would let it pass for another name", ErrBadPinName, name, first(name, wire.Filler))
	}
	return nil
}

// first returns the first character of s that is, or 0.
func first(s string, is func(rune) bool) rune {
	for _, r := range s {
		if is(r) {
			return r
		}
	}
	return 0
}

// read returns the file's pins in its order; a name pinned twice (a file
// edited by hand) counts at its last line. It reads in one pass: a file
// written before addresses were bounded (MaxAddressPins) may hold any
// number of them, and comparing each line with the pins before it took
// 15.7 s for 100,000 pins, at every lookup.
func (k *KnownHosts) read() (pinList, error) {
	var pins pinList
	at := make(map[string]int) // each name's line in pins
	twice := false             // a name's earlier line is blanked (name "")
	f, err := lockfile.Open(k.path)
	if errors.Is(err, fs.ErrNotExist) {
		return pins, nil
	}
	if err != nil {
		return nil, fmt.Errorf("known registries: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	line := 1
	for ; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		// The fingerprint is the last field; a name (an mDNS instance) may
		// contain spaces.
		i := strings.LastIndexByte(text, ' ')
		if i < 0 {
			return nil, fmt.Errorf("known registries: %s:%d: want \"NAME FINGERPRINT\"", k.path, line)
		}
		name := strings.TrimSpace(text[:i])
		fp, err := wire.ParseFingerprint(text[i+1:])
		if name == "" || err != nil {
			return nil, fmt.Errorf("known registries: %s:%d: want \"NAME FINGERPRINT\"", k.path, line)
		}
		if i, ok := at[name]; ok {
			pins[i].name, twice = "", true
		}
		at[name] = len(pins)
		pins = append(pins, pin{name, fp})
	}
	if err := sc.Err(); err != nil {
		// A line over the scanner's 64 KiB, say: the file and the line
		// to mend are named, as for a line that does not read.
		return nil, fmt.Errorf("known registries: %s:%d: %w", k.path, line, err)
	}
	if twice {
		pins = slices.DeleteFunc(pins, func(p pin) bool { return p.name == "" })
	}
	return pins, nil
}

// lock takes the lock of the file's writers (another process's, or another
// KnownHosts' on the same path), waiting for it at most locker.Wait
// (ErrPinsLocked) or until ctx ends, and returns what releases it. The lock file stays:
// removing it would let a writer lock a file another has just replaced.
func (k *KnownHosts) lock(ctx context.Context) (unlock func(), err error) {
	path := k.target()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("known registries: %w", err)
	}
	f, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("known registries: %w", err)
	}
	l := k.locker
	l.Wait = cmp.Or(l.Wait, pinsLockWait)
	wait := l.Wait
	if err := l.Lock(ctx, f); err != nil {
		f.Close()
		if errors.Is(err, lockfile.ErrHeld) {
			return nil, fmt.Errorf("%w: %s held for over %v; nothing was written (a huddle command stopped with ^Z holds it: resume or end it)", ErrPinsLocked, f.Name(), wait)
		}
		return nil, fmt.Errorf("known registries: lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil
}

// target is the file k.path names: lockfile.Target. Changes are written
// there, and locked beside it.
func (k *KnownHosts) target() string { return lockfile.Target(k.path) }

// write replaces the file whole and durably (lockfile.Replace: synced,
// renamed, its directory synced), so a crash, a power cut among them,
// never leaves it half written or empty: an empty file would trust every
// registry again on its next use. It keeps the pins' order.
func (k *KnownHosts) write(pins pinList) error {
	path := k.target()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("known registries: %w", err)
	}
	var b strings.Builder
	b.WriteString("# huddle: registries this user trusts, pinned on first use (NAME FINGERPRINT), oldest first\n")
	for _, p := range pins {
		fmt.Fprintf(&b, "%s %s\n", p.name, p.fp)
	}
	if err := lockfile.Replace(path, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("known registries: %w", err)
	}
	return nil
}
