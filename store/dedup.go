package store

// dedup remembers the IDs of the last window stored messages, with the
// sequence number and time each was given.
//
// ring[(seq-1)%window] is the ID stored at seq; adding seq forgets seq-window.
// The ring and map grow as the window fills, so an idle log costs little.
type dedup struct {
	window int
	ring   [][16]byte
	m      map[[16]byte]firstAck
}

type firstAck struct {
	seq  uint64
	time int64
}

func newDedup(window int) dedup {
	return dedup{window: window, m: make(map[[16]byte]firstAck)}
}

func (d *dedup) lookup(id [16]byte) (firstAck, bool) {
	a, ok := d.m[id]
	return a, ok
}

// add remembers id as stored at seq and t; seq must follow the previous add's.
func (d *dedup) add(id [16]byte, seq uint64, t int64) {
	if len(d.ring) < d.window {
		d.ring = append(d.ring, id)
	} else {
		i := (seq - 1) % uint64(d.window)
		delete(d.m, d.ring[i])
		d.ring[i] = id
	}
	d.m[id] = firstAck{seq: seq, time: t}
}
