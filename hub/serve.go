package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"
)

// DefaultShutdownGrace is how long Serve lets in-flight requests finish
// after ctx is cancelled before it cuts them. A download cut then is not
// lost: every client resumes with a Range request (§2.3); an upload cut
// then is retried by the client (Python retries PUTs and parts).
const DefaultShutdownGrace = 10 * time.Second

// Serve listens on addr (host:port) and serves handler until ctx is
// cancelled, then shuts down gracefully (see ServeListener).
func Serve(ctx context.Context, addr string, handler http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("hub: listen: %w", err)
	}
	return ServeListener(ctx, ln, handler)
}

// ServeListener serves handler on ln until ctx is cancelled or serving
// fails, with DefaultShutdownGrace (see ServeListenerGrace).
func ServeListener(ctx context.Context, ln net.Listener, handler http.Handler) error {
	return ServeListenerGrace(ctx, ln, handler, DefaultShutdownGrace)
}

// ServeListenerGrace serves handler on ln until ctx is cancelled or serving
// fails. On cancellation it stops accepting, waits up to grace for
// in-flight requests to finish (draining them), closes whatever is left,
// and returns nil. It closes ln, and returns only when no serving goroutine
// is left.
func ServeListenerGrace(ctx context.Context, ln net.Listener, handler http.Handler, grace time.Duration) error {
	srv := &http.Server{
		Handler: handler,
		// Headers must arrive promptly (slowloris); bodies are not
		// time-limited, since a multi-gigabyte download or upload takes as
		// long as it takes, and write stalls are bounded by the client's
		// own read timeout.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
		// Request contexts deliberately do not derive from ctx: cancelling
		// ctx must let running transfers finish (Shutdown), not kill them.
	}
	// stopped is closed when Serve returned on its own (a listener
	// failure), so that the shutdown goroutine does not wait for ctx.
	stopped := make(chan struct{})
	var g errgroup.Group
	g.Go(func() error {
		defer close(stopped)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("hub: serve: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		select {
		case <-stopped:
			return nil
		case <-ctx.Done():
		}
		shutCtx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		err := srv.Shutdown(shutCtx)
		if err == nil {
			return nil
		}
		// Requests still running after the grace period are cut.
		closeErr := srv.Close()
		if errors.Is(err, context.DeadlineExceeded) {
			slog.Default().Warn("hub: shutdown grace expired; closing remaining connections", "grace", grace)
			return closeErr
		}
		return fmt.Errorf("hub: shutdown: %w", errors.Join(err, closeErr))
	})
	return g.Wait()
}
