package store

// The senders of a log's messages.
//
// Each segment has a sender dictionary (columns.senders): each sender of
// its messages once, which its sender column indexes, so that a segment
// holds everything its messages say. The entries are pointers to senders
// interned for the whole log: a member's sender is one object however many
// segments hold its messages, and a segment pays a pointer for it. A chat
// that moves a thousand members through every segment thus costs 2 bytes a
// message in dictionaries, not 12 (BenchmarkOverhead).
//
// The interned senders are counted by the segments whose dictionaries hold
// them, and forgotten when the last such segment is evicted, so the log
// keeps no sender none of its messages names: a member that renames itself
// before every message costs the log one sender per message held, never
// more than retention holds. A sender is immutable once interned; readers
// read it without a lock, and an evicted one stays valid for as long as a
// reader holds it.

// sharedSender is an interned sender. Only Sender is read by readers; the
// other fields are the writer's, guarded by Log.mu.
type sharedSender struct {
	Sender
	refs int      // segments whose dictionary holds it
	seg  *segment // the newest of them,
	ix   uint32   // and its index in that segment's dictionary
}

// senderIndex returns the index of from in s's dictionary, interning it
// and adding it to the dictionary if need be. Consecutive messages from one
// sender (a batch) find it at once. s is the active segment; l.mu is held.
func (l *Log) senderIndex(s *segment, from *Sender) uint32 {
	if s.n > 0 && s.w.senders[s.lastFrom].Sender == *from {
		return s.lastFrom
	}
	sh := l.senders[*from]
	if sh == nil {
		sh = &sharedSender{Sender: *from}
		l.senders[*from] = sh
	}
	if sh.seg != s {
		sh.seg, sh.ix = s, uint32(len(s.w.senders))
		sh.refs++
		// Appending in place is safe: readers' dictionaries end before the
		// new entry, and they see it only in the columns published here.
		c := *s.w
		c.senders = append(c.senders, sh)
		s.w = &c
		s.cols.Store(s.w)
	}
	s.lastFrom = sh.ix
	return sh.ix
}

// forgetSenders uncounts the senders of an evicted segment, forgetting
// those no held segment names. l.mu is held.
func (l *Log) forgetSenders(s *segment) {
	for _, sh := range s.w.senders {
		if sh.refs--; sh.refs == 0 {
			delete(l.senders, sh.Sender)
		}
	}
}
