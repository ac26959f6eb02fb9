package cli

import (
	"fmt"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/heft-dev/heft/store"
)

func cmdStats() *cli.Command {
	return &cli.Command{
		Name:      "stats",
		Usage:     "logical vs physical bytes, with the saving broken down by stage",
		ArgsUsage: "[REF...]",
		Flags:     commonFlags(),
		Action: func(c *cli.Context) error {
			e := getEnv(c)
			var refs []store.RefName
			for _, a := range c.Args().Slice() {
				r, err := store.ParseRef(a)
				if err != nil {
					return err
				}
				refs = append(refs, r)
			}
			s, err := e.open()
			if err != nil {
				return err
			}
			defer s.Close()
			st, err := s.Stats(refs)
			if err != nil {
				return err
			}
			if e.json {
				return e.printJSON(st)
			}
			printStats(e, st)
			return nil
		},
	}
}

func printStats(e *env, st *store.Stats) {
	rows := [][]string{}
	for _, m := range st.Models {
		rows = append(rows, []string{m.Ref, humanBytes(m.LogicalBytes), humanBytes(m.StoredBytes), humanBytes(m.UniqueBytes), fmt.Sprint(m.Files), fmt.Sprint(m.Tensors)})
	}
	e.table([]string{"REF", "LOGICAL", "STORED", "UNIQUE", "FILES", "TENSORS"}, rows)
	fmt.Fprintln(e.stdout)
	stage := func(name string, before, after int64) []string {
		return []string{name, humanBytes(after), "-" + humanBytes(before-after), percent(after, st.LogicalBytes)}
	}
	e.table([]string{"STAGE", "BYTES", "SAVED", "OF LOGICAL"}, [][]string{
		{"logical", humanBytes(st.LogicalBytes), "", "100.0%"},
		stage("file dedup", st.LogicalBytes, st.AfterFileDedup),
		stage("tensor dedup", st.AfterFileDedup, st.AfterTensorDedup),
		stage("recipes", st.AfterTensorDedup, st.AfterRecipes),
		stage("chunk dedup", st.AfterRecipes, st.AfterChunkDedup),
		stage("delta", st.AfterChunkDedup, st.AfterDelta),
		stage("entropy coding", st.AfterDelta, st.AfterCompression),
		{"physical (packs)", humanBytes(st.PhysicalBytes), "", percent(st.PhysicalBytes, st.LogicalBytes)},
	})
	fmt.Fprintln(e.stdout)
	dts := make([]string, 0, len(st.DTypes))
	for dt := range st.DTypes {
		dts = append(dts, dt)
	}
	sort.Strings(dts)
	rows = rows[:0]
	for _, dt := range dts {
		d := st.DTypes[dt]
		rows = append(rows, []string{dt, humanBytes(d.RawBytes), humanBytes(d.StoredBytes), fmt.Sprintf("%.3f", d.Ratio)})
	}
	e.table([]string{"DTYPE", "TENSOR DATA", "STORED", "RATIO"}, rows)
	fmt.Fprintf(e.stdout, "\n%d refs, %d distinct files, %d tensors, %d chunks in %d packs; saving %.1f%%\n",
		st.Refs, st.Files, st.Tensors, st.Chunks, st.Packs, 100*st.Saving)
}

func cmdVerify() *cli.Command {
	return &cli.Command{
		Name:  "verify",
		Usage: "check every structure; --read-data re-reads and re-hashes all stored bytes (exit 3 on damage)",
		Flags: commonFlags(&cli.BoolFlag{Name: "read-data", Usage: "read, decode and hash every stored object"}),
		Action: withStore(-1, "", func(c *cli.Context, e *env, s *store.Store) error {
			progress, done := e.bar("verify")
			res, err := s.Verify(c.Context, store.VerifyOptions{ReadData: c.Bool("read-data"), Progress: progress})
			done()
			if err != nil {
				return err
			}
			if e.json {
				if err := e.printJSON(res); err != nil {
					return err
				}
			} else {
				for _, w := range res.Warnings {
					fmt.Fprintf(e.stderr, "warning: %s\n", w)
				}
				for _, d := range res.Damaged {
					fmt.Fprintf(e.stdout, "DAMAGED %s %s: %s\n", d.Kind, d.ID, d.Reason)
					if d.Pack != "" {
						fmt.Fprintf(e.stdout, "  pack:    %s\n", d.Pack)
					}
					for _, t := range d.Tensors {
						fmt.Fprintf(e.stdout, "  tensor:  %s\n", t)
					}
					for _, f := range d.Files {
						fmt.Fprintf(e.stdout, "  file:    %s\n", f)
					}
					if len(d.Refs) > 0 {
						fmt.Fprintf(e.stdout, "  refs:    %s\n", strings.Join(d.Refs, ", "))
					}
				}
				status := "ok"
				if !res.OK {
					status = fmt.Sprintf("%d damaged objects", len(res.Damaged))
				}
				fmt.Fprintf(e.stdout, "verify: %s (%d refs, %d packs, %d objects, %d reachable, %s read)\n",
					status, res.Refs, res.Packs, res.Objects, res.Reachable, humanBytes(res.BytesRead))
			}
			if !res.OK {
				return silentExit{ExitIntegrity}
			}
			return nil
		}),
	}
}

func cmdGC() *cli.Command {
	return &cli.Command{
		Name:  "gc",
		Usage: "remove data that no ref reaches (packs younger than --grace are kept)",
		Flags: commonFlags(
			&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "report what would be removed"},
			&cli.DurationFlag{Name: "grace", Value: store.DefaultGrace, Usage: "keep packs and temp files modified within this duration (0 for none)"},
		),
		Action: withStore(-1, "", func(c *cli.Context, e *env, s *store.Store) error {
			grace := c.Duration("grace")
			if grace == 0 {
				grace = -1 // the flag's 0 means no grace at all
			}
			res, err := s.GC(c.Context, store.GCOptions{DryRun: c.Bool("dry-run"), Grace: grace})
			if err != nil {
				return err
			}
			if e.json {
				return e.printJSON(res)
			}
			verb := "freed"
			if res.DryRun {
				verb = "would free"
			}
			fmt.Fprintf(e.stdout, "gc: %s %s (%d packs deleted, %d rewritten, %d orphan packs, %d temp files; %d kept, %d protected by --grace)\n",
				verb, humanBytes(res.BytesFreed), res.PacksDeleted, res.PacksRewritten, res.OrphanPacks, res.TempFiles, res.PacksKept, res.ProtectedByAge)
			fmt.Fprintf(e.stdout, "physical: %s -> %s\n", humanBytes(res.PhysicalBefore), humanBytes(res.PhysicalAfter))
			return nil
		}),
	}
}

func cmdRepair() *cli.Command {
	return &cli.Command{
		Name:  "repair",
		Usage: "repair the store",
		Subcommands: []*cli.Command{{
			Name:  "index",
			Usage: "rebuild the index from the pack files",
			Flags: commonFlags(),
			Action: withStore(0, "repair index takes no arguments", func(c *cli.Context, e *env, s *store.Store) error {
				res, err := s.RepairIndex()
				if err != nil {
					return err
				}
				if e.json {
					return e.printJSON(res)
				}
				fmt.Fprintf(e.stdout, "rebuilt index: %d packs, %d objects (%d duplicates)\n", res.Packs, res.Objects, res.Duplicates)
				for _, d := range res.DamagedPacks {
					fmt.Fprintf(e.stdout, "damaged pack: %s\n", d)
				}
				return nil
			}),
		}},
	}
}
