package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/heft-dev/heft/codec/safetensors"
	"github.com/heft-dev/heft/internal/modelgen"
	"github.com/heft-dev/heft/internal/storeops"
	"github.com/heft-dev/heft/ops"
	"github.com/heft-dev/heft/store"
)

func cmdDemo() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "build a small Qwen3-style model family, store it in a temporary store and show the saving",
		Flags: commonFlags(&cli.StringFlag{Name: "keep", Usage: "keep the generated models and store in this directory (default: a temporary directory, removed)"}),
		Action: func(c *cli.Context) error {
			e := getEnv(c)
			dir := c.String("keep")
			if dir == "" {
				tmp, err := os.MkdirTemp("", "heft-demo-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				dir = tmp
			}
			res, err := RunDemo(c.Context, dir, e.stdout, !e.json)
			if err != nil {
				return err
			}
			if e.json {
				return e.printJSON(res)
			}
			return nil
		},
	}
}

// DemoModel is one model of the demo family.
type DemoModel struct {
	Ref          string  `json:"ref"`
	What         string  `json:"what"`
	LogicalBytes int64   `json:"logical_bytes"`
	NewBytes     int64   `json:"new_physical_bytes"`
	Seconds      float64 `json:"seconds"`
}

// DemoResult is what the demo measured.
type DemoResult struct {
	Models        []DemoModel  `json:"models"`
	Stats         *store.Stats `json:"stats"`
	ExportedRef   string       `json:"exported_ref"`
	ExportedFiles int          `json:"exported_files"`
	ByteIdentical bool         `json:"byte_identical"`
	VerifyOK      bool         `json:"verify_ok"`
}

// RunDemo generates the family under dir, imports it into dir/store, exports one
// model and checks it, and verifies the store. With human set it narrates on out.
func RunDemo(ctx context.Context, dir string, out io.Writer, human bool) (*DemoResult, error) {
	say := func(format string, args ...any) {
		if human {
			fmt.Fprintf(out, format+"\n", args...)
		}
	}
	cfg := modelgen.Demo()
	models := filepath.Join(dir, "models")
	base := filepath.Join(models, "qwen3-demo")
	family := []struct{ ref, dir, what string }{
		{"demo/qwen3-base", base, "BF16 base, 2 shards"},
		{"demo/qwen3-reshard", filepath.Join(models, "qwen3-demo-reshard"), "same tensors in 3 shards"},
		{"demo/qwen3-tuned", filepath.Join(models, "qwen3-demo-tuned"), "full fine-tune, frozen embeddings"},
		{"demo/qwen3-copy", filepath.Join(models, "qwen3-demo-copy"), "byte-identical copy of the base"},
		{"demo/qwen3-fp8", filepath.Join(models, "qwen3-demo-fp8"), "FP8 block-128, llm-compressor style"},
	}
	say("Generating a Qwen3-architecture family (%s per model) in %s ...", humanBytes(cfg.ParamBytes()), models)
	if err := modelgen.WriteBase(base, cfg, modelgen.Options{Seed: 1, Shards: 2}); err != nil {
		return nil, err
	}
	if err := modelgen.Reshard(base, family[1].dir, 3); err != nil {
		return nil, err
	}
	if err := modelgen.FineTune(base, family[2].dir, modelgen.FineTuneOptions{Seed: 2, FreezeEmbeddings: true}); err != nil {
		return nil, err
	}
	if err := modelgen.CopyDir(base, family[3].dir); err != nil {
		return nil, err
	}
	// BF16 scales and compressed-tensors' torch arithmetic, as llm-compressor
	// writes a BF16 model: not heft's own rounding, so it is stored as data.
	if err := modelgen.WriteFP8BlockWith(base, family[4].dir, modelgen.FP8BlockOptions{ScaleDType: safetensors.BF16}); err != nil {
		return nil, err
	}

	s, err := store.Open(filepath.Join(dir, "store"), store.Options{})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	res := &DemoResult{}
	rows := [][]string{}
	for _, m := range family {
		ref, _ := store.ParseRef(m.ref)
		start := time.Now()
		r, err := s.Import(ctx, m.dir, store.ImportOptions{Ref: ref, Message: m.what})
		if err != nil {
			return nil, err
		}
		dm := DemoModel{Ref: m.ref, What: m.what, LogicalBytes: r.LogicalBytes, NewBytes: r.Stats.PackBytes, Seconds: time.Since(start).Seconds()}
		res.Models = append(res.Models, dm)
		rows = append(rows, []string{m.ref, m.what, humanBytes(dm.LogicalBytes), humanBytes(dm.NewBytes), percent(dm.NewBytes, dm.LogicalBytes), fmt.Sprintf("%.2fs", dm.Seconds)})
	}
	// Ops on the store: derived models cost what their recipes cost.
	m := storeops.New(s)
	derive := []struct {
		ref, what string
		run       func() error
	}{
		{"demo/qwen3-fp8-heft", "heft quantize base --scheme fp8-block", func() error {
			_, err := ops.Quantize(ctx, m, ops.QuantizeOptions{Source: family[0].ref, Name: "demo/qwen3-fp8-heft", Scheme: "fp8-block"})
			return err
		}},
		{"demo/qwen3-bridge", "heft dequant fp8 (BF16 bridge)", func() error {
			_, err := ops.Dequant(ctx, m, ops.DequantOptions{Source: family[4].ref, Name: "demo/qwen3-bridge"})
			return err
		}},
		{"demo/qwen3-lora", "heft lora extract tuned - base, rank 16", func() error {
			_, err := ops.LoraExtract(ctx, m, ops.LoraExtractOptions{Base: family[0].ref, Tuned: family[2].ref, Name: "demo/qwen3-lora", Rank: 16})
			return err
		}},
	}
	for _, d := range derive {
		before, err := s.Stats(nil)
		if err != nil {
			return nil, err
		}
		start := time.Now()
		if err := d.run(); err != nil {
			return nil, fmt.Errorf("demo: %s: %w", d.what, err)
		}
		after, err := s.Stats(nil)
		if err != nil {
			return nil, err
		}
		dm := DemoModel{Ref: d.ref, What: d.what, NewBytes: after.PhysicalBytes - before.PhysicalBytes, Seconds: time.Since(start).Seconds()}
		for _, ms := range after.Models {
			if ms.Ref == d.ref+":"+store.DefaultTag {
				dm.LogicalBytes = ms.LogicalBytes
			}
		}
		res.Models = append(res.Models, dm)
		rows = append(rows, []string{dm.Ref, dm.What, humanBytes(dm.LogicalBytes), humanBytes(dm.NewBytes), percent(dm.NewBytes, dm.LogicalBytes), fmt.Sprintf("%.2fs", dm.Seconds)})
	}
	if human {
		fmt.Fprintln(out)
		(&env{stdout: out}).table([]string{"MODEL", "WHAT", "LOGICAL", "NEW PHYSICAL", "RATIO", "TIME"}, rows)
	}
	if res.Stats, err = s.Stats(nil); err != nil {
		return nil, err
	}
	if human {
		fmt.Fprintln(out)
		printStats(&env{stdout: out}, res.Stats)
	}

	res.ExportedRef = family[2].ref
	exportDir := filepath.Join(dir, "export")
	if _, err := s.Export(ctx, res.ExportedRef, exportDir, nil); err != nil {
		return nil, err
	}
	same, n, err := sameFiles(family[2].dir, exportDir)
	if err != nil {
		return nil, err
	}
	res.ByteIdentical, res.ExportedFiles = same, n
	say("\nExported %s to %s: %d files, byte-identical to the source (sha256): %v", res.ExportedRef, exportDir, n, same)

	v, err := s.Verify(ctx, store.VerifyOptions{ReadData: true})
	if err != nil {
		return nil, err
	}
	res.VerifyOK = v.OK
	say("verify --read-data: ok=%v (%d objects, %s re-read and re-hashed)", v.OK, v.Objects, humanBytes(v.BytesRead))
	if !same || !v.OK {
		return res, fmt.Errorf("%w: demo check failed (byte-identical=%v, verify=%v)", store.ErrIntegrity, same, v.OK)
	}
	return res, nil
}

// sameFiles compares two directory trees by the sha256 of every file.
func sameFiles(a, b string) (bool, int, error) {
	ha, err := modelgen.TreeSHA256(a)
	if err != nil {
		return false, 0, err
	}
	hb, err := modelgen.TreeSHA256(b)
	if err != nil {
		return false, 0, err
	}
	if len(ha) != len(hb) {
		return false, len(hb), nil
	}
	for p, h := range ha {
		if hb[p] != h {
			return false, len(hb), nil
		}
	}
	return true, len(hb), nil
}
