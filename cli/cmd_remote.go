package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/heft-dev/heft/hub/remote"
	"github.com/heft-dev/heft/internal/storeremote"
	"github.com/heft-dev/heft/store"
)

// heft remotes: other heft stores served by `heft serve`, reached over the heft
// remote protocol (hub/remote). `heft push` and `heft pull` also take Hugging Face
// targets (hf://…), which cmd_hf.go handles.
//
// Remotes are kept in STORE/remotes.json (mode 0600, replaced atomically under
// STORE/locks/remotes.lock):
//
//	{"version": 1, "remotes": [{"name": "origin", "url": "http://host:8080", "token_env": "HEFT_TOKEN"}]}
//
// A remote's token is read from the environment variable it names when a command
// uses it; it is never stored or printed.

const (
	remotesFile     = "remotes.json"
	defaultTokenEnv = "HEFT_TOKEN"
	hfScheme        = "hf://"
)

type remoteEntry struct {
	Name     string `json:"name"`
	URL      string `json:"url"`
	TokenEnv string `json:"token_env"`
}

type remotesConfig struct {
	Version int           `json:"version"`
	Remotes []remoteEntry `json:"remotes"`
}

var (
	remoteNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	envNameRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
)

func remotesPath(dir string) string { return filepath.Join(dir, remotesFile) }

// readRemotes reads the remotes of the store in dir; a missing file is none.
func readRemotes(dir string) (*remotesConfig, error) {
	data, err := os.ReadFile(remotesPath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return &remotesConfig{Version: 1}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read remotes: %w", err)
	}
	var cfg remotesConfig
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil || cfg.Version != 1 {
		return nil, fmt.Errorf("%w: %s is not a heft remotes file (version 1)", store.ErrInput, remotesPath(dir))
	}
	return &cfg, nil
}

// editRemotes applies edit to the remotes of the store in dir under an exclusive
// lock and replaces the file atomically.
func editRemotes(dir string, edit func(*remotesConfig) error) error {
	lockPath := filepath.Join(dir, "locks", "remotes.lock")
	if err := os.MkdirAll(filepath.Dir(lockPath), 0o755); err != nil {
		return fmt.Errorf("remotes: %w", err)
	}
	lf, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("remotes: %w", err)
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("remotes: lock: %w", err)
	}
	defer unix.Flock(int(lf.Fd()), unix.LOCK_UN) //nolint:errcheck // closing the file drops it anyway
	cfg, err := readRemotes(dir)
	if err != nil {
		return err
	}
	if err := edit(cfg); err != nil {
		return err
	}
	sort.Slice(cfg.Remotes, func(i, j int) bool { return cfg.Remotes[i].Name < cfg.Remotes[j].Name })
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(remotesPath(dir), append(data, '\n'), 0o600)
}

// writeFileAtomic publishes data at path: temp file in the same directory,
// fsync, rename, directory fsync.
func writeFileAtomic(path string, data []byte, mode os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("write %s: sync directory: %w", path, err)
	}
	return nil
}

// checkRemoteURL accepts http(s)://HOST[:PORT][/PATH] without credentials:
// tokens belong in the environment, not in a file or a command line.
func checkRemoteURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return usagef("remote URL %q: want http(s)://HOST[:PORT][/PATH]", raw)
	}
	if u.User != nil {
		return usagef("remote URL must not hold credentials; put the token in an environment variable (--token-env)")
	}
	return nil
}

func cmdRemote() *cli.Command {
	return &cli.Command{
		Name:  "remote",
		Usage: "manage heft remotes (stores served by `heft serve`) for push and pull",
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "add a remote",
				ArgsUsage: "NAME URL",
				Flags: commonFlags(&cli.StringFlag{Name: "token-env", Value: defaultTokenEnv,
					Usage: "environment variable that holds the remote's token (read at each use, never stored)"}),
				Action: func(c *cli.Context) error {
					e := getEnv(c)
					if c.NArg() != 2 {
						return usagef("remote add takes NAME and URL")
					}
					name, rawURL, tokenEnv := c.Args().Get(0), c.Args().Get(1), c.String("token-env")
					if !remoteNameRE.MatchString(name) {
						return usagef("remote name %q: use 1 to 64 of [A-Za-z0-9._-], starting with a letter or digit", name)
					}
					if err := checkRemoteURL(rawURL); err != nil {
						return err
					}
					if !envNameRE.MatchString(tokenEnv) {
						return usagef("--token-env %q is not an environment variable name", tokenEnv)
					}
					s, err := e.open() // creates the store on first use
					if err != nil {
						return err
					}
					s.Close()
					entry := remoteEntry{Name: name, URL: strings.TrimSuffix(rawURL, "/"), TokenEnv: tokenEnv}
					err = editRemotes(e.storeDir, func(cfg *remotesConfig) error {
						for _, r := range cfg.Remotes {
							if r.Name == name {
								return usagef("remote %q exists (%s); remove it first", name, r.URL)
							}
						}
						cfg.Remotes = append(cfg.Remotes, entry)
						return nil
					})
					if err != nil {
						return err
					}
					if e.json {
						return e.printJSON(entry)
					}
					fmt.Fprintf(e.stdout, "remote %s: %s (token from $%s)\n", name, entry.URL, tokenEnv)
					return nil
				},
			},
			{
				Name:      "remove",
				Aliases:   []string{"rm"},
				Usage:     "remove a remote",
				ArgsUsage: "NAME",
				Flags:     commonFlags(),
				Action: func(c *cli.Context) error {
					e := getEnv(c)
					if c.NArg() != 1 {
						return usagef("remote remove takes NAME")
					}
					name := c.Args().First()
					if _, err := os.Stat(remotesPath(e.storeDir)); errors.Is(err, os.ErrNotExist) {
						return fmt.Errorf("%w: no remote %q", store.ErrNotFound, name)
					}
					err := editRemotes(e.storeDir, func(cfg *remotesConfig) error {
						for i, r := range cfg.Remotes {
							if r.Name == name {
								cfg.Remotes = append(cfg.Remotes[:i], cfg.Remotes[i+1:]...)
								return nil
							}
						}
						return fmt.Errorf("%w: no remote %q", store.ErrNotFound, name)
					})
					if err != nil {
						return err
					}
					if e.json {
						return e.printJSON(map[string]string{"removed": name})
					}
					fmt.Fprintf(e.stdout, "removed remote %s\n", name)
					return nil
				},
			},
			{
				Name:    "list",
				Aliases: []string{"ls"},
				Usage:   "list remotes",
				Flags:   commonFlags(),
				Action: func(c *cli.Context) error {
					e := getEnv(c)
					if c.NArg() != 0 {
						return usagef("remote list takes no arguments")
					}
					cfg, err := readRemotes(e.storeDir)
					if err != nil {
						return err
					}
					type row struct {
						Name     string `json:"name"`
						URL      string `json:"url"`
						TokenEnv string `json:"token_env"`
						TokenSet bool   `json:"token_set"`
					}
					rows := make([]row, 0, len(cfg.Remotes))
					for _, r := range cfg.Remotes {
						rows = append(rows, row{r.Name, r.URL, r.TokenEnv, os.Getenv(r.TokenEnv) != ""})
					}
					if e.json {
						return e.printJSON(rows)
					}
					table := make([][]string, len(rows))
					for i, r := range rows {
						set := "unset"
						if r.TokenSet {
							set = "set"
						}
						table[i] = []string{r.Name, r.URL, "$" + r.TokenEnv + " (" + set + ")"}
					}
					e.table([]string{"NAME", "URL", "TOKEN"}, table)
					return nil
				},
			},
		},
	}
}

// remoteClient returns the client of a configured remote.
func remoteClient(e *env, name string) (*remote.Client, remoteEntry, error) {
	cfg, err := readRemotes(e.storeDir)
	if err != nil {
		return nil, remoteEntry{}, err
	}
	for _, r := range cfg.Remotes {
		if r.Name == name {
			c, err := remote.NewClient(r.URL, os.Getenv(r.TokenEnv), remote.ClientOptions{Retries: 3, UserAgent: "heft/" + store.Version})
			if err != nil {
				return nil, r, usagef("remote %s: %v", name, err)
			}
			return c, r, nil
		}
	}
	return nil, remoteEntry{}, usagef("no remote %q (heft remote add %s URL)", name, name)
}

// remoteError gives the protocol's error classes the store's, so that ExitCode
// maps them: refused credentials, conflicts, unknown refs and bad requests are
// the caller's input (1), damaged objects integrity failures (3), the rest
// operational (2).
func remoteError(err error) error {
	for _, m := range []struct{ from, to error }{
		{remote.ErrConflict, store.ErrConflict},
		{remote.ErrNotFound, store.ErrNotFound},
		{remote.ErrInvalid, store.ErrInput},
		{remote.ErrUnauthorized, store.ErrInput},
		{remote.ErrForbidden, store.ErrInput},
		{remote.ErrIntegrity, store.ErrIntegrity},
	} {
		if errors.Is(err, m.from) && !errors.Is(err, m.to) {
			return classedError{class: m.to, err: err}
		}
	}
	return err
}

// classedError matches class as well as err; its message is err's.
type classedError struct{ class, err error }

func (c classedError) Error() string   { return c.err.Error() }
func (c classedError) Unwrap() []error { return []error{c.class, c.err} }

// transferReport is the summary of a push or pull (the --json document).
type transferReport struct {
	Direction     string  `json:"direction"`
	Remote        string  `json:"remote"`
	URL           string  `json:"url"`
	Ref           string  `json:"ref"`
	LocalRef      string  `json:"local_ref,omitempty"`
	Commit        string  `json:"commit"`
	Old           string  `json:"old,omitempty"`
	UpToDate      bool    `json:"up_to_date"`
	Objects       int     `json:"objects"`
	ObjectBytes   int64   `json:"object_bytes"`
	Batches       int     `json:"batches"`
	Attempts      int     `json:"attempts"`
	Requests      int64   `json:"requests"`
	BytesSent     int64   `json:"wire_bytes_sent"`
	BytesReceived int64   `json:"wire_bytes_received"`
	Seconds       float64 `json:"seconds"`
}

func (e *env) printTransfer(r transferReport) error {
	if e.json {
		return e.printJSON(r)
	}
	short := r.Commit
	if len(short) > 12 {
		short = short[:12]
	}
	switch {
	case r.Direction == "push" && r.UpToDate:
		fmt.Fprintf(e.stdout, "%s %s on %s is up to date\n", short, r.Ref, r.Remote)
	case r.Direction == "push":
		fmt.Fprintf(e.stdout, "%s %s -> %s %s\n", short, r.LocalRef, r.Remote, r.Ref)
	case r.UpToDate:
		fmt.Fprintf(e.stdout, "%s %s is up to date with %s %s\n", short, r.LocalRef, r.Remote, r.Ref)
	default:
		fmt.Fprintf(e.stdout, "%s %s <- %s %s\n", short, r.LocalRef, r.Remote, r.Ref)
	}
	verb := "sent"
	if r.Direction == "pull" {
		verb = "received"
	}
	fmt.Fprintf(e.stdout, "%d objects %s (%s stored) in %d batches; %s on the wire (%s out, %s in, %d requests) in %.1fs\n",
		r.Objects, verb, humanBytes(r.ObjectBytes), r.Batches, humanBytes(r.BytesSent+r.BytesReceived),
		humanBytes(r.BytesSent), humanBytes(r.BytesReceived), r.Requests, r.Seconds)
	return nil
}

func report(dir string, name string, entry remoteEntry, t *remote.Transfer, start time.Time) transferReport {
	r := transferReport{
		Direction: dir, Remote: name, URL: entry.URL, Ref: t.Ref, Commit: t.Commit.String(), UpToDate: t.UpToDate,
		Objects: t.Objects, ObjectBytes: t.ObjectBytes, Batches: t.Batches, Attempts: t.Attempts,
		Requests: t.Wire.Requests, BytesSent: t.Wire.BytesSent, BytesReceived: t.Wire.BytesReceived,
		Seconds: time.Since(start).Seconds(),
	}
	if !t.Old.IsZero() {
		r.Old = t.Old.String()
	}
	return r
}

// fullRef returns NAME:TAG for a NAME[:TAG] argument.
func fullRef(arg string) (string, error) {
	r, err := store.ParseRef(arg)
	if err != nil {
		return "", err
	}
	return r.String(), nil
}

func cmdPush() *cli.Command {
	return &cli.Command{
		Name:      "push",
		Usage:     "send REF to a heft remote, or to a Hugging Face Hub repo (hf://ORG/NAME), moving only what it lacks",
		ArgsUsage: "REF REMOTE|hf://ORG/NAME[@BRANCH]",
		Description: "REF is NAME[:TAG] or a commit. To a heft remote, the remote ref is REF's NAME:TAG (or --to);\n" +
			"it must fast-forward unless --force, and a concurrent push to it fails with a conflict (exit 1).\n" +
			"An interrupted push resumes: run it again.",
		Flags: commonFlags(
			&cli.StringFlag{Name: "to", Usage: "remote ref NAME[:TAG] (heft remotes; default: REF's name)"},
			&cli.BoolFlag{Name: "force", Usage: "move the remote ref even if the push does not fast-forward it (heft remotes)"},
			&cli.StringFlag{Name: "message", Aliases: []string{"m"}, Usage: "commit message (hf:// targets)"},
			&cli.BoolFlag{Name: "private", Usage: "create the repo private (hf:// targets)"},
		),
		Action: withStore(2, "push takes REF and a remote (NAME or hf://ORG/NAME)", func(c *cli.Context, e *env, s *store.Store) error {
			refArg, target := c.Args().Get(0), c.Args().Get(1)
			if strings.HasPrefix(target, hfScheme) {
				return hfPush(c, e, s, refArg, target)
			}
			return runPush(c, e, s, refArg, target)
		}),
	}
}

func runPush(c *cli.Context, e *env, s *store.Store, refArg, remoteName string) error {
	commit, err := s.Resolve(refArg)
	if err != nil {
		return err
	}
	to := c.String("to")
	if to == "" {
		r, err := store.ParseRef(refArg)
		if err != nil {
			return usagef("push %s: REF is a commit; name the remote ref with --to NAME[:TAG]", refArg)
		}
		to = r.String()
	}
	if to, err = fullRef(to); err != nil {
		return err
	}
	client, entry, err := remoteClient(e, remoteName)
	if err != nil {
		return err
	}
	progress, done := e.bar("push " + to)
	start := time.Now()
	t, err := client.Push(c.Context, storeremote.New(s), remote.ID(commit), to, remote.PushOptions{Force: c.Bool("force"), Progress: progress})
	done()
	if err != nil {
		return remoteError(err)
	}
	r := report("push", remoteName, entry, t, start)
	r.LocalRef = refArg
	return e.printTransfer(r)
}

func cmdPull() *cli.Command {
	return &cli.Command{
		Name:      "pull",
		Usage:     "fetch REF from a heft remote, or a Hugging Face Hub repo (hf://ORG/NAME[@REV]), fetching only what the store lacks",
		ArgsUsage: "REMOTE REF | hf://ORG/NAME[@REV]",
		Description: "From a heft remote, the local ref is REF's NAME:TAG (or --name); it must fast-forward\n" +
			"unless --force. An interrupted pull resumes: run it again.",
		Flags: commonFlags(
			&cli.StringFlag{Name: "name", Aliases: []string{"n"}, Usage: "local ref NAME[:TAG] to point at the pulled commit"},
			&cli.BoolFlag{Name: "force", Usage: "move the local ref even if the pull does not fast-forward it (heft remotes)"},
			&cli.StringFlag{Name: "message", Aliases: []string{"m"}, Usage: "commit message (hf:// sources)"},
		),
		Action: withStore(-1, "", func(c *cli.Context, e *env, s *store.Store) error {
			if c.NArg() == 1 && strings.HasPrefix(c.Args().First(), hfScheme) {
				return hfPull(c, e, s, c.Args().First(), c.String("name"))
			}
			if c.NArg() != 2 {
				return usagef("pull takes a remote and REF (heft remotes), or hf://ORG/NAME[@REV]")
			}
			return runPull(c, e, s, c.Args().Get(0), c.Args().Get(1))
		}),
	}
}

func runPull(c *cli.Context, e *env, s *store.Store, remoteName, refArg string) error {
	ref, err := fullRef(refArg)
	if err != nil {
		return err
	}
	local := ref
	if n := c.String("name"); n != "" {
		if local, err = fullRef(n); err != nil {
			return err
		}
	}
	client, entry, err := remoteClient(e, remoteName)
	if err != nil {
		return err
	}
	progress, done := e.bar("pull " + ref)
	start := time.Now()
	t, err := client.Pull(c.Context, storeremote.New(s), ref, remote.PullOptions{LocalRef: local, Force: c.Bool("force"), Progress: progress})
	done()
	if err != nil {
		return remoteError(err)
	}
	r := report("pull", remoteName, entry, t, start)
	r.LocalRef = local
	return e.printTransfer(r)
}
