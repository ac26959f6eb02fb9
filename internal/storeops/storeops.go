// Package storeops adapts a store to the ops package's Models interface; the command
// line and the ops tests use it.
package storeops

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/heft-dev/heft/codec/recipe"
	"github.com/heft-dev/heft/codec/safetensors"
	"github.com/heft-dev/heft/ops"
	"github.com/heft-dev/heft/store"
)

// models presents a store to the ops package.
type models struct {
	s *store.Store
	// kernels evaluates the recipes WriteSafetensors stores (nil: the CPU).
	kernels recipe.Kernels
}

var _ ops.KernelModels = models{}

// WithKernels returns the same store evaluating recipes with k.
func (m models) WithKernels(k recipe.Kernels) ops.Models {
	m.kernels = k
	return m
}

// New returns s as ops see it.
func New(s *store.Store) ops.Models { return models{s: s} }

func (m models) Resolve(ref string) (string, error) {
	id, err := m.s.Resolve(ref)
	if err != nil {
		return "", err
	}
	return id.String(), nil
}

func (m models) Head(ref string) (string, error) {
	r, err := store.ParseRef(ref)
	if err != nil {
		return "", err
	}
	id, err := m.s.Ref(r)
	if errors.Is(err, store.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return id.String(), nil
}

func parseID(s string) (store.ID, error) {
	id, err := store.ParseID(s)
	if err != nil {
		return store.ID{}, fmt.Errorf("%w: bad object id %q", store.ErrInput, s)
	}
	return id, nil
}

func (m models) Files(commit string) ([]ops.File, error) {
	id, err := parseID(commit)
	if err != nil {
		return nil, err
	}
	files, err := m.s.CommitFiles(id)
	if err != nil {
		return nil, err
	}
	out := make([]ops.File, 0, len(files))
	for _, f := range files {
		of := ops.File{Path: f.Path, ID: f.ID.String(), Size: int64(f.File.Size), SHA256: f.File.SHA256}
		if f.File.Format == store.FormatSafetensors {
			of.Safetensors = true
			h, err := m.header(f)
			if err != nil {
				return nil, err
			}
			of.Metadata = h.Metadata
			for _, ft := range f.File.Tensor {
				t, err := m.s.LoadTensor(ft.Tensor)
				if err != nil {
					return nil, fmt.Errorf("%s: tensor %q: %w", f.Path, ft.Name, err)
				}
				of.Tensors = append(of.Tensors, ops.Tensor{Name: ft.Name, DType: t.DType, Shape: t.Shape, Size: t.Size, ID: ft.Tensor.String()})
			}
		}
		out = append(out, of)
	}
	return out, nil
}

// header parses a stored safetensors file's header (its first chunk).
func (m models) header(f store.CommitFile) (*safetensors.Header, error) {
	raw, err := m.s.ReadChunk(f.File.Header.ID)
	if err != nil {
		return nil, fmt.Errorf("%s: header: %w", f.Path, err)
	}
	h, err := safetensors.ParseHeader(raw, int64(f.File.Size), f.Path)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", store.ErrIntegrity, f.Path, err)
	}
	return h, nil
}

func (m models) ReadFile(fileID string) ([]byte, error) {
	id, err := parseID(fileID)
	if err != nil {
		return nil, err
	}
	r, err := m.s.OpenFile(id)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
}

func (m models) TensorBytes(tensorID string, dst []byte) ([]byte, error) {
	id, err := parseID(tensorID)
	if err != nil {
		return nil, err
	}
	data, err := m.s.TensorBytes(id)
	if err != nil {
		return nil, err
	}
	if cap(dst) >= len(data) {
		return append(dst[:0], data...), nil
	}
	return data, nil
}

func (m models) WriteSafetensors(ctx context.Context, path string, metadata map[string]string, tensors []ops.TensorOut, materialize bool) (ops.FileRef, error) {
	srcs := make([]store.TensorSource, len(tensors))
	for i, t := range tensors {
		src := store.TensorSource{Name: t.Name, DType: t.DType, Shape: t.Shape, Data: t.Data}
		if t.From != "" {
			id, err := parseID(t.From)
			if err != nil {
				return ops.FileRef{}, err
			}
			src.Tensor = id
		}
		if t.Recipe != nil {
			r := &store.Recipe{Op: t.Recipe.Op, Params: t.Recipe.Params}
			for _, in := range t.Recipe.Inputs {
				id, err := parseID(in)
				if err != nil {
					return ops.FileRef{}, err
				}
				r.Inputs = append(r.Inputs, id)
			}
			src.Recipe = r
		}
		srcs[i] = src
	}
	res, err := m.s.WriteSafetensors(ctx, path, metadata, srcs, store.WriteOptions{Materialize: materialize, Kernels: m.kernels})
	if err != nil {
		return ops.FileRef{}, err
	}
	return ops.FileRef{Path: path, ID: res.ID.String(), Size: res.Size, Stages: ops.StageTimes{
		Inputs: res.Timing.Inputs.Seconds(), Compute: res.Timing.Compute.Seconds(), Store: res.Timing.Store.Seconds(),
	}}, nil
}

func (m models) WriteFile(ctx context.Context, path string, data []byte) (ops.FileRef, error) {
	res, err := m.s.IngestFile(ctx, path, bytes.NewReader(data), int64(len(data)), store.IngestOptions{})
	if err != nil {
		return ops.FileRef{}, err
	}
	return ops.FileRef{Path: path, ID: res.ID.String(), Size: res.Size}, nil
}

func (m models) Commit(ctx context.Context, ref, parent string, files []ops.FileRef, message string, prov ops.Provenance) (string, error) {
	r, err := store.ParseRef(ref)
	if err != nil {
		return "", err
	}
	req := store.CommitRequest{Ref: r, Message: message, Provenance: store.Provenance{Op: prov.Op, Source: prov.Source, Params: prov.Params}}
	if parent != "" {
		if req.Parent, err = parseID(parent); err != nil {
			return "", err
		}
	}
	for _, in := range prov.Inputs {
		id, err := parseID(in)
		if err != nil {
			return "", err
		}
		req.Provenance.Inputs = append(req.Provenance.Inputs, id)
	}
	for _, f := range files {
		id, err := parseID(f.ID)
		if err != nil {
			return "", err
		}
		req.Files = append(req.Files, store.ManifestEntry{Path: f.Path, File: id, Size: uint64(f.Size)})
	}
	id, err := m.s.Commit(ctx, req)
	if err != nil {
		return "", err
	}
	return id.String(), nil
}
