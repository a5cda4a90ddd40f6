package daemon

import (
	"context"
	"io"
	"net"
	"testing"

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
	srvID, err := identity.Generate()
	if err != nil {
		b.Fatal(err)
	}
	cliID, err := identity.Generate()
	if err != nil {
		b.Fatal(err)
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer udp.Close()
	tr := &quic.Transport{Conn: udp}
	defer tr.Close()
	cfg := serverConfig{}.withDefaults()
	ln, err := tr.Listen(srvID.ServerTLS(), quicConfig(cfg))
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()

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
		var req [1]byte
		for {
			str, err := conn.AcceptStream(ctx)
			if err != nil {
				return
			}
			if _, err := io.ReadFull(str, req[:]); err != nil {
				return
			}
			for sent := 0; sent < total; sent += chunk {
				if _, err := str.Write(payload[:min(chunk, total-sent)]); err != nil {
					return
				}
			}
			str.Close()
		}
	}()

	ctr, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer ctr.Close()
	ct := &quic.Transport{Conn: ctr}
	defer ct.Close()
	conn, err := ct.Dial(ctx, udp.LocalAddr(), cliID.ClientTLS(srvID.Fingerprint(), nil), &quic.Config{})
	if err != nil {
		b.Fatal(err)
	}
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
