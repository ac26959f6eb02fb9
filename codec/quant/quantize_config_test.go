package quant

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/heft-dev/heft/codec/safetensors"
)

// A config.json as transformers writes it (json.dumps(indent=2,
// sort_keys=True) plus a newline): nested objects, a float in exponent
// form, null, an escaped non-ASCII string, both dtype spellings.
const transformersConfig = `{
  "architectures": [
    "Qwen3ForCausalLM"
  ],
  "attention_bias": false,
  "dtype": "bfloat16",
  "head_dim": 128,
  "hidden_size": 5120,
  "initializer_range": 0.02,
  "model_type": "qwen3",
  "name": "caf\u00e9",
  "rms_norm_eps": 1e-06,
  "rope_parameters": {
    "rope_theta": 1000000,
    "rope_type": "default"
  },
  "rope_scaling": null,
  "rope_theta": 1000000,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "use_cache": true,
  "vocab_size": 151936
}
`

// The W4A16_ASYM config, byte for byte: the member goes where sorted order
// puts it, every other line is unchanged.
func TestQuantizedConfigGolden(t *testing.T) {
	got, err := QuantizedConfig([]byte(transformersConfig), mustScheme(t, QuantW4A16, "", asym), []string{"lm_head", `re:.*mlp\.gate$`})
	if err != nil {
		t.Fatal(err)
	}
	qc := `  "quantization_config": {
    "config_groups": {
      "group_0": {
        "format": "pack-quantized",
        "input_activations": null,
        "output_activations": null,
        "targets": [
          "Linear"
        ],
        "weights": {
          "actorder": null,
          "block_structure": null,
          "dynamic": false,
          "group_size": 128,
          "num_bits": 4,
          "observer": "minmax",
          "observer_kwargs": {},
          "strategy": "group",
          "symmetric": false,
          "type": "int"
        }
      }
    },
    "format": "pack-quantized",
    "global_compression_ratio": null,
    "ignore": [
      "lm_head",
      "re:.*mlp\\.gate$"
    ],
    "kv_cache_scheme": null,
    "quant_method": "compressed-tensors",
    "quantization_status": "compressed",
    "sparsity_config": {},
    "transform_config": {},
    "version": "0.12.2"
  },
`
	want := strings.Replace(transformersConfig, `  "rms_norm_eps"`, qc+`  "rms_norm_eps"`, 1)
	if string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	back, err := DequantizedConfig(got)
	if err != nil || string(back) != transformersConfig {
		t.Errorf("DequantizedConfig(QuantizedConfig(c)) != c: %v\n%s", err, back)
	}
}

// For every scheme: the compressed-tensors essentials, no scale_dtype or
// zp_dtype, the native config exactly §6's, and dequantizing restores the
// original (TestQuantizedModelDetect has Detect read them back).
func TestQuantizedConfigSchemes(t *testing.T) {
	for _, qs := range []QuantizeScheme{
		mustScheme(t, QuantFP8Block, ""), mustScheme(t, QuantFP8Block, OutputFP8), mustScheme(t, QuantInt8, ""),
		mustScheme(t, QuantW4A16, ""), mustScheme(t, QuantW4A16, "", asym, group(-1)),
	} {
		got, err := QuantizedConfig([]byte(transformersConfig), qs, nil)
		if err != nil {
			t.Fatal(err)
		}
		var cfg struct {
			QC map[string]any `json:"quantization_config"`
		}
		if err := json.Unmarshal(got, &cfg); err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{"scale_dtype", "zp_dtype"} {
			if strings.Contains(string(got), key) {
				t.Errorf("%s: config has %s (§5.8)", qs, key)
			}
		}
		if qs.Format == OutputFP8 {
			want := map[string]any{"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": []any{128.0, 128.0}}
			if !reflect.DeepEqual(cfg.QC, want) {
				t.Errorf("native config %v, want %v", cfg.QC, want)
			}
		} else if cfg.QC["quant_method"] != "compressed-tensors" || cfg.QC["quantization_status"] != "compressed" || !reflect.DeepEqual(cfg.QC["ignore"], []any{"lm_head"}) {
			t.Errorf("%s: %v", qs, cfg.QC)
		}
		back, err := DequantizedConfig(got)
		if err != nil || string(back) != transformersConfig {
			t.Errorf("%s: dequantized config differs: %v", qs, err)
		}
	}
}

// Key order and values survive whatever the original's layout: an unsorted
// compact config keeps its order, gets quantization_config at the end, and
// is re-indented without re-encoding any value.
func TestQuantizedConfigKeepsOrder(t *testing.T) {
	orig := `{"z_last_sorted_first": 1.50, "a": [1, 2, {"b": null}], "esc": "\u00e9\n", "torch_dtype": "float16"}`
	got, err := QuantizedConfig([]byte(orig), mustScheme(t, QuantInt8, ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := string(got)
	for _, want := range []string{`"z_last_sorted_first": 1.50,`, `"esc": "\u00e9\n",`, `"torch_dtype": "float16",`} {
		if !strings.Contains(s, want) {
			t.Errorf("%q missing from\n%s", want, s)
		}
	}
	order := []string{`"z_last_sorted_first"`, `"a"`, `"esc"`, `"torch_dtype"`, `"quantization_config"`}
	last := -1
	for _, k := range order {
		i := strings.Index(s, k)
		if i <= last {
			t.Errorf("key %s out of order in\n%s", k, s)
		}
		last = i
	}
	if !strings.HasPrefix(s, "{\n  \"z_last_sorted_first\": 1.50,\n  \"a\": [\n    1,\n    2,\n    {\n      \"b\": null\n    }\n  ],\n") || !strings.HasSuffix(s, "  }\n}\n") {
		t.Errorf("not indented as json.dumps(indent=2):\n%s", s)
	}
	back, err := DequantizedConfig(got)
	if err != nil {
		t.Fatal(err)
	}
	var a, b map[string]any
	if err := json.Unmarshal([]byte(orig), &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(back, &b); err != nil {
		t.Fatal(err)
	}
	a["torch_dtype"] = "bfloat16"
	if !reflect.DeepEqual(a, b) {
		t.Errorf("DequantizedConfig: %v, want %v", b, a)
	}
}

func TestDequantizedConfig(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		// transformers v5: only "dtype".
		{`{"dtype": "float16", "quantization_config": {"quant_method": "fp8"}, "vocab_size": 8}`, "{\n  \"dtype\": \"bfloat16\",\n  \"vocab_size\": 8\n}\n"},
		// Neither spelling: both added, in sorted places.
		{`{"architectures": ["X"], "vocab_size": 8}`, "{\n  \"architectures\": [\n    \"X\"\n  ],\n  \"dtype\": \"bfloat16\",\n  \"torch_dtype\": \"bfloat16\",\n  \"vocab_size\": 8\n}\n"},
		// Unsorted: appended.
		{`{"vocab_size": 8, "a": 1}`, "{\n  \"vocab_size\": 8,\n  \"a\": 1,\n  \"dtype\": \"bfloat16\",\n  \"torch_dtype\": \"bfloat16\"\n}\n"},
	} {
		got, err := DequantizedConfig([]byte(tc.in))
		if err != nil || string(got) != tc.want {
			t.Errorf("DequantizedConfig(%s) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestQuantizedConfigErrors(t *testing.T) {
	qs := mustScheme(t, QuantFP8Block, "")
	for _, tc := range []struct {
		cfg  string
		qs   QuantizeScheme
		ign  []string
		want error
	}{
		{`{"quantization_config": {"quant_method": "fp8"}}`, qs, nil, ErrInvalid},
		{`{"a": 1,}`, qs, nil, ErrInvalid},
		{`[1, 2]`, qs, nil, ErrInvalid},
		{``, qs, nil, ErrInvalid},
		{`{"a": 1, "a": 2}`, qs, nil, ErrInvalid},
		{`{}`, QuantizeScheme{Name: "nvfp4"}, nil, ErrUnsupported},
		{`{}`, mustScheme(t, QuantFP8Block, OutputFP8), []string{"re:.*gate$"}, ErrUnsupported},
	} {
		if _, err := QuantizedConfig([]byte(tc.cfg), tc.qs, tc.ign); !errors.Is(err, tc.want) {
			t.Errorf("QuantizedConfig(%q): %v, want %v", tc.cfg, err, tc.want)
		}
	}
	if _, err := DequantizedConfig([]byte(`"x"`)); !errors.Is(err, ErrInvalid) {
		t.Errorf("DequantizedConfig of a string: %v", err)
	}
}

// Native fp8 tells both loaders about modules other than lm_head.
func TestQuantizedConfigNativeIgnore(t *testing.T) {
	got, err := QuantizedConfig([]byte(`{}`), mustScheme(t, QuantFP8Block, OutputFP8), []string{"model.layers.0.mlp.down_proj"})
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		QC struct {
			Ignored []string `json:"ignored_layers"`
			NotConv []string `json:"modules_to_not_convert"`
		} `json:"quantization_config"`
	}
	if err := json.Unmarshal(got, &cfg); err != nil {
		t.Fatal(err)
	}
	want := []string{"lm_head", "model.layers.0.mlp.down_proj"}
	if !reflect.DeepEqual(cfg.QC.Ignored, want) || !reflect.DeepEqual(cfg.QC.NotConv, want) {
		t.Errorf("ignored_layers %v, modules_to_not_convert %v, want %v", cfg.QC.Ignored, cfg.QC.NotConv, want)
	}
	m, err := Detect(got, []safetensors.TensorInfo{ti("model.layers.0.mlp.down_proj.weight", safetensors.BF16, 8, 8), ti("m.weight", safetensors.F8E4M3, 8, 8), ti("m.weight_scale_inv", safetensors.BF16, 1, 1)}, nil)
	if err != nil || len(m.Modules) != 1 {
		t.Fatalf("Detect: %v", err)
	}
}
