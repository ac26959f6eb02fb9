package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/heft-dev/heft/codec/chunkcodec"
	"github.com/heft-dev/heft/codec/recipe"
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
	// Kernels evaluates recipes (nil: codec/quant on the CPU). It must give the
	// CPU's bytes exactly (recipe.Kernels' contract): the output hash recorded
	// here is what every later evaluation is checked against.
	Kernels recipe.Kernels
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
	var timing WriteTiming
	stats, err := s.withSession(ctx, func(sess *session) error {
		hasher.write(h.Raw)
		ids, err := sess.putChunks([]unit{{data: h.Raw}})
		if err != nil {
			return err
		}
		obj.Header = &ChunkRef{ID: ids[0], Size: uint64(len(h.Raw))}
		// A producer goroutine makes the tensors in order (reads of reused tensors,
		// Data calls, recipe evaluations — on a GPU when opts.Kernels run there)
		// while this one stores the previous tensor and the file hasher reads the
		// one before: three buffers rotate, so memory stays at three times the
		// largest tensor.
		produced := make(chan producedTensor, 1)
		free := make(chan []byte, 3)
		for range 3 {
			free <- nil
		}
		pctx, stop := context.WithCancel(ctx)
		producerDone := make(chan struct{})
		go func() {
			defer close(producerDone)
			s.produceTensors(pctx, h.Tensors, byName, reused, opts.Kernels, free, produced)
		}()
		// No Data call or recipe evaluation outlives WriteSafetensors.
		defer func() {
			stop()
			<-producerDone
		}()
		var prev []byte // the buffer the hasher may still be reading
		for _, ti := range h.Tensors {
			var p producedTensor
			select {
			case p = <-produced:
			case <-ctx.Done():
				return ctx.Err()
			}
			if p.err != nil {
				return p.err
			}
			timing.Inputs += p.inputs
			timing.Compute += p.compute
			data, tid := p.data, p.tensor
			storeStart := time.Now()
			switch {
			case p.recipe != nil:
				// Hashed here rather than in the producer, so that hashing,
				// producing and the file hasher run as three stages at once.
				p.recipe.Recipe.Output = Sum(data)
				if opts.Materialize {
					tid, err = s.putTensorData(sess, ti, data)
				} else {
					tid, err = sess.put(KindTensor, p.recipe)
				}
			case tid.IsZero():
				tid, err = s.putTensorData(sess, ti, data)
			}
			if err != nil {
				return err
			}
			timing.Store += time.Since(storeStart)
			hasher.write(data)
			// The hasher has finished the previous buffer: it is free again.
			if prev != nil {
				free <- prev
			}
			prev = p.buf
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
	return &StoredFile{ID: fileID, Size: size, SHA256: obj.SHA256, GitSHA: obj.GitSHA, Tensors: len(obj.Tensor), Stats: stats, Timing: timing}, nil
}

// WriteTiming says where a WriteSafetensors spent its time. The producer and the
// storing loop overlap, so the parts add up to more than the wall time when
// both were busy.
type WriteTiming struct {
	Inputs  time.Duration // reading reused tensors and recipe inputs from the store
	Compute time.Duration // Data calls and recipe kernels
	Store   time.Duration // hashing, compressing and packing the new tensors
}

// ErrKernelMismatch is returned when the kernels given to WriteSafetensors
// compute a recipe differently from the CPU: nothing is recorded, as no later
// read could verify it.
var ErrKernelMismatch = errors.New("the recipe kernels disagree with the CPU's result; nothing was recorded (run on the CPU)")

// producedTensor is one tensor made by produceTensors: its bytes in buf, and
// either the stored tensor it reuses, the recipe object to store, or neither
// (new data).
type producedTensor struct {
	buf, data []byte
	tensor    ID
	recipe    *Tensor
	inputs    time.Duration
	compute   time.Duration
	err       error
}

// produceTensors makes the tensors of a file in order into buffers taken from
// free and sends them on out; it stops at the first error (sent) or when ctx
// ends.
func (s *Store) produceTensors(ctx context.Context, tensors []safetensors.TensorInfo, byName map[string]*TensorSource, reused map[ID]*Tensor, kernels recipe.Kernels, free chan []byte, out chan<- producedTensor) {
	send := func(p producedTensor) bool {
		select {
		case out <- p:
			return p.err == nil
		case <-ctx.Done():
			return false
		}
	}
	crossChecked := false
	for _, ti := range tensors {
		var buf []byte
		select {
		case buf = <-free:
		case <-ctx.Done():
			return
		}
		if cap(buf) < int(ti.Size()) {
			buf = make([]byte, ti.Size())
		}
		p := producedTensor{buf: buf, data: buf[:ti.Size()]}
		src := byName[ti.Name]
		var err error
		start := time.Now()
		switch {
		case !src.Tensor.IsZero():
			p.tensor = src.Tensor
			if p.data, err = s.tensorBytes(p.tensor, reused[p.tensor], p.data); err != nil {
				err = fmt.Errorf("tensor %q: %w", ti.Name, err)
			}
			p.inputs = time.Since(start)
		case src.Data != nil:
			if p.data, err = src.Data(p.data); err != nil {
				err = fmt.Errorf("tensor %q: %w", ti.Name, err)
			} else if uint64(len(p.data)) != ti.Size() {
				err = fmt.Errorf("tensor %q: produced %d bytes, want %d", ti.Name, len(p.data), ti.Size())
			}
			p.compute = time.Since(start)
		default:
			r := *src.Recipe
			r.Params = maps.Clone(r.Params)
			t := Tensor{DType: src.DType, Shape: src.Shape, Size: ti.Size(), Chunks: []ChunkRef{}, Recipe: &r}
			if err = s.checkRecipeInputs(&r); err != nil {
				err = fmt.Errorf("tensor %q: %w", ti.Name, err)
				break
			}
			var inputs []recipe.Input
			if inputs, err = s.recipeInputs(&r, 0); err != nil {
				err = fmt.Errorf("tensor %q: %w", ti.Name, err)
				break
			}
			p.inputs = time.Since(start)
			computeStart := time.Now()
			if p.data, err = s.runKernels(kernels, &r, inputs, p.data); err != nil {
				err = fmt.Errorf("tensor %q: %w", ti.Name, err)
				break
			}
			p.compute = time.Since(computeStart)
			if kernels != nil && !crossChecked {
				// Trust, but verify: a recipe records its output's hash, and every
				// later read recomputes it on the CPU. Kernels that disagree with
				// the CPU would leave recipes no read can verify, so the first
				// tensor each file evaluates elsewhere is also evaluated here.
				crossChecked = true
				want, cerr := s.runKernels(nil, &r, inputs, make([]byte, len(p.data)))
				if cerr != nil {
					err = fmt.Errorf("tensor %q: %w", ti.Name, cerr)
					break
				}
				if !bytes.Equal(want, p.data) {
					err = fmt.Errorf("tensor %q: %w", ti.Name, ErrKernelMismatch)
					break
				}
			}
			p.recipe = &t // its output hash is taken by the storing loop
		}
		p.err = err
		if !send(p) {
			return
		}
	}
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
