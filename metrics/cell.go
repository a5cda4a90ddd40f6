package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// CellStats is a member's view of its cell at scrape time (huddle cell
// status shows the same, for every member).
type CellStats struct {
	Leader       bool
	Term         uint64
	CommitIndex  uint64
	AppliedIndex uint64
	LastIndex    uint64
	// LastContact is how long ago the member heard from the leader: 0 on
	// the leader, negative if never.
	LastContact time.Duration
	Members     int
	// Voter: this member votes (not while it is catching up after being
	// added, nor once removed). CatchingUp: members added and still being
	// brought up to date, which do not vote yet.
	Voter      bool
	CatchingUp int
	// Stall is set while this member's state machine cannot apply what
	// the cell commits (a group log refuses appends: a full disk).
	Stall *CellStall
	// KeyMismatches counts the members' configurations this member found
	// naming, for a member's address, another key than the daemon there
	// presents: the cell was set up with a wrong --cell-peer.
	KeyMismatches int
}

// CellStall is why, and since when, a member's state machine stalled.
type CellStall struct {
	For   time.Duration // how long it has been stalled
	Index uint64        // the raft entry it stalled at
	Cause string        // in brief: "disk full (no space left on device)"
}

// Cell registers a collector that reads a member's view of its cell at
// each scrape. A member's lag is how far its applied index is behind the
// leader's: max(huddle_cell_applied_index) - huddle_cell_applied_index
// across the members.
func (m *Metrics) Cell(stats func() CellStats) {
	if m != nil {
		m.reg.MustRegister(&cellCollector{stats: stats})
	}
}

var (
	descCellLeader  = desc("huddle_cell_leader", "1 if this daemon leads its cell, else 0.")
	descCellTerm    = desc("huddle_cell_term", "The cell's raft term as this member knows it.")
	descCellCommit  = desc("huddle_cell_commit_index", "The last raft entry this member knows is committed.")
	descCellApplied = desc("huddle_cell_applied_index", "The last raft entry this member applied to its groups.")
	descCellLast    = desc("huddle_cell_last_index", "The last raft entry in this member's log.")
	descCellContact = desc("huddle_cell_last_contact_seconds", "Since this member last heard from the leader (0 on the leader; -1: never).")
	descCellMembers = desc("huddle_cell_members", "Members in the cell's configuration.")
	descCellVoter   = desc("huddle_cell_voter", "1 if this daemon votes in its cell; 0 while it catches up after being added, or once removed.")
	descCellCatchUp = desc("huddle_cell_catching_up", "Members of the cell's configuration added and still catching up: they do not vote yet.")
	descCellStalled = desc("huddle_cell_stalled", "1 while this member cannot apply what the cell commits (a group log refuses appends: a full disk), cause in brief; else 0 (cause empty).", "cause")
	descCellStallS  = desc("huddle_cell_stalled_seconds", "How long this member has been unable to apply what the cell commits; 0 when it applies.")
	descCellKeys    = desc("huddle_cell_key_mismatches", "Members' configurations naming, for a member's address, another key than the daemon there presents (a wrong --cell-peer: the cell may not survive its leader's loss); 0 in a cell set up right.")
	descCellStallAt = desc("huddle_cell_stalled_index", "The raft entry this member's state machine stalled at; 0 when it applies.")
)

type cellCollector struct{ stats func() CellStats }

func (c *cellCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCellLeader, descCellTerm, descCellCommit, descCellApplied, descCellLast, descCellContact, descCellMembers, descCellVoter, descCellCatchUp, descCellStalled, descCellStallS, descCellStallAt, descCellKeys} {
		ch <- d
	}
}

func (c *cellCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	leader, voter, contact := 0.0, 0.0, s.LastContact.Seconds()
	if s.Leader {
		leader = 1
	}
	if s.Voter {
		voter = 1
	}
	if s.LastContact < 0 {
		contact = -1
	}
	for _, v := range []struct {
		d *prometheus.Desc
		v float64
	}{
		{descCellLeader, leader}, {descCellTerm, float64(s.Term)}, {descCellCommit, float64(s.CommitIndex)},
		{descCellApplied, float64(s.AppliedIndex)}, {descCellLast, float64(s.LastIndex)},
		{descCellContact, contact}, {descCellMembers, float64(s.Members)},
		{descCellVoter, voter}, {descCellCatchUp, float64(s.CatchingUp)},
		{descCellKeys, float64(s.KeyMismatches)},
	} {
		ch <- prometheus.MustNewConstMetric(v.d, prometheus.GaugeValue, v.v)
	}
	stalled, cause, stallFor, stallAt := 0.0, "", 0.0, 0.0
	if s.Stall != nil {
		stalled, cause, stallFor, stallAt = 1, s.Stall.Cause, s.Stall.For.Seconds(), float64(s.Stall.Index)
	}
	ch <- prometheus.MustNewConstMetric(descCellStalled, prometheus.GaugeValue, stalled, cause)
	ch <- prometheus.MustNewConstMetric(descCellStallS, prometheus.GaugeValue, stallFor)
	ch <- prometheus.MustNewConstMetric(descCellStallAt, prometheus.GaugeValue, stallAt)
}
