package modelgen

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/heft-dev/heft/codec/numeric"
	"github.com/heft-dev/heft/codec/safetensors"
)

const (
	// fp8BlockSize is the FP8_BLOCK block edge in both dimensions
	// (formats.md §5.6).
	fp8BlockSize = 128
	// fp8Max is the E4M3FN range llm-compressor divides by: symmetric
	// scale = absmax / ((q_max − q_min)/2) with q = ±448 (formats.md §5.4).
	fp8Max float32 = numeric.E4M3FNMax
	// Zero scales are replaced with torch.finfo(scale dtype).eps, so that
	// an all-zero block does not divide by zero (formats.md §5.4 step 5).
	f32Eps  float32 = 0x1p-23
	bf16Eps float32 = 0x1p-7
	// quantSubChunk is how many elements a quantizing worker converts at a
	// time, to keep its float32 scratch small next to writeChunks' chunks.
	quantSubChunk = 1 << 16
)

// linearModules are the Linear layers of a Qwen3 block; FP8_BLOCK targets
// "Linear", and everything else (embeddings, norms, lm_head, which is
// ignored) stays BF16 (formats.md §5.3, §6 "Unquantized modules").
var linearModules = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

// isLinearWeight reports whether name is the weight of a targeted Linear.
func isLinearWeight(name string) bool {
	module, ok := strings.CutSuffix(name, ".weight")
	if !ok {
		return false
	}
	last := module[strings.LastIndexByte(module, '.')+1:]
	for _, m := range linearModules {
		if last == m {
			return true
		}
	}
	return false
}

// FP8BlockOptions control WriteFP8BlockWith.
type FP8BlockOptions struct {
	// ScaleDType is the dtype of every weight_scale, and with it the
	// arithmetic, since compressed-tensors computes in the scale's dtype:
	//
	//   - safetensors.F32 (the default when empty): scale = amax/448 in
	//     float32, codes = clamp(x/scale in float32, ±448) → E4M3FN. This is
	//     compressed-tensors' torch path with a float32 scale (bf16 ÷ f32
	//     promotes to float32) and its Triton path with any scale, and the
	//     single-rounding rule formats.md §5.4 recommends.
	//   - safetensors.BF16: what llm-compressor writes for a BF16 model
	//     (scale dtype = weight dtype, formats.md §5.3): scale rounded to
	//     BF16, the quotient x/scale rounded to BF16 before the clamp and the
	//     cast, as compressed-tensors' torch path does (formats.md §5.4).
	ScaleDType safetensors.DType
}

// WriteFP8Block writes an FP8 E4M3 block-128 quantization of the BF16 model
// in srcDir, in compressed-tensors float-quantized format (formats.md §5):
// every Linear weight (q/k/v/o/gate/up/down proj) becomes `weight` F8_E4M3
// [out,in] plus `weight_scale` F32 [cdiv(out,128), cdiv(in,128)];
// embeddings, norms and lm_head stay BF16; config.json gets the
// quantization_config of §5.1 for FP8_BLOCK (every other field of the
// source config is kept). dstDir must be absent or empty.
//
// The math is compressed-tensors' (formats.md §5.4) for a float32 scale:
// scale = amax(|block|)/448 as a float32 division (an all-zero block gets
// float32 eps), and each code is E4M3FN(clamp(x/scale, ±448)) with x/scale
// one float32 division, so there is a single rounding and the clamp comes
// before the cast. Edge blocks cover only the rows and columns that exist,
// which is what compressed-tensors' zero padding amounts to. llm-compressor
// itself stores a BF16 model's scales as BF16; WriteFP8BlockWith with
// ScaleDType BF16 reproduces that.
func WriteFP8Block(srcDir, dstDir string) error {
	return WriteFP8BlockWith(srcDir, dstDir, FP8BlockOptions{})
}

// WriteFP8BlockWith is WriteFP8Block with options. Tensors are streamed one
// at a time, so memory use does not grow with model size. Each source file
// becomes a file of the same name holding the same tensors (a quantized
// weight's scale goes next to it), so the source's sharding is kept; the
// index, when there is one, is rewritten, and the other non-weight files are
// copied unchanged.
func WriteFP8BlockWith(srcDir, dstDir string, o FP8BlockOptions) error {
	scaleDType := o.ScaleDType
	switch scaleDType {
	case "":
		scaleDType = safetensors.F32
	case safetensors.F32, safetensors.BF16:
	default:
		return fmt.Errorf("modelgen: FP8 block scale dtype %s, want F32 or BF16", o.ScaleDType)
	}
	q := newFP8Quantizer(scaleDType, fp8BlockSize)
	config, err := readJSONNumbers(filepath.Join(srcDir, "config.json"))
	if err != nil {
		return err
	}
	if _, ok := config["quantization_config"]; ok {
		return fmt.Errorf("modelgen: %s is already quantized (config.json has quantization_config)", srcDir)
	}
	files, err := openWeights(srcDir)
	if err != nil {
		return err
	}
	defer closeWeights(files)

	// Plan every output file before creating dstDir, so a model that cannot
	// be quantized leaves nothing behind.
	headers := make([]*safetensors.Header, len(files))
	sources := make([]map[string]fp8Source, len(files))
	linear := 0
	for i, file := range files {
		specs, srcs, n, err := q.planFile(file.header)
		if err != nil {
			return fmt.Errorf("modelgen: %s: %w", file.name, err)
		}
		if headers[i], err = safetensors.Plan(specs, file.header.Metadata); err != nil {
			return fmt.Errorf("modelgen: plan %s: %w", file.name, err)
		}
		sources[i] = srcs
		linear += n
	}
	if linear == 0 {
		return fmt.Errorf("modelgen: %s has no Linear weights to quantize", srcDir)
	}

	if err := prepareDir(dstDir); err != nil {
		return err
	}
	copyBuf := make([]byte, copyBufferSize)
	for i, file := range files {
		err := safetensors.WriteFileStream(filepath.Join(dstDir, file.name), headers[i], func(w io.Writer, t safetensors.TensorInfo) error {
			src := sources[i][t.Name]
			data := file.header.TensorData(file.f, src.info)
			switch src.role {
			case roleScale:
				return q.writeScales(w, data, src.info)
			case roleCodes:
				return q.writeCodes(w, data, src.info)
			default:
				_, err := io.CopyBuffer(w, data, copyBuf)
				return err
			}
		})
		if err != nil {
			return fmt.Errorf("modelgen: %w", err)
		}
	}
	if err := writeFP8Index(srcDir, dstDir, files, headers); err != nil {
		return err
	}
	if err := copyTree(srcDir, dstDir, func(rel string) bool { return !isWeightFile(rel) && rel != "config.json" }); err != nil {
		return err
	}
	config["quantization_config"] = fp8BlockQuantizationConfig()
	return writeJSON(filepath.Join(dstDir, "config.json"), config)
}

// fp8Role says how an output tensor is produced from its source tensor.
type fp8Role int

const (
	roleCopy  fp8Role = iota // bytes copied unchanged
	roleScale                // weight_scale of a quantized weight
	roleCodes                // the E4M3FN codes of a quantized weight
)

type fp8Source struct {
	role fp8Role
	info safetensors.TensorInfo // the source tensor (the BF16 weight for scales and codes)
}

// fp8Quantizer quantizes one model. scales caches each weight's block
// scales from when its weight_scale is written until its codes are: the
// writer orders F32 and BF16 tensors before F8_E4M3 ones, so this saves
// reading every weight a third time. A miss just recomputes.
type fp8Quantizer struct {
	scaleDType safetensors.DType
	block      int // block edge; fp8BlockSize except in tests of partial blocks
	scales     map[string][]float32
}

func newFP8Quantizer(scaleDType safetensors.DType, block int) *fp8Quantizer {
	return &fp8Quantizer{scaleDType: scaleDType, block: block, scales: make(map[string][]float32)}
}

// planFile lists the output tensors of one source file and where each comes
// from; n counts the quantized weights.
func (q *fp8Quantizer) planFile(h *safetensors.Header) (specs []safetensors.TensorSpec, srcs map[string]fp8Source, n int, err error) {
	srcs = make(map[string]fp8Source, len(h.Tensors))
	for _, t := range h.Tensors {
		if _, ok := srcs[t.Name]; ok {
			return nil, nil, 0, fmt.Errorf("tensor %q would be written twice", t.Name)
		}
		if !isLinearWeight(t.Name) {
			specs = append(specs, safetensors.TensorSpec{Name: t.Name, DType: t.DType, Shape: t.Shape})
			srcs[t.Name] = fp8Source{roleCopy, t}
			continue
		}
		if t.DType != safetensors.BF16 || len(t.Shape) != 2 {
			return nil, nil, 0, fmt.Errorf("Linear weight %q is %s%v, want a 2-D BF16 matrix", t.Name, t.DType, t.Shape)
		}
		scale := strings.TrimSuffix(t.Name, "weight") + "weight_scale"
		if _, ok := h.Lookup(scale); ok {
			return nil, nil, 0, fmt.Errorf("%q already exists next to %q", scale, t.Name)
		}
		rows, cols := t.Shape[0], t.Shape[1]
		specs = append(specs,
			safetensors.TensorSpec{Name: t.Name, DType: safetensors.F8E4M3, Shape: []uint64{rows, cols}},
			safetensors.TensorSpec{Name: scale, DType: q.scaleDType, Shape: []uint64{cdiv(rows, uint64(q.block)), cdiv(cols, uint64(q.block))}},
		)
		srcs[t.Name] = fp8Source{roleCodes, t}
		srcs[scale] = fp8Source{roleScale, t}
		n++
	}
	return specs, srcs, n, nil
}

func cdiv(a, b uint64) uint64 { return (a + b - 1) / b }

// scaleFor turns a block's absolute maximum into its scale as
// compressed-tensors' calculate_qparams does: absmax / 448 in the scale's
// dtype, zero replaced with that dtype's eps. For BF16, torch divides in
// float32 (on CUDA by multiplying with the float32 reciprocal) and rounds
// once to BF16; the tests check both give the same BF16 for every input.
func (q *fp8Quantizer) scaleFor(amax float32) float32 {
	s := amax / fp8Max
	eps := f32Eps
	if q.scaleDType == safetensors.BF16 {
		s, eps = numeric.BF16ToF32(numeric.F32ToBF16(s)), bf16Eps
	}
	if s == 0 {
		return eps
	}
	return s
}

// blockScales computes the scales of the BF16 matrix t read from src, one
// band of q.block rows per goroutine. Edge blocks only see the rows and
// columns that exist, which is what compressed-tensors' zero padding
// amounts to (zeros never raise an absolute maximum).
func (q *fp8Quantizer) blockScales(src io.ReaderAt, t safetensors.TensorInfo) ([]float32, error) {
	rows, cols := int(t.Shape[0]), int(t.Shape[1])
	nbr, nbc := (rows+q.block-1)/q.block, (cols+q.block-1)/q.block
	scales := make([]float32, nbr*nbc)
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	for br := range nbr {
		g.Go(func() error {
			r0, r1 := br*q.block, min((br+1)*q.block, rows)
			band := make([]byte, 2*(r1-r0)*cols)
			if _, err := src.ReadAt(band, int64(2*r0*cols)); err != nil {
				return fmt.Errorf("read %q: %w", t.Name, err)
			}
			// |x| of a BF16 value orders like its bits without the sign,
			// and every NaN pattern is above +Inf, so an integer maximum
			// is the absolute maximum and propagates NaN as torch.amax
			// does.
			amax := make([]uint16, nbc)
			for r := range r1 - r0 {
				row := band[2*r*cols : 2*(r+1)*cols]
				for bc := range amax {
					seg := row[2*bc*q.block : 2*min((bc+1)*q.block, cols)]
					m := amax[bc]
					for i := 0; i+2 <= len(seg); i += 2 {
						m = max(m, binary.LittleEndian.Uint16(seg[i:])&0x7FFF)
					}
					amax[bc] = m
				}
			}
			for bc, a := range amax {
				scales[br*nbc+bc] = q.scaleFor(numeric.BF16ToF32(a))
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return scales, nil
}

// writeScales writes the weight_scale of the weight t.
func (q *fp8Quantizer) writeScales(w io.Writer, src io.ReaderAt, t safetensors.TensorInfo) error {
	scales, err := q.blockScales(src, t)
	if err != nil {
		return err
	}
	q.scales[t.Name] = scales
	var buf []byte
	for _, s := range scales {
		if q.scaleDType == safetensors.BF16 {
			buf = binary.LittleEndian.AppendUint16(buf, numeric.F32ToBF16(s)) // exact: s is a BF16 value
		} else {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(s))
		}
	}
	_, err = w.Write(buf)
	return err
}

// writeCodes writes the E4M3FN codes of the weight t: each element divided
// by its block's scale and converted with a clamp to ±448 first, as every
// quantizer does (formats.md §1.2), in parallel chunks.
func (q *fp8Quantizer) writeCodes(w io.Writer, src io.ReaderAt, t safetensors.TensorInfo) error {
	scales, ok := q.scales[t.Name]
	if ok {
		delete(q.scales, t.Name)
	} else {
		var err error
		if scales, err = q.blockScales(src, t); err != nil {
			return err
		}
	}
	cols := int(t.Shape[1])
	nbc := (cols + q.block - 1) / q.block
	bf16Quotient := q.scaleDType == safetensors.BF16
	return writeChunks(w, int64(t.Shape[0])*int64(cols), func(index int, out []byte) error {
		in := make([]byte, 2*min(quantSubChunk, len(out)))
		vals := make([]float32, min(quantSubChunk, len(out)))
		for off := 0; off < len(out); off += quantSubChunk {
			codes := out[off:min(off+quantSubChunk, len(out))]
			n := len(codes)
			first := index*chunkBytes + off // element index of codes[0]
			if _, err := src.ReadAt(in[:2*n], 2*int64(first)); err != nil {
				return fmt.Errorf("read %q: %w", t.Name, err)
			}
			v := vals[:n]
			numeric.BF16ToF32Slice(v, in[:2*n])
			// Walk runs of elements that share a scale: within one row and
			// one column block.
			row, col := first/cols, first%cols
			for k := 0; k < n; {
				run := min(n-k, cols-col, q.block-col%q.block)
				s := scales[row/q.block*nbc+col/q.block]
				for j := k; j < k+run; j++ {
					v[j] /= s // float32 division: one correctly rounded quotient
				}
				k += run
				if col += run; col == cols {
					row, col = row+1, 0
				}
			}
			if bf16Quotient {
				for j, x := range v {
					codes[j] = numeric.BF16ToE4M3FNSat(numeric.F32ToBF16(x))
				}
			} else {
				numeric.F32ToE4M3FNSatSlice(codes, v)
			}
		}
		return nil
	})
}

// fp8BlockQuantizationConfig is formats.md §5.1's FP8_BLOCK example: the
// config llm-compressor's FP8_BLOCK preset writes (weights float8 static
// block 128×128, inputs float8 dynamic per group of 128), valid for
// compressed-tensors 0.11+. scale_dtype and zp_dtype are left out because
// compressed-tensors 0.11-0.12 (and the vLLM releases bundling them) reject
// them (formats.md §5.8).
func fp8BlockQuantizationConfig() map[string]any {
	return map[string]any{
		"config_groups": map[string]any{
			"group_0": map[string]any{
				"format":             "float-quantized",
				"targets":            []string{"Linear"},
				"output_activations": nil,
				"weights": map[string]any{
					"num_bits": 8, "type": "float", "symmetric": true, "strategy": "block",
					"block_structure": []int{fp8BlockSize, fp8BlockSize}, "group_size": nil, "dynamic": false,
					"actorder": nil, "observer": "minmax", "observer_kwargs": map[string]any{},
				},
				"input_activations": map[string]any{
					"num_bits": 8, "type": "float", "symmetric": true, "strategy": "group",
					"group_size": fp8BlockSize, "block_structure": nil, "dynamic": true,
					"actorder": nil, "observer": nil, "observer_kwargs": map[string]any{},
				},
			},
		},
		"format":                   "float-quantized",
		"ignore":                   []string{"lm_head"},
		"kv_cache_scheme":          nil,
		"quant_method":             "compressed-tensors",
		"quantization_status":      "compressed",
		"global_compression_ratio": nil,
		"sparsity_config":          map[string]any{},
		"transform_config":         map[string]any{},
		"version":                  "0.12.2",
	}
}

// writeFP8Index rewrites the source's model.safetensors.index.json, if it
// has one, for the quantized files: a new weight_map and total_size, every
// other field kept.
func writeFP8Index(srcDir, dstDir string, files []weightFile, headers []*safetensors.Header) error {
	index, err := readJSONNumbers(filepath.Join(srcDir, indexFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	weightMap := make(map[string]string)
	var total uint64
	for i, h := range headers {
		for _, t := range h.Tensors {
			weightMap[t.Name] = files[i].name
		}
		total += h.DataSize()
	}
	metadata, _ := index["metadata"].(map[string]any)
	if metadata == nil {
		metadata = make(map[string]any)
	}
	metadata["total_size"] = total
	index["metadata"] = metadata
	index["weight_map"] = weightMap
	return writeJSON(filepath.Join(dstDir, indexFileName), index)
}

// readJSONNumbers reads a JSON object keeping numbers as their literal text,
// so that fields heft does not touch are written back exactly (1e-06 stays
// 1e-06, 1000000.0 stays 1000000.0). A missing file gives an error that
// matches fs.ErrNotExist.
func readJSONNumbers(path string) (map[string]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("modelgen: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v map[string]any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("modelgen: %s: %w", path, err)
	}
	return v, nil
}
