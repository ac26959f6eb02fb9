// Package ops runs weight-space operations on models straight from the store:
// dequantization to BF16 "bridge" models, quantization, LoRA extraction and merge,
// and analysis. Every op reads tensors one at a time, so memory stays bounded by a
// few tensors whatever the model's size, and writes its result as a new commit whose
// provenance names the op, its parameters and its input commits.
//
// Deterministic results (dequantization, RTN quantization) are written as recipes:
// the store keeps the op, its parameters and its inputs' ids instead of the bytes,
// recomputes them on read and checks them against their hash.
//
// ops depends on the store only through the Models interface declared here; the
// command-line layer adapts the real store to it. The numerical kernels run on a
// Backend (backend.go): the CPU by default, or a GPU through XLA's PJRT plugin
// (ops/internal/pjrtgpu), chosen by OpenBackend.
package ops

import (
	"context"
	"errors"
	"fmt"
	"github.com/heft-dev/heft/codec/recipe"
)

// Models is what ops need from a store.
//
// Contract:
//   - Safe for concurrent use.
//   - Ids are opaque strings (the store's hex object ids). A commit id returned by
//     Resolve stays valid; its files and tensors never change.
//   - TensorBytes returns verified bytes or an error, never wrong bytes.
//   - WriteSafetensors and WriteFile store a file durably but make it visible only
//     when Commit names it; Commit moves the ref by compare-and-swap from the
//     commit it points to when the op started (ErrConflict-like errors otherwise).
type Models interface {
	// Resolve turns a REF (NAME[:TAG] or a commit id prefix) into a commit id.
	Resolve(ref string) (string, error)
	// Head returns the commit a ref points to now, or "" when the ref does not
	// exist.
	Head(ref string) (string, error)
	// Files lists the files of a commit in path order, with the tensors of
	// each safetensors file. It reads no tensor data.
	Files(commit string) ([]File, error)
	// ReadFile returns the whole content of one file object (meant for small
	// files such as config.json).
	ReadFile(fileID string) ([]byte, error)
	// TensorBytes returns a tensor's bytes, into dst when it has the capacity.
	TensorBytes(tensorID string, dst []byte) ([]byte, error)
	// WriteSafetensors stores a safetensors file made of tensors, laid out as
	// the reference writer lays it out.
	WriteSafetensors(ctx context.Context, path string, metadata map[string]string, tensors []TensorOut, materialize bool) (FileRef, error)
	// WriteFile stores a file with the given content.
	WriteFile(ctx context.Context, path string, data []byte) (FileRef, error)
	// Commit records files as a new commit of ref whose parent is parent ("" for
	// a new ref) and moves the ref there if it still points to parent.
	Commit(ctx context.Context, ref, parent string, files []FileRef, message string, prov Provenance) (string, error)
}

// File is one file of a commit.
type File struct {
	Path   string
	ID     string
	Size   int64
	SHA256 string
	// Safetensors is true for a safetensors file; Tensors and Metadata then
	// describe it.
	Safetensors bool
	Tensors     []Tensor
	Metadata    map[string]string
}

// Tensor is a stored tensor as it appears in a file.
type Tensor struct {
	Name  string
	DType string
	Shape []uint64
	Size  uint64
	ID    string
}

// TensorOut is one tensor of a file an op writes. Exactly one of From, Data and
// Recipe is set.
type TensorOut struct {
	Name  string
	DType string
	Shape []uint64
	// From reuses a stored tensor as it is.
	From string
	// Data computes the bytes into dst (len(dst) is the tensor's size).
	Data func(dst []byte) ([]byte, error)
	// Recipe derives the tensor from stored tensors by a deterministic op of
	// codec/recipe; the store evaluates it.
	Recipe *Recipe
}

// Recipe is a derivation the store can evaluate (see codec/recipe).
type Recipe struct {
	Op     string
	Params map[string]string
	Inputs []string // tensor ids
}

// FileRef places a stored file at a path of a model directory.
type FileRef struct {
	Path string
	ID   string
	Size int64
	// Stages is where writing the file spent its time (WriteSafetensors only;
	// zero when the Models implementation does not measure it).
	Stages StageTimes
}

// StageTimes splits the time of writing a derived file: reading inputs from the
// store, computing (kernels, Data calls) and storing the results (hashing,
// compression, packing). The stages overlap, so they may add up to more than
// the wall time.
type StageTimes struct {
	Inputs  float64 `json:"inputs_s"`
	Compute float64 `json:"compute_s"`
	Store   float64 `json:"store_s"`
}

func (t *StageTimes) add(o StageTimes) {
	t.Inputs += o.Inputs
	t.Compute += o.Compute
	t.Store += o.Store
}

// KernelModels is a Models that can evaluate the recipes it writes with other
// kernels than the CPU's (a GPU backend's). WithKernels returns a Models whose
// WriteSafetensors evaluates recipes with k, which must honour recipe.Kernels'
// contract (the CPU's bytes exactly).
type KernelModels interface {
	Models
	WithKernels(k recipe.Kernels) Models
}

// Provenance says how a commit was made.
type Provenance struct {
	Op     string
	Source string
	Params map[string]string
	Inputs []string // commit ids
}

// ErrInput marks errors that are the caller's: a model that an op cannot take, bad
// parameters. The command layer maps it to exit code 1.
var ErrInput = errors.New("invalid input")

func inputErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInput, fmt.Sprintf(format, args...))
}
