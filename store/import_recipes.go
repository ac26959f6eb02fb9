package store

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"sort"

	"github.com/heft-dev/heft/codec/chunkcodec"
	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/recipe"
	"github.com/heft-dev/heft/codec/safetensors"
)

// Recognising derived models at import. A model imported from outside is often an
// exact function of one already stored: its FP8 quantization made by heft's rule,
// or a BF16 bridge dequantized from a stored quantized model. detectRecipes finds
// the stored model and the op from the tensor names, checks the op on a sample, and
// the import then stores each tensor the op reproduces byte for byte as a recipe
// (a few hundred bytes) instead of data. A tensor the op does not reproduce is
// stored as data, so a wrong guess costs only compute.

// recipeSet is what detectRecipes found: a recipe for each candidate tensor (by name
// in the imported model).
type recipeSet struct {
	op      string // recipe.OpQuantize or recipe.OpDequant
	label   string // the stored model's ref
	commit  ID
	recipes map[string]*Recipe
	hits    int // tensors stored as recipes
}

func (r *recipeSet) candidate(name string) *Recipe {
	if r == nil {
		return nil
	}
	return r.recipes[name]
}

// storeWholeTensor stores one tensor read whole: as a recipe when rec reproduces
// data exactly, as data otherwise.
func (s *Store) storeWholeTensor(sess *session, t safetensors.TensorInfo, data []byte, rec *Recipe, base *baseModel, rs *recipeSet) (ID, error) {
	if rec != nil {
		out, err := s.runRecipe(rec, make([]byte, len(data)), 0)
		if err == nil && bytes.Equal(out, data) {
			r := *rec
			r.Output = Sum(data)
			rs.hits++
			return sess.put(KindTensor, &Tensor{DType: string(t.DType), Shape: slices.Clone(t.Shape), Size: uint64(len(data)), Chunks: []ChunkRef{}, Recipe: &r})
		}
		if err != nil && !errors.Is(err, errRecipeEval) {
			return ID{}, err // the store, not the guess, failed
		}
	}
	hint := chunkcodec.HintFor(string(t.DType))
	cs := s.opts.ChunkSize
	var units []unit
	for k, off := 0, 0; off < len(data); k, off = k+1, off+cs {
		n := min(cs, len(data)-off)
		units = append(units, unit{data: data[off : off+n], hint: hint, base: base.chunkFor(t.Name, string(t.DType), t.Shape, k, int64(n))})
	}
	ids, err := sess.putChunks(units)
	if err != nil {
		return ID{}, err
	}
	obj := Tensor{DType: string(t.DType), Shape: slices.Clone(t.Shape), Size: uint64(len(data)), Chunks: make([]ChunkRef, len(units))}
	for i, u := range units {
		obj.Chunks[i] = ChunkRef{ID: ids[i], Size: uint64(len(u.data))}
	}
	return sess.put(KindTensor, &obj)
}

// importedModel is what detection needs of the source directory.
type importedModel struct {
	config []byte
	side   map[string][]byte
	infos  []safetensors.TensorInfo
	where  map[string]struct {
		file *sourceFile
		info safetensors.TensorInfo
	}
}

// readImported reads the source's config.json, quantization side files and tensor
// lists (no tensor data).
func readImported(files []sourceFile) (*importedModel, error) {
	im := &importedModel{side: map[string][]byte{}, where: map[string]struct {
		file *sourceFile
		info safetensors.TensorInfo
	}{}}
	for i := range files {
		f := &files[i]
		base := path.Base(f.rel)
		small := f.size <= 16<<20
		switch {
		case f.rel == "config.json" && small:
			data, err := os.ReadFile(f.abs)
			if err != nil {
				return nil, err
			}
			im.config = data
		case (base == "quanto_qmap.json" || base == "quant_config.json" || base == "quantize_config.json") && small:
			data, err := os.ReadFile(f.abs)
			if err != nil {
				return nil, err
			}
			im.side[base] = data
		}
		if f.header == nil {
			continue
		}
		for _, t := range f.header.Tensors {
			im.infos = append(im.infos, t)
			im.where[t.Name] = struct {
				file *sourceFile
				info safetensors.TensorInfo
			}{f, t}
		}
	}
	return im, nil
}

func (im *importedModel) tensorData(name string) ([]byte, error) {
	w := im.where[name]
	data := make([]byte, w.info.Size())
	if err := readAt(w.file.abs, data, w.file.header.DataStart()+int64(w.info.Begin)); err != nil {
		return nil, fmt.Errorf("%s: %w", w.file.rel, err)
	}
	return data, nil
}

// storedModel is a stored head commit seen for detection.
type storedModel struct {
	ref     string
	commit  ID
	tensors map[string]*namedTensor
	objs    map[string]*Tensor
	config  []byte
	side    map[string][]byte
}

// detectRecipes looks for a stored model the imported one derives from. Models
// with quantized modules are matched against stored dense models (quantize
// recipes); dense models against stored quantized ones (dequant recipes).
func (s *Store) detectRecipes(files []sourceFile) (*recipeSet, error) {
	im, err := readImported(files)
	if err != nil {
		return nil, err
	}
	if len(im.infos) == 0 {
		return nil, nil
	}
	qm, err := quant.Detect(im.config, im.infos, im.side)
	if err != nil {
		return nil, nil // not a model Detect understands: nothing to derive
	}
	refs, err := s.Refs()
	if err != nil {
		return nil, err
	}
	release, err := s.hold()
	defer release()
	if err != nil {
		return nil, err
	}
	// Candidates: stored heads sharing the most tensor names, best first.
	type cand struct {
		r     RefEntry
		names int
	}
	var cands []cand
	seen := map[ID]bool{}
	want := map[string]bool{}
	for _, t := range im.infos {
		want[t.Name] = true
	}
	for _, mod := range qm.Modules {
		want[mod.WeightName()] = true
	}
	for _, r := range refs {
		if seen[r.Commit] {
			continue
		}
		seen[r.Commit] = true
		ts, err := s.commitTensors(r.Commit)
		if err != nil {
			continue
		}
		n := 0
		for _, t := range ts {
			if want[t.Name] {
				n++
			}
		}
		if n > 0 {
			cands = append(cands, cand{r, n})
		}
	}
	sort.SliceStable(cands, func(i, j int) bool { return cands[i].names > cands[j].names })
	for _, c := range cands[:min(3, len(cands))] {
		sm, err := s.loadStoredModel(c.r)
		if err != nil {
			continue
		}
		var rs *recipeSet
		if len(qm.Modules) > 0 {
			rs = s.quantizeRecipes(im, qm, sm)
		} else {
			rs = s.dequantRecipes(im, sm)
		}
		if rs != nil {
			return rs, nil
		}
	}
	return nil, nil
}

func (s *Store) loadStoredModel(r RefEntry) (*storedModel, error) {
	_, m, err := s.commitManifest(r.Commit)
	if err != nil {
		return nil, err
	}
	sm := &storedModel{ref: r.Ref.String(), commit: r.Commit, tensors: map[string]*namedTensor{}, objs: map[string]*Tensor{}, side: map[string][]byte{}}
	for _, e := range m.Files {
		f, err := s.LoadFile(e.File)
		if err != nil {
			return nil, err
		}
		base := path.Base(e.Path)
		if (e.Path == "config.json" || base == "quanto_qmap.json" || base == "quant_config.json" || base == "quantize_config.json") && f.Size <= 16<<20 {
			fr, err := s.OpenFile(e.File)
			if err != nil {
				return nil, err
			}
			data, err := io.ReadAll(io.NewSectionReader(fr, 0, fr.Size()))
			fr.Close()
			if err != nil {
				return nil, err
			}
			if e.Path == "config.json" {
				sm.config = data
			} else {
				sm.side[base] = data
			}
		}
		for _, ft := range f.Tensor {
			obj, err := s.LoadTensor(ft.Tensor)
			if err != nil {
				return nil, err
			}
			sm.tensors[ft.Name] = &namedTensor{FileTensor: ft, file: e.Path}
			sm.objs[ft.Name] = obj
		}
	}
	return sm, nil
}

// quantizeSchemeFor finds the quantize scheme whose output is stored the way mod
// is (weights only: the input-activation settings do not change any byte).
func quantizeSchemeFor(mod quant.Module) (quant.QuantizeScheme, bool) {
	want := mod.Scheme
	want.Input = quant.Activations{}
	scaleDType := mod.Tensors[quant.RoleScale].DType
	for _, name := range []string{quant.QuantFP8Block, quant.QuantInt8, quant.QuantW4A16} {
		for _, format := range []string{quant.OutputCT, quant.OutputFP8} {
			for _, asym := range []bool{false, true} {
				qs := quant.QuantizeScheme{Name: name, Format: format, Asymmetric: asym, ScaleDType: scaleDType, SkipVLLMChecks: true}
				if name == quant.QuantW4A16 {
					qs.GroupSize = want.GroupSize
					if want.Strategy == quant.StrategyChannel {
						qs.GroupSize = -1
					}
				}
				if name == quant.QuantFP8Block {
					qs.BlockSize = want.BlockSize
				}
				if qs.Validate() != nil {
					continue
				}
				got := qs.Scheme()
				got.Input = quant.Activations{}
				if got == want {
					return qs, true
				}
			}
		}
	}
	return quant.QuantizeScheme{}, false
}

// quantizeRecipes matches an imported quantized model against a stored dense one.
func (s *Store) quantizeRecipes(im *importedModel, qm *quant.Model, sm *storedModel) *recipeSet {
	rs := &recipeSet{op: recipe.OpQuantize, label: sm.ref, commit: sm.commit, recipes: map[string]*Recipe{}}
	var sample []string
	for _, mod := range qm.Modules {
		w, ok := sm.objs[mod.WeightName()]
		if !ok || !isFloatTensor(w.DType) {
			continue
		}
		if _, g := mod.Tensors[quant.RoleGIdx]; g {
			continue
		}
		qs, ok := quantizeSchemeFor(mod)
		if !ok {
			continue
		}
		for role, ti := range mod.Tensors {
			if role != quant.RoleCodes && role != quant.RoleScale && role != quant.RoleZeroPoint && role != quant.RoleShape {
				continue
			}
			params, err := recipe.QuantizeParams(qs, role)
			if err != nil {
				continue
			}
			rs.recipes[ti.Name] = &Recipe{Op: recipe.OpQuantize, Params: params, Inputs: []ID{sm.tensors[mod.WeightName()].Tensor}}
			if len(sample) < 2 {
				sample = append(sample, ti.Name)
			}
		}
	}
	return s.confirm(rs, im, sample)
}

// dequantRecipes matches an imported dense model against a stored quantized one.
func (s *Store) dequantRecipes(im *importedModel, sm *storedModel) *recipeSet {
	var infos []safetensors.TensorInfo
	for name, t := range sm.objs {
		infos = append(infos, safetensors.TensorInfo{Name: name, DType: safetensors.DType(t.DType), Shape: t.Shape, End: t.Size})
	}
	sqm, err := quant.Detect(sm.config, infos, sm.side)
	if err != nil || len(sqm.Modules) == 0 {
		return nil
	}
	rs := &recipeSet{op: recipe.OpDequant, label: sm.ref, commit: sm.commit, recipes: map[string]*Recipe{}}
	var sample []string
	for _, mod := range sqm.Modules {
		w, ok := im.where[mod.WeightName()]
		if !ok || len(w.info.Shape) != 2 {
			continue
		}
		dtype := w.info.DType
		if dtype != safetensors.BF16 && dtype != safetensors.F16 && dtype != safetensors.F32 {
			continue
		}
		mod.Out, mod.In = int(w.info.Shape[0]), int(w.info.Shape[1])
		var roles []quant.Role
		var inputs []ID
		for _, r := range []quant.Role{quant.RoleCodes, quant.RoleScale, quant.RoleZeroPoint, quant.RoleShape, quant.RoleGIdx} {
			if ti, ok := mod.Tensors[r]; ok {
				roles = append(roles, r)
				inputs = append(inputs, sm.tensors[ti.Name].Tensor)
			}
		}
		params, err := recipe.DequantParams(mod, roles, dtype)
		if err != nil {
			continue
		}
		rs.recipes[mod.WeightName()] = &Recipe{Op: recipe.OpDequant, Params: params, Inputs: inputs}
		if len(sample) < 2 {
			sample = append(sample, mod.WeightName())
		}
	}
	return s.confirm(rs, im, sample)
}

// confirm evaluates the sampled recipes against the imported bytes and keeps the
// set only if they all reproduce them.
func (s *Store) confirm(rs *recipeSet, im *importedModel, sample []string) *recipeSet {
	if len(sample) == 0 {
		return nil
	}
	for _, name := range sample {
		data, err := im.tensorData(name)
		if err != nil {
			return nil
		}
		out, err := s.runRecipe(rs.recipes[name], make([]byte, len(data)), 0)
		if err != nil || !bytes.Equal(out, data) {
			return nil
		}
	}
	return rs
}

func isFloatTensor(dtype string) bool {
	return dtype == string(safetensors.BF16) || dtype == string(safetensors.F16) || dtype == string(safetensors.F32)
}
