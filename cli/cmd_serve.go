package cli

import (
	"log/slog"

	"github.com/urfave/cli/v2"

	"github.com/heft-dev/heft/hub"
	"github.com/heft-dev/heft/store"
)

func cmdServe() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "serve the store over the Hugging Face Hub HTTP API (read side: downloads for huggingface_hub, hf, vLLM)",
		Flags: commonFlags(&cli.StringFlag{Name: "addr", Value: "127.0.0.1:8080", Usage: "listen address HOST:PORT"}),
		Action: withStore(0, "serve takes no arguments", func(c *cli.Context, e *env, s *store.Store) error {
			logger := slog.New(slog.NewJSONHandler(e.stderr, nil))
			h := hub.NewHandler(hubRepos{s: s}, hub.Options{Logger: logger})
			logger.Info("heft serve", "addr", c.String("addr"), "store", s.Dir())
			return hub.Serve(c.Context, c.String("addr"), h)
		}),
	}
}
