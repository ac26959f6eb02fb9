package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/heft-dev/heft/internal/failpoint"
	"github.com/heft-dev/heft/store"
)

func cmdInit() *cli.Command {
	return &cli.Command{
		Name:      "init",
		Usage:     "create a store (stores are also created on first use)",
		ArgsUsage: "[DIR]",
		Description: "With --backend s3://BUCKET/PREFIX the store keeps its packs and refs in an S3-compatible bucket that\n" +
			"several nodes (heft serve, the CLI on other hosts) share; DIR keeps this node's index and pack cache.\n" +
			"Options go in the URL's query: endpoint=URL, region=NAME, addressing=path|virtual, profile=NAME,\n" +
			"consistent-list=true, part-size=BYTES. Credentials come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY\n" +
			"(AWS_SESSION_TOKEN) or the AWS credentials and config files, never from the URL. Joining a bucket that\n" +
			"already holds a store adopts it.",
		Flags: commonFlags(&cli.StringFlag{Name: "backend", Usage: "keep packs and refs in a shared bucket: s3://BUCKET/PREFIX[?endpoint=URL&region=NAME...]"},
			&cli.StringFlag{Name: "pack-cache", Usage: "shared stores: how much of this node's disk copies of packs may use, e.g. 200GiB; \"unlimited\" (default: a quarter of the filesystem)"}),
		Action: func(c *cli.Context) error {
			e := getEnv(c)
			if c.NArg() > 1 {
				return usagef("init takes at most one directory")
			}
			if c.NArg() == 1 {
				e.storeDir = c.Args().First()
			}
			opts := store.Options{BackendURL: c.String("backend")}
			switch v := c.String("pack-cache"); {
			case v == "":
			case opts.BackendURL == "":
				return usagef("--pack-cache applies to a shared store (--backend)")
			case v == "unlimited":
				opts.PackCacheBytes = -1
			default:
				n, err := parseBytes(v)
				if err != nil || n == 0 {
					return usagef("--pack-cache %q: want a size such as 200GiB, or unlimited", v)
				}
				opts.PackCacheBytes = n
			}
			s, err := e.openWith(opts)
			if err != nil {
				return err
			}
			defer s.Close()
			props, shared := s.Remote()
			if e.json {
				out := map[string]string{"store": s.Dir()}
				if shared {
					out["backend"] = props.Location
				}
				return e.printJSON(out)
			}
			if shared {
				fmt.Fprintf(e.stdout, "heft store at %s, packs and refs in %s\n", s.Dir(), props.Location)
				return nil
			}
			fmt.Fprintf(e.stdout, "heft store at %s\n", s.Dir())
			return nil
		},
	}
}

func cmdImport() *cli.Command {
	return &cli.Command{
		Name:      "import",
		Usage:     "store a model directory or .safetensors file as a new commit of NAME[:TAG]",
		ArgsUsage: "SRC",
		Flags: commonFlags(
			&cli.StringFlag{Name: "name", Aliases: []string{"n"}, Usage: "ref to create or advance, NAME[:TAG]", Required: true},
			&cli.StringFlag{Name: "message", Aliases: []string{"m"}, Usage: "commit message"},
			&cli.StringFlag{Name: "base", Usage: "model (REF) to delta-code changed tensors against (default: found automatically)"},
			&cli.BoolFlag{Name: "no-delta", Usage: "store every tensor on its own, without a delta base"},
			&cli.BoolFlag{Name: "no-recipes", Usage: "store tensors as data even when they are exact quantizations or dequantizations of a stored model"},
		),
		Action: func(c *cli.Context) error {
			e := getEnv(c)
			if c.NArg() != 1 {
				return usagef("import takes one SRC (a model directory or a .safetensors file)")
			}
			return runImport(c, e, c.Args().First(), c.String("name"), store.ImportOptions{Message: c.String("message"), Base: c.String("base"), NoDelta: c.Bool("no-delta"), NoRecipes: c.Bool("no-recipes")})
		},
	}
}

func runImport(c *cli.Context, e *env, src, name string, opts store.ImportOptions) error {
	ref, err := store.ParseRef(name)
	if err != nil {
		return err
	}
	s, err := e.open()
	if err != nil {
		return err
	}
	defer s.Close()
	opts.Ref = ref
	progress, done := e.bar("import")
	opts.Progress = progress
	start := time.Now()
	res, err := s.Import(c.Context, src, opts)
	done()
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	if e.json {
		return e.printJSON(map[string]any{
			"commit": res.Commit, "ref": res.Ref.String(), "files": res.Files, "tensors": res.Tensors,
			"logical_bytes": res.LogicalBytes, "new_pack_bytes": res.Stats.PackBytes,
			"new_chunks": res.Stats.NewChunks, "chunks": res.Stats.Chunks, "delta_chunks": res.Stats.DeltaChunks,
			"delta_base": res.DeltaBase, "recipe_tensors": res.RecipeTensors, "recipe_source": res.RecipeSource,
			"seconds": elapsed.Seconds(),
		})
	}
	fmt.Fprintf(e.stdout, "%s %s\n", res.Commit, res.Ref)
	fmt.Fprintf(e.stdout, "%d files, %d tensors: %s logical, %s newly stored (%s) in %.1fs\n",
		res.Files, res.Tensors, humanBytes(res.LogicalBytes), humanBytes(res.Stats.PackBytes),
		percent(res.Stats.PackBytes, res.LogicalBytes), elapsed.Seconds())
	if res.DeltaBase != "" {
		fmt.Fprintf(e.stdout, "delta base %s: %d of %d new chunks stored as deltas\n", res.DeltaBase, res.Stats.DeltaChunks, res.Stats.NewChunks)
	}
	if res.RecipeTensors > 0 {
		fmt.Fprintf(e.stdout, "%d tensors are exact derivations of %s: stored as recipes\n", res.RecipeTensors, res.RecipeSource)
	}
	return nil
}

func cmdExport() *cli.Command {
	return &cli.Command{
		Name:      "export",
		Usage:     "write a model directory byte-identical to what was imported",
		ArgsUsage: "REF DEST",
		Flags:     commonFlags(),
		Action: withStore(2, "export takes REF and DEST", func(c *cli.Context, e *env, s *store.Store) error {
			progress, done := e.bar("export")
			if failpoint.Enabled {
				progress = exportFailpoint(progress)
			}
			start := time.Now()
			res, err := exportComplete(c.Context, s, c.Args().Get(0), c.Args().Get(1), progress)
			done()
			if err != nil {
				return err
			}
			if e.json {
				return e.printJSON(map[string]any{"commit": res.Commit, "files": res.Files, "bytes": res.Bytes, "dest": c.Args().Get(1)})
			}
			fmt.Fprintf(e.stdout, "exported %s: %d files, %s to %s in %.1fs\n", res.Commit.Short(), res.Files, humanBytes(res.Bytes), c.Args().Get(1), time.Since(start).Seconds())
			return nil
		}),
	}
}

// exportTmp is the directory an export writes into before its files take their
// final names: beside DEST when DEST does not exist (".NAME" + exportTmp), inside
// it when DEST is an existing empty directory.
const exportTmp = ".heft-export"

// exportComplete is store.Export such that a crash (or kill) never leaves a file
// at its final name in dest with wrong bytes: store.Export sizes each file first
// and fills it in place, so an interrupted export would leave full-size files
// that are partly zeros. The files are written into a temporary directory and
// take their final names only once every one is complete:
//   - dest does not exist: the export goes to ".NAME.heft-export" beside it, which
//     is renamed to dest at the end (atomically); a crash leaves only that hidden
//     directory, which the next export to dest removes first;
//   - dest is an empty directory: the export goes to dest/.heft-export, and each
//     entry is then renamed into dest. A crash while writing leaves only that
//     hidden directory, which the next export to dest removes first; a crash
//     while renaming leaves complete files (and a re-run is refused until dest is
//     emptied).
//
// A dest that is not an empty directory is refused, as store.Export refuses it.
func exportComplete(ctx context.Context, s *store.Store, ref, dest string, progress func(done, total int64)) (*store.ExportResult, error) {
	if _, err := s.Resolve(ref); err != nil {
		return nil, err
	}
	dest = filepath.Clean(dest)
	entries, err := os.ReadDir(dest)
	if err == nil && len(entries) == 1 && entries[0].Name() == exportTmp {
		// Only what an interrupted export to this directory left: start again.
		if err := os.RemoveAll(filepath.Join(dest, exportTmp)); err != nil {
			return nil, fmt.Errorf("export: removing what an interrupted export left: %w", err)
		}
		entries = nil
	}
	switch {
	case errors.Is(err, os.ErrNotExist):
		parent := filepath.Dir(dest)
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
		tmp := filepath.Join(parent, "."+filepath.Base(dest)+exportTmp)
		if err := os.RemoveAll(tmp); err != nil {
			return nil, fmt.Errorf("export: removing %s, left by an interrupted export: %w", tmp, err)
		}
		res, err := s.Export(ctx, ref, tmp, progress)
		if err == nil {
			if err = os.Rename(tmp, dest); err != nil {
				err = fmt.Errorf("export: %w", err)
			}
		}
		if err != nil {
			_ = os.RemoveAll(tmp)
			return nil, err
		}
		return res, nil
	case err != nil || len(entries) > 0:
		return s.Export(ctx, ref, dest, progress) // refused with store.Export's message
	}
	tmp := filepath.Join(dest, exportTmp)
	res, err := s.Export(ctx, ref, tmp, progress)
	if err != nil {
		_ = os.RemoveAll(tmp)
		return nil, err
	}
	done, err := os.ReadDir(tmp)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	for _, e := range done {
		if err := os.Rename(filepath.Join(tmp, e.Name()), filepath.Join(dest, e.Name())); err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
	}
	if err := os.Remove(tmp); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	return res, nil
}

// exportFailpoint wraps an export's progress function so that a failpoints build
// reaches failpoint.ExportMidWrite once about half of the bytes are written.
func exportFailpoint(progress func(done, total int64)) func(done, total int64) {
	var reached atomic.Bool
	return func(done, total int64) {
		if done*2 >= total && done > 0 && reached.CompareAndSwap(false, true) {
			failpoint.Hit(failpoint.ExportMidWrite)
		}
		if progress != nil {
			progress(done, total)
		}
	}
}

// refSummary is one line of `heft ls`.
type refSummary struct {
	Ref          string   `json:"ref"`
	Commit       store.ID `json:"commit"`
	LogicalBytes int64    `json:"logical_bytes"`
	Files        int      `json:"files"`
	Tensors      int      `json:"tensors"`
}

func cmdLs() *cli.Command {
	return &cli.Command{
		Name:  "ls",
		Usage: "list refs with commit, logical size, files and tensors",
		Flags: commonFlags(),
		Action: withStore(-1, "", func(c *cli.Context, e *env, s *store.Store) error {
			st, err := s.Stats(nil)
			if err != nil {
				return err
			}
			out := make([]refSummary, 0, len(st.Models))
			for _, m := range st.Models {
				out = append(out, refSummary{Ref: m.Ref, Commit: m.Commit, LogicalBytes: m.LogicalBytes, Files: m.Files, Tensors: m.Tensors})
			}
			if e.json {
				return e.printJSON(out)
			}
			rows := make([][]string, 0, len(out))
			for _, r := range out {
				rows = append(rows, []string{r.Ref, r.Commit.Short(), humanBytes(r.LogicalBytes), fmt.Sprint(r.Files), fmt.Sprint(r.Tensors)})
			}
			e.table([]string{"REF", "COMMIT", "SIZE", "FILES", "TENSORS"}, rows)
			return nil
		}),
	}
}

func cmdLog() *cli.Command {
	return &cli.Command{
		Name:      "log",
		Usage:     "history of a ref, newest first, with provenance",
		ArgsUsage: "REF",
		Flags:     commonFlags(&cli.IntFlag{Name: "max-count", Aliases: []string{"n"}, Usage: "show at most N commits"}),
		Action: withStore(1, "log takes one REF", func(c *cli.Context, e *env, s *store.Store) error {
			entries, err := s.Log(c.Args().First(), c.Int("max-count"))
			if err != nil {
				return err
			}
			if e.json {
				return e.printJSON(entries)
			}
			for _, le := range entries {
				cm := le.Commit
				fmt.Fprintf(e.stdout, "commit %s\n", le.ID)
				if len(cm.Parents) > 0 {
					ps := make([]string, len(cm.Parents))
					for i, p := range cm.Parents {
						ps[i] = p.Short()
					}
					fmt.Fprintf(e.stdout, "Parents: %s\n", strings.Join(ps, " "))
				}
				fmt.Fprintf(e.stdout, "Date:    %s\n", cm.Time)
				fmt.Fprintf(e.stdout, "Op:      %s", cm.Provenance.Op)
				if cm.Provenance.Source != "" {
					fmt.Fprintf(e.stdout, " from %s", cm.Provenance.Source)
				}
				for k, v := range cm.Provenance.Params {
					fmt.Fprintf(e.stdout, " %s=%s", k, v)
				}
				fmt.Fprintf(e.stdout, " (heft %s)\n", cm.Provenance.HeftVersion)
				if cm.Message != "" {
					fmt.Fprintf(e.stdout, "\n    %s\n", cm.Message)
				}
				fmt.Fprintln(e.stdout)
			}
			return nil
		}),
	}
}

func cmdShow() *cli.Command {
	return &cli.Command{
		Name:      "show",
		Usage:     "files and tensors of a commit: dtype, shape, bytes, how stored, which models share it",
		ArgsUsage: "REF",
		Flags:     commonFlags(),
		Action: withStore(1, "show takes one REF", func(c *cli.Context, e *env, s *store.Store) error {
			res, err := s.Show(c.Args().First())
			if err != nil {
				return err
			}
			if e.json {
				return e.printJSON(res)
			}
			fmt.Fprintf(e.stdout, "commit %s  %s  %s\n", res.Commit, res.Info.Time, res.Info.Provenance.Op)
			switch {
			case res.Quantization != "":
				fmt.Fprintf(e.stdout, "quantization: %s\n", res.Quantization)
			case res.QuantError != "":
				fmt.Fprintf(e.stdout, "quantization: unrecognized (%s)\n", res.QuantError)
			}
			fmt.Fprintln(e.stdout)
			var rows [][]string
			for _, f := range res.Files {
				rows = append(rows, []string{f.Path, f.Format, humanBytes(int64(f.Size)), fmt.Sprint(f.Tensors), f.SHA256[:16]})
			}
			e.table([]string{"FILE", "FORMAT", "SIZE", "TENSORS", "SHA256"}, rows)
			fmt.Fprintln(e.stdout)
			rows = rows[:0]
			for _, t := range res.Tensors {
				shared := "-"
				if len(t.SharedBy) > 0 {
					shared = strings.Join(t.SharedBy, ",")
				}
				rows = append(rows, []string{t.Name, t.DType, fmt.Sprint(t.Shape), humanBytes(int64(t.Bytes)), humanBytes(int64(t.Stored)), t.How, shared})
			}
			e.table([]string{"TENSOR", "DTYPE", "SHAPE", "BYTES", "STORED", "HOW", "SHARED WITH"}, rows)
			return nil
		}),
	}
}

func cmdDiff() *cli.Command {
	return &cli.Command{
		Name:      "diff",
		Usage:     "tensor-level difference: identical, changed (relative L2), added, removed; bytes shared",
		ArgsUsage: "REF1 REF2",
		Flags:     commonFlags(),
		Action: withStore(2, "diff takes REF1 and REF2", func(c *cli.Context, e *env, s *store.Store) error {
			d, err := s.Diff(c.Args().Get(0), c.Args().Get(1))
			if err != nil {
				return err
			}
			if e.json {
				return e.printJSON(d)
			}
			for _, ch := range d.Changed {
				rel := "n/a"
				if ch.RelL2 >= 0 {
					rel = fmt.Sprintf("%.3g", ch.RelL2)
				}
				if ch.ShapeChange {
					rel = "dtype/shape changed"
				}
				fmt.Fprintf(e.stdout, "M %s  rel_l2=%s  shared=%s\n", ch.Name, rel, humanBytes(int64(ch.SharedBytes)))
			}
			for _, n := range d.Added {
				fmt.Fprintf(e.stdout, "A %s\n", n)
			}
			for _, n := range d.Removed {
				fmt.Fprintf(e.stdout, "D %s\n", n)
			}
			fmt.Fprintf(e.stdout, "%d identical, %d changed, %d added, %d removed; %s of %s shared\n",
				len(d.Identical), len(d.Changed), len(d.Added), len(d.Removed), humanBytes(int64(d.SharedBytes)), humanBytes(int64(d.BytesB)))
			return nil
		}),
	}
}

func cmdTag() *cli.Command {
	return &cli.Command{
		Name:      "tag",
		Usage:     "create ref NAME[:TAG] pointing at REF's commit",
		ArgsUsage: "REF NAME[:TAG]",
		Flags:     commonFlags(),
		Action: withStore(2, "tag takes REF and NAME[:TAG]", func(c *cli.Context, e *env, s *store.Store) error {
			id, err := s.Resolve(c.Args().Get(0))
			if err != nil {
				return err
			}
			ref, err := store.ParseRef(c.Args().Get(1))
			if err != nil {
				return err
			}
			if _, err := s.LoadCommit(id); err != nil {
				return err
			}
			if err := s.UpdateRef(ref, store.ID{}, id, "tag: "+c.Args().Get(0)); err != nil {
				return err
			}
			if e.json {
				return e.printJSON(map[string]any{"ref": ref.String(), "commit": id})
			}
			fmt.Fprintf(e.stdout, "%s -> %s\n", ref, id.Short())
			return nil
		}),
	}
}

func cmdRm() *cli.Command {
	return &cli.Command{
		Name:      "rm",
		Usage:     "delete a ref (its data stays until gc)",
		ArgsUsage: "NAME[:TAG]",
		Flags:     commonFlags(),
		Action: func(c *cli.Context) error {
			e := getEnv(c)
			if c.NArg() != 1 {
				return usagef("rm takes one NAME[:TAG]")
			}
			ref, err := store.ParseRef(c.Args().First())
			if err != nil {
				return err
			}
			s, err := e.open()
			if err != nil {
				return err
			}
			defer s.Close()
			cur, err := s.Ref(ref)
			if err != nil {
				return err
			}
			if err := s.UpdateRef(ref, cur, store.ID{}, "rm"); err != nil {
				return err
			}
			if e.json {
				return e.printJSON(map[string]any{"deleted": ref.String(), "commit": cur})
			}
			fmt.Fprintf(e.stdout, "deleted %s (was %s)\n", ref, cur.Short())
			return nil
		},
	}
}
