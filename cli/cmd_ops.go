package cli

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/heft-dev/heft/internal/storeops"
	"github.com/heft-dev/heft/ops"
	"github.com/heft-dev/heft/store"
)

// deviceFlag selects where ops run. Only the CPU backend exists in this build.
func deviceFlag() cli.Flag {
	return &cli.StringFlag{Name: "device", Value: "auto", Usage: "where to compute: auto, cpu or gpu", EnvVars: []string{"HEFT_DEVICE"}}
}

// checkDevice validates --device; a demanded GPU that is not there is an
// operational failure (exit 2).
func checkDevice(c *cli.Context) error {
	switch d := c.String("device"); d {
	case "auto", "cpu":
		return nil
	case "gpu":
		return fmt.Errorf("--device gpu: this build of heft has no GPU backend")
	default:
		return usagef("--device %q: want auto, cpu or gpu", d)
	}
}

func cmdDequant() *cli.Command {
	return &cli.Command{
		Name:      "dequant",
		Usage:     "write the dense (BF16 \"bridge\") model of a quantized model",
		ArgsUsage: "REF",
		Flags: commonFlags(
			&cli.StringFlag{Name: "name", Aliases: []string{"n"}, Usage: "ref to write, NAME[:TAG]", Required: true},
			&cli.BoolFlag{Name: "materialize", Usage: "store the dense weights as data instead of recipes"},
			&cli.StringFlag{Name: "message", Aliases: []string{"m"}, Usage: "commit message"},
			deviceFlag(),
		),
		Action: withStore(1, "dequant takes one REF", func(c *cli.Context, e *env, s *store.Store) error {
			if err := checkDevice(c); err != nil {
				return err
			}
			start := time.Now()
			res, err := ops.Dequant(c.Context, storeops.New(s), ops.DequantOptions{
				Source: c.Args().First(), Name: c.String("name"),
				Materialize: c.Bool("materialize"), Message: c.String("message"),
			})
			if err != nil {
				return err
			}
			if e.json {
				return e.printJSON(res)
			}
			fmt.Fprintf(e.stdout, "%s %s\n", res.Commit, res.Ref)
			fmt.Fprintf(e.stdout, "dequantized %d weights of a %s model; %d tensors kept, %d dropped, in %.1fs\n",
				res.Modules, res.Format, res.Kept, res.Dropped, time.Since(start).Seconds())
			return nil
		}),
	}
}

func cmdQuantize() *cli.Command {
	return &cli.Command{
		Name:      "quantize",
		Usage:     "write a quantized model (fp8-block, int8 or w4a16) that vLLM loads",
		ArgsUsage: "REF",
		Flags: commonFlags(
			&cli.StringFlag{Name: "name", Aliases: []string{"n"}, Usage: "ref to write, NAME[:TAG]", Required: true},
			&cli.StringFlag{Name: "scheme", Usage: "fp8-block, int8 or w4a16", Required: true},
			&cli.StringFlag{Name: "format", Value: "compressed-tensors", Usage: "compressed-tensors, or fp8 (native block FP8 with weight_scale_inv; fp8-block only)"},
			&cli.IntFlag{Name: "group-size", Usage: "w4a16: input columns per scale (default 128; -1: one scale per row)"},
			&cli.BoolFlag{Name: "asymmetric", Usage: "w4a16: store zero points (W4A16_ASYM)"},
			&cli.StringFlag{Name: "scale-dtype", Usage: "dtype of the scales: BF16, F16 or F32 (default: the weight's dtype; BF16 for native fp8)"},
			&cli.StringSliceFlag{Name: "ignore", Usage: "module to leave unquantized (name or re:REGEX); repeatable"},
			&cli.BoolFlag{Name: "skip-vllm-checks", Usage: "allow shapes vLLM's kernels refuse (small test models)"},
			&cli.BoolFlag{Name: "materialize", Usage: "store the quantized tensors as data instead of recipes"},
			&cli.StringFlag{Name: "message", Aliases: []string{"m"}, Usage: "commit message"},
			deviceFlag(),
		),
		Action: withStore(1, "quantize takes one REF", func(c *cli.Context, e *env, s *store.Store) error {
			if err := checkDevice(c); err != nil {
				return err
			}
			start := time.Now()
			res, err := ops.Quantize(c.Context, storeops.New(s), ops.QuantizeOptions{
				Source: c.Args().First(), Name: c.String("name"), Scheme: c.String("scheme"), Format: c.String("format"),
				GroupSize: c.Int("group-size"), Asymmetric: c.Bool("asymmetric"), ScaleDType: c.String("scale-dtype"),
				Ignore: c.StringSlice("ignore"), SkipVLLMChecks: c.Bool("skip-vllm-checks"),
				Materialize: c.Bool("materialize"), Message: c.String("message"),
			})
			if err != nil {
				return err
			}
			if e.json {
				return e.printJSON(res)
			}
			fmt.Fprintf(e.stdout, "%s %s\n", res.Commit, res.Ref)
			fmt.Fprintf(e.stdout, "%s; %d tensors copied, in %.1fs\n", res.Scheme, res.Copied, time.Since(start).Seconds())
			return nil
		}),
	}
}

func cmdLineage() *cli.Command {
	return &cli.Command{
		Name:      "lineage",
		Usage:     "the models a model was derived from and derived into",
		ArgsUsage: "REF",
		Flags:     commonFlags(),
		Action: withStore(1, "lineage takes one REF", func(c *cli.Context, e *env, s *store.Store) error {
			g, err := s.Lineage(c.Args().First())
			if err != nil {
				return err
			}
			if e.json {
				return e.printJSON(g)
			}
			printLineage(e, g)
			return nil
		}),
	}
}

// printLineage draws the graph as two trees from the root: what it was derived
// from (upstream) and what was derived from it (downstream).
func printLineage(e *env, g *store.Lineage) {
	nodes := map[store.ID]store.LineageNode{}
	for _, n := range g.Nodes {
		nodes[n.Commit] = n
	}
	label := func(id store.ID) string {
		n := nodes[id]
		if n.Gone {
			return id.Short() + " (no longer stored)"
		}
		name := id.Short()
		if len(n.Refs) > 0 {
			name = strings.Join(n.Refs, ", ") + " (" + id.Short() + ")"
		}
		what := n.Op
		if n.Source != "" && (n.Op == "import" || n.Op == "pull") {
			what += " " + n.Source
		}
		keys := make([]string, 0, len(n.Params))
		for k := range n.Params {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var ps []string
		for _, k := range keys {
			ps = append(ps, k+"="+n.Params[k])
		}
		if len(ps) > 0 {
			what += " [" + strings.Join(ps, " ") + "]"
		}
		return name + ": " + what
	}
	up := map[store.ID][]store.LineageEdge{}
	down := map[store.ID][]store.LineageEdge{}
	for _, ed := range g.Edges {
		up[ed.To] = append(up[ed.To], ed)
		down[ed.From] = append(down[ed.From], ed)
	}
	fmt.Fprintln(e.stdout, label(g.Root))
	var walk func(id store.ID, depth int, seen map[store.ID]bool, upstream bool)
	walk = func(id store.ID, depth int, seen map[store.ID]bool, upstream bool) {
		if seen[id] {
			return
		}
		seen[id] = true
		edges := down[id]
		if upstream {
			edges = up[id]
		}
		for _, ed := range edges {
			indent := strings.Repeat("    ", depth)
			if upstream {
				fmt.Fprintf(e.stdout, "%s  <- %s %s\n", indent, ed.Relation, label(ed.From))
				walk(ed.From, depth+1, seen, true)
			} else {
				fmt.Fprintf(e.stdout, "%s  -> %s (%s it)\n", indent, label(ed.To), ed.Relation)
				walk(ed.To, depth+1, seen, false)
			}
		}
	}
	walk(g.Root, 0, map[store.ID]bool{}, true)
	walk(g.Root, 0, map[store.ID]bool{}, false)
}
