package store

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Kind says what a stored object is. It is recorded in pack entries and the index so
// that repair and verify can classify objects without decoding them.
type Kind uint8

const (
	KindChunk    Kind = 1 // raw bytes: a piece of tensor data, a safetensors header or a blob
	KindTensor   Kind = 2 // dtype, shape and the ordered chunk list of one tensor
	KindFile     Kind = 3 // one file of a model directory
	KindManifest Kind = 4 // a model directory: path → file
	KindCommit   Kind = 5 // manifest, parents, message, time, provenance
)

func (k Kind) String() string {
	switch k {
	case KindChunk:
		return "chunk"
	case KindTensor:
		return "tensor"
	case KindFile:
		return "file"
	case KindManifest:
		return "manifest"
	case KindCommit:
		return "commit"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// objectMagic prefixes every metadata object's encoding. It keeps metadata IDs in a
// namespace of their own (a chunk can never be mistaken for a commit) and makes the
// encoding self-describing for repair.
var objectMagic = map[Kind]string{
	KindTensor:   "heft tensor 1\n",
	KindFile:     "heft file 1\n",
	KindManifest: "heft manifest 1\n",
	KindCommit:   "heft commit 1\n",
}

// ChunkRef is one chunk of a tensor or blob, in order.
type ChunkRef struct {
	ID   ID     `json:"id"`
	Size uint64 `json:"size"`
}

// Tensor is a tensor's content: its identity does not include its name, so the same
// weights under another name or in another file are stored once.
//
// A tensor is stored either as data (Chunks) or, when it is a deterministic function
// of other stored tensors, as a Recipe with no chunks.
type Tensor struct {
	DType  string     `json:"dtype"`
	Shape  []uint64   `json:"shape"`
	Size   uint64     `json:"size"`
	Chunks []ChunkRef `json:"chunks"`
	Recipe *Recipe    `json:"recipe,omitempty"`
}

// Recipe derives a tensor's bytes from other tensors (see codec/recipe): reading the
// tensor evaluates Op on the Inputs' bytes and checks the result against Output.
// An input may itself be a recipe (a bridge dequantized from an FP8 model that is a
// recipe over its BF16 base), up to MaxRecipeDepth recipes in a chain.
type Recipe struct {
	Op     string            `json:"op"`
	Params map[string]string `json:"params,omitempty"`
	Inputs []ID              `json:"inputs"`
	Output ID                `json:"output"` // BLAKE3-256 of the bytes Op must produce
}

// File formats.
const (
	FormatSafetensors = "safetensors"
	FormatBlob        = "blob"
)

// FileTensor places a tensor in a safetensors file.
type FileTensor struct {
	Name   string `json:"name"`
	Tensor ID     `json:"tensor"`
	Size   uint64 `json:"size"`
}

// File is one file of a model directory. A safetensors file is its verbatim header
// (8-byte length, JSON, padding) followed by its tensors in offset order, so export
// is byte-identical; any other file is a list of content-defined chunks.
type File struct {
	Format string       `json:"format"`
	Size   uint64       `json:"size"`
	SHA256 string       `json:"sha256"`             // the Hugging Face LFS oid
	GitSHA string       `json:"git_sha1,omitempty"` // git blob id, for files the Hub keeps in git
	Header *ChunkRef    `json:"header,omitempty"`
	Tensor []FileTensor `json:"tensors,omitempty"`
	Chunks []ChunkRef   `json:"chunks,omitempty"`
}

// ManifestEntry is one path of a model directory.
type ManifestEntry struct {
	Path string `json:"path"`
	File ID     `json:"file"`
	Size uint64 `json:"size"`
}

// Manifest is a model directory, sorted by path.
type Manifest struct {
	Files []ManifestEntry `json:"files"`
}

// Provenance records where a commit came from: an import, a pull, or an op with its
// parameters and inputs.
type Provenance struct {
	Op          string            `json:"op"`
	Source      string            `json:"source,omitempty"`
	Params      map[string]string `json:"params,omitempty"`
	Inputs      []ID              `json:"inputs,omitempty"`
	HeftVersion string            `json:"heft_version"`
}

// Commit is one version of a model.
type Commit struct {
	Manifest   ID         `json:"manifest"`
	Parents    []ID       `json:"parents,omitempty"`
	Message    string     `json:"message,omitempty"`
	Time       string     `json:"time"` // RFC 3339, UTC
	Provenance Provenance `json:"provenance"`
}

// encodeObject returns the canonical bytes of a metadata object and their ID.
// encoding/json writes struct fields in declaration order and sorts map keys, so the
// encoding, and therefore the ID, is deterministic.
func encodeObject(kind Kind, v any) ([]byte, ID, error) {
	magic, ok := objectMagic[kind]
	if !ok {
		return nil, ID{}, fmt.Errorf("encode object: %s is not a metadata kind", kind)
	}
	var buf bytes.Buffer
	buf.WriteString(magic)
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, ID{}, fmt.Errorf("encode %s: %w", kind, err)
	}
	b := buf.Bytes()
	return b, Sum(b), nil
}

// decodeObject parses bytes produced by encodeObject after checking their magic.
func decodeObject(kind Kind, data []byte, v any) error {
	magic := objectMagic[kind]
	if !bytes.HasPrefix(data, []byte(magic)) {
		return fmt.Errorf("decode %s: missing %q header", kind, magic[:len(magic)-1])
	}
	dec := json.NewDecoder(bytes.NewReader(data[len(magic):]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode %s: %w", kind, err)
	}
	return nil
}
