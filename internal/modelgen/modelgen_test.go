package modelgen

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/heft-dev/heft/codec/safetensors"
)

// readTensors parses every safetensors file of dir and returns each
// tensor's info and bytes, keyed by name.
func readTensors(t *testing.T, dir string) (map[string]safetensors.TensorInfo, map[string][]byte) {
	t.Helper()
	files, err := openWeights(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer closeWeights(files)
	infos := make(map[string]safetensors.TensorInfo)
	data := make(map[string][]byte)
	for _, f := range files {
		for _, info := range f.header.Tensors {
			if _, dup := infos[info.Name]; dup {
				t.Fatalf("tensor %q in two files", info.Name)
			}
			b, err := io.ReadAll(f.header.TensorData(f.f, info))
			if err != nil {
				t.Fatal(err)
			}
			infos[info.Name], data[info.Name] = info, b
		}
	}
	return infos, data
}

// hashFiles returns the SHA-256 of every file under dir, by relative path.
func hashFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	sums, err := TreeSHA256(dir)
	if err != nil {
		t.Fatal(err)
	}
	return sums
}

func readJSON(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return v
}

func TestTinyLayout(t *testing.T) {
	dir := t.TempDir()
	if err := WriteBase(dir, Tiny(), Options{Seed: 1}); err != nil {
		t.Fatal(err)
	}
	// formats.md §14.11.
	want := map[string][]uint64{
		"model.embed_tokens.weight": {320, 64},
		"model.norm.weight":         {64},
		"lm_head.weight":            {320, 64},
	}
	for i := range 2 {
		p := fmt.Sprintf("model.layers.%d.", i)
		maps.Copy(want, map[string][]uint64{
			p + "input_layernorm.weight":          {64},
			p + "post_attention_layernorm.weight": {64},
			p + "self_attn.q_proj.weight":         {128, 64},
			p + "self_attn.k_proj.weight":         {64, 64},
			p + "self_attn.v_proj.weight":         {64, 64},
			p + "self_attn.o_proj.weight":         {64, 128},
			p + "self_attn.q_norm.weight":         {32},
			p + "self_attn.k_norm.weight":         {32},
			p + "mlp.gate_proj.weight":            {160, 64},
			p + "mlp.up_proj.weight":              {160, 64},
			p + "mlp.down_proj.weight":            {64, 160},
		})
	}
	f, h, err := safetensors.Open(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !reflect.DeepEqual(h.Metadata, map[string]string{"format": "pt"}) {
		t.Errorf("metadata %v", h.Metadata)
	}
	if len(h.Tensors) != len(want) {
		t.Errorf("%d tensors, want %d", len(h.Tensors), len(want))
	}
	for _, info := range h.Tensors {
		if info.DType != safetensors.BF16 || !reflect.DeepEqual(info.Shape, want[info.Name]) {
			t.Errorf("%s: %s%v, want BF16%v", info.Name, info.DType, info.Shape, want[info.Name])
		}
	}
	// All BF16, so the reference writer's order is plain name order.
	if !slices.IsSortedFunc(h.Tensors, func(a, b safetensors.TensorInfo) int { return strings.Compare(a.Name, b.Name) }) {
		t.Errorf("tensors are not in name order")
	}
	if got, want := int64(h.DataSize()), Tiny().ParamBytes(); got != want {
		t.Errorf("data %d bytes, ParamBytes %d", got, want)
	}
	if _, err := os.Stat(filepath.Join(dir, indexFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("single-file model has an index: %v", err)
	}

	config := readJSON(t, filepath.Join(dir, "config.json"))
	for key, want := range map[string]any{
		"hidden_size": 64.0, "intermediate_size": 160.0, "num_hidden_layers": 2.0,
		"num_attention_heads": 4.0, "num_key_value_heads": 2.0, "head_dim": 32.0, "vocab_size": 320.0,
		"tie_word_embeddings": false, "torch_dtype": "bfloat16", "dtype": "bfloat16",
		"rope_theta": 1e6, "model_type": "qwen3",
	} {
		if config[key] != want {
			t.Errorf("config.json %s = %v, want %v", key, config[key], want)
		}
	}
	if rp, _ := config["rope_parameters"].(map[string]any); rp["rope_theta"] != 1e6 || rp["rope_type"] != "default" {
		t.Errorf("config.json rope_parameters = %v", config["rope_parameters"])
	}
	if lt, _ := config["layer_types"].([]any); len(lt) != 2 {
		t.Errorf("config.json layer_types = %v", config["layer_types"])
	}
	for _, name := range []string{"generation_config.json", "tokenizer_config.json"} {
		readJSON(t, filepath.Join(dir, name))
	}
}

func TestValueDistribution(t *testing.T) {
	dir := t.TempDir()
	if err := WriteBase(dir, Tiny(), Options{Seed: 7}); err != nil {
		t.Fatal(err)
	}
	_, data := readTensors(t, dir)
	stats := func(b []byte) (mean, std float64) {
		var sum, sq float64
		n := float64(len(b) / 2)
		for i := 0; i < len(b); i += 2 {
			v := float64(bf16ToF32(uint16(b[i]) | uint16(b[i+1])<<8))
			sum += v
			sq += v * v
		}
		mean = sum / n
		return mean, math.Sqrt(max(0, sq/n-mean*mean))
	}
	mean, std := stats(data["model.embed_tokens.weight"])
	if mean < -0.002 || mean > 0.002 || std < 0.018 || std > 0.022 {
		t.Errorf("embed_tokens mean %v std %v, want about 0 and 0.02", mean, std)
	}
	mean, std = stats(data["model.norm.weight"])
	if mean < 0.99 || mean > 1.01 || std > 0.03 {
		t.Errorf("norm mean %v std %v, want about 1", mean, std)
	}
	if bytes.Equal(data["model.layers.0.mlp.up_proj.weight"], data["model.layers.0.mlp.gate_proj.weight"]) {
		t.Errorf("same-shaped tensors have identical values")
	}
}

func TestShardedBaseAndReshard(t *testing.T) {
	root := t.TempDir()
	base, single, four := filepath.Join(root, "base"), filepath.Join(root, "single"), filepath.Join(root, "four")
	if err := WriteBase(base, Tiny(), Options{Seed: 3, Shards: 3}); err != nil {
		t.Fatal(err)
	}
	checkIndex(t, base, 3)
	baseInfos, baseData := readTensors(t, base)

	if err := Reshard(base, single, 1); err != nil {
		t.Fatal(err)
	}
	if err := Reshard(single, four, 4); err != nil {
		t.Fatal(err)
	}
	checkIndex(t, four, 4)
	for _, dir := range []string{single, four} {
		infos, data := readTensors(t, dir)
		if len(infos) != len(baseInfos) {
			t.Fatalf("%s: %d tensors, want %d", dir, len(infos), len(baseInfos))
		}
		for name, b := range baseData {
			if !bytes.Equal(data[name], b) || !reflect.DeepEqual(infos[name].Shape, baseInfos[name].Shape) {
				t.Errorf("%s: tensor %q changed", dir, name)
			}
		}
		for _, name := range []string{"config.json", "generation_config.json", "tokenizer_config.json"} {
			want, _ := os.ReadFile(filepath.Join(base, name))
			got, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s: %s not copied: %v", dir, name, err)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(single, indexFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("single-file reshard kept an index: %v", err)
	}
	// Same layout from the same tensors, whichever way they arrived.
	direct := filepath.Join(root, "direct")
	if err := WriteBase(direct, Tiny(), Options{Seed: 3, Shards: 4}); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(hashFiles(t, direct), hashFiles(t, four)) {
		t.Errorf("Reshard to 4 differs from WriteBase with 4 shards")
	}
}

// checkIndex checks model.safetensors.index.json against the shards.
func checkIndex(t *testing.T, dir string, shards int) {
	t.Helper()
	index := readJSON(t, filepath.Join(dir, indexFileName))
	weightMap, _ := index["weight_map"].(map[string]any)
	meta, _ := index["metadata"].(map[string]any)
	infos, _ := readTensors(t, dir)
	var total uint64
	perFile := make(map[string]int)
	for name, info := range infos {
		total += info.Size()
		file, _ := weightMap[name].(string)
		perFile[file]++
	}
	if len(weightMap) != len(infos) || meta["total_size"] != float64(total) {
		t.Errorf("index has %d entries and total_size %v; want %d and %d", len(weightMap), meta["total_size"], len(infos), total)
	}
	for i := range shards {
		name := fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, shards)
		f, h, err := safetensors.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		if len(h.Tensors) == 0 || perFile[name] != len(h.Tensors) {
			t.Errorf("%s holds %d tensors, index maps %d to it", name, len(h.Tensors), perFile[name])
		}
	}
}

func TestFineTune(t *testing.T) {
	root := t.TempDir()
	base, tuned := filepath.Join(root, "base"), filepath.Join(root, "tuned")
	if err := WriteBase(base, Tiny(), Options{Seed: 11, Shards: 2}); err != nil {
		t.Fatal(err)
	}
	if err := FineTune(base, tuned, FineTuneOptions{Seed: 5, FreezeEmbeddings: true}); err != nil {
		t.Fatal(err)
	}
	baseHashes, tunedHashes := hashFiles(t, base), hashFiles(t, tuned)
	if !slices.Equal(slices.Sorted(maps.Keys(baseHashes)), slices.Sorted(maps.Keys(tunedHashes))) {
		t.Fatalf("file sets differ: %v vs %v", slices.Sorted(maps.Keys(baseHashes)), slices.Sorted(maps.Keys(tunedHashes)))
	}
	for _, name := range []string{indexFileName, "config.json"} {
		if baseHashes[name] != tunedHashes[name] {
			t.Errorf("%s changed", name)
		}
	}
	for _, name := range []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"} {
		bf, bh, err := safetensors.Open(filepath.Join(base, name))
		if err != nil {
			t.Fatal(err)
		}
		bf.Close()
		tf, th, err := safetensors.Open(filepath.Join(tuned, name))
		if err != nil {
			t.Fatal(err)
		}
		tf.Close()
		if !bytes.Equal(bh.Raw, th.Raw) {
			t.Errorf("%s: header differs from the base", name)
		}
	}

	_, baseData := readTensors(t, base)
	_, tunedData := readTensors(t, tuned)
	for _, name := range []string{"model.embed_tokens.weight", "lm_head.weight"} {
		if !bytes.Equal(baseData[name], tunedData[name]) {
			t.Errorf("frozen %s changed", name)
		}
	}
	for name, b := range baseData {
		if isEmbedding(name) {
			continue
		}
		values, changed, changedBytes := len(b)/2, 0, 0
		for i := 0; i < len(b); i += 2 {
			if b[i] != tunedData[name][i] || b[i+1] != tunedData[name][i+1] {
				changed++
			}
			for j := i; j < i+2; j++ {
				if b[j] != tunedData[name][j] {
					changedBytes++
				}
			}
		}
		// A small delta changes nearly every BF16 value but rarely its
		// high byte (sign and top exponent bits), so the value count is
		// what "most values change" means.
		if float64(changed) < 0.9*float64(values) {
			t.Errorf("%s: %d of %d BF16 values changed, want > 90%%", name, changed, values)
		}
		if name == "model.layers.0.self_attn.q_proj.weight" {
			t.Logf("q_proj: %.1f%% of values and %.1f%% of bytes changed", 100*float64(changed)/float64(values), 100*float64(changedBytes)/float64(len(b)))
		}
	}

	// Without freezing, the embeddings change too.
	unfrozen := filepath.Join(root, "unfrozen")
	if err := FineTune(base, unfrozen, FineTuneOptions{Seed: 5}); err != nil {
		t.Fatal(err)
	}
	_, unfrozenData := readTensors(t, unfrozen)
	if bytes.Equal(baseData["model.embed_tokens.weight"], unfrozenData["model.embed_tokens.weight"]) {
		t.Errorf("embed_tokens unchanged without FreezeEmbeddings")
	}
	if !bytes.Equal(tunedData["model.layers.1.mlp.down_proj.weight"], unfrozenData["model.layers.1.mlp.down_proj.weight"]) {
		t.Errorf("freezing embeddings changed another tensor's delta")
	}
}

func TestFineTuneDeltaScale(t *testing.T) {
	root := t.TempDir()
	base, tuned := filepath.Join(root, "base"), filepath.Join(root, "tuned")
	if err := WriteBase(base, Demo(), Options{Seed: 2}); err != nil {
		t.Fatal(err)
	}
	if err := FineTune(base, tuned, FineTuneOptions{Seed: 9, DeltaScale: 0.1}); err != nil {
		t.Fatal(err)
	}
	_, baseData := readTensors(t, base)
	_, tunedData := readTensors(t, tuned)
	name := "model.layers.2.self_attn.o_proj.weight"
	b, tb := baseData[name], tunedData[name]
	var deltaSq, baseSq float64
	for i := 0; i < len(b); i += 2 {
		w := float64(bf16ToF32(uint16(b[i]) | uint16(b[i+1])<<8))
		d := float64(bf16ToF32(uint16(tb[i])|uint16(tb[i+1])<<8)) - w
		deltaSq += d * d
		baseSq += w * w
	}
	if ratio := math.Sqrt(deltaSq / baseSq); ratio < 0.08 || ratio > 0.12 {
		t.Errorf("%s: ‖Δ‖/‖W‖ = %.3f, want about DeltaScale 0.1", name, ratio)
	}
}

func TestDeterminism(t *testing.T) {
	root := t.TempDir()
	dirs := []string{filepath.Join(root, "a"), filepath.Join(root, "b"), filepath.Join(root, "c")}
	for i, dir := range dirs {
		seed := uint64(42)
		if i == 2 {
			seed = 43
		}
		if err := WriteBase(dir, Tiny(), Options{Seed: seed, Shards: 2}); err != nil {
			t.Fatal(err)
		}
		if err := FineTune(dir, dir+"-ft", FineTuneOptions{Seed: 1, FreezeEmbeddings: true}); err != nil {
			t.Fatal(err)
		}
	}
	for _, suffix := range []string{"", "-ft"} {
		a, b, c := hashFiles(t, dirs[0]+suffix), hashFiles(t, dirs[1]+suffix), hashFiles(t, dirs[2]+suffix)
		if !maps.Equal(a, b) {
			t.Errorf("same seed, different files (%q)", suffix)
		}
		if a["model-00001-of-00002.safetensors"] == c["model-00001-of-00002.safetensors"] {
			t.Errorf("different seeds, identical weights (%q)", suffix)
		}
	}
}

func TestCopyDir(t *testing.T) {
	root := t.TempDir()
	src, dst := filepath.Join(root, "src"), filepath.Join(root, "dst")
	if err := WriteEveryDType(src); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(src, "sub", "deeper"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "sub", "deeper", "x.txt"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CopyDir(src, dst); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(hashFiles(t, src), hashFiles(t, dst)) {
		t.Errorf("copy differs")
	}
	if fi, err := os.Stat(filepath.Join(dst, "sub", "deeper", "x.txt")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode not kept: %v %v", fi, err)
	}
	if err := CopyDir(src, dst); !errors.Is(err, errNotEmpty) {
		t.Errorf("copy into a non-empty directory: %v", err)
	}
}

func TestWriteEveryDType(t *testing.T) {
	dir := t.TempDir()
	if err := WriteEveryDType(dir); err != nil {
		t.Fatal(err)
	}
	f, h, err := safetensors.Open(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	seen := make(map[safetensors.DType]bool)
	var zeroSize, scalar bool
	for _, info := range h.Tensors {
		seen[info.DType] = true
		zeroSize = zeroSize || (info.Size() == 0 && len(info.Shape) > 0)
		scalar = scalar || len(info.Shape) == 0
	}
	for _, d := range safetensors.AllDTypes() {
		if !seen[d] {
			t.Errorf("no %s tensor", d)
		}
	}
	if !zeroSize || !scalar || len(h.Metadata) != 2 {
		t.Errorf("zero-size %v, scalar %v, metadata %v", zeroSize, scalar, h.Metadata)
	}
	for name, size := range map[string]int64{"blob.bin": 5 << 20, "empty.txt": 0} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Size() != size {
			t.Errorf("%s: %v, want %d bytes", name, err, size)
		}
	}
	readJSON(t, filepath.Join(dir, "config.json"))

	again := filepath.Join(t.TempDir(), "again")
	if err := WriteEveryDType(again); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(hashFiles(t, dir), hashFiles(t, again)) {
		t.Errorf("WriteEveryDType is not deterministic")
	}
}

func TestSized(t *testing.T) {
	for _, target := range []int64{5 << 20, 50 << 20, 500 << 20, 2_500_000_000, 10 << 30} {
		c := Sized(target)
		if err := c.Validate(); err != nil {
			t.Fatalf("Sized(%d): %v", target, err)
		}
		got := c.ParamBytes()
		if diff := float64(got-target) / float64(target); diff < -0.02 || diff > 0.02 {
			t.Errorf("Sized(%d) = %+v: %d bytes (%.1f%% off)", target, c, got, 100*diff)
		}
		var sum int64
		for _, s := range c.Tensors() {
			n, _ := s.DType.ByteLen(s.Shape)
			sum += int64(n)
		}
		if sum != got {
			t.Errorf("Sized(%d): tensors sum to %d, ParamBytes %d", target, sum, got)
		}
	}
	if c := Demo(); c.ParamBytes() < 30e6 || c.ParamBytes() > 60e6 {
		t.Errorf("Demo is %d bytes, want 30-60 MB", c.ParamBytes())
	}
}

func TestSplitShards(t *testing.T) {
	specs := Tiny().Tensors()
	for n := 1; n <= len(specs); n++ {
		shards, err := splitShards(specs, n)
		if err != nil {
			t.Fatal(err)
		}
		var flat []safetensors.TensorSpec
		for i, s := range shards {
			if len(s) == 0 {
				t.Fatalf("%d shards: shard %d empty", n, i)
			}
			flat = append(flat, s...)
		}
		if !reflect.DeepEqual(flat, specs) {
			t.Fatalf("%d shards: tensors reordered or lost", n)
		}
	}
	if _, err := splitShards(specs, len(specs)+1); err == nil {
		t.Errorf("more shards than tensors accepted")
	}
}

func TestRefusesNonEmptyDestination(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "stale.safetensors"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteBase(dir, Tiny(), Options{}); !errors.Is(err, errNotEmpty) {
		t.Errorf("WriteBase into a non-empty directory: %v", err)
	}
}

// BenchmarkWriteBase measures generation throughput; a 2.5 GB model takes
// about 2.5 GB / (MB/s reported).
func BenchmarkWriteBase(b *testing.B) {
	c := Sized(256 << 20)
	b.SetBytes(c.ParamBytes())
	for i := 0; b.Loop(); i++ {
		if err := WriteBase(filepath.Join(b.TempDir(), fmt.Sprint(i)), c, Options{Seed: 1, Shards: 2}); err != nil {
			b.Fatal(err)
		}
	}
}

func TestWriteChunksStopsOnError(t *testing.T) {
	failing := errors.New("fill failed")
	size := int64(20*chunkBytes + 3)
	err := writeChunks(io.Discard, size, func(i int, buf []byte) error {
		if i == 5 {
			return failing
		}
		return nil
	})
	if !errors.Is(err, failing) {
		t.Errorf("fill error: %v", err)
	}
	var w limitedWriter
	err = writeChunks(&w, size, func(i int, buf []byte) error {
		buf[0] = byte(i)
		return nil
	})
	if !errors.Is(err, errWriterFull) || w.n != 3*chunkBytes {
		t.Errorf("write error: %v after %d bytes", err, w.n)
	}
	var buf bytes.Buffer
	if err := writeChunks(&buf, size, func(i int, b []byte) error {
		b[0] = byte(i)
		return nil
	}); err != nil || int64(buf.Len()) != size || buf.Bytes()[7*chunkBytes] != 7 {
		t.Errorf("ordered write: %v, %d bytes", err, buf.Len())
	}
}

var errWriterFull = errors.New("writer full")

// limitedWriter accepts three chunks, then fails.
type limitedWriter struct{ n int }

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n >= 3*chunkBytes {
		return 0, errWriterFull
	}
	l.n += len(p)
	return len(p), nil
}
