package cli

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/heft-dev/heft/internal/storeops"
	"github.com/heft-dev/heft/ops"
	"github.com/heft-dev/heft/store"
)

// deviceFlag selects where ops compute: a GPU through PJRT when one works
// (auto), the CPU, or a GPU or nothing.
func deviceFlag() cli.Flag {
	return &cli.StringFlag{Name: "device", Value: "auto", Usage: "where to compute: auto (a GPU if one works, else the CPU), cpu or gpu (heft doctor tells what auto finds)", EnvVars: []string{"HEFT_DEVICE"}}
}

// dequantDeviceFlag is --device for dequant, whose default is the CPU: its
// kernels run at memory speed on all cores, and on the measured H200 host
// (16 cores) the round trip of every weight over PCIe made the GPU path half
// as fast end to end (docs/benchmarks.md).
func dequantDeviceFlag() cli.Flag {
	return &cli.StringFlag{Name: "device", Value: "cpu", Usage: "where to compute: cpu (default: faster here than the transfers to a GPU and back), gpu, or auto (a GPU if one works)", EnvVars: []string{"HEFT_DEVICE"}}
}

// pluginFlag names the PJRT plugin explicitly.
func pluginFlag() cli.Flag {
	return &cli.StringFlag{Name: "pjrt-plugin", Usage: "PJRT plugin (.so) for --device auto or gpu (default: PJRT_PLUGIN_LIBRARY_PATH, then the jax CUDA 13/12 wheels python3 finds)", EnvVars: []string{"HEFT_PJRT_PLUGIN"}}
}

// checkDevice validates --device for quantize, whose recipes the store
// evaluates on the CPU: the device changes nothing there yet and is not
// probed.
func checkDevice(c *cli.Context, e *env) error {
	switch d := c.String("device"); d {
	case "", ops.DeviceAuto, ops.DeviceCPU:
		return nil
	case ops.DeviceGPU:
		e.info("heft: %s writes recipes that the store evaluates on the CPU; --device gpu does not apply to it yet", c.Command.Name)
		return nil
	default:
		return usagef("--device %q: want auto, cpu or gpu", d)
	}
}

// openBackend resolves --device for the commands that compute (lora
// extract and merge, analyze): auto falls back to the CPU with one line on
// stderr saying why; a demanded GPU that is not there is an operational
// failure (exit 2). HEFT_GPU_MEMORY_FRACTION caps the GPU memory heft takes
// (default 0.75, allocated on demand). The caller closes the backend.
func openBackend(c *cli.Context, e *env) (ops.Backend, *ops.DeviceReport, error) {
	d := c.String("device")
	switch d {
	case "":
		d = ops.DeviceAuto // HEFT_DEVICE set but empty
	case ops.DeviceAuto, ops.DeviceCPU, ops.DeviceGPU:
	default:
		return nil, nil, usagef("--device %q: want auto, cpu or gpu", d)
	}
	var frac float64
	if v := os.Getenv("HEFT_GPU_MEMORY_FRACTION"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 || f > 1 {
			return nil, nil, usagef("HEFT_GPU_MEMORY_FRACTION=%q: want a fraction in (0, 1]", v)
		}
		frac = f
	}
	be, rep, err := ops.OpenBackend(ops.DeviceOptions{
		Device: d, Plugin: c.String("pjrt-plugin"), MemoryFraction: frac,
		Logf: func(format string, args ...any) { e.info(format, args...) },
	})
	if err != nil {
		return nil, rep, err
	}
	if rep.Chosen == ops.DeviceGPU {
		e.info("heft: computing on %s", be.Name())
	}
	return be, rep, nil
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
			dequantDeviceFlag(), pluginFlag(),
		),
		Action: withStore(1, "dequant takes one REF", func(c *cli.Context, e *env, s *store.Store) error {
			be, _, err := openBackend(c, e)
			if err != nil {
				return err
			}
			defer be.Close()
			start := time.Now()
			res, err := ops.Dequant(c.Context, storeops.New(s), ops.DequantOptions{
				Source: c.Args().First(), Name: c.String("name"),
				Materialize: c.Bool("materialize"), Message: c.String("message"), Backend: be,
			})
			if err != nil {
				return err
			}
			return e.reportOp(res, res.Commit, res.Ref, start, "dequantized %d weights of a %s model on %s; %d tensors kept, %d dropped", res.Modules, res.Format, res.Device, res.Kept, res.Dropped)
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
			if err := checkDevice(c, e); err != nil {
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
			return e.reportOp(res, res.Commit, res.Ref, start, "%s; %d tensors copied", res.Scheme, res.Copied)
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

func cmdLora() *cli.Command {
	return &cli.Command{
		Name:  "lora",
		Usage: "extract LoRA adapters from a fine-tune, or merge one into a model",
		Subcommands: []*cli.Command{
			{
				Name:  "extract",
				Usage: "write a PEFT adapter (vLLM-loadable) approximating TUNED − BASE by a truncated SVD",
				Flags: commonFlags(
					&cli.StringFlag{Name: "base", Usage: "base model REF (method a: the dense base; method b: its quantization)", Required: true},
					&cli.StringFlag{Name: "tuned", Usage: "fine-tuned model REF", Required: true},
					&cli.IntFlag{Name: "rank", Aliases: []string{"r"}, Usage: "LoRA rank (vLLM serves it with --max-lora-rank ≥ rank)", Required: true},
					&cli.StringFlag{Name: "method", Value: "a", Usage: "a: subtract the dense base; b: subtract the dequantized quantized base"},
					&cli.StringFlag{Name: "name", Aliases: []string{"n"}, Usage: "ref to write, NAME[:TAG]", Required: true},
					&cli.StringFlag{Name: "dtype", Value: "BF16", Usage: "adapter tensor dtype: BF16 or F32"},
					&cli.StringFlag{Name: "base-model-name", Usage: "base_model_name_or_path to record (default: the base REF)"},
					&cli.Uint64Flag{Name: "seed", Usage: "seed of the randomized SVD"},
					&cli.StringFlag{Name: "message", Aliases: []string{"m"}, Usage: "commit message"},
					deviceFlag(), pluginFlag(),
				),
				Action: withStore(0, "lora extract takes no arguments (use --base, --tuned, --rank, --name)", func(c *cli.Context, e *env, s *store.Store) error {
					be, _, err := openBackend(c, e)
					if err != nil {
						return err
					}
					defer be.Close()
					start := time.Now()
					res, err := ops.LoraExtract(c.Context, storeops.New(s), ops.LoraExtractOptions{
						Base: c.String("base"), Tuned: c.String("tuned"), Name: c.String("name"), Rank: c.Int("rank"),
						Method: c.String("method"), DType: c.String("dtype"), BaseName: c.String("base-model-name"),
						Seed: c.Uint64("seed"), Message: c.String("message"), Backend: be,
					})
					if err != nil {
						return err
					}
					if err := e.reportOp(res, res.Commit, res.Ref, start, "method %s, rank %d, %d modules, relative error mean %.4f, max %.4f",
						res.Method, res.Rank, len(res.Modules), res.MeanRelError, res.MaxRelError); err != nil || e.json {
						return err
					}
					if len(res.Excluded) > 0 {
						fmt.Fprintf(e.stdout, "left out (vLLM takes no LoRA on them): %d tensors carrying %.2f%% of the delta energy\n", len(res.Excluded), 100*res.ExcludedEnergyShare)
						rows := [][]string{}
						for _, ex := range res.Excluded {
							rows = append(rows, []string{ex.Tensor, fmt.Sprintf("%.3f%%", 100*ex.EnergyShare), ex.Reason})
						}
						e.table([]string{"TENSOR", "ENERGY", "WHY"}, rows)
					}
					return nil
				}),
			},
			{
				Name:  "merge",
				Usage: "write BASE + scaling·B·A for every module of a PEFT adapter (a quantized base is dequantized first)",
				Flags: commonFlags(
					&cli.StringFlag{Name: "base", Usage: "base model REF", Required: true},
					&cli.StringFlag{Name: "adapter", Usage: "adapter REF", Required: true},
					&cli.StringFlag{Name: "name", Aliases: []string{"n"}, Usage: "ref to write, NAME[:TAG]", Required: true},
					&cli.StringFlag{Name: "message", Aliases: []string{"m"}, Usage: "commit message"},
					deviceFlag(), pluginFlag(),
				),
				Action: withStore(0, "lora merge takes no arguments (use --base, --adapter, --name)", func(c *cli.Context, e *env, s *store.Store) error {
					be, _, err := openBackend(c, e)
					if err != nil {
						return err
					}
					defer be.Close()
					start := time.Now()
					res, err := ops.LoraMerge(c.Context, storeops.New(s), ops.LoraMergeOptions{
						Base: c.String("base"), Adapter: c.String("adapter"), Name: c.String("name"), Message: c.String("message"),
						Backend: be,
					})
					if err != nil {
						return err
					}
					return e.reportOp(res, res.Commit, res.Ref, start, "merged %d modules (%d quantized weights dequantized)", res.Merged, res.Dequantized)
				}),
			},
		},
	}
}

func cmdAnalyze() *cli.Command {
	return &cli.Command{
		Name:  "analyze",
		Usage: "weight-space report: LoRA energy by rank, spectrum, quantization noise vs the fine-tuning delta",
		Flags: commonFlags(
			&cli.StringFlag{Name: "base", Usage: "dense base model REF", Required: true},
			&cli.StringFlag{Name: "tuned", Usage: "fine-tuned model REF", Required: true},
			&cli.StringFlag{Name: "quantized", Usage: "a quantization of the base (default: quantize on the fly with --scheme)"},
			&cli.StringFlag{Name: "scheme", Value: "fp8-block", Usage: "scheme for on-the-fly quantization noise: fp8-block, int8 or w4a16"},
			&cli.IntSliceFlag{Name: "rank", Usage: "ranks to report energy at (repeatable; default 16, 64, 128, 256)"},
			&cli.StringFlag{Name: "modules", Usage: "regular expression selecting modules"},
			&cli.StringFlag{Name: "png", Usage: "write a plot of energy vs rank to this PNG file"},
			&cli.Uint64Flag{Name: "seed", Usage: "seed of the randomized SVD"},
			deviceFlag(), pluginFlag(),
		),
		Action: withStore(0, "analyze takes no arguments (use --base and --tuned)", func(c *cli.Context, e *env, s *store.Store) error {
			be, _, err := openBackend(c, e)
			if err != nil {
				return err
			}
			defer be.Close()
			opts := ops.AnalyzeOptions{Base: c.String("base"), Tuned: c.String("tuned"), Quantized: c.String("quantized"),
				Scheme: c.String("scheme"), Ranks: c.IntSlice("rank"), Modules: c.String("modules"), Seed: c.Uint64("seed"),
				Backend: be}
			var png *os.File
			if p := c.String("png"); p != "" {
				f, err := os.Create(p)
				if err != nil {
					return err
				}
				png = f
				opts.PNG = f
			}
			res, err := ops.Analyze(c.Context, storeops.New(s), opts)
			if png != nil {
				if cerr := png.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					os.Remove(png.Name())
				}
			}
			if err != nil {
				return err
			}
			if e.json {
				return e.printJSON(res)
			}
			header := []string{"MODULE", "SHAPE", "|Δ|/|W|"}
			for _, r := range res.Ranks {
				header = append(header, fmt.Sprintf("E@%d", r))
			}
			header = append(header, "NOISE", "COS(N,Δ)", "COS(N,LORA)", "σ1..σ3")
			rows := [][]string{}
			for _, m := range res.Modules {
				row := []string{m.Module, fmt.Sprintf("%dx%d", m.Out, m.In), fmt.Sprintf("%.4f", m.RelDelta)}
				for _, en := range m.Energy {
					row = append(row, fmt.Sprintf("%.3f", en))
				}
				var sv []string
				for _, v := range m.Spectrum[:min(3, len(m.Spectrum))] {
					sv = append(sv, fmt.Sprintf("%.3g", v))
				}
				row = append(row, fmt.Sprintf("%.4f", m.NoiseNorm), fmt.Sprintf("%+.5f", m.CosNoiseDelta), fmt.Sprintf("%+.5f", m.CosNoiseLoRA), strings.Join(sv, " "))
				rows = append(rows, row)
			}
			e.table(header, rows)
			fmt.Fprintf(e.stdout, "\nnoise from %s; mean energy %v at ranks %v; mean cos(noise, LoRA) %+.6f, max |cos| %.6f\n",
				res.Noise, fmtFloats(res.MeanEnergy), res.Ranks, res.MeanCosNoiseLoRA, res.MaxAbsCosNoise)
			return nil
		}),
	}
}

func fmtFloats(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.3f", x)
	}
	return "[" + strings.Join(s, " ") + "]"
}

// reportOp prints an op's result: the JSON document, or the new commit and ref and
// a one-line summary with the time taken.
func (e *env) reportOp(res any, commit, ref string, start time.Time, format string, args ...any) error {
	if e.json {
		return e.printJSON(res)
	}
	fmt.Fprintf(e.stdout, "%s %s\n", commit, ref)
	fmt.Fprintf(e.stdout, format+", in %.1fs\n", append(args, time.Since(start).Seconds())...)
	return nil
}
