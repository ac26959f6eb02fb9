package ops

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/heft-dev/heft/codec/safetensors"
)

// model is a stored commit as ops see it: its files and an index of its tensors.
type model struct {
	ref    string // as the user named it
	commit string
	files  []File
	// tensors maps a tensor name to the file holding it and its description.
	tensors map[string]placed
	config  []byte // config.json, nil when absent
	// side holds the quantization side files by base name (quanto_qmap.json, …).
	side map[string][]byte
}

type placed struct {
	file   int // index into files
	tensor Tensor
}

// loadModel reads a commit's file list, config.json and side files (no tensor data).
func loadModel(m Models, ref string) (*model, error) {
	commit, err := m.Resolve(ref)
	if err != nil {
		return nil, err
	}
	files, err := m.Files(commit)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	md := &model{ref: ref, commit: commit, files: files, tensors: map[string]placed{}, side: map[string][]byte{}}
	for i, f := range files {
		for _, t := range f.Tensors {
			if prev, dup := md.tensors[t.Name]; dup {
				return nil, fmt.Errorf("%s: tensor %q is in both %s and %s", ref, t.Name, files[prev.file].Path, f.Path)
			}
			md.tensors[t.Name] = placed{file: i, tensor: t}
		}
		switch base := path.Base(f.Path); {
		case f.Path == "config.json":
			if md.config, err = readSmall(m, f); err != nil {
				return nil, err
			}
		case base == "quanto_qmap.json" || base == "quant_config.json" || base == "quantize_config.json":
			if md.side[base], err = readSmall(m, f); err != nil {
				return nil, err
			}
		}
	}
	return md, nil
}

// maxSmallFile bounds the JSON files ops read whole.
const maxSmallFile = 64 << 20

func readSmall(m Models, f File) ([]byte, error) {
	if f.Size > maxSmallFile {
		return nil, fmt.Errorf("%s: %d bytes is too large for a JSON side file", f.Path, f.Size)
	}
	data, err := m.ReadFile(f.ID)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Path, err)
	}
	return data, nil
}

// infos lists every tensor as a safetensors.TensorInfo (for quant.Detect).
func (md *model) infos() []safetensors.TensorInfo {
	var out []safetensors.TensorInfo
	for _, f := range md.files {
		for _, t := range f.Tensors {
			out = append(out, safetensors.TensorInfo{Name: t.Name, DType: safetensors.DType(t.DType), Shape: t.Shape, End: t.Size})
		}
	}
	return out
}

// shardIndexName is the transformers index of a sharded checkpoint.
const shardIndexName = "model.safetensors.index.json"

// output assembles a derived model: each safetensors file of the source becomes a
// file of the same path holding the tensors an op puts there; other files are kept
// unless replaced or dropped; the shard index is rewritten to match.
type output struct {
	shards  map[string][]TensorOut // by source path
	replace map[string][]byte      // path → new content
	drop    map[string]bool
	// materialize stores recipe tensors as data.
	materialize bool
	// stages adds up where writing the safetensors files spent its time.
	stages StageTimes
}

func newOutput() *output {
	return &output{shards: map[string][]TensorOut{}, replace: map[string][]byte{}, drop: map[string]bool{}}
}

// write stores the output's files and commits them to ref with prov.
func (o *output) write(ctx context.Context, m Models, src *model, ref, message string, prov Provenance) (string, error) {
	parent, err := m.Head(ref)
	if err != nil {
		return "", err
	}
	var refs []FileRef
	weightMap := map[string]string{}
	var totalSize uint64
	hasIndex := false
	for _, f := range src.files {
		switch {
		case o.drop[f.Path]:
			continue
		case f.Path == shardIndexName:
			hasIndex = true
			continue
		case f.Safetensors:
			tensors := o.shards[f.Path]
			fr, err := m.WriteSafetensors(ctx, f.Path, f.Metadata, tensors, o.materialize)
			if err != nil {
				return "", err
			}
			o.stages.add(fr.Stages)
			refs = append(refs, fr)
			for _, t := range tensors {
				weightMap[t.Name] = f.Path
				n, err := safetensors.DType(t.DType).ByteLen(t.Shape)
				if err != nil {
					return "", fmt.Errorf("%s: tensor %q: %w", f.Path, t.Name, err)
				}
				totalSize += n
			}
		case o.replace[f.Path] != nil:
			fr, err := m.WriteFile(ctx, f.Path, o.replace[f.Path])
			if err != nil {
				return "", err
			}
			refs = append(refs, fr)
		default:
			refs = append(refs, FileRef{Path: f.Path, ID: f.ID, Size: f.Size})
		}
	}
	for p, data := range o.replace {
		if !slices.ContainsFunc(src.files, func(f File) bool { return f.Path == p }) {
			fr, err := m.WriteFile(ctx, p, data)
			if err != nil {
				return "", err
			}
			refs = append(refs, fr)
		}
	}
	if hasIndex {
		data, err := shardIndex(weightMap, totalSize)
		if err != nil {
			return "", err
		}
		fr, err := m.WriteFile(ctx, shardIndexName, data)
		if err != nil {
			return "", err
		}
		refs = append(refs, fr)
	}
	sort.Slice(refs, func(i, j int) bool { return refs[i].Path < refs[j].Path })
	return m.Commit(ctx, ref, parent, refs, message, prov)
}

// shardIndex writes model.safetensors.index.json as transformers does
// (json.dumps(index, indent=2, sort_keys=True) + "\n").
func shardIndex(weightMap map[string]string, totalSize uint64) ([]byte, error) {
	type index struct {
		Metadata  map[string]uint64 `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(index{Metadata: map[string]uint64{"total_size": totalSize}, WeightMap: weightMap}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// moduleOf returns the module prefix of a weight name ("a.b.weight" → "a.b").
func moduleOf(name string) string {
	return strings.TrimSuffix(name, ".weight")
}
