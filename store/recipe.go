package store

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sync/errgroup"

	"github.com/heft-dev/heft/codec/recipe"
	"github.com/heft-dev/heft/codec/safetensors"
)

// TensorBytes returns the bytes of a stored tensor, verified: data tensors are
// assembled from their chunks (each checked against its hash), recipe tensors are
// evaluated and checked against the recipe's output hash.
func (s *Store) TensorBytes(id ID) ([]byte, error) {
	t, err := s.LoadTensor(id)
	if err != nil {
		return nil, err
	}
	return s.tensorBytes(id, t, nil)
}

// tensorBytes returns t's bytes in dst (reallocated when too small).
func (s *Store) tensorBytes(id ID, t *Tensor, dst []byte) ([]byte, error) {
	return s.tensorBytesAt(id, t, dst, 0)
}

// MaxRecipeDepth bounds chains of recipes (a recipe whose input is a recipe…): a
// bridge dequantized from an FP8 model that is itself a recipe over its BF16 base
// is two deep. Bounded chains keep the cost of a read bounded.
const MaxRecipeDepth = 3

// tensorBytesAt is tensorBytes for a tensor depth recipes down a chain.
func (s *Store) tensorBytesAt(id ID, t *Tensor, dst []byte, depth int) ([]byte, error) {
	if cap(dst) < int(t.Size) {
		dst = make([]byte, t.Size)
	}
	dst = dst[:t.Size]
	if t.Recipe != nil {
		if depth >= MaxRecipeDepth {
			return nil, &IntegrityError{ID: id, Kind: KindTensor, Reason: fmt.Sprintf("recipe chain deeper than %d", MaxRecipeDepth)}
		}
		return s.evalRecipeAt(id, t, dst, depth)
	}
	return s.readTensorData(id, t, dst)
}

// readTensorData reads the chunks of a data tensor (no recipe) into dst (exactly t.Size bytes),
// decoding chunks in parallel.
func (s *Store) readTensorData(id ID, t *Tensor, dst []byte) ([]byte, error) {
	ids := make([]ID, len(t.Chunks))
	var total uint64
	for i, c := range t.Chunks {
		ids[i] = c.ID
		total += c.Size
	}
	if total != t.Size || uint64(len(dst)) != t.Size {
		return nil, &IntegrityError{ID: id, Kind: KindTensor, Reason: fmt.Sprintf("chunks add up to %d bytes, tensor says %d", total, t.Size)}
	}
	locs, err := s.idx.lookup(ids)
	if err != nil {
		return nil, err
	}
	g := errgroup.Group{}
	g.SetLimit(s.opts.Workers)
	var off uint64
	for _, c := range t.Chunks {
		loc, ok := locs[c.ID]
		if !ok || loc.RawLen != c.Size {
			return nil, &IntegrityError{ID: c.ID, Kind: KindChunk, Reason: "chunk is missing from the index or has the wrong size"}
		}
		part := dst[off : off : off+c.Size]
		g.Go(func() error {
			out, err := s.readLocated(c.ID, loc, part)
			if err != nil {
				return err
			}
			if len(out) > 0 && unsafe.SliceData(out) != unsafe.SliceData(part[:1]) {
				copy(part[:c.Size], out)
			}
			return nil
		})
		off += c.Size
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return dst, nil
}

// evalRecipe computes a recipe tensor into dst (exactly t.Size bytes) and checks it.
func (s *Store) evalRecipe(id ID, t *Tensor, dst []byte) ([]byte, error) {
	return s.evalRecipeAt(id, t, dst, 0)
}

func (s *Store) evalRecipeAt(id ID, t *Tensor, dst []byte, depth int) ([]byte, error) {
	out, err := s.runRecipe(t.Recipe, dst[:t.Size], depth)
	if err != nil {
		if errors.Is(err, recipe.ErrUnknownOp) || !errors.Is(err, errRecipeEval) {
			return nil, fmt.Errorf("tensor %s: %w", id.Short(), err)
		}
		return nil, &IntegrityError{ID: id, Kind: KindTensor, Reason: "recipe cannot be evaluated", Err: err}
	}
	if uint64(len(out)) != t.Size || Sum(out) != t.Recipe.Output {
		return nil, &IntegrityError{ID: id, Kind: KindTensor, Reason: fmt.Sprintf("recipe %s does not reproduce its output hash", t.Recipe.Op)}
	}
	return out, nil
}

// errRecipeEval marks a failure of the op itself (as opposed to reading its inputs).
var errRecipeEval = errors.New("recipe evaluation failed")

// runRecipe reads a recipe's inputs and evaluates it into dst, without checking the
// result against the recipe's output hash.
func (s *Store) runRecipe(r *Recipe, dst []byte, depth int) ([]byte, error) {
	inputs, err := s.recipeInputs(r, depth)
	if err != nil {
		return nil, err
	}
	return s.runKernels(nil, r, inputs, dst)
}

// recipeInputs reads a recipe's inputs (verified, recipes among them evaluated).
func (s *Store) recipeInputs(r *Recipe, depth int) ([]recipe.Input, error) {
	inputs := make([]recipe.Input, len(r.Inputs))
	for i, in := range r.Inputs {
		it, err := s.LoadTensor(in)
		if err != nil {
			return nil, fmt.Errorf("recipe input %d: %w", i, err)
		}
		data, err := s.tensorBytesAt(in, it, nil, depth+1)
		if err != nil {
			return nil, fmt.Errorf("recipe input %d: %w", i, err)
		}
		inputs[i] = recipe.Input{DType: safetensors.DType(it.DType), Shape: it.Shape, Data: data}
	}
	return inputs, nil
}

// runKernels evaluates r on its inputs into dst with kernels (nil: the CPU's).
func (s *Store) runKernels(kernels recipe.Kernels, r *Recipe, inputs []recipe.Input, dst []byte) ([]byte, error) {
	out, err := recipe.EvalWith(kernels, r.Op, r.Params, inputs, dst)
	if err != nil {
		if errors.Is(err, recipe.ErrUnknownOp) {
			return nil, fmt.Errorf("%w (written by a newer heft?)", err)
		}
		return nil, fmt.Errorf("%w: %w", errRecipeEval, err)
	}
	return out, nil
}
