package ops

import (
	"context"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/safetensors"
	"github.com/heft-dev/heft/ops/internal/linalg"
)

// AnalyzeOptions describe one `heft analyze`: the weight-space report behind the
// thesis that quantization noise is orthogonal to the fine-tuning signal.
type AnalyzeOptions struct {
	Base, Tuned string // REFs of the dense base and its fine-tune
	// Quantized is a REF of a quantization of the base. When empty the base is
	// quantized on the fly with Scheme (default fp8-block).
	Quantized string
	Scheme    string
	// Ranks are the ranks the energy is reported at (default 16, 64, 128, 256).
	Ranks []int
	// Modules, when set, is a regular expression selecting modules by name.
	Modules string
	// Spectrum is how many leading singular values to report (default 8).
	Spectrum int
	// PNG, when set, receives a plot of energy vs rank per module type.
	PNG  io.Writer
	Seed uint64
	// Backend computes the SVDs, quantizations and dequantizations, the
	// norms and the cosines (nil: the CPU).
	Backend Backend
}

// AnalyzeModule is one module's report.
type AnalyzeModule struct {
	Module    string  `json:"module"`
	Out       int     `json:"out"`
	In        int     `json:"in"`
	DeltaNorm float64 `json:"delta_norm"` // ‖W_tuned − W_base‖_F
	// RelDelta is ‖Δ‖ / ‖W_base‖.
	RelDelta float64 `json:"rel_delta"`
	// Energy[i] is the share of ‖Δ‖² the best rank-Ranks[i] approximation captures.
	Energy []float64 `json:"energy"`
	// Spectrum is the head of Δ's singular values.
	Spectrum []float64 `json:"spectrum"`
	// NoiseNorm is ‖W_base − dequant(quant(W_base))‖ / ‖W_base‖.
	NoiseNorm float64 `json:"rel_quant_noise"`
	// CosNoiseDelta is the cosine between the quantization noise and Δ;
	// CosNoiseLoRA between the noise and Δ's best rank-max(Ranks) approximation
	// (the LoRA delta).
	CosNoiseDelta float64 `json:"cos_noise_delta"`
	CosNoiseLoRA  float64 `json:"cos_noise_lora"`

	energyCurve []float64 // share captured at ranks 1..max(Ranks), for the plot
}

// AnalyzeResult is the whole report.
type AnalyzeResult struct {
	Ranks   []int           `json:"ranks"`
	Noise   string          `json:"noise_from"` // the quantized model or scheme
	Modules []AnalyzeModule `json:"modules"`
	// Means over modules.
	MeanEnergy       []float64 `json:"mean_energy"`
	MeanCosNoiseLoRA float64   `json:"mean_cos_noise_lora"`
	MaxAbsCosNoise   float64   `json:"max_abs_cos_noise_lora"`
}

// Analyze measures, per Linear module, how much of the fine-tuning delta a rank-r
// LoRA captures, the head of its spectrum, and the cosine between the
// quantization noise of the base and the delta.
func Analyze(ctx context.Context, m Models, opts AnalyzeOptions) (*AnalyzeResult, error) {
	ranks := slices.Clone(opts.Ranks)
	if len(ranks) == 0 {
		ranks = []int{16, 64, 128, 256}
	}
	sort.Ints(ranks)
	if ranks[0] < 1 {
		return nil, inputErrorf("analyze: ranks must be positive")
	}
	nspec := opts.Spectrum
	if nspec <= 0 {
		nspec = 8
	}
	var filter *regexp.Regexp
	if opts.Modules != "" {
		var err error
		if filter, err = regexp.Compile(opts.Modules); err != nil {
			return nil, inputErrorf("analyze: --modules: %v", err)
		}
	}
	be := backendOr(opts.Backend)
	mds, views, err := loadDenseViews(ctx, m, be, opts.Base, opts.Tuned)
	if err != nil {
		return nil, err
	}
	tunedMd, base, tuned := mds[1], views[0], views[1]
	if base.quantized() || tuned.quantized() {
		return nil, inputErrorf("analyze: give the dense base and fine-tune (the quantized model goes in --quantized)")
	}
	res := &AnalyzeResult{Ranks: ranks, Modules: []AnalyzeModule{}}
	var qview *denseView
	var qs quant.QuantizeScheme
	if opts.Quantized != "" {
		qMd, err := loadModel(m, opts.Quantized)
		if err != nil {
			return nil, err
		}
		if qview, err = newDenseView(ctx, m, qMd, be); err != nil {
			return nil, err
		}
		if !qview.quantized() {
			return nil, inputErrorf("analyze: %s is not quantized", opts.Quantized)
		}
		res.Noise = opts.Quantized + " (" + qview.qm.Describe() + ")"
	} else {
		scheme := opts.Scheme
		if scheme == "" {
			scheme = quant.QuantFP8Block
		}
		if qs, err = quant.ParseQuantizeScheme(scheme, ""); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInput, err)
		}
		qs.SkipVLLMChecks = true
		res.Noise = "quantize " + qs.String() + " on the fly"
	}
	names := make([]string, 0, len(tunedMd.tensors))
	for name := range tunedMd.tensors {
		names = append(names, name)
	}
	sort.Strings(names)
	byType := map[string][][]float64{}
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ts, tdt, ok := tuned.shape(name)
		if ok, _ := loraTarget(name, ts); !ok || !isFloatDType(tdt) {
			continue
		}
		bs, bdt, ok := base.shape(name)
		if !ok || !equalShape(bs, ts) {
			continue
		}
		mod := strings.TrimSuffix(name, ".weight")
		if filter != nil && !filter.MatchString(mod) {
			continue
		}
		out, in := int(ts[0]), int(ts[1])
		am, err := analyzeModule(ctx, be, base, tuned, qview, qs, name, bdt, out, in, ranks, nspec, opts.Seed)
		if err != nil {
			return nil, err
		}
		am.Module = mod
		res.Modules = append(res.Modules, am)
		kind := mod[strings.LastIndexByte(mod, '.')+1:]
		byType[kind] = append(byType[kind], am.energyCurve)
	}
	if len(res.Modules) == 0 {
		return nil, inputErrorf("analyze: no Linear module of %s matches %s", opts.Tuned, opts.Base)
	}
	res.MeanEnergy = make([]float64, len(ranks))
	for _, am := range res.Modules {
		for i, e := range am.Energy {
			res.MeanEnergy[i] += e / float64(len(res.Modules))
		}
		res.MeanCosNoiseLoRA += am.CosNoiseLoRA / float64(len(res.Modules))
		res.MaxAbsCosNoise = max(res.MaxAbsCosNoise, math.Abs(am.CosNoiseLoRA))
	}
	if opts.PNG != nil {
		var series []linalg.EnergySeries
		kinds := make([]string, 0, len(byType))
		for k := range byType {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		for _, k := range kinds {
			curves := byType[k]
			n := len(curves[0])
			for _, c := range curves {
				n = min(n, len(c))
			}
			mean := make([]float64, n)
			for _, c := range curves {
				for i := range mean {
					mean[i] += c[i] / float64(len(curves))
				}
			}
			series = append(series, linalg.EnergySeries{Name: fmt.Sprintf("%s (%d)", k, len(curves)), Energy: mean})
		}
		title := fmt.Sprintf("Energy of %s − %s captured by rank r", opts.Tuned, opts.Base)
		if err := linalg.PlotEnergy(opts.PNG, series, linalg.PlotOptions{Title: title, MarkRank: ranks[len(ranks)-1]}); err != nil {
			return nil, fmt.Errorf("analyze: plot: %w", err)
		}
	}
	return res, nil
}

// analyzeModule measures one module. The energy curve up to the largest rank is
// kept (unexported) for the plot.
func analyzeModule(ctx context.Context, be Backend, base, tuned, qview *denseView, qs quant.QuantizeScheme, name, baseDType string, out, in int, ranks []int, nspec int, seed uint64) (AnalyzeModule, error) {
	am := AnalyzeModule{Out: out, In: in}
	w, err := base.floats(name, nil)
	if err != nil {
		return am, err
	}
	tv, err := tuned.floats(name, nil)
	if err != nil {
		return am, err
	}
	wm, _ := linalg.MatrixOf(out, in, w)
	delta, _ := linalg.MatrixOf(out, in, tv)
	for i := range tv {
		tv[i] -= w[i]
	}
	wNorm, err := be.FrobeniusNorm(ctx, wm)
	if err != nil {
		return am, fmt.Errorf("%s: %w", name, err)
	}
	if am.DeltaNorm, err = be.FrobeniusNorm(ctx, delta); err != nil {
		return am, fmt.Errorf("%s: %w", name, err)
	}
	if wNorm > 0 {
		am.RelDelta = am.DeltaNorm / wNorm
	}
	maxRank := ranks[len(ranks)-1]
	svd, err := be.TruncatedSVD(ctx, delta, maxRank, SVDOptions{Seed: seed})
	if err != nil {
		return am, fmt.Errorf("%s: %w", name, err)
	}
	curve := linalg.EnergyCurve(svd.S, am.DeltaNorm)
	am.energyCurve = curve
	for _, r := range ranks {
		am.Energy = append(am.Energy, curve[min(r, len(curve))-1])
	}
	am.Spectrum = slices.Clone(svd.S[:min(nspec, len(svd.S))])
	// Quantization noise: W − dequant(quant(W)).
	var dq []float32
	if qview != nil {
		if _, _, ok := qview.shape(name); !ok {
			return am, fmt.Errorf("analyze: the quantized model has no %s", name)
		}
		if dq, err = qview.floats(name, nil); err != nil {
			return am, err
		}
	} else {
		raw, err := base.m.TensorBytes(base.md.tensors[name].tensor.ID, nil)
		if err != nil {
			return am, err
		}
		info := safetensors.TensorInfo{Name: name, DType: safetensors.DType(baseDType), Shape: []uint64{uint64(out), uint64(in)}, End: uint64(len(raw))}
		qts, err := be.QuantizeWeight(ctx, qs, info, raw)
		if err != nil {
			return am, err
		}
		mod := quant.Module{Prefix: strings.TrimSuffix(name, ".weight"), Scheme: qs.Scheme(), Tensors: map[quant.Role]safetensors.TensorInfo{}, Out: out, In: in}
		data := map[quant.Role][]byte{}
		for _, qt := range qts {
			mod.Tensors[qt.Role] = safetensors.TensorInfo{Name: qt.Name, DType: qt.DType, Shape: qt.Shape, End: uint64(len(qt.Data))}
			data[qt.Role] = qt.Data
		}
		rawDQ := make([]byte, out*in*4)
		if err := be.Dequantize(ctx, rawDQ, mod, data, safetensors.F32); err != nil {
			return am, err
		}
		if dq, err = decodeFloats(string(safetensors.F32), rawDQ, nil); err != nil {
			return am, err
		}
	}
	for i := range dq {
		dq[i] = w[i] - dq[i]
	}
	noise, _ := linalg.MatrixOf(out, in, dq)
	if wNorm > 0 {
		nn, err := be.FrobeniusNorm(ctx, noise)
		if err != nil {
			return am, fmt.Errorf("%s: %w", name, err)
		}
		am.NoiseNorm = nn / wNorm
	}
	if am.CosNoiseDelta, err = be.Cosine(ctx, noise, delta); err != nil {
		return am, err
	}
	a, b := svd.Split(true)
	if am.CosNoiseLoRA, err = be.CosineLowRank(ctx, noise, b, a); err != nil {
		return am, err
	}
	return am, nil
}
