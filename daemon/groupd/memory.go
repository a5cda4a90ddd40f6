package groupd

import (
	"github.com/huddle-chat/huddle/daemon/server"
	"github.com/huddle-chat/huddle/store"
)

// What a group daemon keeps besides what its peers make its server hold
// (server.Config.Memory), measured on the reference daemons
// (BENCHMARKS.md, SECURITY.md):
const (
	// messageMemory bounds what the log holds for a message besides its
	// body: its index entry (time, ID, where the body is) and its sender.
	// 33-35 B measured (store's BenchmarkOverhead); 259 B when every
	// message comes from a sender, or a name, of its own, which a member
	// renaming itself before each message can make so (SECURITY.md,
	// "Senders in the log").
	messageMemory = 264
	// dedupMemory is a log's dedup window at its default, full.
	dedupMemory = 4 << 20
)

// Memory returns the most memory a group daemon with this configuration
// may use: its peers' and its groups' logs at full retention.
func (c Config) Memory() server.Memory {
	r := c.Retention
	perGroup := orDefault(r.MaxBytes, store.DefaultMaxBytes) + int64(orDefault(r.MaxMessages, store.DefaultMaxMessages))*messageMemory + dedupMemory
	return c.Server.Memory(int64(len(c.Groups)) * perGroup)
}
