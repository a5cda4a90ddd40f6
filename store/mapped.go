package store

import (
	"time"
)

// Mapped segments: the history a disk log reads back when it opens is not
// copied into the heap. Each segment file is mapped read-only (mapFile),
// and the memory log holds its messages as segments whose slab is the
// mapping: their columns (time, ID, sender, where the body is: 36 bytes a
// message) are in the heap, their bodies are read from the page cache,
// where the file's pages are anyway. Opening a log of 1,000,000 messages
// of 256 bytes thus allocates 36 MB of columns and not 256 MB of bodies,
// which on the test machine cost more to fault into fresh memory than
// everything else the open does (BENCHMARKS.md, "Durable groups").
// Messages appended after the open go into heap segments as usual.
//
// A file's messages are cut into segments as Append would cut them (at
// most SegmentSize messages, an eighth of MaxBytes), so retention evicts
// them as it would have before the restart. A mapped segment is never
// written. A mapping is unmapped once every segment of its file has been
// evicted and mapGrace has passed since (the next eviction, Expire or Close
// after that does it), so that a query that took bodies before the eviction can
// finish with them: queries hand bodies to the daemon's handlers, which
// encode them into frames within a write timeout far shorter than that.
// Where the disk is full, a mapping whose file retention deletes is
// detached instead (room.go): a copy of its bytes takes its place, so that
// the file's space comes back at once, and the copy is unmapped as the
// mapping would have been. Files whose messages retention evicts as they
// are read back are unmapped before the log is served: nothing read them.
// Close unmaps everything: nothing may use a message read from the log
// after it.

// mapGrace is how long a mapping outlives the eviction of its last
// segment.
const mapGrace = 2 * time.Minute

// mapping is one mapped segment file, shared by the memory segments that
// hold its messages.
type mapping struct {
	release func() // unmaps
	// detach copies the first n bytes of the file mapping into anonymous
	// memory (Linux: copyMapping); place puts the copy in the mapping's
	// place, so that the file's space comes back once it is deleted, and
	// drop discards it. nil where the file is not mapped.
	detach   func(n int) (place func() error, drop func(), err error)
	valid    int  // the bytes read back: the messages' bodies are in them
	detached bool // guarded by Log.mu
	// detaching: a copy is being made, without Log.mu (room.go); an
	// unmap meanwhile leaves the release to the copier. Guarded by
	// Log.mu.
	detaching bool
	refs      int  // memory segments not evicted; guarded by Log.mu
	done      bool // unmapped; guarded by Log.mu
}

func (m *mapping) unmap() {
	if !m.done {
		m.done = true
		if !m.detaching {
			m.release()
		}
	}
}

// retired is a mapping whose segments were all evicted, waiting out its
// grace.
type retired struct {
	m  *mapping
	at time.Time
}

// mappedFile collects the messages read back from one segment file: slot
// i is message base+i, its body file[starts[i]:ends[i]] and its sender
// dict[from[i]].
type mappedFile struct {
	base     uint64
	prevTime int64 // the time of message base-1
	times    []int64
	starts   []uint32
	ends     []uint32
	from     []uint32
	ids      [][16]byte
	dict     []Sender
	file     []byte
	m        *mapping
}

func (mf *mappedFile) len() int { return len(mf.times) }

// appendMapped stores the messages of mf, which follow on from the log's
// tail, in segments whose slab is the file's mapping, cut as put cuts
// heap segments; then applies retention. It is the read back's Append:
// nothing is copied, the columns are taken as they are. l.holdBack is off.
// If mf holds no message, its mapping is released at once.
func (l *Log) appendMapped(mf *mappedFile) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := mf.len()
	if n == 0 {
		mf.m.unmap()
		return
	}
	// The file's dictionary, interned once; each segment shares it.
	dict := make([]*sharedSender, len(mf.dict))
	for i, snd := range mf.dict {
		sh := l.senders[snd]
		if sh == nil {
			sh = &sharedSender{Sender: snd}
			l.senders[snd] = sh
		}
		dict[i] = sh
	}
	segs := l.segs
	for i := 0; i < n; {
		j, used := i, 0
		for j < n && j-i < l.lim.segMessages {
			b := int(mf.ends[j] - mf.starts[j])
			if j > i && used+b > l.lim.segBytes {
				break
			}
			used += b
			j++
		}
		s := &segment{base: mf.base + uint64(i), firstTime: mf.times[i], n: j - i, used: used, lastTime: mf.times[j-1], mapped: mf.m}
		s.w = &columns{times: mf.times[i:j:j], ends: mf.ends[i:j:j], starts: mf.starts[i:j:j],
			from: mf.from[i:j:j], ids: mf.ids[i:j:j], slab: mf.file, senders: dict}
		s.cols.Store(s.w)
		for _, sh := range dict {
			sh.refs++
			sh.seg, sh.ix = s, 0 // not the active segment: senderIndex adds it anew
		}
		mf.m.refs++
		segs = append(segs, s)
		l.bytes.Add(int64(used))
		l.appended.Add(uint64(used))
		i = j
	}
	for i := range n {
		seq := mf.base + uint64(i)
		if seq >= l.dedupFrom {
			l.dedup.add(mf.ids[i], seq, mf.times[i])
		}
	}
	l.lastSeq, l.lastTime = mf.base+uint64(n-1), mf.times[n-1]
	l.held += n
	l.publish(segs)
	l.last.Store(l.lastSeq)
	l.retain(l.lastTime)
}

// evicted is called for each segment retention or startAt drops: a mapped
// one's mapping is retired once none of its segments is held, and the
// mappings whose grace is over are unmapped (and by Expire: the space of a
// deleted file comes back only then). l.mu is held.
func (l *Log) evictedSeg(s *segment) {
	if s.mapped == nil {
		return
	}
	now := time.Now()
	if s.mapped.refs--; s.mapped.refs == 0 {
		l.retired = append(l.retired, retired{m: s.mapped, at: now})
	}
	l.unmapRetired(now)
}

// unmapRetired unmaps the retired mappings whose grace is over as of now.
// l.mu is held.
func (l *Log) unmapRetired(now time.Time) {
	k := 0
	for k < len(l.retired) && now.Sub(l.retired[k].at) >= mapGrace {
		l.retired[k].m.unmap()
		k++
	}
	if k > 0 {
		l.retired = append(l.retired[:0], l.retired[k:]...)
	}
}

// unmapAll unmaps every mapping the log holds, evicted or not: the log is
// closed, and nothing reads it any more.
func (l *Log) unmapAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.retired {
		r.m.unmap()
	}
	l.retired = nil
	for _, s := range l.segs {
		if s.mapped != nil {
			s.mapped.unmap()
		}
	}
}
