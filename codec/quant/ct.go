package quant

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/heft-dev/heft/codec/safetensors"
)

// compressed-tensors (§5): config parsing, scheme resolution, module
// matching and per-format tensor validation.

// ctGroup is one entry of config_groups.
type ctGroup struct {
	name    string
	targets []ctTarget
	scheme  Scheme
	quant   bool // has weights stored quantized (not a dense or activation-only group)
}

// ctTarget is a target or ignore entry: an exact module name, "re:<regex>"
// (Python re.match: anchored at the start only), or a class name such as
// "Linear", which matches any module here because safetensors does not
// record classes (the tensors decide which modules are quantized).
type ctTarget struct {
	raw   string
	re    *regexp.Regexp
	class bool
}

// Match priorities: a more specific target wins when several groups match.
const (
	noMatch = iota
	classMatch
	regexMatch
	exactMatch
)

func compileTarget(raw, field string) (ctTarget, error) {
	if pat, ok := strings.CutPrefix(raw, "re:"); ok {
		re, err := regexp.Compile(`^(?:` + pat + `)`)
		if err != nil {
			return ctTarget{}, unsupportedf("", field, "regex %q cannot be compiled (Go RE2 lacks some Python syntax): %v", pat, err)
		}
		return ctTarget{raw: raw, re: re}, nil
	}
	class := raw != "" && !strings.Contains(raw, ".") && raw[0] >= 'A' && raw[0] <= 'Z'
	return ctTarget{raw: raw, class: class}, nil
}

func (t ctTarget) match(prefix string) int {
	switch {
	case t.re != nil && t.re.MatchString(prefix):
		return regexMatch
	case t.re != nil && t.re.MatchString("Linear"):
		return classMatch // a regex over class names
	case t.raw == prefix:
		return exactMatch
	case t.class:
		return classMatch
	}
	return noMatch
}

// ignoreMatch reports whether an ignore entry names prefix; class entries
// are not applied, since every module here would match them.
func (t ctTarget) ignoreMatch(prefix string) bool {
	return t.raw == prefix || t.re != nil && t.re.MatchString(prefix)
}

// ctPresets are compressed-tensors' preset schemes (quant_scheme.py, §5.6),
// for the shorthand config_groups form {"W4A16": ["Linear"]}.
var ctPresets = map[string]struct{ weights, input Activations }{
	"W8A16":       {weights: Activations{Type: TypeInt, Bits: 8, Strategy: StrategyGroup, GroupSize: 128, Symmetric: true}},
	"W4A16":       {weights: Activations{Type: TypeInt, Bits: 4, Strategy: StrategyGroup, GroupSize: 128, Symmetric: true}},
	"W4A16_ASYM":  {weights: Activations{Type: TypeInt, Bits: 4, Strategy: StrategyGroup, GroupSize: 128}},
	"W8A8":        {Activations{Type: TypeInt, Bits: 8, Strategy: StrategyChannel, Symmetric: true}, Activations{Type: TypeInt, Bits: 8, Strategy: "token", Dynamic: true, Symmetric: true}},
	"INT8":        {Activations{Type: TypeInt, Bits: 8, Strategy: StrategyChannel, Symmetric: true}, Activations{Type: TypeInt, Bits: 8, Strategy: "token", Dynamic: true, Symmetric: true}},
	"W4A8":        {Activations{Type: TypeInt, Bits: 4, Strategy: StrategyGroup, GroupSize: 128, Symmetric: true}, Activations{Type: TypeInt, Bits: 8, Strategy: "token", Dynamic: true, Symmetric: true}},
	"W4AFP8":      {Activations{Type: TypeInt, Bits: 4, Strategy: StrategyGroup, GroupSize: 128, Symmetric: true}, Activations{Type: TypeFloat, Bits: 8, Strategy: "token", Dynamic: true, Symmetric: true}},
	"FP8":         {Activations{Type: TypeFloat, Bits: 8, Strategy: StrategyTensor, Symmetric: true}, Activations{Type: TypeFloat, Bits: 8, Strategy: StrategyTensor, Symmetric: true}},
	"FP8_DYNAMIC": {Activations{Type: TypeFloat, Bits: 8, Strategy: StrategyChannel, Symmetric: true}, Activations{Type: TypeFloat, Bits: 8, Strategy: "token", Dynamic: true, Symmetric: true}},
	"FP8_BLOCK":   {Activations{Type: TypeFloat, Bits: 8, Strategy: StrategyBlock, Symmetric: true}, Activations{Type: TypeFloat, Bits: 8, Strategy: StrategyGroup, GroupSize: 128, Dynamic: true, Symmetric: true}},
	"UNQUANTIZED": {},
}

// ctFormats maps the supported on-disk formats to Scheme formats.
var ctFormats = map[string]string{
	"float-quantized": FormatCTFloat,
	"int-quantized":   FormatCTInt,
	"naive-quantized": FormatCTNaive,
	"pack-quantized":  FormatCTPacked,
}

func detectCT(qc jsonObject, ts *tensorSet) (*Model, error) {
	m := &Model{Method: "compressed-tensors"}
	topFormat, _, err := qc.str("format")
	if err != nil {
		return nil, err
	}
	m.Format = topFormat
	if sc, ok, err := qc.object("sparsity_config"); err != nil {
		return nil, err
	} else if ok && len(sc.m) > 0 {
		if f, _, err := sc.str("format"); err != nil {
			return nil, err
		} else if f != "" && f != "dense" {
			return nil, unsupportedf("", sc.field("format"), "sparse compression %q is not supported", f)
		}
	}
	if tc, ok, err := qc.object("transform_config"); err != nil {
		return nil, err
	} else if ok && len(tc.m) > 0 {
		// Online rotations (QuIP, SpinQuant) would have to be undone to get
		// the original weights; dequantizing alone would give rotated ones.
		return nil, unsupportedf("", tc.path, "transforms (rotations) are not supported")
	}
	ignore, err := qc.strings("ignore")
	if err != nil {
		return nil, err
	}
	m.Ignore = ignore
	ignores := make([]ctTarget, len(ignore))
	for i, raw := range ignore {
		if ignores[i], err = compileTarget(raw, qc.field("ignore")); err != nil {
			return nil, err
		}
	}
	groups, err := parseCTGroups(qc, topFormat)
	if err != nil {
		return nil, err
	}
	status, hasStatus, err := qc.str("quantization_status")
	if err != nil {
		return nil, err
	}
	anyQuant := slices.ContainsFunc(groups, func(g ctGroup) bool { return g.quant })
	if anyQuant && hasStatus && status != "compressed" {
		// Other statuses (frozen, decompressed, …) keep dense fake-quantized
		// weights next to their scales, which is not what the formats say.
		return nil, unsupportedf("", qc.field("quantization_status"), "%q: only compressed checkpoints store quantized weights", status)
	}

	for _, prefix := range ts.prefixesWithSuffix(".weight_scale", ".weight_packed", ".weight_zero_point", ".weight_g_idx", ".weight_shape") {
		for _, ig := range ignores {
			if ig.ignoreMatch(prefix) {
				return nil, invalidf(prefix, qc.field("ignore"), "module is ignored by %q but has quantized tensors", ig.raw)
			}
		}
		g, err := matchCTGroup(groups, prefix)
		if err != nil {
			return nil, err
		}
		mod, err := ctModule(prefix, g, ts)
		if err != nil {
			return nil, err
		}
		if mod.Tensors[RoleZeroPoint].Name != "" && mod.Scheme.Symmetric {
			m.Warnings = append(m.Warnings, fmt.Sprintf("%s: symmetric scheme but a weight_zero_point is stored; it is applied, but vLLM does not load zero points for symmetric schemes", prefix))
		}
		m.Modules = append(m.Modules, mod)
	}
	return m, nil
}

// parseCTGroups reads config_groups in name order, resolving each group's
// scheme and on-disk format.
func parseCTGroups(qc jsonObject, topFormat string) ([]ctGroup, error) {
	cg, ok, err := qc.object("config_groups")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, nil
	}
	names := make([]string, 0, len(cg.m))
	for name := range cg.m {
		names = append(names, name)
	}
	slices.Sort(names)
	var groups []ctGroup
	for _, name := range names {
		g, err := parseCTGroup(cg, name, topFormat)
		if err != nil {
			return nil, err
		}
		groups = append(groups, g)
	}
	return groups, nil
}

// qargs is a parsed QuantizationArgs: the activation-style description
// plus what only weights have.
type qargs struct {
	Activations
	block    [2]int
	actorder string // "", "group" or "weight"
}

func parseCTGroup(cg jsonObject, name, topFormat string) (ctGroup, error) {
	g := ctGroup{name: name}
	path := cg.field(name)
	var weights, input qargs
	var hasWeights bool
	var groupFormat string
	var targets []string
	if o, ok, err := parseObject(cg.m[name], path); err == nil && ok {
		if targets, err = o.strings("targets"); err != nil {
			return g, err
		}
		wo, ok, err := o.object("weights")
		if err != nil {
			return g, err
		}
		if ok {
			hasWeights = true
			if weights, err = parseQArgs(wo, true); err != nil {
				return g, err
			}
		}
		if io, ok, err := o.object("input_activations"); err != nil {
			return g, err
		} else if ok {
			if input, err = parseQArgs(io, false); err != nil {
				return g, err
			}
		}
		if groupFormat, _, err = o.str("format"); err != nil {
			return g, err
		}
	} else {
		// Shorthand: the key is a preset name, the value its targets.
		if targets, err = cg.strings(name); err != nil {
			return g, invalidf("", path, "want a scheme object, or a list of targets under a preset name")
		}
		p, ok := ctPresets[strings.ToUpper(name)]
		if !ok {
			return g, unsupportedf("", path, "unknown or unsupported preset scheme %q", name)
		}
		weights.Activations, input.Activations, hasWeights = p.weights, p.input, p.weights.Bits > 0
		if weights.Strategy == StrategyBlock {
			weights.block = [2]int{128, 128}
		}
	}
	for i, raw := range targets {
		t, err := compileTarget(raw, fmt.Sprintf("%s.targets[%d]", path, i))
		if err != nil {
			return g, err
		}
		g.targets = append(g.targets, t)
	}
	if !hasWeights {
		return g, nil
	}
	format := groupFormat
	if format == "" && topFormat != "mixed-precision" {
		format = topFormat
	}
	if format == "" {
		format = inferCTFormat(weights.Activations, input.Activations)
	}
	if format == "dense" {
		return g, nil
	}
	sf, ok := ctFormats[format]
	if !ok {
		return g, unsupportedf("", path+".format", "compressed-tensors format %q is not supported (float-, int-, naive-, pack-quantized)", format)
	}
	s := Scheme{
		Format: sf, Type: weights.Type, Bits: weights.Bits, Strategy: weights.Strategy,
		GroupSize: weights.GroupSize, BlockSize: weights.block, Symmetric: weights.Symmetric,
		ActOrder: weights.actorder, Input: input.Activations,
	}
	switch {
	case s.Type == TypeFloat && s.Bits != 8:
		return g, unsupportedf("", path+".weights", "%d-bit float weights (NVFP4/MXFP4) are not supported", s.Bits)
	case s.Type == TypeFloat && !s.Symmetric:
		return g, unsupportedf("", path+".weights.symmetric", "asymmetric float weights are not supported")
	case (sf == FormatCTPacked || sf == FormatCTInt) && s.Type != TypeInt:
		return g, invalidf("", path+".format", "%s needs int weights, the scheme has %s", format, s.Type)
	case sf == FormatCTFloat && s.Type != TypeFloat:
		return g, invalidf("", path+".format", "%s needs float weights, the scheme has %s", format, s.Type)
	}
	switch {
	case sf == FormatCTPacked:
		s.CodeDType = safetensors.I32
	case s.Type == TypeFloat:
		s.CodeDType = safetensors.F8E4M3
	default:
		s.CodeDType = safetensors.I8
	}
	g.scheme, g.quant = s, true
	return g, nil
}

// parseQArgs reads a QuantizationArgs object (§5.1) and resolves its
// strategy the way compressed-tensors' validator does. For weights an
// unusable combination is an error; activation args are only described.
func parseQArgs(o jsonObject, weights bool) (qargs, error) {
	a := qargs{Activations: Activations{Type: TypeInt, Bits: 8, Symmetric: true}}
	if t, ok, err := o.str("type"); err != nil {
		return a, err
	} else if ok {
		a.Type = t
	}
	if a.Type != TypeInt && a.Type != TypeFloat {
		return a, invalidf("", o.field("type"), "%q, want \"int\" or \"float\"", a.Type)
	}
	if b, ok, err := o.integer("num_bits"); err != nil {
		return a, err
	} else if ok {
		a.Bits = b
	}
	if weights && (a.Bits < 1 || a.Bits > 8) {
		return a, unsupportedf("", o.field("num_bits"), "%d, want 1..8", a.Bits)
	}
	if s, ok, err := o.boolean("symmetric"); err != nil {
		return a, err
	} else if ok {
		a.Symmetric = s
	}
	switch strings.TrimSpace(string(o.m["dynamic"])) {
	case "true", `"local"`:
		a.Dynamic = true
	}
	group, hasGroup, err := o.integer("group_size")
	if err != nil {
		return a, err
	}
	block, hasBlock, err := o.intPair("block_structure")
	if err != nil {
		return a, err
	}
	strategy, _, err := o.str("strategy")
	if err != nil {
		return a, err
	}
	if strategy == "" {
		switch {
		case hasBlock:
			strategy = StrategyBlock
		case !hasGroup:
			strategy = StrategyTensor
		case group > 0:
			strategy = StrategyGroup
		case group == -1:
			strategy = StrategyChannel
		default:
			return a, invalidf("", o.field("group_size"), "%d, want a positive size or -1 (channel)", group)
		}
	}
	a.Strategy = strategy
	if !weights {
		if hasGroup && group > 0 {
			a.GroupSize = group
		}
		return a, nil
	}
	switch strategy {
	case StrategyTensor, StrategyChannel:
	case StrategyGroup:
		if !hasGroup || group <= 0 {
			return a, invalidf("", o.field("group_size"), "group strategy needs a positive group_size")
		}
		a.GroupSize = group
	case StrategyBlock:
		if !hasBlock || block[0] <= 0 || block[1] <= 0 {
			return a, invalidf("", o.field("block_structure"), "block strategy needs a positive [rows, cols] block_structure")
		}
		a.block = block
	default:
		return a, unsupportedf("", o.field("strategy"), "weight strategy %q is not supported (tensor, channel, group, block)", strategy)
	}
	switch raw := strings.TrimSpace(string(o.m["actorder"])); raw {
	case "", "null", "false":
	case "true", `"group"`, `"dynamic"`:
		a.actorder = "group"
	case `"weight"`, `"static"`:
		a.actorder = "weight"
	default:
		return a, invalidf("", o.field("actorder"), "%s, want null, \"group\" or \"weight\"", shorten(raw))
	}
	if a.actorder == "group" && strategy != StrategyGroup {
		return a, invalidf("", o.field("actorder"), "actorder \"group\" needs the group strategy, not %s", strategy)
	}
	return a, nil
}

// inferCTFormat is compressed-tensors' infer_module_format (§5.2) for the
// formats this package reads.
func inferCTFormat(w, input Activations) string {
	switch {
	case w.Type == TypeInt && input.Bits > 0:
		return "int-quantized"
	case w.Type == TypeInt:
		return "pack-quantized"
	case w.Type == TypeFloat && input.Bits > 0:
		return "float-quantized"
	}
	return "naive-quantized"
}

// matchCTGroup picks the quantizing group whose targets name prefix most
// specifically; equally specific groups must agree on the scheme.
func matchCTGroup(groups []ctGroup, prefix string) (ctGroup, error) {
	best, bestPrio, tie := -1, noMatch, false
	for i, g := range groups {
		prio := noMatch
		for _, t := range g.targets {
			prio = max(prio, t.match(prefix))
		}
		if prio == noMatch || !g.quant {
			continue
		}
		switch {
		case prio > bestPrio:
			best, bestPrio, tie = i, prio, false
		case prio == bestPrio && groups[best].scheme != g.scheme:
			tie = true
		}
	}
	if best < 0 {
		return ctGroup{}, invalidf(prefix, "quantization_config.config_groups", "module has quantized tensors but no quantizing config group targets it")
	}
	if tie {
		return ctGroup{}, invalidf(prefix, "quantization_config.config_groups", "several config groups with different schemes target this module equally specifically")
	}
	return groups[best], nil
}

// ctModule collects and validates one module's tensors for its format (§5.3).
func ctModule(prefix string, g ctGroup, ts *tensorSet) (Module, error) {
	s := g.scheme
	m := Module{Prefix: prefix, Scheme: s, Tensors: map[Role]safetensors.TensorInfo{}}
	need := func(role Role, suffix string) (safetensors.TensorInfo, error) {
		t, ok := ts.get(prefix + suffix)
		if !ok {
			return t, invalidf(prefix+suffix, "", "missing: group %s (%s, %s) needs it", g.name, strings.TrimPrefix(s.Format, "compressed-tensors/"), s)
		}
		m.Tensors[role] = t
		return t, nil
	}
	packed := s.Format == FormatCTPacked
	codesSuffix, otherSuffix := ".weight", ".weight_packed"
	if packed {
		codesSuffix, otherSuffix = otherSuffix, codesSuffix
	}
	if _, ok := ts.get(prefix + otherSuffix); ok {
		return m, invalidf(prefix+otherSuffix, "", "unexpected for %s (group %s), which stores %s", strings.TrimPrefix(s.Format, "compressed-tensors/"), g.name, prefix+codesSuffix)
	}
	codes, err := need(RoleCodes, codesSuffix)
	if err != nil {
		return m, err
	}
	if err := wantDType(codes, fmt.Sprintf("%s %s", s, strings.TrimPrefix(s.Format, "compressed-tensors/")), s.CodeDType); err != nil {
		return m, err
	}
	rows, cols, err := dims2(codes)
	if err != nil {
		return m, err
	}
	m.Out = rows
	if !packed {
		m.In = cols
	}
	scale, err := need(RoleScale, ".weight_scale")
	if err != nil {
		return m, err
	}
	if err := wantDType(scale, "scale", scaleDTypes...); err != nil {
		return m, err
	}
	if !s.Symmetric {
		if _, err := need(RoleZeroPoint, ".weight_zero_point"); err != nil {
			return m, err
		}
	} else {
		ts.optional(&m, RoleZeroPoint, prefix+".weight_zero_point")
	}
	if s.ActOrder == "group" {
		if _, err := need(RoleGIdx, ".weight_g_idx"); err != nil {
			return m, err
		}
	} else {
		ts.optional(&m, RoleGIdx, prefix+".weight_g_idx")
	}
	if packed {
		shape, err := need(RoleShape, ".weight_shape")
		if err != nil {
			return m, err
		}
		if err := wantDType(shape, "weight_shape", safetensors.I64); err != nil {
			return m, err
		}
		if err := wantShape(shape, []int{2}, "[out, in]"); err != nil {
			return m, err
		}
	} else if _, ok := ts.get(prefix + ".weight_shape"); ok {
		return m, invalidf(prefix+".weight_shape", "", "unexpected for %s", strings.TrimPrefix(s.Format, "compressed-tensors/"))
	}
	ts.optional(&m, RoleInputScale, prefix+".input_scale")
	ts.optional(&m, RoleInputZeroPoint, prefix+".input_zero_point")
	ts.optional(&m, RoleOutputScale, prefix+".output_scale")

	if gi, ok := m.Tensors[RoleGIdx]; ok {
		if err := wantDType(gi, "g_idx", safetensors.I32, safetensors.I64); err != nil {
			return m, err
		}
		if len(gi.Shape) != 1 || gi.Shape[0] > maxDim {
			return m, invalidf(gi.Name, "shape", "%s, want [in]", fmtShape(gi.Shape))
		}
		if s.Strategy != StrategyGroup {
			return m, invalidf(gi.Name, "", "g_idx needs the group strategy, the scheme is %s", s.Strategy)
		}
		if packed {
			m.In = int(gi.Shape[0]) // the only header that states in exactly
		} else if err := wantShape(gi, []int{m.In}, "[in]"); err != nil {
			return m, err
		}
	}
	if packed && s.Strategy == StrategyGroup && m.In == 0 && len(scale.Shape) == 2 && scale.Shape[1] >= 2 && scale.Shape[1] <= maxDim {
		if err := inferPackedIn(&m, cols); err != nil {
			return m, err
		}
	}
	if err := checkScaleShapes(&m); err != nil {
		return m, err
	}
	if packed {
		if err := checkPackedWidth(m, cols); err != nil {
			return m, err
		}
	}
	return m, nil
}

// inferPackedIn sets In for a pack-quantized group module with two or more
// groups: in must then be a multiple of the group size (compressed-tensors
// refuses to dequantize otherwise), so in = groups × group_size, which the
// width of weight_packed must agree with.
func inferPackedIn(m *Module, words int) error {
	s, scale := m.Scheme, m.Tensors[RoleScale]
	groups, g := int(scale.Shape[1]), s.GroupSize
	in := groups * g
	if packedWords(in, s.Bits, Dense) == words || packedWords(in, s.Bits, ElementAligned) == words {
		m.In = in
		return nil
	}
	// Which in values the width allows, in either layout.
	for _, l := range []Layout{Dense, ElementAligned} {
		lo, hi := packedInRange(words, s.Bits, l)
		if lo <= hi && lo <= in && hi > in-g {
			return invalidf(m.Prefix, "group_size", "group size %d does not divide in (%s's %d words per row put in between %d and %d; the scale has %d groups)",
				g, m.Tensors[RoleCodes].Name, words, lo, hi, groups)
		}
	}
	return invalidf(scale.Name, "shape", "%s says in = %d (%d groups of %d), but %s has %d words per row", fmtShape(scale.Shape), in, groups, g, m.Tensors[RoleCodes].Name, words)
}

// packedInRange returns the numbers of codes [lo, hi] a packed row of
// `words` words can hold in layout l.
func packedInRange(words, bits int, l Layout) (lo, hi int) {
	if words <= 0 {
		return 0, 0
	}
	if l == ElementAligned {
		per := 32 / bits
		return per*(words-1) + 1, per * words
	}
	return 32*(words-1)/bits + 1, 32 * words / bits
}

// checkScaleShapes validates the scale (and unpacked zero point) against
// the strategy (§5.3 scale shapes). In may be 0 (pack-quantized, unknown):
// then only what the headers can tell is checked, and Dims does the rest.
func checkScaleShapes(m *Module) error {
	s, scale := m.Scheme, m.Tensors[RoleScale]
	out, in := m.Out, m.In
	var err error
	switch s.Strategy {
	case StrategyTensor:
		err = wantScalarShape(scale, "per-tensor scale")
	case StrategyChannel:
		err = wantShape(scale, []int{out, 1}, "per-channel scale [out, 1]")
	case StrategyGroup:
		if in > 0 {
			if err = checkGroupDivides(m, in); err == nil {
				err = wantShape(scale, []int{out, cdiv(in, s.GroupSize)}, fmt.Sprintf("[out, cdiv(in, %d)]", s.GroupSize))
			}
		} else if len(scale.Shape) != 2 || scale.Shape[0] != uint64(out) || scale.Shape[1] == 0 {
			err = invalidf(scale.Name, "shape", "%s, want [%d, groups] (group %d)", fmtShape(scale.Shape), out, s.GroupSize)
		}
	case StrategyBlock:
		bh, bw := s.BlockSize[0], s.BlockSize[1]
		if in > 0 {
			err = wantShape(scale, []int{cdiv(out, bh), cdiv(in, bw)}, fmt.Sprintf("[cdiv(out, %d), cdiv(in, %d)]", bh, bw))
		} else if len(scale.Shape) != 2 || scale.Shape[0] != uint64(cdiv(out, bh)) || scale.Shape[1] == 0 {
			err = invalidf(scale.Name, "shape", "%s, want [%d, cdiv(in, %d)] (block %dx%d)", fmtShape(scale.Shape), cdiv(out, bh), bw, bh, bw)
		}
	}
	if err != nil {
		return err
	}
	zp, ok := m.Tensors[RoleZeroPoint]
	if !ok {
		return nil
	}
	if zeroPointPacked(s) {
		if err := wantDType(zp, "packed zero point", safetensors.I32); err != nil {
			return err
		}
		if len(zp.Shape) != 2 || (zp.Shape[0] != uint64(packedWords(out, s.Bits, Dense)) && zp.Shape[0] != uint64(packedWords(out, s.Bits, ElementAligned))) || zp.Shape[1] != scale.Shape[len(scale.Shape)-1] {
			return invalidf(zp.Name, "shape", "%s, want [%d, %d] (zero points packed along out: [cdiv(out·%d, 32), groups])",
				fmtShape(zp.Shape), packedWords(out, s.Bits, Dense), scale.Shape[len(scale.Shape)-1], s.Bits)
		}
		return nil
	}
	if err := wantDType(zp, "zero point", zeroPointDTypes...); err != nil {
		return err
	}
	if !slices.Equal(zp.Shape, scale.Shape) && !(numel(zp) == 1 && numel(scale) == 1) {
		return invalidf(zp.Name, "shape", "%s, want the scale's shape %s", fmtShape(zp.Shape), fmtShape(scale.Shape))
	}
	return nil
}

// checkGroupDivides enforces compressed-tensors' dequantization rule: with
// in ≥ group, the group size must divide in (§5.3).
func checkGroupDivides(m *Module, in int) error {
	g := m.Scheme.GroupSize
	if in >= g && in%g != 0 {
		return invalidf(m.Prefix, "group_size", "group size %d does not divide in = %d", g, in)
	}
	return nil
}

// zeroPointPacked reports whether a pack-quantized zero point is stored
// packed along out (asymmetric group and channel, §5.3, PACK_ZP_STRATS).
func zeroPointPacked(s Scheme) bool {
	return s.Format == FormatCTPacked && (s.Strategy == StrategyGroup || s.Strategy == StrategyChannel)
}

// checkPackedWidth checks weight_packed's width against in when the headers
// tell in, and otherwise that some in fits it.
func checkPackedWidth(m Module, words int) error {
	t := m.Tensors[RoleCodes]
	if m.In > 0 {
		if _, err := packLayoutFor(m.In, words, m.Scheme.Bits, t.Name); err != nil {
			return err
		}
		return nil
	}
	if m.Out > 0 && words == 0 {
		return invalidf(t.Name, "shape", "%s has no columns", fmtShape(t.Shape))
	}
	return nil
}
