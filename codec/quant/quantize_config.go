package quant

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// config.json writers for quantize and dequantize (§3: never regenerate
// config.json; add or replace only quantization_config). Both keep every
// other top-level member of the original byte for byte in value, in its
// original order, and write the file the way transformers and
// compressed-tensors do: json.dumps(indent=2), one member per line, a
// trailing newline. Untouched values are re-indented, not re-encoded, so
// their numbers and string escapes stay exactly as written.

// QuantizedConfig returns orig (a model's config.json) with the
// quantization_config of qs added: for compressed-tensors the §5.1/§5.6
// config of the scheme's llm-compressor preset (FP8_BLOCK, W8A8/INT8,
// W4A16 or W4A16_ASYM) with one "Linear" group, quantization_status
// "compressed", sorted keys, and no scale_dtype/zp_dtype (which
// compressed-tensors 0.11-0.12 reject, §5.8); for native fp8 the §6 config
// {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
// "weight_block_size": [bh, bw]}, plus ignored_layers and
// modules_to_not_convert (vLLM's and transformers' spellings) when ignore
// names more than lm_head.
//
// ignore is the list of modules left unquantized, normally
// QuantizePlan.Ignore; "lm_head" is always included. The new member goes
// where sorted order puts it when orig's keys are sorted (as transformers
// writes them), else at the end. A config that already has a
// quantization_config is refused: dequantize the model first.
func QuantizedConfig(orig []byte, qs QuantizeScheme, ignore []string) ([]byte, error) {
	if err := qs.Validate(); err != nil {
		return nil, err
	}
	qs = qs.normalized()
	members, err := splitObject(orig)
	if err != nil {
		return nil, err
	}
	if slices.ContainsFunc(members, func(m jsonMember) bool { return m.key == "quantization_config" }) {
		return nil, invalidf("", "quantization_config", "config.json already has one; dequantize the model first")
	}
	ignore = appendUnique([]string{"lm_head"}, ignore...)
	var qc map[string]any
	if qs.Format == OutputFP8 {
		if qc, err = nativeFP8Config(qs, ignore); err != nil {
			return nil, err
		}
	} else {
		qc = ctQuantizationConfig(qs, ignore)
	}
	raw, err := encodePythonJSON(qc)
	if err != nil {
		return nil, err
	}
	return writeObject(insertMember(members, jsonMember{key: "quantization_config", rawKey: []byte(`"quantization_config"`), value: raw})), nil
}

// DequantizedConfig returns orig without its quantization_config and with
// the dtype set to bfloat16, the dtype heft dequantizes to: "torch_dtype"
// and "dtype" (transformers v5's spelling, §3) where present, both added
// when neither is. Everything else is kept as QuantizedConfig keeps it, so
// DequantizedConfig(QuantizedConfig(c)) == c for a BF16 config written by
// transformers.
func DequantizedConfig(orig []byte) ([]byte, error) {
	members, err := splitObject(orig)
	if err != nil {
		return nil, err
	}
	members = slices.DeleteFunc(members, func(m jsonMember) bool { return m.key == "quantization_config" })
	bf16 := []byte(`"bfloat16"`)
	found := false
	for i := range members {
		if members[i].key == "torch_dtype" || members[i].key == "dtype" {
			members[i].value, found = bf16, true
		}
	}
	if !found {
		members = insertMember(members, jsonMember{key: "dtype", rawKey: []byte(`"dtype"`), value: bf16})
		members = insertMember(members, jsonMember{key: "torch_dtype", rawKey: []byte(`"torch_dtype"`), value: bf16})
	}
	return writeObject(members), nil
}

// qargsJSON is a compressed-tensors QuantizationArgs as model_dump writes it,
// without scale_dtype and zp_dtype (§5.8).
func qargsJSON(typ string, bits int, symmetric bool, strategy string, groupSize, blockStructure any, dynamic bool, observer any) map[string]any {
	return map[string]any{
		"num_bits": bits, "type": typ, "symmetric": symmetric, "strategy": strategy,
		"group_size": groupSize, "block_structure": blockStructure, "dynamic": dynamic,
		"actorder": nil, "observer": observer, "observer_kwargs": map[string]any{},
	}
}

// ctQuantizationConfig is the compressed-tensors quantization_config of qs (§5.1, §5.6).
func ctQuantizationConfig(qs QuantizeScheme, ignore []string) map[string]any {
	var format string
	var weights, input map[string]any
	switch qs.Name {
	case QuantFP8Block:
		format = "float-quantized"
		weights = qargsJSON(TypeFloat, 8, true, StrategyBlock, nil, []int{qs.BlockSize[0], qs.BlockSize[1]}, false, "minmax")
		input = qargsJSON(TypeFloat, 8, true, StrategyGroup, qs.BlockSize[1], nil, true, nil)
	case QuantInt8:
		format = "int-quantized"
		weights = qargsJSON(TypeInt, 8, true, StrategyChannel, nil, nil, false, "minmax")
		input = qargsJSON(TypeInt, 8, true, "token", nil, nil, true, nil)
	case QuantW4A16:
		format = "pack-quantized"
		if qs.GroupSize == -1 {
			weights = qargsJSON(TypeInt, 4, !qs.Asymmetric, StrategyChannel, nil, nil, false, "minmax")
		} else {
			weights = qargsJSON(TypeInt, 4, !qs.Asymmetric, StrategyGroup, qs.GroupSize, nil, false, "minmax")
		}
	}
	group := map[string]any{
		"format": format, "targets": []string{"Linear"}, "weights": weights,
		"input_activations": nil, "output_activations": nil,
	}
	if input != nil {
		group["input_activations"] = input
	}
	return map[string]any{
		"config_groups":            map[string]any{"group_0": group},
		"format":                   format,
		"global_compression_ratio": nil,
		"ignore":                   ignore,
		"kv_cache_scheme":          nil,
		"quant_method":             "compressed-tensors",
		"quantization_status":      "compressed",
		"sparsity_config":          map[string]any{},
		"transform_config":         map[string]any{},
		"version":                  ctVersion,
	}
}

// nativeFP8Config is the native block FP8 quantization_config (§6).
func nativeFP8Config(qs QuantizeScheme, ignore []string) (map[string]any, error) {
	for _, s := range ignore {
		if strings.HasPrefix(s, "re:") {
			return nil, unsupportedf("", "ignore", "%q: native fp8 configs list module names, not regexes", s)
		}
	}
	qc := map[string]any{
		"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
		"weight_block_size": []int{qs.BlockSize[0], qs.BlockSize[1]},
	}
	if len(ignore) > 1 || ignore[0] != "lm_head" {
		// Both loaders skip lm_head by themselves; anything else they must
		// be told, vLLM as ignored_layers, transformers as
		// modules_to_not_convert.
		qc["ignored_layers"] = ignore
		qc["modules_to_not_convert"] = ignore
	}
	return qc, nil
}

// encodePythonJSON encodes v (maps, so keys come out sorted) as Python's
// json.dumps(sort_keys=True) would: no HTML escaping, non-ASCII as \u
// escapes (ensure_ascii).
func encodePythonJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("quant: encode quantization_config: %w", err)
	}
	raw := bytes.TrimRight(b.Bytes(), "\n")
	var out []byte
	for len(raw) > 0 {
		r, size := utf8.DecodeRune(raw)
		switch {
		case r < utf8.RuneSelf:
			out = append(out, raw[0])
		case r > 0xFFFF:
			r1, r2 := utf16Surrogates(r)
			out = fmt.Appendf(out, `\u%04x\u%04x`, r1, r2)
		default:
			out = fmt.Appendf(out, `\u%04x`, r)
		}
		raw = raw[size:]
	}
	return out, nil
}

func utf16Surrogates(r rune) (rune, rune) {
	r -= 0x10000
	return 0xD800 + (r>>10)&0x3FF, 0xDC00 + r&0x3FF
}

// jsonMember is one member of a JSON object as written.
type jsonMember struct {
	key    string // decoded
	rawKey []byte // the key as written, quotes included
	value  []byte // the value as written
}

// splitObject splits a JSON object into its members, in order, keeping each
// key and value's bytes. Duplicate keys are refused (Python keeps the last,
// other readers the first).
func splitObject(b []byte) ([]jsonMember, error) {
	if !json.Valid(b) {
		var v any
		err := json.Unmarshal(b, &v)
		return nil, invalidf("", "config.json", "not valid JSON: %s", jsonReason(err))
	}
	i := skipSpace(b, 0)
	if b[i] != '{' {
		return nil, invalidf("", "config.json", "not a JSON object")
	}
	var members []jsonMember
	seen := map[string]bool{}
	i = skipSpace(b, i+1)
	for b[i] != '}' {
		end := scanString(b, i)
		m := jsonMember{rawKey: b[i:end]}
		if err := json.Unmarshal(m.rawKey, &m.key); err != nil {
			return nil, invalidf("", "config.json", "key %s: %s", shorten(string(m.rawKey)), jsonReason(err))
		}
		if seen[m.key] {
			return nil, invalidf("", "config.json", "key %q appears twice", shorten(m.key))
		}
		seen[m.key] = true
		i = skipSpace(b, end) + 1 // past the colon
		i = skipSpace(b, i)
		end = scanValue(b, i)
		m.value = b[i:end]
		members = append(members, m)
		if i = skipSpace(b, end); b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	return members, nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString returns the index just past the string starting at b[i] == '"'.
func scanString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// scanValue returns the index just past the value starting at b[i] (b is
// valid JSON).
func scanValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return scanString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = scanString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	for i < len(b) && !strings.ContainsRune(",}] \t\r\n", rune(b[i])) {
		i++
	}
	return i
}

// insertMember adds m where sorted order puts it if the keys are sorted,
// else at the end.
func insertMember(members []jsonMember, m jsonMember) []jsonMember {
	sorted := slices.IsSortedFunc(members, func(a, b jsonMember) int { return strings.Compare(a.key, b.key) })
	if !sorted {
		return append(members, m)
	}
	i, _ := slices.BinarySearchFunc(members, m.key, func(a jsonMember, k string) int { return strings.Compare(a.key, k) })
	return slices.Insert(members, i, m)
}

// writeObject writes members as json.dumps(indent=2) does, with a trailing
// newline (transformers' to_json_file).
func writeObject(members []jsonMember) []byte {
	if len(members) == 0 {
		return []byte("{}\n")
	}
	var b bytes.Buffer
	b.WriteString("{\n")
	for i, m := range members {
		b.WriteString("  ")
		b.Write(m.rawKey)
		b.WriteString(": ")
		_ = json.Indent(&b, m.value, "  ", "  ") // m.value is valid JSON
		if i < len(members)-1 {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
	}
	b.WriteString("}\n")
	return b.Bytes()
}
