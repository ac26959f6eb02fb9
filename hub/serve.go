package hub

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// shutdownGrace is how long Serve lets in-flight requests finish after ctx
// is cancelled before it cuts them. A download cut then is not lost: every
// client resumes with a Range request (§2.3).
const shutdownGrace = 10 * time.Second

// Serve listens on addr (host:port) and serves handler until ctx is
// cancelled, then shuts down gracefully (see ServeListener).
func Serve(ctx context.Context, addr string, handler http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return ServeListener(ctx, ln, handler)
}

// ServeListener serves handler on ln until ctx is cancelled or serving
// fails. On cancellation it stops accepting, waits up to shutdownGrace for
// in-flight requests, closes whatever is left, and returns nil. It closes ln.
func ServeListener(ctx context.Context, ln net.Listener, handler http.Handler) error {
	srv := &http.Server{
		Handler: handler,
		// Headers must arrive promptly (slowloris); bodies are not
		// time-limited, since a multi-gigabyte download takes as long as it
		// takes, and write stalls are bounded by the client's own read
		// timeout.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
		// Request contexts deliberately do not derive from ctx: cancelling
		// ctx must let running downloads finish (Shutdown), not kill them.
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		if !errors.Is(err, context.DeadlineExceeded) {
			srv.Close()
			<-errc
			return err
		}
		slog.Default().Warn("hub: shutdown grace expired; closing remaining connections", "grace", shutdownGrace)
		srv.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
