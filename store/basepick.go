package store

import (
	"fmt"
	"io"
	"os"
	"slices"
	"sort"

	"github.com/heft-dev/heft/codec/chunkcodec"
)

// Choosing the base a new model is delta-coded against.

// baseModel is a stored model's tensors by name.
type baseModel struct {
	commit  ID
	label   string // the ref or commit it was chosen as
	tensors map[string]*Tensor
}

// chunkFor returns the base chunk at the same place as chunk k (of size n) of a new
// tensor with the given dtype and shape, or the zero ID.
func (b *baseModel) chunkFor(name, dtype string, shape []uint64, k int, n int64) ID {
	if b == nil {
		return ID{}
	}
	t, ok := b.tensors[name]
	if !ok || t.DType != dtype || !slices.Equal(t.Shape, shape) || k >= len(t.Chunks) || int64(t.Chunks[k].Size) != n {
		return ID{}
	}
	return t.Chunks[k].ID
}

// loadBaseModel reads every tensor object of a commit.
func (s *Store) loadBaseModel(commit ID, label string) (*baseModel, error) {
	release, err := s.hold()
	defer release()
	if err != nil {
		return nil, err
	}
	ts, err := s.commitTensors(commit)
	if err != nil {
		return nil, fmt.Errorf("base %s: %w", label, err)
	}
	b := &baseModel{commit: commit, label: label, tensors: map[string]*Tensor{}}
	for _, t := range ts {
		obj, err := s.LoadTensor(t.Tensor)
		if err != nil {
			return nil, fmt.Errorf("base %s: tensor %q: %w", label, t.Name, err)
		}
		b.tensors[t.Name] = obj
	}
	return b, nil
}

// autoBase looks for a stored model to delta-code a new one against: the ref whose
// head has the most tensor bytes under the same names and sizes as the new model
// (at least half of them), confirmed by a sample: for up to four of the largest
// matching tensors, the first chunk's XOR with the base must code at least 10 %
// smaller than the chunk alone. Two unrelated models of one architecture match by
// name and shape but fail the sample, so they pay no delta cost.
func (s *Store) autoBase(files []sourceFile) (*baseModel, error) {
	type newTensor struct {
		name, dtype string
		shape       []uint64
		size        int64
		file        *sourceFile
		off         int64
	}
	byName := map[string]newTensor{}
	var total int64
	for i := range files {
		f := &files[i]
		if f.header == nil {
			continue
		}
		for _, t := range f.header.Tensors {
			nt := newTensor{t.Name, string(t.DType), t.Shape, int64(t.End - t.Begin), f, f.header.DataStart() + int64(t.Begin)}
			byName[t.Name] = nt
			total += nt.size
		}
	}
	if total == 0 {
		return nil, nil
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
	var best RefEntry
	var bestBytes int64
	for _, r := range refs {
		ts, err := s.commitTensors(r.Commit)
		if err != nil {
			continue // a damaged candidate is simply not a base
		}
		var matched int64
		for _, t := range ts {
			if nt, ok := byName[t.Name]; ok && int64(t.Size) == nt.size {
				matched += nt.size
			}
		}
		if matched > bestBytes {
			best, bestBytes = r, matched
		}
	}
	if bestBytes*2 < total {
		return nil, nil
	}
	base, err := s.loadBaseModel(best.Commit, best.Ref.String())
	if err != nil {
		return nil, err
	}
	// The sample.
	var cands []newTensor
	for _, nt := range byName {
		if !base.chunkFor(nt.name, nt.dtype, nt.shape, 0, min(nt.size, int64(s.opts.ChunkSize))).IsZero() {
			cands = append(cands, nt)
		}
	}
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].size != cands[j].size {
			return cands[i].size > cands[j].size
		}
		return cands[i].name < cands[j].name
	})
	var plainBytes, deltaBytes int
	for _, nt := range cands[:min(4, len(cands))] {
		n := min(nt.size, int64(s.opts.ChunkSize))
		data := make([]byte, n)
		if err := readAt(nt.file.abs, data, nt.off); err != nil {
			return nil, err
		}
		baseID := base.chunkFor(nt.name, nt.dtype, nt.shape, 0, n)
		baseData, err := s.ReadChunk(baseID)
		if err != nil {
			return nil, err
		}
		hint := chunkcodec.HintFor(nt.dtype)
		_, plain, err := chunkcodec.Encode(nil, data, hint)
		if err != nil {
			return nil, err
		}
		xorInto(data, data, baseData)
		_, delta, err := chunkcodec.Encode(nil, data, hint)
		if err != nil {
			return nil, err
		}
		plainBytes += len(plain)
		deltaBytes += len(delta)
	}
	if plainBytes == 0 || float64(deltaBytes) > 0.9*float64(plainBytes) {
		return nil, nil
	}
	return base, nil
}

func readAt(path string, buf []byte, off int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}
