package cell

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"slices"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// hclogFor returns l as the hclog.Logger hashicorp/raft logs to, under
// name. Raft's trace and debug lines go to slog's debug level.
func hclogFor(l *slog.Logger, name string) hclog.Logger {
	return &hclogAdapter{l: l.With("component", name), name: name}
}

// hclogAdapter is an hclog.Logger writing to a *slog.Logger.
type hclogAdapter struct {
	l    *slog.Logger
	name string
	args []any
}

func level(l hclog.Level) slog.Level {
	switch {
	case l <= hclog.Debug:
		return slog.LevelDebug
	case l == hclog.Info:
		return slog.LevelInfo
	case l == hclog.Warn:
		return slog.LevelWarn
	}
	return slog.LevelError
}

// raftNoPeers is raft's warning, once per wait, that it has no
// configuration to stand for election in: a member that joins (Join) has
// none until the cell adds it, which is the wait it was started for.
// waitingToJoin says so instead, at info level.
const (
	raftNoPeers   = "no known peers, aborting election"
	waitingToJoin = "cell: not in the cell yet: waiting to be added (huddle cell add, on a member); no election until then"
)

// raftRestoreFailed is raft's error line for a snapshot its state machine
// did not restore (at start, and one the leader sent). One refused because
// the member is closing (fsm.closingRefusal) is expected, not an error:
// restoreRefusedClosing says so at info level. Logged as an error until
// session 23.
//
// raftInstallFailed is the leader's error line for a snapshot it sent
// that the member did not take: a member that refused it because it is
// closing answers with that refusal's text (a remoteError), and
// sentRefusedClosing says so at info level.
const (
	raftRestoreFailed     = "failed to restore snapshot"
	restoreRefusedClosing = "cell: snapshot not restored: this member is closing (expected: it is restored, or sent again, at its next start)"
	raftInstallFailed     = "failed to install snapshot"
	sentRefusedClosing    = "cell: a member did not restore the snapshot sent: it is closing (expected: it is sent again once the member is back)"
)

// raftNewerTerm is a leader's error line, per member, when a member
// answers with a newer term: another member stood for election (after a
// partition or a pause), and this leader steps down. That is raft working
// as meant, said once per member at every deposition, not an error:
// deposedByTerm says so at info level (logged as an error until session
// 23, which had operators of a healthy cell looking for a fault).
const (
	raftNewerTerm = "peer has newer term, stopping replication"
	deposedByTerm = "cell: a member has a newer term (it stood for election): this member steps down as leader"
)

// restoreClosing reports whether an error among raft's args is a restore
// refused as the member closes: one wrapping ErrClosed, or holding its
// text (raft formats the error of a snapshot the leader sent with %v,
// which drops what it wraps, and the leader reads the member's answer as
// text: remoteError).
func restoreClosing(args []any) bool {
	for _, a := range args {
		if err, ok := a.(error); ok && (errors.Is(err, ErrClosed) || strings.Contains(err.Error(), ErrClosed.Error())) {
			return true
		}
	}
	return false
}

func (a *hclogAdapter) Log(l hclog.Level, msg string, args ...any) {
	lv := level(l)
	switch {
	case msg == raftNoPeers:
		lv, msg = slog.LevelInfo, waitingToJoin
	case lv > slog.LevelDebug && aboutLink(msg, args):
		lv = slog.LevelDebug
	case msg == raftRestoreFailed && restoreClosing(args):
		lv, msg = slog.LevelInfo, restoreRefusedClosing
	case msg == raftInstallFailed && restoreClosing(args):
		lv, msg = slog.LevelInfo, sentRefusedClosing
	case msg == raftNewerTerm:
		lv, msg = slog.LevelInfo, deposedByTerm
	}
	a.l.Log(context.Background(), lv, msg, formatted(args)...)
}

// formatted replaces raft's hclog.Fmt values (a format and its operands,
// which slog would print as the bare list) with the text they stand for.
// The caller's args are not changed.
func formatted(args []any) []any {
	out := args
	for i, v := range args {
		f, ok := v.(hclog.Format)
		if !ok || len(f) == 0 {
			continue
		}
		format, ok := f[0].(string)
		if !ok {
			continue
		}
		if &out[0] == &args[0] {
			out = slices.Clone(args)
		}
		out[i] = fmt.Sprintf(format, f[1:]...)
	}
	return out
}

// aboutLink reports whether raft's line msg is about the link to a member
// failing or coming back, which the transport reports itself, once per
// change (links.go): an RPC whose error is the link's (every heartbeat to
// a member that is down fails), or raft's own notes of a member it has not
// heard from or replicates to again. Raft's errors at its own shutdown
// are not news either.
func aboutLink(msg string, args []any) bool {
	switch msg {
	case "failed to contact", "aborting pipeline replication", "pipelining replication":
		return true
	}
	for _, a := range args {
		if err, ok := a.(error); ok && (isLinkError(err) || errors.Is(err, raft.ErrTransportShutdown)) {
			return true
		}
	}
	return false
}
func (a *hclogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *hclogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *hclogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *hclogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *hclogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }

func (a *hclogAdapter) enabled(l slog.Level) bool { return a.l.Enabled(context.Background(), l) }
func (a *hclogAdapter) IsTrace() bool             { return a.enabled(slog.LevelDebug) }
func (a *hclogAdapter) IsDebug() bool             { return a.enabled(slog.LevelDebug) }
func (a *hclogAdapter) IsInfo() bool              { return a.enabled(slog.LevelInfo) }
func (a *hclogAdapter) IsWarn() bool              { return a.enabled(slog.LevelWarn) }
func (a *hclogAdapter) IsError() bool             { return a.enabled(slog.LevelError) }

func (a *hclogAdapter) ImpliedArgs() []any { return a.args }
func (a *hclogAdapter) With(args ...any) hclog.Logger {
	return &hclogAdapter{l: a.l.With(args...), name: a.name, args: append(append([]any(nil), a.args...), args...)}
}
func (a *hclogAdapter) Name() string { return a.name }
func (a *hclogAdapter) Named(name string) hclog.Logger {
	return &hclogAdapter{l: a.l.With("sub", name), name: a.name + "." + name, args: a.args}
}
func (a *hclogAdapter) ResetNamed(name string) hclog.Logger {
	return &hclogAdapter{l: a.l, name: name, args: a.args}
}

// SetLevel does nothing: the slog handler decides what is written.
func (a *hclogAdapter) SetLevel(hclog.Level) {}

// GetLevel returns the most verbose level the handler writes.
func (a *hclogAdapter) GetLevel() hclog.Level {
	switch {
	case a.IsDebug():
		return hclog.Debug
	case a.IsInfo():
		return hclog.Info
	case a.IsWarn():
		return hclog.Warn
	}
	return hclog.Error
}

func (a *hclogAdapter) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return slog.NewLogLogger(a.l.Handler(), slog.LevelInfo)
}

func (a *hclogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		a.l.Info(string(p))
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// logger returns l, or a logger that discards.
func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
