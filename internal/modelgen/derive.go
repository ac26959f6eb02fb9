package modelgen

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/heft-dev/heft/codec/safetensors"
)

// copyBufferSize is the buffer for copying tensor bytes unchanged; larger
// than io.Copy's 32 KiB to cut system calls on gigabyte tensors.
const copyBufferSize = 1 << 20

// weightFile is one opened safetensors file of a model directory.
type weightFile struct {
	name   string // base name
	f      *os.File
	header *safetensors.Header
}

// openWeights opens every *.safetensors file of dir (sorted by name).
func openWeights(dir string) ([]weightFile, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	if err != nil {
		return nil, fmt.Errorf("modelgen: %w", err)
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("modelgen: no .safetensors files in %s", dir)
	}
	slices.Sort(paths)
	var files []weightFile
	for _, p := range paths {
		f, h, err := safetensors.Open(p)
		if err != nil {
			closeWeights(files)
			return nil, fmt.Errorf("modelgen: %w", err)
		}
		files = append(files, weightFile{name: filepath.Base(p), f: f, header: h})
	}
	return files, nil
}

func closeWeights(files []weightFile) {
	for _, w := range files {
		w.f.Close()
	}
}

// isWeightFile reports whether a model-directory entry is weights or their
// index, which Reshard and FineTune write themselves.
func isWeightFile(name string) bool {
	return strings.HasSuffix(name, ".safetensors") || name == indexFileName
}

// Reshard writes the model in srcDir to dstDir (absent or empty) with the
// same tensors and bytes split over a different number of shards (1 writes
// model.safetensors), and copies the non-weight files unchanged. Tensors go
// to shards in name order, as WriteBase places them; the metadata of the
// first source file is used for every shard.
func Reshard(srcDir, dstDir string, shards int) error {
	files, err := openWeights(srcDir)
	if err != nil {
		return err
	}
	defer closeWeights(files)
	type source struct {
		file *weightFile
		info safetensors.TensorInfo
	}
	sources := make(map[string]source)
	var specs []safetensors.TensorSpec
	for i := range files {
		for _, t := range files[i].header.Tensors {
			if _, dup := sources[t.Name]; dup {
				return fmt.Errorf("modelgen: tensor %q is in more than one file of %s", t.Name, srcDir)
			}
			sources[t.Name] = source{&files[i], t}
			specs = append(specs, safetensors.TensorSpec{Name: t.Name, DType: t.DType, Shape: t.Shape})
		}
	}
	slices.SortFunc(specs, func(a, b safetensors.TensorSpec) int { return strings.Compare(a.Name, b.Name) })
	split, err := splitShards(specs, max(shards, 1))
	if err != nil {
		return err
	}
	if err := prepareDir(dstDir); err != nil {
		return err
	}
	metadata := files[0].header.Metadata
	copyBuf := make([]byte, copyBufferSize)
	for i, group := range split {
		name := shardFileName(i, len(split))
		h, err := safetensors.Plan(group, metadata)
		if err != nil {
			return fmt.Errorf("modelgen: plan %s: %w", name, err)
		}
		err = safetensors.WriteFileStream(filepath.Join(dstDir, name), h, func(w io.Writer, t safetensors.TensorInfo) error {
			src := sources[t.Name]
			_, err := io.CopyBuffer(w, src.file.header.TensorData(src.file.f, src.info), copyBuf)
			return err
		})
		if err != nil {
			return fmt.Errorf("modelgen: %w", err)
		}
	}
	if len(split) > 1 {
		if err := writeIndex(dstDir, split); err != nil {
			return err
		}
	}
	return copyTree(srcDir, dstDir, func(rel string) bool { return !isWeightFile(rel) })
}

// writeIndex writes model.safetensors.index.json for shards laid out by
// shardFileName.
func writeIndex(dir string, shards [][]safetensors.TensorSpec) error {
	weightMap := make(map[string]string)
	var total uint64
	for i, group := range shards {
		for _, s := range group {
			size, err := s.DType.ByteLen(s.Shape)
			if err != nil {
				return fmt.Errorf("modelgen: tensor %q: %w", s.Name, err)
			}
			total += size
			weightMap[s.Name] = shardFileName(i, len(shards))
		}
	}
	return writeJSON(filepath.Join(dir, indexFileName), map[string]any{
		"metadata":   map[string]any{"total_size": total},
		"weight_map": weightMap,
	})
}

// FineTuneOptions control FineTune.
type FineTuneOptions struct {
	Seed uint64
	// FreezeEmbeddings keeps model.embed_tokens.weight and lm_head.weight
	// byte-identical to the base, as fine-tunes that freeze the vocabulary
	// matrices (and tied models, which have no lm_head) produce.
	FreezeEmbeddings bool
	// DeltaScale is the standard deviation of the change relative to the
	// tensor's RMS; 0 means 0.05. With BF16's 8-bit significand, 0.05 changes
	// well over 90% of the values of every tensor.
	DeltaScale float64
}

const (
	defaultDeltaScale = 0.05
	deltaRank         = 8 // rank of the structured part of the delta
	rmsSampleElems    = 1 << 16
)

// FineTune writes to dstDir (absent or empty) a fine-tune of the model in
// baseDir: every BF16 weight becomes W + Δ rounded to BF16, where Δ is a
// rank-8 product plus element-wise noise (half the variance each; noise only
// for 1-D tensors), scaled to DeltaScale × the tensor's RMS. Frozen
// embeddings and tensors of other dtypes are copied unchanged. The shard
// layout and headers are the base's, byte for byte, and the non-weight files
// are copied. Tensors are processed one at a time in chunks, so memory use
// does not grow with model size.
func FineTune(baseDir, dstDir string, o FineTuneOptions) error {
	if o.DeltaScale == 0 {
		o.DeltaScale = defaultDeltaScale
	}
	if o.DeltaScale < 0 || math.IsNaN(o.DeltaScale) || math.IsInf(o.DeltaScale, 0) {
		return fmt.Errorf("modelgen: DeltaScale %v must be a positive number", o.DeltaScale)
	}
	files, err := openWeights(baseDir)
	if err != nil {
		return err
	}
	defer closeWeights(files)
	if err := prepareDir(dstDir); err != nil {
		return err
	}
	copyBuf := make([]byte, copyBufferSize)
	for _, file := range files {
		err := safetensors.WriteFileStream(filepath.Join(dstDir, file.name), file.header, func(w io.Writer, t safetensors.TensorInfo) error {
			src := file.header.TensorData(file.f, t)
			if t.DType != safetensors.BF16 || (o.FreezeEmbeddings && isEmbedding(t.Name)) {
				_, err := io.CopyBuffer(w, src, copyBuf)
				return err
			}
			return fineTuneTensor(w, src, t, o)
		})
		if err != nil {
			return fmt.Errorf("modelgen: %w", err)
		}
	}
	return copyTree(baseDir, dstDir, func(rel string) bool { return !strings.HasSuffix(rel, ".safetensors") })
}

// fineTuneTensor writes the perturbed values of one BF16 tensor read from
// src.
func fineTuneTensor(w io.Writer, src *io.SectionReader, t safetensors.TensorInfo, o FineTuneOptions) error {
	rms, err := sampleRMS(src)
	if err != nil {
		return err
	}
	seed := tensorSeed(o.Seed, t.Name)
	scale := float32(o.DeltaScale * rms)

	// A matrix [rows, cols] (trailing dims folded into cols) gets a low-rank
	// term L = B·A/√r with A [r, cols] and B [rows, r] standard normal, so L
	// has unit variance; A is stored transposed for contiguous access.
	rows, cols := 1, 1
	if len(t.Shape) >= 2 {
		rows = int(t.Shape[0])
		cols = int(t.Size() / 2 / t.Shape[0])
	}
	var aT, b []float32
	lowRank, noise := float32(0), scale
	if rows > 1 && cols > 0 {
		aT = normalMatrix(seed, purposeLowRankA, cols*deltaRank)
		b = normalMatrix(seed, purposeLowRankB, rows*deltaRank)
		lowRank = scale * float32(math.Sqrt(0.5/deltaRank))
		noise = scale * float32(math.Sqrt(0.5))
	}
	z := standardNormal()
	const elemsPerChunk = chunkBytes / 2
	return writeChunks(w, int64(t.Size()), func(index int, buf []byte) error {
		if _, err := src.ReadAt(buf, int64(index)*chunkBytes); err != nil {
			return fmt.Errorf("read base tensor %q: %w", t.Name, err)
		}
		rng := chunkRNG(seed, purposeNoise, index)
		first := index * elemsPerChunk
		row, col := 0, 0
		if aT != nil {
			row, col = first/cols, first%cols
		}
		var r uint64
		for k := 0; k+2 <= len(buf); k += 2 {
			if k%8 == 0 {
				r = rng.Uint64()
			}
			d := noise * z[uint16(r)]
			r >>= 16
			if aT != nil {
				var dot float32
				bi, aj := b[row*deltaRank:(row+1)*deltaRank], aT[col*deltaRank:(col+1)*deltaRank]
				for q := range deltaRank {
					dot += bi[q] * aj[q]
				}
				d += lowRank * dot
				if col++; col == cols {
					row, col = row+1, 0
				}
			}
			v := uint16(buf[k]) | uint16(buf[k+1])<<8
			v = f32ToBF16(bf16ToF32(v) + d)
			buf[k], buf[k+1] = byte(v), byte(v>>8)
		}
		return nil
	})
}

// sampleRMS estimates a BF16 tensor's root mean square from its first
// elements, enough to scale the delta; non-finite values are skipped.
func sampleRMS(src *io.SectionReader) (float64, error) {
	buf := make([]byte, min(src.Size(), 2*rmsSampleElems))
	if _, err := src.ReadAt(buf, 0); err != nil {
		return 0, fmt.Errorf("sample base tensor: %w", err)
	}
	var sum float64
	var n int
	for k := 0; k+2 <= len(buf); k += 2 {
		v := float64(bf16ToF32(uint16(buf[k]) | uint16(buf[k+1])<<8))
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			sum += v * v
			n++
		}
	}
	if n == 0 || sum == 0 {
		return initStd, nil
	}
	return math.Sqrt(sum / float64(n)), nil
}

// normalMatrix returns n standard normal float32 values.
func normalMatrix(seed, purpose uint64, n int) []float32 {
	z := standardNormal()
	out := make([]float32, n)
	rng := chunkRNG(seed, purpose, 0)
	for i := range out {
		if i%4 == 0 {
			r := rng.Uint64()
			for j := i; j < min(i+4, n); j++ {
				out[j] = z[uint16(r)]
				r >>= 16
			}
		}
	}
	return out
}

// CopyDir copies the directory tree src to dst (absent or empty) byte for
// byte, keeping permission bits. Only regular files and directories are
// supported.
func CopyDir(src, dst string) error {
	if err := prepareDir(dst); err != nil {
		return err
	}
	return copyTree(src, dst, func(string) bool { return true })
}

// copyTree copies the regular files of src for which keep(relative path)
// holds into dst, creating directories as needed.
func copyTree(src, dst string, keep func(rel string) bool) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("modelgen: %w", err)
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return fmt.Errorf("modelgen: %w", err)
		}
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("modelgen: %w", err)
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			if err := os.MkdirAll(target, info.Mode().Perm()|0o700); err != nil {
				return fmt.Errorf("modelgen: %w", err)
			}
			return nil
		case !info.Mode().IsRegular():
			return fmt.Errorf("modelgen: %s: cannot copy %v", path, info.Mode().Type())
		case !keep(rel):
			return nil
		}
		return copyFile(path, target, info.Mode().Perm())
	})
}

func copyFile(src, dst string, perm fs.FileMode) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("modelgen: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("modelgen: %w", err)
	}
	defer func() {
		if cerr := out.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("modelgen: %w", cerr)
		}
	}()
	if _, err := io.Copy(out, in); err != nil {
		return fmt.Errorf("modelgen: copy %s: %w", src, err)
	}
	return nil
}

// everyDTypeShape gives each dtype a small shape whose bit count fills
// whole bytes: F4 needs an even element count, F6 a multiple of 4.
func everyDTypeShape(d safetensors.DType) []uint64 {
	switch d.BitSize() {
	case 4:
		return []uint64{4, 6}
	case 6:
		return []uint64{4, 8}
	}
	return []uint64{3, 5}
}

const everyDTypeSeed = 0x5afe7e15

// WriteEveryDType writes into dir (absent or empty) a directory that
// exercises a store's handling of unusual content: model.safetensors with
// one tensor of every dtype of formats.md §2 plus a zero-size tensor and a
// scalar and two metadata keys; a 5 MiB random blob.bin; an empty empty.txt;
// and a config.json. Contents are fixed (seeded), so runs are reproducible.
func WriteEveryDType(dir string) error {
	if err := prepareDir(dir); err != nil {
		return err
	}
	var tensors []safetensors.Tensor
	add := func(name string, d safetensors.DType, shape []uint64) error {
		size, err := d.ByteLen(shape)
		if err != nil {
			return fmt.Errorf("modelgen: tensor %q: %w", name, err)
		}
		data := make([]byte, size)
		fillRandom(data, chunkRNG(tensorSeed(everyDTypeSeed, name), purposeBytes, 0))
		tensors = append(tensors, safetensors.Tensor{TensorSpec: safetensors.TensorSpec{Name: name, DType: d, Shape: shape}, Data: data})
		return nil
	}
	for _, d := range safetensors.AllDTypes() {
		if err := add("dtype."+strings.ToLower(string(d)), d, everyDTypeShape(d)); err != nil {
			return err
		}
	}
	if err := errors.Join(
		add("zero_size", safetensors.F32, []uint64{0, 16}),
		add("scalar", safetensors.F64, []uint64{}),
	); err != nil {
		return err
	}
	slices.SortFunc(tensors, func(a, b safetensors.Tensor) int { return cmp.Compare(a.Name, b.Name) })
	metadata := map[string]string{"format": "pt", "heft.generator": "modelgen.WriteEveryDType"}
	if err := safetensors.WriteFile(filepath.Join(dir, singleFileName), tensors, metadata); err != nil {
		return fmt.Errorf("modelgen: %w", err)
	}

	blob := make([]byte, 5<<20)
	fillRandom(blob, rand.NewPCG(everyDTypeSeed, splitmix64(everyDTypeSeed)))
	if err := os.WriteFile(filepath.Join(dir, "blob.bin"), blob, 0o644); err != nil {
		return fmt.Errorf("modelgen: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "empty.txt"), nil, 0o644); err != nil {
		return fmt.Errorf("modelgen: %w", err)
	}
	return writeJSON(filepath.Join(dir, "config.json"), map[string]any{
		"architectures": []string{"HeftEveryDType"},
		"model_type":    "heft-every-dtype",
		"dtypes":        safetensors.AllDTypes(),
	})
}
