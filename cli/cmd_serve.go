package cli

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/heft-dev/heft/hub"
	"github.com/heft-dev/heft/hub/remote"
	"github.com/heft-dev/heft/internal/storehub"
	"github.com/heft-dev/heft/internal/storeremote"
	"github.com/heft-dev/heft/store"
)

// serveDir holds what `heft serve` keeps next to the store: the token file, the
// key that signs upload URLs, and staged multipart uploads.
func serveDir(s *store.Store) string { return filepath.Join(s.Dir(), "serve") }

func openTokens(s *store.Store) (*hub.TokenStore, error) {
	return hub.OpenTokenStore(filepath.Join(serveDir(s), "tokens"))
}

func cmdServe() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "serve the store over the Hugging Face Hub HTTP API (huggingface_hub, hf, @huggingface/hub, vLLM) and the heft remote protocol",
		Flags: commonFlags(
			&cli.StringFlag{Name: "addr", Value: "127.0.0.1:8080", Usage: "listen address HOST:PORT"},
			&cli.BoolFlag{Name: "anonymous-read", Usage: "let requests without a token list and download (default: every request needs a token)"},
			&cli.StringFlag{Name: "public-url", Usage: "the URL clients reach the server at, for upload URLs behind a proxy (default: from each request)"},
			&cli.BoolFlag{Name: "inline-uploads-for-xet-clients", Usage: "accept uploads from huggingface_hub ≥ 1.20 without HF_HUB_DISABLE_XET=1 (files sent inline, up to the inline limit)"},
			&cli.StringFlag{Name: "cache-size", Value: "auto", Usage: "memory for decoded, verified file pieces, so repeated downloads decode each piece once: a size (e.g. 8GiB, 0 for none) or auto (a quarter of RAM, at most 32 GiB)"},
			&cli.DurationFlag{Name: "stall-timeout", Value: hub.DefaultStallTimeout, Usage: "drop a request whose body sends nothing for this long (slow or vanished clients)"},
			&cli.DurationFlag{Name: "shutdown-grace", Value: 30 * time.Second, Usage: "how long in-flight requests may finish after SIGINT/SIGTERM"},
		),
		Action: func(c *cli.Context) error {
			e := getEnv(c)
			if c.NArg() != 0 {
				return usagef("serve takes no arguments")
			}
			cache, err := cacheSize(c.String("cache-size"))
			if err != nil {
				return usagef("--cache-size: %v", err)
			}
			s, err := e.openWith(store.Options{ReadCacheBytes: cache})
			if err != nil {
				return err
			}
			defer s.Close()
			logger := slog.New(slog.NewJSONHandler(e.stderr, nil))
			tokens, err := openTokens(s)
			if err != nil {
				return err
			}
			key, err := hub.LoadOrCreateKey(filepath.Join(serveDir(s), "upload.key"))
			if err != nil {
				return err
			}
			h := hub.NewHandler(storehub.NewRepos(s), hub.Options{
				Logger: logger, Writer: storehub.NewWriter(s), Tokens: tokens,
				AnonymousRead: c.Bool("anonymous-read"), PublicURL: c.String("public-url"), UploadKey: key,
				StagingDir:                 filepath.Join(serveDir(s), "staging"),
				InlineUploadsForXetClients: c.Bool("inline-uploads-for-xet-clients"),
			})
			defer h.Close()
			// The heft remote protocol (store-to-store push and pull) beside the Hub API.
			mux := http.NewServeMux()
			mux.Handle(remote.PathPrefix, remote.NewHandler(storeremote.New(s), remote.Options{Tokens: tokens, AnonymousRead: c.Bool("anonymous-read"), Logger: logger}))
			mux.Handle("/", h)
			ln, err := net.Listen("tcp", c.String("addr"))
			if err != nil {
				return fmt.Errorf("serve: %w", err)
			}
			logger.Info("heft serve", "addr", ln.Addr().String(), "store", s.Dir(), "anonymous_read", c.Bool("anonymous-read"))
			return hub.ServeListenerGrace(c.Context, ln, hub.WithStallTimeout(mux, c.Duration("stall-timeout")), c.Duration("shutdown-grace"))
		},
	}
}

// cacheSize resolves --cache-size: "auto" is a quarter of physical memory, at most
// 32 GiB (the page cache would hold as much of a hot model anyway).
func cacheSize(v string) (int64, error) {
	if v != "auto" {
		return parseBytes(v)
	}
	return min(physicalMemory()/4, 32<<30), nil
}

// parseBytes reads a size such as 2GiB, 512MiB, 1.5GB or a plain byte count.
func parseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   float64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	mult := 1.0
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("%q is not a size (e.g. 2GiB, 512MiB, 0)", s)
	}
	return int64(f * mult), nil
}
