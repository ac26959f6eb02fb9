package store

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/heft-dev/heft/codec/chunkcodec"
	"github.com/heft-dev/heft/codec/safetensors"
)

// TensorSource says where one tensor of a file written by WriteSafetensors comes
// from. Exactly one of Tensor, Data and Recipe is set.
type TensorSource struct {
	Name  string
	DType string
	Shape []uint64
	// Tensor reuses a stored tensor as it is (a copy costs nothing).
	Tensor ID
	// Data computes the tensor's bytes into dst (len(dst) is the tensor's size) and
	// returns them; they are stored as data.
	Data func(dst []byte) ([]byte, error)
	// Recipe derives the tensor from stored tensors (Recipe.Output is filled in
	// here). The store evaluates it, so what is stored is by construction what a
	// later read recomputes; with WriteOptions.Materialize the result is stored as
	// data instead.
	Recipe *Recipe
}

// WriteOptions tune WriteSafetensors.
type WriteOptions struct {
	// Materialize stores recipe tensors as data.
	Materialize bool
	// Progress, when set, is called with the bytes written so far and the total.
	Progress func(done, total int64)
}

// WriteSafetensors stores a safetensors file built from tensors, laid out byte for
// byte as the reference writer would write it (see safetensors.Plan), and returns
// its file object. Tensors are produced one at a time, so memory stays bounded by
// the largest tensor. Like IngestFile, the file is durable but unreferenced until a
// commit names it.
func (s *Store) WriteSafetensors(ctx context.Context, path string, metadata map[string]string, tensors []TensorSource, opts WriteOptions) (*StoredFile, error) {
	if err := ValidatePath(path); err != nil {
		return nil, err
	}
	specs := make([]safetensors.TensorSpec, len(tensors))
	byName := make(map[string]*TensorSource, len(tensors))
	for i := range tensors {
		t := &tensors[i]
		set := 0
		for _, ok := range []bool{!t.Tensor.IsZero(), t.Data != nil, t.Recipe != nil} {
			if ok {
				set++
			}
		}
		if set != 1 {
			return nil, fmt.Errorf("write %s: tensor %q: exactly one of Tensor, Data and Recipe must be set", path, t.Name)
		}
		dt, err := safetensors.ParseDType(t.DType)
		if err != nil {
			return nil, fmt.Errorf("write %s: tensor %q: %w", path, t.Name, err)
		}
		specs[i] = safetensors.TensorSpec{Name: t.Name, DType: dt, Shape: t.Shape}
		byName[t.Name] = t
	}
	h, err := safetensors.Plan(specs, metadata)
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	// Reused tensors must exist with the declared dtype and shape.
	reused := map[ID]*Tensor{}
	for _, t := range tensors {
		if t.Tensor.IsZero() {
			continue
		}
		obj, err := s.LoadTensor(t.Tensor)
		if err != nil {
			return nil, fmt.Errorf("write %s: tensor %q: %w", path, t.Name, err)
		}
		if obj.DType != t.DType || !slices.Equal(obj.Shape, t.Shape) {
			return nil, fmt.Errorf("write %s: tensor %q: stored tensor %s is %s%v, not %s%v", path, t.Name, t.Tensor.Short(), obj.DType, obj.Shape, t.DType, t.Shape)
		}
		reused[t.Tensor] = obj
	}
	gcLock, err := s.writerLock()
	if err != nil {
		return nil, err
	}
	defer gcLock.Unlock()
	size := h.FileSize()
	prog := &progress{fn: opts.Progress, total: size}
	hasher := newFileHasher(size)
	obj := File{Format: FormatSafetensors, Size: uint64(size)}
	var fileID ID
	stats, err := s.withSession(ctx, func(sess *session) error {
		hasher.write(h.Raw)
		ids, err := sess.putChunks([]unit{{data: h.Raw}})
		if err != nil {
			return err
		}
		obj.Header = &ChunkRef{ID: ids[0], Size: uint64(len(h.Raw))}
		// Two buffers alternate so the file hasher reads one tensor while the next
		// is produced.
		var bufs [2][]byte
		for i, ti := range h.Tensors {
			if err := ctx.Err(); err != nil {
				return err
			}
			src := byName[ti.Name]
			buf := &bufs[i%2]
			if cap(*buf) < int(ti.Size()) {
				*buf = make([]byte, ti.Size())
			}
			data := (*buf)[:ti.Size()]
			var tid ID
			switch {
			case !src.Tensor.IsZero():
				tid = src.Tensor
				if data, err = s.tensorBytes(tid, reused[tid], data); err != nil {
					return fmt.Errorf("tensor %q: %w", ti.Name, err)
				}
			case src.Data != nil:
				if data, err = src.Data(data); err != nil {
					return fmt.Errorf("tensor %q: %w", ti.Name, err)
				}
				if uint64(len(data)) != ti.Size() {
					return fmt.Errorf("tensor %q: produced %d bytes, want %d", ti.Name, len(data), ti.Size())
				}
				if tid, err = s.putTensorData(sess, ti, data); err != nil {
					return err
				}
			default:
				r := *src.Recipe
				r.Params = maps.Clone(r.Params)
				t := Tensor{DType: src.DType, Shape: src.Shape, Size: ti.Size(), Chunks: []ChunkRef{}, Recipe: &r}
				if err := s.checkRecipeInputs(&r); err != nil {
					return fmt.Errorf("tensor %q: %w", ti.Name, err)
				}
				out, err := s.runRecipe(&r, data, 0)
				if err != nil {
					return fmt.Errorf("tensor %q: %w", ti.Name, err)
				}
				data = out
				r.Output = Sum(data)
				if opts.Materialize {
					tid, err = s.putTensorData(sess, ti, data)
				} else {
					tid, err = sess.put(KindTensor, &t)
				}
				if err != nil {
					return err
				}
			}
			hasher.write(data)
			obj.Tensor = append(obj.Tensor, FileTensor{Name: ti.Name, Tensor: tid, Size: ti.Size()})
			prog.add(int64(len(data)))
		}
		// The hasher must be done with the last buffer before it is reused or freed.
		obj.SHA256, obj.GitSHA = hasher.finish()
		hasher = nil
		fileID, err = sess.put(KindFile, &obj)
		if err == nil {
			sess.noteFile(obj.SHA256, fileID)
		}
		return err
	})
	if hasher != nil {
		hasher.finish()
	}
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return &StoredFile{ID: fileID, Size: size, SHA256: obj.SHA256, GitSHA: obj.GitSHA, Tensors: len(obj.Tensor), Stats: stats}, nil
}

// putTensorData stores a tensor's bytes as chunks and its tensor object.
func (s *Store) putTensorData(sess *session, ti safetensors.TensorInfo, data []byte) (ID, error) {
	hint := chunkcodec.HintFor(string(ti.DType))
	cs := s.opts.ChunkSize
	var units []unit
	for off := 0; off < len(data); off += cs {
		units = append(units, unit{data: data[off:min(off+cs, len(data))], hint: hint})
	}
	ids, err := sess.putChunks(units)
	if err != nil {
		return ID{}, fmt.Errorf("tensor %q: %w", ti.Name, err)
	}
	t := Tensor{DType: string(ti.DType), Shape: append([]uint64{}, ti.Shape...), Size: ti.Size(), Chunks: make([]ChunkRef, len(units))}
	for i, u := range units {
		t.Chunks[i] = ChunkRef{ID: ids[i], Size: uint64(len(u.data))}
	}
	return sess.put(KindTensor, &t)
}

// checkRecipeInputs refuses a recipe whose inputs are missing or whose chain of
// recipes would be deeper than MaxRecipeDepth.
func (s *Store) checkRecipeInputs(r *Recipe) error {
	if len(r.Inputs) == 0 {
		return fmt.Errorf("recipe %s has no inputs", r.Op)
	}
	d, err := s.recipeDepth(r, 1)
	if err != nil {
		return err
	}
	if d > MaxRecipeDepth {
		return fmt.Errorf("recipe %s would chain %d recipes (at most %d)", r.Op, d, MaxRecipeDepth)
	}
	return nil
}

// recipeDepth is the length of the longest chain of recipes starting at r, which
// is at depth d.
func (s *Store) recipeDepth(r *Recipe, d int) (int, error) {
	deepest := d
	for _, in := range r.Inputs {
		t, err := s.LoadTensor(in)
		if err != nil {
			return 0, fmt.Errorf("recipe input %s: %w", in.Short(), err)
		}
		if t.Recipe == nil {
			continue
		}
		if d >= MaxRecipeDepth {
			return d + 1, nil
		}
		sub, err := s.recipeDepth(t.Recipe, d+1)
		if err != nil {
			return 0, err
		}
		deepest = max(deepest, sub)
	}
	return deepest, nil
}
