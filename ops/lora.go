package ops

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/heft-dev/heft/codec/safetensors"
	"github.com/heft-dev/heft/ops/internal/linalg"
)

// LoRA adapters in PEFT's layout (formats.md §9), extracted as mergekit does
// (§11) and shaped to pass vLLM's loader (§10).

// LoraExtractOptions describe one `heft lora extract`.
type LoraExtractOptions struct {
	Base, Tuned string // REFs
	Name        string // ref to write
	Rank        int
	// Method "a" (default) subtracts the dense base; "b" subtracts the
	// dequantized weights of a quantized base (the base must be quantized).
	Method string
	// DType of the adapter tensors: BF16 (default) or F32.
	DType string
	// BaseName is written as base_model_name_or_path (default: the base REF).
	BaseName string
	// Seed seeds the randomized SVD (results are reproducible for a seed).
	Seed    uint64
	Message string
	// Backend computes the SVDs and dequantizations (nil: the CPU).
	Backend Backend
}

// LoraModule reports one extracted module.
type LoraModule struct {
	Module    string  `json:"module"`
	Out       int     `json:"out"`
	In        int     `json:"in"`
	Rank      int     `json:"rank"`
	DeltaNorm float64 `json:"delta_norm"` // ‖Δ‖_F
	// Energy is the share of ‖Δ‖² the rank-r factors capture.
	Energy float64 `json:"energy"`
	// RelError is ‖B·A − Δ‖_F / ‖Δ‖_F of the stored (rounded) factors.
	RelError float64 `json:"rel_error"`
	// Seconds says where the module's time went: reading both weights from the
	// store and forming Δ, the truncated SVD, rounding the factors and
	// measuring their error.
	Seconds LoraModuleTimes `json:"seconds"`
}

// LoraModuleTimes is the time one module's extraction spent in each step.
type LoraModuleTimes struct {
	Read  float64 `json:"read"`
	SVD   float64 `json:"svd"`
	Check float64 `json:"check"`
}

// LoraExcluded is a changed tensor the adapter does not carry.
type LoraExcluded struct {
	Tensor string `json:"tensor"`
	Reason string `json:"reason"`
	// EnergyShare is its share of the whole model's ‖Δ‖².
	EnergyShare float64 `json:"energy_share"`
}

// LoraExtractResult is what an extraction wrote and measured.
type LoraExtractResult struct {
	Commit   string         `json:"commit"`
	Ref      string         `json:"ref"`
	Method   string         `json:"method"`
	Rank     int            `json:"rank"`
	Modules  []LoraModule   `json:"modules"`
	Excluded []LoraExcluded `json:"excluded"`
	// ExcludedEnergyShare is the share of ‖Δ‖² in tensors left out.
	ExcludedEnergyShare float64 `json:"excluded_energy_share"`
	MaxRelError         float64 `json:"max_rel_error"`
	MeanRelError        float64 `json:"mean_rel_error"`
}

// vLLM's --max-lora-rank choices (§10 item 3); an adapter's r must not exceed the
// server's setting, so r above the largest can never load.
var vllmMaxLoraRanks = []int{1, 8, 16, 32, 64, 128, 256, 320, 512}

// LoRA tensor key names (§9).
const (
	peftPrefix = "base_model.model."
	loraA      = ".lora_A.weight"
	loraB      = ".lora_B.weight"
)

// loraTarget reports whether a 2-D weight is a Linear layer vLLM accepts LoRA on:
// not an embedding, not lm_head (vLLM takes those only in some versions, §10 item 6),
// not a norm.
func loraTarget(name string, shape []uint64) (bool, string) {
	if !strings.HasSuffix(name, ".weight") {
		return false, "not a weight"
	}
	mod := strings.TrimSuffix(name, ".weight")
	last := mod[strings.LastIndexByte(mod, '.')+1:]
	switch {
	case len(shape) != 2:
		return false, "not a 2-D weight (norm or bias): vLLM takes no LoRA on it"
	case strings.Contains(last, "embed"):
		return false, "embedding: many vLLM versions refuse embedding LoRA"
	case last == "lm_head":
		return false, "lm_head: many vLLM versions refuse lm_head LoRA"
	case strings.HasSuffix(last, "norm"):
		return false, "norm: vLLM takes no LoRA on it"
	}
	return true, ""
}

// LoraExtract writes a PEFT adapter approximating tuned − base: for every Linear
// module, the truncated SVD of the float32 delta split as mergekit splits it.
func LoraExtract(ctx context.Context, m Models, opts LoraExtractOptions) (*LoraExtractResult, error) {
	method := strings.ToLower(opts.Method)
	if method == "" {
		method = "a"
	}
	if method != "a" && method != "b" {
		return nil, inputErrorf("lora extract: method %q: want a or b", opts.Method)
	}
	if opts.Rank < 1 || opts.Rank > vllmMaxLoraRanks[len(vllmMaxLoraRanks)-1] {
		return nil, inputErrorf("lora extract: rank %d: want 1 to %d (vLLM's largest --max-lora-rank)", opts.Rank, vllmMaxLoraRanks[len(vllmMaxLoraRanks)-1])
	}
	dtype := opts.DType
	if dtype == "" {
		dtype = string(safetensors.BF16)
	}
	if dtype != string(safetensors.BF16) && dtype != string(safetensors.F32) {
		return nil, inputErrorf("lora extract: dtype %q: want BF16 or F32", opts.DType)
	}
	be := backendOr(opts.Backend)
	mds, views, err := loadDenseViews(ctx, m, be, opts.Base, opts.Tuned)
	if err != nil {
		return nil, err
	}
	baseMd, tunedMd, base, tuned := mds[0], mds[1], views[0], views[1]
	if tuned.quantized() {
		return nil, inputErrorf("lora extract: the tuned model %s is quantized (%s); extract from its dense weights", opts.Tuned, tuned.qm.Describe())
	}
	switch {
	case method == "a" && base.quantized():
		return nil, inputErrorf("lora extract: method a subtracts the dense base, but %s is quantized (%s); give the BF16 base, or use method b", opts.Base, base.qm.Describe())
	case method == "b" && !base.quantized():
		return nil, inputErrorf("lora extract: method b subtracts the dequantized quantized base, but %s is not quantized", opts.Base)
	}

	// Plan: every tensor both models have with the same shape.
	var modules []loraPlan
	var others []string
	names := make([]string, 0, len(tunedMd.tensors))
	for name := range tunedMd.tensors {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		ts, tdt, ok := tuned.shape(name)
		if !ok || !isFloatDType(tdt) {
			continue
		}
		bs, _, ok := base.shape(name)
		if !ok || !equalShape(bs, ts) {
			continue
		}
		if ok, _ := loraTarget(name, ts); ok {
			out, in := int(ts[0]), int(ts[1])
			modules = append(modules, loraPlan{name: name, out: out, in: in, rank: min(opts.Rank, out, in)})
		} else {
			others = append(others, name)
		}
	}
	if len(modules) == 0 {
		return nil, inputErrorf("lora extract: %s and %s share no Linear weight of the same shape", opts.Base, opts.Tuned)
	}
	res := &LoraExtractResult{Method: method, Ref: opts.Name, Modules: []LoraModule{}, Excluded: []LoraExcluded{}}
	var totalEnergy float64
	// Energy of the tensors left out, for the report.
	var buf1, buf2 []float32
	excludedEnergy := map[string]float64{}
	for _, name := range others {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if buf1, err = tuned.floats(name, buf1); err != nil {
			return nil, err
		}
		if buf2, err = base.floats(name, buf2); err != nil {
			return nil, err
		}
		var e float64
		for i, v := range buf1 {
			d := float64(v) - float64(buf2[i])
			e += d * d
		}
		if e > 0 {
			excludedEnergy[name] = e
			totalEnergy += e
		}
	}
	buf1, buf2 = nil, nil

	// The adapter's tensors are computed module by module as the store writes
	// them (lora_A of a module sorts right before its lora_B), so memory holds one
	// module's delta and factors at a time.
	// On a GPU the next module is extracted while the current one is written
	// (its host-side eigen work overlaps the other's device work): at most two
	// modules in flight. On the CPU each extraction already uses every core.
	type extraction struct {
		a, b []byte
		rep  LoraModule
		err  error
	}
	pipelined := be.Name() != CPUBackend().Name()
	byKey := map[string]loraPlan{}
	var order []string // lora_A keys in the order the file is written (by name)
	for _, mod := range modules {
		key := peftPrefix + strings.TrimSuffix(mod.name, ".weight")
		byKey[key] = mod
		order = append(order, key)
	}
	sort.Strings(order)
	nextKey := map[string]string{}
	for i := 0; i+1 < len(order); i++ {
		nextKey[order[i]] = order[i+1]
	}
	started := map[string]chan extraction{}
	start := func(key string) chan extraction {
		ch := make(chan extraction, 1)
		mod := byKey[key]
		go func() {
			a, b, rep, err := extractModule(ctx, be, base, tuned, mod.name, mod.out, mod.in, mod.rank, dtype, opts.Seed)
			ch <- extraction{a, b, rep, err}
		}()
		return ch
	}
	pendingB := map[string][]byte{}
	var outs []TensorOut
	for _, mod := range modules {
		key := peftPrefix + strings.TrimSuffix(mod.name, ".weight")
		outs = append(outs, TensorOut{
			Name: key + loraA, DType: dtype, Shape: []uint64{uint64(mod.rank), uint64(mod.in)},
			Data: func(dst []byte) ([]byte, error) {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				ch, ok := started[key]
				if !ok {
					ch = start(key)
				}
				delete(started, key)
				if next, ok := nextKey[key]; ok && pipelined {
					if _, ok := started[next]; !ok {
						started[next] = start(next)
					}
				}
				x := <-ch
				if x.err != nil {
					return nil, x.err
				}
				res.Modules = append(res.Modules, x.rep)
				totalEnergy += x.rep.DeltaNorm * x.rep.DeltaNorm
				pendingB[key] = x.b
				return append(dst[:0], x.a...), nil
			},
		}, TensorOut{
			Name: key + loraB, DType: dtype, Shape: []uint64{uint64(mod.out), uint64(mod.rank)},
			Data: func(dst []byte) ([]byte, error) {
				b, ok := pendingB[key]
				if !ok {
					return nil, fmt.Errorf("lora extract: %s: lora_B requested before lora_A", key)
				}
				delete(pendingB, key)
				return append(dst[:0], b...), nil
			},
		})
	}
	fr, err := m.WriteSafetensors(ctx, "adapter_model.safetensors", map[string]string{"format": "pt"}, outs, false)
	if err != nil {
		return nil, err
	}
	// The report.
	r := 0
	rankPattern := map[string]int{}
	for _, mod := range modules {
		r = max(r, mod.rank)
	}
	for _, mod := range modules {
		if mod.rank != r {
			rankPattern[strings.TrimSuffix(mod.name, ".weight")] = mod.rank
		}
	}
	res.Rank = r
	var sumErr float64
	for _, mm := range res.Modules {
		sumErr += mm.RelError
		res.MaxRelError = max(res.MaxRelError, mm.RelError)
	}
	res.MeanRelError = sumErr / float64(len(res.Modules))
	excludedNames := make([]string, 0, len(excludedEnergy))
	for name := range excludedEnergy {
		excludedNames = append(excludedNames, name)
	}
	sort.Strings(excludedNames)
	for _, name := range excludedNames {
		shape, _, _ := tuned.shape(name)
		_, reason := loraTarget(name, shape)
		share := excludedEnergy[name] / totalEnergy
		res.Excluded = append(res.Excluded, LoraExcluded{Tensor: name, Reason: reason, EnergyShare: share})
		res.ExcludedEnergyShare += share
	}

	baseName := opts.BaseName
	if baseName == "" {
		baseName = opts.Base
	}
	cfg, err := adapterConfig(baseName, r, targetModules(modules), rankPattern)
	if err != nil {
		return nil, err
	}
	cfr, err := m.WriteFile(ctx, "adapter_config.json", cfg)
	if err != nil {
		return nil, err
	}
	parent, err := m.Head(opts.Name)
	if err != nil {
		return nil, err
	}
	prov := Provenance{Op: "lora-extract", Source: opts.Tuned, Inputs: []string{baseMd.commit, tunedMd.commit}, Params: map[string]string{
		"method": method, "rank": strconv.Itoa(opts.Rank), "base": opts.Base, "tuned": opts.Tuned, "dtype": dtype, "seed": strconv.FormatUint(opts.Seed, 10),
	}}
	res.Commit, err = m.Commit(ctx, opts.Name, parent, []FileRef{fr, cfr}, opts.Message, prov)
	if err != nil {
		return nil, err
	}
	return res, nil
}

func equalShape(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// loraPlan is one module to extract.
type loraPlan struct {
	name    string // the dense weight
	out, in int
	rank    int
}

// targetModules lists the distinct last name components of the modules, as PEFT's
// target_modules (§9, §11).
func targetModules(mods []loraPlan) []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range mods {
		name := strings.TrimSuffix(m.name, ".weight")
		last := name[strings.LastIndexByte(name, '.')+1:]
		if !seen[last] {
			seen[last] = true
			out = append(out, last)
		}
	}
	sort.Strings(out)
	return out
}

// extractModule computes one module's factors, rounded to dtype, and its report.
func extractModule(ctx context.Context, be Backend, base, tuned *denseView, name string, out, in, rank int, dtype string, seed uint64) (a, b []byte, rep LoraModule, err error) {
	var times LoraModuleTimes
	lap := stopwatch()
	tv, err := deltaFloats(tuned, base, name)
	if err != nil {
		return nil, nil, rep, err
	}
	delta, err := linalg.MatrixOf(out, in, tv)
	if err != nil {
		return nil, nil, rep, err
	}
	times.Read = lap()
	svd, err := be.TruncatedSVD(ctx, delta, rank, SVDOptions{Seed: seed})
	if err != nil {
		return nil, nil, rep, fmt.Errorf("%s: %w", name, err)
	}
	times.SVD = lap()
	fa, fb := svd.Split(true)
	// Round the factors to the adapter dtype, and measure the error of what is
	// stored.
	a = make([]byte, len(fa.Data)*safetensors.DType(dtype).BitSize()/8)
	b = make([]byte, len(fb.Data)*safetensors.DType(dtype).BitSize()/8)
	if _, err := encodeFloats(dtype, fa.Data, a); err != nil {
		return nil, nil, rep, err
	}
	if _, err := encodeFloats(dtype, fb.Data, b); err != nil {
		return nil, nil, rep, err
	}
	if _, err := decodeFloats(dtype, a, fa.Data); err != nil {
		return nil, nil, rep, err
	}
	if _, err := decodeFloats(dtype, b, fb.Data); err != nil {
		return nil, nil, rep, err
	}
	// The error of what is stored, computed where the SVD ran (a device keeps
	// the rank-r product off the host).
	residual, norm, err := be.LowRankError(ctx, delta, fb, fa)
	if err != nil {
		return nil, nil, rep, fmt.Errorf("%s: %w", name, err)
	}
	rep = LoraModule{Module: strings.TrimSuffix(name, ".weight"), Out: out, In: in, Rank: svd.Rank(), DeltaNorm: norm, Energy: 1}
	if norm > 0 {
		var captured float64
		for _, s := range svd.S {
			captured += s * s
		}
		rep.Energy = min(1, captured/(norm*norm))
		rep.RelError = residual / norm
	}
	if math.IsNaN(rep.RelError) {
		return nil, nil, rep, fmt.Errorf("%s: relative error is NaN", name)
	}
	times.Check = lap()
	rep.Seconds = times
	return a, b, rep, nil
}

// stopwatch returns a function giving the seconds since the previous call (or
// since stopwatch was called).
func stopwatch() func() float64 {
	last := time.Now()
	return func() float64 {
		now := time.Now()
		d := now.Sub(last).Seconds()
		last = now
		return d
	}
}

// adapterConfig writes adapter_config.json as mergekit does (§11: alpha = r, the
// same pattern for ranks and alphas, so scaling is 1 everywhere), with the keys
// vLLM requires and none it refuses (§10: modules_to_save null, bias none, no DoRA).
func adapterConfig(baseName string, r int, targets []string, rankPattern map[string]int) ([]byte, error) {
	type config struct {
		AlphaPattern        map[string]int `json:"alpha_pattern"`
		BaseModelNameOrPath string         `json:"base_model_name_or_path"`
		Bias                string         `json:"bias"`
		FanInFanOut         bool           `json:"fan_in_fan_out"`
		InferenceMode       bool           `json:"inference_mode"`
		LoraAlpha           int            `json:"lora_alpha"`
		LoraDropout         float64        `json:"lora_dropout"`
		ModulesToSave       []string       `json:"modules_to_save"`
		PeftType            string         `json:"peft_type"`
		R                   int            `json:"r"`
		RankPattern         map[string]int `json:"rank_pattern"`
		TargetModules       []string       `json:"target_modules"`
		TaskType            string         `json:"task_type"`
		UseDora             bool           `json:"use_dora"`
		UseRslora           bool           `json:"use_rslora"`
	}
	c := config{
		AlphaPattern: rankPattern, BaseModelNameOrPath: baseName, Bias: "none", InferenceMode: true,
		LoraAlpha: r, PeftType: "LORA", R: r, RankPattern: rankPattern, TargetModules: targets, TaskType: "CAUSAL_LM",
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "    ")
	if err := enc.Encode(c); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
