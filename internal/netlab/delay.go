//go:build linux

package netlab

import (
	"bytes"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Delay is how long a Delayer holds each packet a host receives, as a
// link with latency would: Base, plus a share of Jitter drawn uniformly
// for each packet, so that packets that arrive less than Jitter apart may
// be let through in another order (reordered), as netem's jitter does.
// The zero Delay holds nothing.
type Delay struct {
	// Base is the least time a packet is held.
	Base time.Duration
	// Jitter is the most added to Base, drawn anew for each packet.
	Jitter time.Duration
	// From lists the source addresses (such as "10.77.0.1") whose packets
	// are held; none means every packet the host's LAN interfaces receive.
	From []string
}

func (d Delay) zero() bool { return d.Base <= 0 && d.Jitter <= 0 }

func (d Delay) String() string {
	s := fmt.Sprintf("%v+%v", d.Base, d.Jitter)
	if len(d.From) > 0 {
		s += " from " + strings.Join(d.From, ",")
	}
	return s
}

// Delayer holds the packets one host receives on its LAN interfaces for a
// Delay of its own. There is no sch_netem in the kernels the lab runs on:
// an iptables NFQUEUE rule in the host's namespace queues the packets to a
// netlink socket this process opened in that namespace, and the Delayer
// issues each packet's verdict (accept) once its delay has passed, from
// goroutines of this process. Packets are held on input, at the
// receiver, as netem on an ifb would hold them: held on output they would
// count against the sending TCP socket's small-queue limit and throttle
// it, which no real link's latency does.
//
// The rules live in a chain of their own (huddle-delay, jumped to from
// INPUT) in the host's namespace, and carry --queue-bypass: should the
// Delayer be gone, packets pass. Close removes them and lets every held
// packet go. Make one with Host.Delayer or LAN.DelayerHere; its methods
// fail the test on error. It needs iptables(8) with the NFQUEUE target
// (Debian's iptables package, over nf_tables or legacy) and a kernel with
// nfnetlink_queue; RequireDelay checks for the program.
type Delayer struct {
	t      testing.TB
	name   string
	ifaces []string
	// iptables runs iptables-restore (or iptables) in the host's
	// namespace with args, stdin its input.
	iptables func(stdin string, args ...string) error

	f  *os.File
	rc syscall.RawConn

	mu      sync.Mutex
	delay   Delay
	pending heldQueue // packets waiting for their verdict, soonest first
	closing bool
	held    uint64 // packets held so far
	errs    []error

	wake      chan struct{} // a packet due sooner than the scheduler's timer
	stop      chan struct{}
	scheduled chan struct{} // closed when schedule has let the held packets go
	wg        sync.WaitGroup
}

// queueNum is the NFQUEUE queue a Delayer binds in its namespace: one
// Delayer per namespace, so one queue is enough.
const queueNum = 0

// chain is the iptables chain a Delayer's rules live in.
const chain = "huddle-delay"

// RequireDelay skips t unless iptables(8) is on PATH (the Delayer's rules
// need its NFQUEUE target, which nft(8) cannot write), or fails it when
// CI=true.
func RequireDelay(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("iptables-restore"); err == nil {
		return
	}
	msg := "netlab: delaying packets needs iptables-restore (Debian package iptables)"
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true, so this is a failure, not a skip)", msg)
	}
	t.Skip(msg)
}

// Delayer starts a Delayer on the host, holding nothing until Set.
// t.Cleanup closes it (before the LAN's namespaces go).
func (h *Host) Delayer() *Delayer {
	h.lan.t.Helper()
	return newDelayer(h.lan.t, h.name, "/run/netns/"+h.ns, h.IfaceNames(), func(stdin string, args ...string) error {
		cmd := exec.Command("ip", append([]string{"netns", "exec", h.ns}, args...)...)
		return runIptables(cmd, stdin)
	})
}

// DelayerHere starts a Delayer in the namespace this process runs in, on
// the interface AttachHere made (which must have been called): it holds
// the packets the test itself receives from the LAN.
func (l *LAN) DelayerHere() *Delayer {
	l.t.Helper()
	l.mu.Lock()
	here := l.here
	l.mu.Unlock()
	if here == "" {
		l.t.Fatalf("netlab: DelayerHere before AttachHere")
	}
	return newDelayer(l.t, "here", "", []string{here}, func(stdin string, args ...string) error {
		return runIptables(exec.Command(args[0], args[1:]...), stdin)
	})
}

func runIptables(cmd *exec.Cmd, stdin string) error {
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func newDelayer(t testing.TB, name, nsPath string, ifaces []string, iptables func(string, ...string) error) *Delayer {
	t.Helper()
	RequireDelay(t)
	d := &Delayer{t: t, name: name, ifaces: ifaces, iptables: iptables, wake: make(chan struct{}, 1), stop: make(chan struct{}),
		scheduled: make(chan struct{})}
	fd, err := netlinkIn(nsPath)
	if err != nil {
		t.Fatalf("netlab: delayer on %s: netlink socket: %v", name, err)
	}
	d.f = os.NewFile(uintptr(fd), "nfqueue-"+name)
	if d.rc, err = d.f.SyscallConn(); err != nil {
		d.f.Close()
		t.Fatalf("netlab: delayer on %s: %v", name, err)
	}
	if err := d.bind(); err != nil {
		d.f.Close()
		t.Fatalf("netlab: delayer on %s: bind queue %d: %v", name, queueNum, err)
	}
	rules := fmt.Sprintf("*filter\n:%s - [0:0]\n-A INPUT -j %s\nCOMMIT\n", chain, chain)
	if err := d.iptables(rules, "iptables-restore", "-w", "--noflush"); err != nil {
		d.f.Close()
		t.Fatalf("netlab: delayer on %s: %v", name, err)
	}
	d.wg.Add(2)
	go d.read()
	go d.schedule()
	t.Cleanup(d.Close)
	return d
}

// Set makes the Delayer hold packets for delay from now on (the zero
// Delay: none); packets already held keep the delay they were given.
func (d *Delayer) Set(delay Delay) {
	d.t.Helper()
	var rules strings.Builder
	fmt.Fprintf(&rules, "*filter\n:%s - [0:0]\n", chain) // flushes the chain
	if !delay.zero() {
		for _, ifc := range d.ifaces {
			from := delay.From
			if len(from) == 0 {
				from = []string{""}
			}
			for _, src := range from {
				fmt.Fprintf(&rules, "-A %s -i %s", chain, ifc)
				if src != "" {
					fmt.Fprintf(&rules, " -s %s", src)
				}
				fmt.Fprintf(&rules, " -j NFQUEUE --queue-num %d --queue-bypass\n", queueNum)
			}
		}
	}
	rules.WriteString("COMMIT\n")
	d.mu.Lock()
	d.delay = delay
	d.mu.Unlock()
	if err := d.iptables(rules.String(), "iptables-restore", "-w", "--noflush"); err != nil {
		d.t.Fatalf("netlab: delayer on %s: %v", d.name, err)
	}
}

// Held returns how many packets the Delayer has held so far.
func (d *Delayer) Held() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.held
}

// Close removes the Delayer's rules, lets every packet it holds go, and
// waits for its goroutines. It reports (t.Errorf) what went wrong while
// it ran. It is safe to call twice.
func (d *Delayer) Close() {
	d.mu.Lock()
	if d.closing {
		d.mu.Unlock()
		return
	}
	d.closing = true
	d.mu.Unlock()
	rules := fmt.Sprintf("*filter\n:%s - [0:0]\n-D INPUT -j %s\n-X %s\nCOMMIT\n", chain, chain, chain)
	if err := d.iptables(rules, "iptables-restore", "-w", "--noflush"); err != nil {
		d.t.Errorf("netlab: delayer on %s: remove its rules: %v", d.name, err)
	}
	close(d.stop)
	<-d.scheduled // every held packet let go
	d.f.Close()   // ends read
	d.wg.Wait()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, err := range d.errs {
		d.t.Errorf("netlab: delayer on %s: %v", d.name, err)
	}
}

func (d *Delayer) fail(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.errs) < 5 {
		d.errs = append(d.errs, err)
	}
}

// read receives the queued packets' notices and hands each to hold,
// until Close closes the socket.
func (d *Delayer) read() {
	defer d.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, err := d.recv(buf)
		select {
		case <-d.stop:
			return // Close closed the socket
		default:
		}
		if errors.Is(err, unix.ENOBUFS) {
			continue // the kernel dropped notices (and their packets): loss
		}
		if err != nil {
			d.fail(fmt.Errorf("receive: %w", err))
			return
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			d.fail(fmt.Errorf("parse: %w", err))
			continue
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case nfqType(nfqnlMsgPacket):
				if id, ok := packetID(m.Data); ok {
					d.hold(id)
				}
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
						d.fail(fmt.Errorf("verdict refused: %w", syscall.Errno(-errno)))
					}
				}
			}
		}
	}
}

// hold schedules packet id's verdict after the Delayer's delay.
func (d *Delayer) hold(id uint32) {
	d.mu.Lock()
	delay := d.delay.Base
	if d.delay.Jitter > 0 {
		delay += rand.N(d.delay.Jitter + 1)
	}
	d.held++
	due := time.Now().Add(delay)
	if d.closing || delay <= 0 {
		d.mu.Unlock()
		d.verdict([]uint32{id})
		return
	}
	heap.Push(&d.pending, heldPacket{due: due, id: id})
	soonest := d.pending[0].id == id
	d.mu.Unlock()
	if soonest {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

// schedule issues the verdicts of held packets as they fall due, and
// lets every held packet go when the Delayer stops.
func (d *Delayer) schedule() {
	defer d.wg.Done()
	defer close(d.scheduled)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		d.mu.Lock()
		now := time.Now()
		var due []uint32
		for len(d.pending) > 0 && !d.pending[0].due.After(now) {
			due = append(due, heap.Pop(&d.pending).(heldPacket).id)
		}
		next := time.Hour
		if len(d.pending) > 0 {
			next = d.pending[0].due.Sub(now)
		}
		d.mu.Unlock()
		d.verdict(due)
		timer.Reset(next)
		select {
		case <-timer.C:
		case <-d.wake:
		case <-d.stop:
			d.mu.Lock()
			var all []uint32
			for _, p := range d.pending {
				all = append(all, p.id)
			}
			d.pending = nil
			d.mu.Unlock()
			d.verdict(all)
			return
		}
	}
}

// verdict accepts the packets ids, many verdicts to a datagram.
func (d *Delayer) verdict(ids []uint32) {
	for len(ids) > 0 {
		var b []byte
		for len(ids) > 0 && len(b) < 32<<10 {
			b = appendVerdict(b, ids[0])
			ids = ids[1:]
		}
		if err := d.send(b); err != nil {
			select {
			case <-d.stop:
				// A packet read as Close closed the socket: the kernel
				// drops it with the socket's queue.
				return
			default:
			}
			d.fail(fmt.Errorf("verdict: %w", err))
		}
	}
}

// bind binds the socket to queueNum in its namespace, with the packets'
// metadata only (their IDs are all the verdicts need) and room for many
// held at once, and waits for the kernel's answers.
func (d *Delayer) bind() error {
	var err error
	cerr := d.rc.Control(func(fd uintptr) {
		// Room for the notices of a burst; a notice the socket cannot
		// take drops its packet, as a full link would.
		if err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20); err != nil {
			return
		}
		if err = unix.SetsockoptInt(int(fd), unix.SOL_NETLINK, unix.NETLINK_NO_ENOBUFS, 1); err != nil {
			return
		}
		err = unix.Bind(int(fd), &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	})
	if err = errors.Join(cerr, err); err != nil {
		return err
	}
	cmd := attr(nil, nfqaCfgCmd, []byte{nfqnlCfgCmdBind, 0, 0, 0})
	params := binary.BigEndian.AppendUint32(nil, 0xffff) // copy range (unused in META mode)
	params = append(params, nfqnlCopyMeta)
	cfg := attr(nil, nfqaCfgParams, params)
	cfg = attr(cfg, nfqaCfgQueueMaxlen, binary.BigEndian.AppendUint32(nil, 1<<15))
	// GSO packets queued whole rather than cut into segments first.
	cfg = attr(cfg, nfqaCfgMask, binary.BigEndian.AppendUint32(nil, nfqaCfgFGSO))
	cfg = attr(cfg, nfqaCfgFlags, binary.BigEndian.AppendUint32(nil, nfqaCfgFGSO))
	for i, body := range [][]byte{cmd, cfg} {
		msg := nfqMessage(nfqnlMsgConfig, unix.NLM_F_REQUEST|unix.NLM_F_ACK, uint32(i+1), body)
		if err := d.send(msg); err != nil {
			return err
		}
		if err := d.ack(); err != nil {
			return err
		}
	}
	return nil
}

// send sends one datagram of netlink messages to the kernel.
func (d *Delayer) send(b []byte) error {
	var werr error
	err := d.rc.Write(func(fd uintptr) bool {
		werr = unix.Sendto(int(fd), b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return werr != unix.EAGAIN
	})
	return errors.Join(err, werr)
}

// recv receives one datagram of netlink messages into buf, waiting for
// it through the poller; it fails once the socket is closed.
func (d *Delayer) recv(buf []byte) (int, error) {
	var n int
	var rerr error
	err := d.rc.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), buf, 0)
		return rerr != unix.EAGAIN
	})
	if err != nil {
		return 0, err
	}
	return n, rerr
}

// ack reads the kernel's answer to a request.
func (d *Delayer) ack() error {
	buf := make([]byte, 4096)
	d.f.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer d.f.SetReadDeadline(time.Time{})
	n, err := d.recv(buf)
	if err != nil {
		return err
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if m.Header.Type == unix.NLMSG_ERROR && len(m.Data) >= 4 {
			if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
				return syscall.Errno(-errno)
			}
			return nil
		}
	}
	return errors.New("no answer to a configuration request")
}

// netlinkIn opens a non-blocking netfilter netlink socket in the network
// namespace at nsPath ("": this process's). A socket stays in the
// namespace it was made in, so only its making needs a thread there: a
// goroutine locked to its thread enters the namespace, makes the socket,
// and goes back; should it fail to go back, it exits still locked, and
// the runtime ends the thread with it. (A child forked from that thread
// would get its parent-death signal then: testbin.Start forks the
// children of Host.Command from a thread of its own.)
func netlinkIn(nsPath string) (int, error) {
	open := func() (int, error) {
		return unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_NETFILTER)
	}
	if nsPath == "" {
		return open()
	}
	type result struct {
		fd  int
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{-1, err}
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{-1, err}
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- result{-1, fmt.Errorf("enter %s: %w", nsPath, err)}
			return
		}
		fd, err := open()
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		done <- result{fd, err}
	}()
	r := <-done
	return r.fd, r.err
}

// The nfnetlink_queue protocol (linux/netfilter/nfnetlink_queue.h): the
// numbers a Delayer uses.
const (
	nfqnlMsgPacket  = 0
	nfqnlMsgVerdict = 1
	nfqnlMsgConfig  = 2

	nfqaPacketHdr  = 1
	nfqaVerdictHdr = 2

	nfqaCfgCmd         = 1
	nfqaCfgParams      = 2
	nfqaCfgQueueMaxlen = 3
	nfqaCfgMask        = 4
	nfqaCfgFlags       = 5
	nfqaCfgFGSO        = 1 << 2

	nfqnlCfgCmdBind = 1
	nfqnlCopyMeta   = 1

	nfAccept = 1
)

func nfqType(msg uint16) uint16 { return unix.NFNL_SUBSYS_QUEUE<<8 | msg }

// nfqMessage is a netlink message of the queue subsystem for queueNum:
// the netlink header, nfgenmsg (family, version, the queue number big
// endian), then body's attributes.
func nfqMessage(msg uint16, flags uint16, seq uint32, body []byte) []byte {
	b := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+4+len(body))
	binary.NativeEndian.PutUint32(b[0:], uint32(unix.NLMSG_HDRLEN+4+len(body)))
	binary.NativeEndian.PutUint16(b[4:], nfqType(msg))
	binary.NativeEndian.PutUint16(b[6:], flags)
	binary.NativeEndian.PutUint32(b[8:], seq)
	b = append(b, unix.AF_UNSPEC, unix.NFNETLINK_V0)
	b = binary.BigEndian.AppendUint16(b, queueNum)
	return append(b, body...)
}

// attr appends a netlink attribute (length, type, value, padding to 4).
func attr(b []byte, typ uint16, value []byte) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(4+len(value)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, value...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// appendVerdict appends the message that accepts packet id.
func appendVerdict(b []byte, id uint32) []byte {
	v := binary.BigEndian.AppendUint32(nil, nfAccept)
	v = binary.BigEndian.AppendUint32(v, id)
	return append(b, nfqMessage(nfqnlMsgVerdict, unix.NLM_F_REQUEST, 0, attr(nil, nfqaVerdictHdr, v))...)
}

// packetID returns the packet ID in a queued packet's notice (nfgenmsg,
// then attributes, NFQA_PACKET_HDR's first four bytes).
func packetID(data []byte) (uint32, bool) {
	if len(data) < 4 {
		return 0, false
	}
	data = data[4:]
	for len(data) >= 4 {
		l := int(binary.NativeEndian.Uint16(data))
		typ := binary.NativeEndian.Uint16(data[2:]) & 0x3fff // without the nested and byte-order flags
		if l < 4 || l > len(data) {
			return 0, false
		}
		if typ == nfqaPacketHdr && l >= 8 {
			return binary.BigEndian.Uint32(data[4:]), true
		}
		l = (l + 3) &^ 3
		if l > len(data) {
			return 0, false
		}
		data = data[l:]
	}
	return 0, false
}

// heldPacket is a packet waiting for its verdict.
type heldPacket struct {
	due time.Time
	id  uint32
}

// heldQueue is a min-heap of held packets by due time (container/heap).
type heldQueue []heldPacket

func (h heldQueue) Len() int           { return len(h) }
func (h heldQueue) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h heldQueue) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *heldQueue) Push(x any)        { *h = append(*h, x.(heldPacket)) }
func (h *heldQueue) Pop() any {
	old := *h
	p := old[len(old)-1]
	*h = old[:len(old)-1]
	return p
}
