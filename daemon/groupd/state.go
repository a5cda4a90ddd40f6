package groupd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/huddle-chat/huddle/identity"
	"github.com/huddle-chat/huddle/wire"
)

// The group daemon's state directory:
//
//	key.pem                 the daemon's key (identity.KeyFile)
//	groups.json             {"<group name>": "<uuid>", ...}: each name's UUID, kept forever
//	members-<uuid>.json     one group's members, rewritten on each join and leave
//
// Messages are not kept: the log is in memory, and each start begins a new
// epoch.
const groupsFile = "groups.json"

func membersFile(g wire.UUID) string { return "members-" + g.String() + ".json" }

// membersDoc is the content of a members file.
type membersDoc struct {
	Group   wire.UUID      `json:"group"`
	Members []memberRecord `json:"members"`
}

type memberRecord struct {
	Fingerprint wire.Fingerprint `json:"fingerprint"`
	Name        string           `json:"name"`
	Joined      int64            `json:"joined_unix_ns"`
}

// loadGroupIDs reads groups.json and gives every name in names a UUID,
// making a new (v4) one for a name seen for the first time and saving the
// file if it did. Names no longer configured keep their UUIDs in the file, so
// a group that comes back is the same group; a name stored before the
// rules refused it is renamed (wire.ShownName), logged to log.
func loadGroupIDs(dir string, names []string, log *slog.Logger) (map[string]wire.UUID, error) {
	path := filepath.Join(dir, groupsFile)
	ids := make(map[string]wire.UUID)
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("load group ids: %w", err)
	default:
		if err := json.Unmarshal(data, &ids); err != nil {
			return nil, fmt.Errorf("load group ids: %s: %v: %w", path, err, ErrBadState)
		}
		if err := checkGroupIDs(path, ids); err != nil {
			return nil, err
		}
	}
	changed := false
	// A name stored before the rules refused it (a filler, since session
	// 20; a blank at either end, since session 23) can no longer be
	// configured: its entry takes the name wire.ShownName reads it as, the
	// one it showed as, so that the group configured under that name
	// keeps its UUID (its members, its log, the UUID its users and
	// registries know) instead of becoming a new group, unless another
	// entry holds that name already. The first in name order wins a name
	// two such entries read as.
	for _, old := range slices.Sorted(maps.Keys(ids)) {
		n := wire.ShownName(old)
		if n == old || wire.CheckName(n) != nil {
			continue
		}
		if _, taken := ids[n]; taken {
			log.Warn("groups.json: a group named before the rules refused its name keeps it; another group has the name it shows as",
				"stored", old, "shows_as", n, "uuid", ids[old],
				"to_serve_it", "stop the daemon, give the entry a free name in "+path+", start it with --group that name")
			continue
		}
		ids[n] = ids[old]
		delete(ids, old)
		changed = true
		log.Info("groups.json: a group named before the rules refused its name takes the name it shows as, keeping its UUID",
			"stored", old, "name", n, "uuid", ids[n])
	}
	for _, n := range names {
		if _, ok := ids[n]; !ok {
			ids[n] = uuid.New()
			changed = true
		}
	}
	if changed {
		data, err := json.MarshalIndent(ids, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("save group ids: %w", err)
		}
		if err := writeFileAtomic(path, append(data, '\n')); err != nil {
			return nil, fmt.Errorf("save group ids: %w", err)
		}
	}
	return ids, nil
}

// checkGroupIDs refuses a groups.json whose UUIDs cannot be what the
// daemon wrote: the all-zero UUID (no group has it), or one UUID for two
// names (one group would hide the other). Replacing either silently would
// give a group a new identity: its registrations, its members file and the
// UUID its users know would all belong to another group.
func checkGroupIDs(path string, ids map[string]wire.UUID) error {
	names := make(map[wire.UUID]string, len(ids))
	for _, name := range slices.Sorted(maps.Keys(ids)) {
		id := ids[name]
		if id == (wire.UUID{}) {
			return fmt.Errorf("load group ids: %s gives group %q the all-zero UUID, which no group has: the file is damaged. "+
				"Restore it from a backup; or, to give %q a new UUID (a new group to its users and the registry), remove its entry: %w",
				path, name, name, ErrBadState)
		}
		if other, ok := names[id]; ok {
			return fmt.Errorf("load group ids: %s gives groups %q and %q the same UUID %s: the file is damaged. "+
				"Restore it from a backup; or remove the entry of the group that should get a new UUID: %w",
				path, other, name, id, ErrBadState)
		}
		names[id] = name
	}
	return nil
}

// checkKeyKept refuses a state directory that holds members files but no
// key, unless newIdentity: members joined the daemon under its key, which
// was lost (or the files were copied without it), and creating one would
// silently change the fingerprint its registrations and its users know it
// by. A groups.json alone beside no key is allowed (an operator may write
// one to choose the groups' UUIDs), but warned about, loudly: warn is set.
func checkKeyKept(dir string, newIdentity bool) (warn string, err error) {
	if _, err := os.Stat(filepath.Join(dir, identity.KeyFile)); !errors.Is(err, fs.ErrNotExist) {
		return "", nil // there is a key (or a problem LoadOrCreate will report)
	}
	members, _ := filepath.Glob(filepath.Join(dir, "members-*.json"))
	switch {
	case len(members) > 0 && !newIdentity:
		return "", fmt.Errorf("state directory %s holds %s but no %s: the daemon's key is missing, and a new one would silently "+
			"change its identity. Restore %s from a backup; or, to go on under a new key, start once with --new-identity: the groups "+
			"keep their UUIDs and members, and each member takes the new key with huddle join GROUP --daemon FINGERPRINT (the new "+
			"fingerprint, which the daemon prints as it starts), their commands refusing the group as a key clash until then: %w",
			dir, filepath.Base(members[0]), identity.KeyFile, identity.KeyFile, ErrBadState)
	case len(members) > 0:
		return fmt.Sprintf("creating a new key in %s, which holds members: the daemon's fingerprint changes (--new-identity), "+
			"and each member takes it with huddle join GROUP --daemon FINGERPRINT (this line's fingerprint), their commands "+
			"refusing the group as a key clash until then", dir), nil
	}
	if _, err := os.Stat(filepath.Join(dir, groupsFile)); err == nil {
		return fmt.Sprintf("%s holds %s but no %s: creating a new key. If this daemon ran before, its identity changes: "+
			"stop it and restore %s from a backup", dir, groupsFile, identity.KeyFile, identity.KeyFile), nil
	}
	return "", nil
}

// loadMembers reads a group's members file; a missing file is no members.
func loadMembers(dir string, g wire.UUID) ([]memberRecord, error) {
	path := filepath.Join(dir, membersFile(g))
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load members: %w", err)
	}
	var doc membersDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("load members: %s: %v: %w", path, err, ErrBadState)
	}
	if doc.Group != g {
		return nil, fmt.Errorf("load members: %s holds group %s: %w", path, doc.Group, ErrBadState)
	}
	for i, m := range doc.Members {
		doc.Members[i].Name = wire.ShownName(m.Name)
		if m.Fingerprint.IsZero() || wire.CheckName(doc.Members[i].Name) != nil {
			return nil, fmt.Errorf("load members: %s: member %s named %q: %w", path, m.Fingerprint, m.Name, ErrBadState)
		}
	}
	return doc.Members, nil
}

// saveMembers rewrites a group's members file atomically.
func saveMembers(dir string, g wire.UUID, members []memberRecord) error {
	data, err := json.MarshalIndent(membersDoc{Group: g, Members: members}, "", "  ")
	if err != nil {
		return fmt.Errorf("save members: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, membersFile(g)), append(data, '\n')); err != nil {
		return fmt.Errorf("save members: %w", err)
	}
	return nil
}

// removeStateTemps removes the temporary files of writeFileAtomic that a
// crash between their creation and their rename left in the state
// directory dir, and returns how many. The directory is locked: no write
// of this daemon's is in progress.
func removeStateTemps(dir string) int {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		name := e.Name()
		temp := strings.HasPrefix(name, "."+groupsFile+"-") ||
			strings.HasPrefix(name, ".members-") && strings.Contains(name, ".json-")
		if temp && e.Type().IsRegular() && os.Remove(filepath.Join(dir, name)) == nil {
			n++
		}
	}
	return n
}

// writeFileAtomic replaces path with data (mode 0600) through a synced
// temporary file renamed over it, so a crash leaves the old file or the new
// one, never half of one.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename, a no-op
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil { // make the rename durable too
		d.Sync()
		d.Close()
	}
	return nil
}
