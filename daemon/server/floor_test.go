package server

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/huddle-chat/huddle/identity"
)

// BenchmarkQUICFloorTransfer is the transport's floor under a fetch: bare
// quic-go on 127.0.0.1, with the daemon's QUIC configuration on the server
// and the client's defaults, moving the bytes of a fetch of the last 10,000
// of 1,000,000 messages (3.4 MB, written as fetch writes them, in 256 KiB
// frames) from server to client on one stream per operation. No CBOR, no
// store, no copies besides quic-go's own: whatever a fetch costs beyond this
// is huddle's. Compare its ns/op with `huddle bench fetch`'s p50
// (BENCHMARKS.md, target 3).
func BenchmarkQUICFloorTransfer(b *testing.B) {
	const (
		total = 3_400_000
		chunk = 256 << 10
	)
	srvID, ln := floorListener(b)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan struct{})
	go func() {
		defer close(served)
		conn, err := ln.Accept(ctx)
		if err != nil {
			return
		}
		payload := make([]byte, chunk)
		floorStreams(ctx, conn, func(str *quic.Stream, credits *streamCredits) {
			defer credits.hold(str)
			var req [1]byte
			if _, err := io.ReadFull(str, req[:]); err != nil {
				return
			}
			credits.release()
			for sent := 0; sent < total; sent += chunk {
				if _, err := str.Write(payload[:min(chunk, total-sent)]); err != nil {
					return
				}
			}
			str.Close()
		})
	}()

	conn := floorDial(ctx, b, ln.Addr(), srvID)
	buf := make([]byte, chunk)
	b.SetBytes(total)
	b.ResetTimer()
	for b.Loop() {
		str, err := conn.OpenStreamSync(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := str.Write([]byte{1}); err != nil {
			b.Fatal(err)
		}
		str.Close()
		n := 0
		for {
			m, err := str.Read(buf)
			n += m
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		if n != total {
			b.Fatalf("read %d bytes, want %d", n, total)
		}
	}
	b.StopTimer()
	conn.CloseWithError(0, "")
	cancel()
	<-served
}

// BenchmarkQUICFloorBatch is the transport's floor under batched sends
// (target 2): bare quic-go on 127.0.0.1, 16 connections each with one
// operation in flight at a time, every operation a stream carrying 16
// messages' worth of request (16 x 288 bytes: a 256-byte body and its
// framing) and a 16-ack reply (16 x 16 bytes), the shape of a full batch
// from 16 callers. No CBOR, no store, no batcher and no caller goroutines to
// wake: messages per second here bound what the protocol's shape allows on
// this machine, to be compared with the JetStream anchor of the same run.
func BenchmarkQUICFloorBatch(b *testing.B) {
	const (
		conns   = 16
		batch   = 16
		reqSize = batch * 288
		repSize = batch * 16
	)
	srvID, ln := floorListener(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var srvWG sync.WaitGroup
	srvWG.Go(func() {
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			srvWG.Go(func() {
				floorStreams(ctx, conn, func(str *quic.Stream, credits *streamCredits) {
					srvWG.Go(func() {
						defer credits.hold(str)
						var req [reqSize]byte
						var rep [repSize]byte
						if _, err := io.ReadFull(str, req[:]); err != nil {
							str.CancelWrite(1)
							return
						}
						credits.release()
						str.Write(rep[:])
						str.Close()
						io.Copy(io.Discard, str) // the request's end
					})
				})
			})
		}
	})

	var dialled []*quic.Conn
	for range conns {
		dialled = append(dialled, floorDial(ctx, b, ln.Addr(), srvID))
	}
	var left atomic.Int64
	left.Store(int64(b.N))
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for _, c := range dialled {
		wg.Go(func() {
			req := make([]byte, reqSize)
			var rep [repSize]byte
			for left.Add(-1) >= 0 {
				str, err := c.OpenStreamSync(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				if err := str.TryWriteAll(req); err != nil { // as the client writes a request (requestWriter)
					str.Write(req)
				}
				str.Close()
				if _, err := io.ReadFull(str, rep[:]); err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, str)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N*batch)/elapsed.Seconds(), "msgs/s")
	cancel()
	for _, c := range dialled {
		c.CloseWithError(0, "")
	}
	srvWG.Wait()
}

// floorStreams accepts conn's streams until it ends and hands each to serve
// with the connection's stream credit, which serve returns as the daemon
// does: credits.release before it replies, credits.hold when it is done.
func floorStreams(ctx context.Context, conn *quic.Conn, serve func(*quic.Stream, *streamCredits)) {
	credits := newStreamCredits(DefaultMaxIncomingStreams)
	defer credits.close()
	for {
		str, err := conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		serve(str, credits)
	}
}

// floorListener listens on 127.0.0.1 with the daemon's QUIC configuration,
// under a new identity, until the benchmark ends.
func floorListener(b *testing.B) (*identity.Identity, *quic.Listener) {
	id, tr := floorEndpoint(b)
	ln, err := tr.Listen(id.ServerTLS(), quicConfig(Config{}.WithDefaults()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	return id, ln
}

// floorDial connects to the listener at addr from a socket and identity of
// its own, with a client's default QUIC configuration, until the benchmark
// ends.
func floorDial(ctx context.Context, b *testing.B, addr net.Addr, server *identity.Identity) *quic.Conn {
	id, tr := floorEndpoint(b)
	conn, err := tr.Dial(ctx, addr, id.ClientTLS(server.Fingerprint(), nil), &quic.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.CloseWithError(0, "") })
	return conn
}

// floorEndpoint is a new identity and a QUIC transport on a UDP socket of
// its own on 127.0.0.1, closed when the benchmark ends.
func floorEndpoint(b *testing.B) (*identity.Identity, *quic.Transport) {
	id, err := identity.Generate()
	if err != nil {
		b.Fatal(err)
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	b.Cleanup(func() { tr.Close(); udp.Close() })
	return id, tr
}
