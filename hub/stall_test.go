package hub_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/heft-dev/heft/hub"
)

// TestStallTimeout: a client that starts a body and stops sending is cut after the
// stall timeout, while a slow but steady body completes.
func TestStallTimeout(t *testing.T) {
	got := make(chan error, 4)
	h := hub.WithStallTimeout(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.Copy(io.Discard, r.Body)
		got <- err
	}), 200*time.Millisecond)
	srv := httptest.NewServer(h)
	defer srv.Close()
	send := func(chunks int, pause time.Duration) error {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", chunks*10)
		for i := 0; i < chunks; i++ {
			conn.Write(make([]byte, 10))
			time.Sleep(pause)
		}
		select {
		case err := <-got:
			return err
		case <-time.After(5 * time.Second):
			t.Fatal("the handler is still waiting for the body")
		}
		return nil
	}
	if err := send(3, 500*time.Millisecond); err == nil {
		t.Fatal("a body that stalled for longer than the timeout was read to the end")
	}
	// 30 pieces, 40 ms apart: 1.2 s in total, never a 200 ms pause.
	if err := send(30, 40*time.Millisecond); err != nil {
		t.Fatalf("a slow, steady body failed: %v", err)
	}
}
