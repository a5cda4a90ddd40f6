package cell

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/wire"
)

// Learning the members: a member's transport accepts the keys of the
// configuration in its raft state (and of the members it was started
// with, Config.Peers, only while that configuration does not list it:
// node.go, accepted). A member that was away while the cell changed (another
// member replaced: a new one added, the old one removed) knows neither
// the new member's key nor the change, and refuses the new member's
// connections: if the new member leads, the returning one never catches
// up, and once it is needed for a majority the cell cannot elect. So a
// member that hears from no leader asks the members it knows for the
// cell's configuration (a stream of kind kindMembers), and accepts the
// keys they name until raft's own configuration, applied from a leader,
// takes over. It trusts them as far as it trusts their raft entries. A
// daemon that is no member (waiting to be added, or removed) does not ask.

// learnEvery is how often a member that knows of no leader asks.
const learnEvery = time.Second

// Limits of a members answer: a count u8, then per member its
// fingerprint [32], its address's length u8 and the address.
const (
	maxLearnedMembers = 2 * wire.MaxReplicas
	maxLearnedAddr    = 255
)

// learnLoop asks the members this node knows for the cell's configuration
// while it is a member that knows of no leader, or one that has not heard
// from the cell since it started (heard: Serving; asked again at once as
// it comes to know of a leader), and forgets what it learnt once its own
// configuration names the leader it knows, until the node closes.
func (n *Node) learnLoop() {
	defer n.wg.Done()
	tick := time.NewTicker(or(n.cfg.learnEvery, learnEvery))
	defer tick.Stop()
	for {
		switch leader, ok := n.Leader(); {
		case n.learning():
			n.learnMembers(true)
		case !n.heard.Load() && n.Member():
			n.learnMembers(false) // whether a majority lists it, only
		case ok:
			n.forgetLearned(leader)
		}
		select {
		case <-n.closing:
			return
		case <-tick.C:
		case <-n.learnWake:
		}
	}
}

// learning reports whether this node should ask the members it knows for
// the cell's: it is a member, and knows of no leader. A daemon waiting to
// be added, or removed, has nothing to learn, and its key is no member's:
// the others would refuse its connections, and log each.
func (n *Node) learning() bool {
	_, ok := n.Leader()
	return !ok && n.Member()
}

// memberList is a member's answer to a members stream, or why none came.
type memberList struct {
	p   Peer
	ms  []Peer
	err error
}

// learnMembers asks each member the transport knows for its configuration,
// all at once, and notes whether a majority lists this member (noteHeard)
// as the answers come; with learn set, it accepts the members named, and
// notes the members that refused its key (noteRefused).
func (n *Node) learnMembers(learn bool) {
	var learned []Peer
	refused := make(map[wire.Fingerprint]bool)
	named := make(map[wire.Fingerprint]bool) // the members whose configuration lists this one
	peers := slices.DeleteFunc(n.tr.peerList(), func(p Peer) bool { return p == n.self })
	answers := make(chan memberList, len(peers))
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), progressTimeout)
			defer cancel()
			ms, err := n.askMembers(ctx, p.Addr)
			answers <- memberList{p: p, ms: ms, err: err}
		})
	}
	for range peers {
		a := <-answers
		if a.err != nil {
			if refusedKey(a.err) {
				refused[a.p.Fingerprint] = true
			}
			n.cfg.Logger.Debug("cell: could not ask a member for the cell's members", "member", a.p.Addr, "err", a.err)
			continue
		}
		for _, m := range a.ms {
			if !slices.Contains(learned, m) {
				learned = append(learned, m)
			}
			if m.Fingerprint == n.self.Fingerprint {
				named[a.p.Fingerprint] = true
			}
		}
		n.noteHeard(named) // at once: the others may be slow, or down
	}
	wg.Wait()
	if !learn {
		return
	}
	n.noteRefused(refused)
	if len(learned) == 0 {
		return // none answered: what was learnt before stays
	}
	n.learnMu.Lock()
	added := slices.ContainsFunc(learned, func(p Peer) bool { return !slices.Contains(n.learned, p) })
	n.learned = learned
	n.learnMu.Unlock()
	if added {
		n.cfg.Logger.Info("cell: learnt the cell's members from a member", "members", len(learned))
		n.refreshPeers()
	}
}

// A member removed whose removal's entry never reached it (the leader
// stops replicating to a member as it appends its removal, after one
// last try, which a dropped connection or a busy network loses) still
// finds itself in its configuration: it would stand for election without
// end, refused by the others, and its daemon would serve the cell's
// groups from a log that no longer advances (fetches, watches, the
// registry's listing) and answer sends naming no leader. It asks the
// members for the cell's configuration like any member that knows of no
// leader, and each that appended its removal refuses its key (SetPeers):
// once a majority of its configuration's voters refused it in one round
// (it can then neither lead nor follow a leader of that configuration),
// it takes itself as removed (noteRefused) and tells its daemon, which
// stops serving the groups, as if it had applied its removal. The
// others refuse a key only once they appended a configuration without it
// (appendedConfig), which a majority of them must before the cell
// commits it: a member that is down, or slow, answers no refusal, and is
// not counted. Once the member hears from a leader after
// all (added again), the next configuration it applies says whether it is
// a member, as for any member removed (watchLeader, applied).

// noteRefused takes this member as removed if a majority of its
// configuration's voters are in refused (their keys): they refused its
// key.
func (n *Node) noteRefused(refused map[wire.Fingerprint]bool) {
	if len(refused) == 0 || !n.Member() {
		return
	}
	n.learnMu.Lock()
	c := n.conf.Clone()
	n.learnMu.Unlock()
	self := raft.ServerID(n.self.Fingerprint.String())
	var left raft.Configuration
	voters, refusing := 0, 0
	for _, s := range c.Servers {
		if s.Suffrage == raft.Voter {
			voters++
		}
		if s.ID == self {
			continue
		}
		left.Servers = append(left.Servers, s)
		if fp, err := wire.ParseFingerprint(string(s.ID)); err == nil && s.Suffrage == raft.Voter && refused[fp] {
			refusing++
		}
	}
	if len(left.Servers) == len(c.Servers) || refusing < voters/2+1 {
		return // not in it, or no majority of its voters refuses
	}
	if _, ok := n.Leader(); ok {
		return // heard from one meanwhile
	}
	n.refusedOut.Store(true)
	n.cfg.Logger.Warn("cell: a majority of the cell's members refuse this daemon's key: it was removed from the cell, and never had the entry that removes it")
	n.noteConfig(left)
}

// noteHeard takes this member as heard from the cell since it started
// (heard, which Serving waits for) if a majority of its configuration's
// voters, itself among them, are itself or in named: their configurations
// list it.
//
// Why a majority: each member answers raft's latest configuration, with
// the changes it appended and has not applied yet. A member removed while
// it was down was removed by a configuration a majority of the new
// configuration's voters appended (raft committed it), and none of them
// lists it: those that may, with it, are fewer than half of the old
// configuration's voters, which are one more (3 -> 2: none; 5 -> 4: one of
// four, and it makes two of five).
func (n *Node) noteHeard(named map[wire.Fingerprint]bool) {
	if n.heard.Load() {
		return
	}
	n.learnMu.Lock()
	c := n.conf.Clone()
	n.learnMu.Unlock()
	voters, naming := 0, 0
	for _, s := range c.Servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		if fp, err := wire.ParseFingerprint(string(s.ID)); err == nil && (fp == n.self.Fingerprint || named[fp]) {
			naming++
		}
	}
	if voters > 0 && naming >= voters/2+1 && !n.heard.Swap(true) {
		n.cfg.Logger.Info("cell: a majority of the cell's members list this daemon", "members", naming)
		n.checkServing()
	}
}

// forgetLearned forgets the members learnt, once the configuration the
// transport's members were last set from (raft's own, applied from the
// log) names leader: it has taken over, and a member it no longer lists
// (removed since) must not stay accepted by what was learnt.
func (n *Node) forgetLearned(leader Peer) {
	n.learnMu.Lock()
	defer n.learnMu.Unlock()
	if len(n.learned) == 0 || !slices.ContainsFunc(n.conf.Servers, func(s raft.Server) bool {
		return s.ID == raft.ServerID(leader.Fingerprint.String())
	}) {
		return
	}
	n.learned = nil
	n.applyPeersLocked()
}

// askMembers asks the member at addr for the members of its configuration.
// A question unanswered by ctx's deadline drops the connection, as a
// progress question's does (Transport.unanswered).
func (n *Node) askMembers(ctx context.Context, addr string) ([]Peer, error) {
	str, conn, err := n.tr.open(ctx, addr, question(kindMembers))
	if err != nil {
		return nil, err
	}
	defer str.CancelRead(streamClosed)
	defer str.Close()
	if d, ok := ctx.Deadline(); ok {
		str.SetReadDeadline(d)
	}
	p, err := io.ReadAll(io.LimitReader(str, 1+maxLearnedMembers*(32+1+maxLearnedAddr)+1))
	if err != nil {
		n.tr.unanswered(addr, conn, err)
		return nil, err
	}
	return decodeMembers(p)
}

// decodeMembers decodes a members answer. A member whose address is not
// one to dial (wire.Dialable) is skipped, the others kept: a configuration
// made before session 20, when raft took any address, may hold one
// ("box:http"), or before session 22 one at an unspecified or multicast
// host ("0.0.0.0:7001"), and every member's answer names it while it is a
// member.
// Refused whole for it (session 20), those answers taught a member that
// was away no member at all, the replaced one's successor included, while
// the cell held it: its repair (cell_add its key at a dialable host:port,
// which moves it) is such a time. Such a member could not have the cell's
// groups registered anyway (a registry refuses replicas it would not
// dial), and this member neither dials nor lists it from here.
func decodeMembers(p []byte) ([]Peer, error) {
	r := reader{p: p}
	count := r.u8("members")
	if r.err == nil && count > maxLearnedMembers {
		r.fail("%d members, at most %d", count, maxLearnedMembers)
	}
	var ms []Peer
	for i := 0; i < int(count) && r.err == nil; i++ {
		var m Peer
		r.fixed(m.Fingerprint[:], "fingerprint")
		m.Addr = string(r.bytes(int(r.u8("address length")), "address"))
		if r.err == nil && !wire.Dialable(m.Addr) {
			continue
		}
		if r.err == nil {
			if err := m.check(); err != nil {
				r.fail("member %d: %v", i, err)
			}
		}
		ms = append(ms, m)
	}
	if r.err == nil && len(r.p) != 0 {
		r.fail("%d bytes after the members", len(r.p))
	}
	if r.err != nil {
		return nil, fmt.Errorf("cell: members answer: %w", r.err)
	}
	return ms, nil
}

// serveMembers answers a members stream with this member's latest
// configuration, if it is in it (a member removed answers none).
func (n *Node) serveMembers(_ context.Context, _ wire.Fingerprint, str *quic.Stream) {
	b := []byte{0}
	if r := n.running(); r != nil && n.Member() {
		if f := r.GetConfiguration(); f.Error() == nil {
			b = appendMembers(b[:0], f.Configuration())
		}
	}
	str.SetWriteDeadline(time.Now().Add(progressTimeout))
	str.Write(b)
	str.Close()
}

// appendMembers appends a members answer for configuration c.
func appendMembers(dst []byte, c raft.Configuration) []byte {
	at := len(dst)
	dst = append(dst, 0)
	count := 0
	for _, s := range c.Servers {
		fp, err := wire.ParseFingerprint(string(s.ID))
		if err != nil || len(s.Address) > maxLearnedAddr || count == maxLearnedMembers {
			continue
		}
		dst = append(dst, fp[:]...)
		dst = append(dst, byte(len(s.Address)))
		dst = append(dst, s.Address...)
		count++
	}
	dst[at] = byte(count)
	return dst
}
