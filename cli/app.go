// Package cli wires heft's commands (urfave/cli/v2) to the store. Each command is a
// thin adapter: it parses flags, calls one store function and prints the result as a
// human table or, with --json, as one JSON document on stdout.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/heft-dev/heft/ops"
	"github.com/heft-dev/heft/store"
)

// Exit codes, documented in `heft --help`.
const (
	ExitOK          = 0
	ExitInput       = 1 // usage or input error: bad flags, malformed files, unknown refs
	ExitOperational = 2 // I/O, network, lock timeouts
	ExitIntegrity   = 3 // damaged or missing data
)

const helpExitCodes = `EXIT CODES:
   0  success
   1  usage or input error (bad flags, malformed files, unknown refs, ref conflicts)
   2  operational failure (I/O, disk full, store busy)
   3  integrity failure (damaged or missing data, found by verify or by a read)

STORE:
   --store DIR, else $HEFT_STORE, else $HEFT_HOME, else ~/.heft. Created on first use.`

// env is what every command needs: where to print and how.
type env struct {
	stdout, stderr io.Writer
	json           bool
	quiet          bool
	progress       bool
	storeDir       string
}

// NewApp builds the heft command tree writing to the given streams.
func NewApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:                  "heft",
		Usage:                 "git for model weights: a deduplicating, verifying store for safetensors models",
		Version:               store.Version,
		Writer:                stdout,
		ErrWriter:             stderr,
		EnableBashCompletion:  true,
		HideHelpCommand:       true,
		CustomAppHelpTemplate: cli.AppHelpTemplate + "\n" + helpExitCodes + "\n",
		Flags:                 globalFlags(),
		ExitErrHandler:        func(*cli.Context, error) {}, // Main maps errors to exit codes
		Commands: []*cli.Command{
			cmdInit(), cmdImport(), cmdExport(), cmdLs(), cmdLog(), cmdShow(), cmdDiff(),
			cmdTag(), cmdRm(), cmdStats(), cmdVerify(), cmdGC(), cmdRepair(), cmdServe(), cmdDemo(),
			cmdDequant(), cmdQuantize(), cmdLora(), cmdAnalyze(), cmdLineage(), cmdToken(),
			cmdRemote(), cmdPush(), cmdPull(), cmdDoctor(),
		},
	}
	return app
}

func globalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "store", Usage: "store directory (default $HEFT_STORE, $HEFT_HOME or ~/.heft)", EnvVars: []string{"HEFT_STORE", "HEFT_HOME"}},
		&cli.BoolFlag{Name: "json", Usage: "print one JSON document on stdout"},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress or informational output on stderr"},
		&cli.BoolFlag{Name: "no-progress", Usage: "no progress bars"},
	}
}

// commonFlags are accepted after the command name too (`heft ls --json`).
func commonFlags(extra ...cli.Flag) []cli.Flag {
	return append(extra,
		&cli.BoolFlag{Name: "json", Usage: "print one JSON document on stdout"},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress or informational output"},
		&cli.BoolFlag{Name: "no-progress", Usage: "no progress bars"},
	)
}

// anyTrue reports whether a bool flag is set at the command or any parent level.
func anyTrue(c *cli.Context, name string) bool {
	for _, ctx := range c.Lineage() {
		if ctx.IsSet(name) && ctx.Bool(name) {
			return true
		}
	}
	return false
}

func lineageString(c *cli.Context, name string) string {
	for _, ctx := range c.Lineage() {
		if v := ctx.String(name); v != "" {
			return v
		}
	}
	return ""
}

func getEnv(c *cli.Context) *env {
	e := &env{
		stdout:   c.App.Writer,
		stderr:   c.App.ErrWriter,
		json:     anyTrue(c, "json"),
		quiet:    anyTrue(c, "quiet"),
		storeDir: lineageString(c, "store"),
	}
	e.progress = !e.json && !e.quiet && !anyTrue(c, "no-progress") && isTerminal(e.stderr)
	if e.storeDir == "" {
		e.storeDir = defaultStoreDir()
	}
	return e
}

func defaultStoreDir() string {
	for _, v := range []string{"HEFT_STORE", "HEFT_HOME"} {
		if d := os.Getenv(v); d != "" {
			return d
		}
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ".heft"
	}
	return filepath.Join(home, ".heft")
}

func (e *env) open() (*store.Store, error) {
	return e.openWith(store.Options{})
}

// openWith opens the store with opts (the environment's tuning applied on top).
func (e *env) openWith(opts store.Options) (*store.Store, error) {
	// HEFT_CHUNK_SIZE (bytes) tunes the tensor chunk size of new imports; it exists
	// for the chunk-size benchmark and changes nothing already stored.
	if v := os.Getenv("HEFT_CHUNK_SIZE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 4096 || n > 1<<30 {
			return nil, usagef("HEFT_CHUNK_SIZE=%q: want a byte count from 4096 to 1 GiB", v)
		}
		opts.ChunkSize = n
	}
	return store.Open(e.storeDir, opts)
}

// info prints an informational line on stderr unless quiet or JSON.
func (e *env) info(format string, args ...any) {
	if !e.quiet && !e.json {
		fmt.Fprintf(e.stderr, format+"\n", args...)
	}
}

// usageError marks errors that are the caller's fault (exit 1).
type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// ExitCode maps an error to heft's exit codes.
func ExitCode(err error) int {
	var ue usageError
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, store.ErrIntegrity):
		return ExitIntegrity
	case errors.As(err, &ue), errors.Is(err, store.ErrInput), errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrConflict),
		errors.Is(err, ops.ErrInput):
		return ExitInput
	}
	// urfave/cli reports unknown commands as ExitCoder errors with code 3, which
	// means integrity here; they are usage errors.
	var ec cli.ExitCoder
	if errors.As(err, &ec) || isFlagError(err) {
		return ExitInput
	}
	return ExitOperational
}

// Main runs heft with args and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	app := NewApp(stdout, stderr)
	err := app.RunContext(ctx, interspersed(app, args))
	if err == nil {
		return ExitOK
	}
	var silent silentExit
	if errors.As(err, &silent) {
		return silent.code
	}
	fmt.Fprintf(stderr, "heft: %v\n", err)
	return ExitCode(err)
}

// silentExit ends a command with a code after it has printed its own report.
type silentExit struct{ code int }

func (s silentExit) Error() string { return fmt.Sprintf("exit %d", s.code) }

// withStore adapts a command body that needs the store: it checks the number of
// arguments (nargs < 0: any), opens the store and closes it afterwards.
func withStore(nargs int, usage string, body func(c *cli.Context, e *env, s *store.Store) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		e := getEnv(c)
		if nargs >= 0 && c.NArg() != nargs {
			return usagef("%s", usage)
		}
		s, err := e.open()
		if err != nil {
			return err
		}
		defer s.Close()
		return body(c, e, s)
	}
}
