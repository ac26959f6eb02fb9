package store

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"path"
	"sort"

	"github.com/heft-dev/heft/codec/chunkcodec"
	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/safetensors"
)

func codecName(c uint8) string {
	if c == codecDelta {
		return "delta"
	}
	return chunkcodec.ID(c).String()
}

// LogEntry is one commit in a ref's history.
type LogEntry struct {
	ID     ID      `json:"id"`
	Commit *Commit `json:"commit"`
}

// Log returns the history of a ref or commit, newest first (first parents, then
// breadth-first over the rest, by time).
func (s *Store) Log(ref string, limit int) ([]LogEntry, error) {
	id, err := s.Resolve(ref)
	if err != nil {
		return nil, err
	}
	release, err := s.hold()
	defer release()
	if err != nil {
		return nil, err
	}
	var out []LogEntry
	seen := map[ID]bool{}
	queue := []ID{id}
	for len(queue) > 0 && (limit <= 0 || len(out) < limit) {
		cid := queue[0]
		queue = queue[1:]
		if seen[cid] {
			continue
		}
		seen[cid] = true
		c, err := s.LoadCommit(cid)
		if err != nil {
			return out, fmt.Errorf("commit %s: %w", cid.Short(), err)
		}
		out = append(out, LogEntry{ID: cid, Commit: c})
		queue = append(queue, c.Parents...)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Commit.Time > out[j].Commit.Time })
	return out, nil
}

// TensorView is a tensor as `heft show` presents it.
type TensorView struct {
	Name   string   `json:"name"`
	File   string   `json:"file"`
	ID     ID       `json:"id"`
	DType  string   `json:"dtype"`
	Shape  []uint64 `json:"shape"`
	Bytes  uint64   `json:"bytes"`
	Stored uint64   `json:"stored_bytes"`
	// How: "raw", "compressed (zstd)" and so on: the codecs of its chunks.
	How      string   `json:"stored_as"`
	SharedBy []string `json:"shared_with,omitempty"` // other refs whose head has the same tensor
}

// FileView is a file as `heft show` presents it.
type FileView struct {
	Path    string `json:"path"`
	ID      ID     `json:"id"`
	Format  string `json:"format"`
	Size    uint64 `json:"size"`
	SHA256  string `json:"sha256"`
	Tensors int    `json:"tensors"`
}

// ShowResult describes one commit.
type ShowResult struct {
	Commit ID      `json:"commit"`
	Info   *Commit `json:"info"`
	// Quantization names the checkpoint's quantization format and how many Linear
	// weights it quantizes ("" for a model that is not quantized); QuantError says
	// why it could not be told.
	Quantization string       `json:"quantization,omitempty"`
	QuantError   string       `json:"quantization_error,omitempty"`
	Files        []FileView   `json:"files"`
	Tensors      []TensorView `json:"tensors"`
}

// headTensors maps every tensor ID reached by each ref's head commit to the refs.
func (s *Store) headTensors() (map[ID][]string, error) {
	refs, err := s.Refs()
	if err != nil {
		return nil, err
	}
	out := map[ID][]string{}
	for _, r := range refs {
		ts, err := s.commitTensors(r.Commit)
		if err != nil {
			return nil, fmt.Errorf("ref %s: %w", r.Ref, err)
		}
		seen := map[ID]bool{}
		for _, t := range ts {
			if !seen[t.Tensor] {
				seen[t.Tensor] = true
				out[t.Tensor] = append(out[t.Tensor], r.Ref.String())
			}
		}
	}
	return out, nil
}

type namedTensor struct {
	FileTensor
	file string
}

// commitTensors lists the tensors of a commit in manifest and file order.
func (s *Store) commitTensors(commit ID) ([]namedTensor, error) {
	_, m, err := s.commitManifest(commit)
	if err != nil {
		return nil, err
	}
	var out []namedTensor
	for _, e := range m.Files {
		f, err := s.LoadFile(e.File)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.Path, err)
		}
		for _, ft := range f.Tensor {
			out = append(out, namedTensor{FileTensor: ft, file: e.Path})
		}
	}
	return out, nil
}

// Show describes a commit: its files and every tensor with how it is stored and
// which other refs share it.
func (s *Store) Show(ref string) (*ShowResult, error) {
	id, err := s.Resolve(ref)
	if err != nil {
		return nil, err
	}
	release, err := s.hold()
	defer release()
	if err != nil {
		return nil, err
	}
	c, m, err := s.commitManifest(id)
	if err != nil {
		return nil, err
	}
	shared, err := s.headTensors()
	if err != nil {
		return nil, err
	}
	self := map[string]bool{}
	if refs, err := s.Refs(); err == nil {
		for _, r := range refs {
			if r.Commit == id {
				self[r.Ref.String()] = true
			}
		}
	}
	res := &ShowResult{Commit: id, Info: c, Files: []FileView{}, Tensors: []TensorView{}}
	for _, e := range m.Files {
		f, err := s.LoadFile(e.File)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.Path, err)
		}
		res.Files = append(res.Files, FileView{Path: e.Path, ID: e.File, Format: f.Format, Size: f.Size, SHA256: f.SHA256, Tensors: len(f.Tensor)})
		for _, ft := range f.Tensor {
			t, err := s.LoadTensor(ft.Tensor)
			if err != nil {
				return nil, fmt.Errorf("%s: tensor %q: %w", e.Path, ft.Name, err)
			}
			ids := make([]ID, len(t.Chunks))
			for i, c := range t.Chunks {
				ids[i] = c.ID
			}
			locs, err := s.idx.lookup(ids)
			if err != nil {
				return nil, err
			}
			codecs := map[string]bool{}
			var stored uint64
			for _, c := range t.Chunks {
				if loc, ok := locs[c.ID]; ok {
					stored += loc.StoredLen
					codecs[codecName(loc.Codec)] = true
				} else {
					codecs["missing"] = true
				}
			}
			how := describeCodecs(codecs)
			if t.Recipe != nil {
				how = "recipe (" + t.Recipe.Op + ")"
			}
			tv := TensorView{Name: ft.Name, File: e.Path, ID: ft.Tensor, DType: t.DType, Shape: t.Shape, Bytes: t.Size, Stored: stored, How: how}
			for _, r := range shared[ft.Tensor] {
				if !self[r] {
					tv.SharedBy = append(tv.SharedBy, r)
				}
			}
			res.Tensors = append(res.Tensors, tv)
		}
	}
	res.Quantization, res.QuantError = s.describeQuantization(m, res.Tensors)
	return res, nil
}

// quantSideFiles are the files besides config.json that name a quantization.
var quantSideFiles = map[string]bool{"quanto_qmap.json": true, "quant_config.json": true, "quantize_config.json": true}

// describeQuantization reads config.json and the quantization side files of a
// manifest (small files, never tensor data) and describes the format.
func (s *Store) describeQuantization(m *Manifest, tensors []TensorView) (string, string) {
	var config []byte
	extra := map[string][]byte{}
	for _, e := range m.Files {
		base := path.Base(e.Path)
		if (base != "config.json" && !quantSideFiles[base]) || e.Size > 16<<20 {
			continue
		}
		r, err := s.OpenFile(e.File)
		if err != nil {
			return "", err.Error()
		}
		data, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
		r.Close()
		if err != nil {
			return "", err.Error()
		}
		if e.Path == "config.json" {
			config = data
		} else if quantSideFiles[base] {
			extra[base] = data
		}
	}
	infos := make([]safetensors.TensorInfo, 0, len(tensors))
	for _, t := range tensors {
		infos = append(infos, safetensors.TensorInfo{Name: t.Name, DType: safetensors.DType(t.DType), Shape: t.Shape, End: t.Bytes})
	}
	qm, err := quant.Detect(config, infos, extra)
	if err != nil {
		return "", err.Error()
	}
	if qm.Method == "" {
		return "", ""
	}
	return qm.Describe(), ""
}

func describeCodecs(codecs map[string]bool) string {
	if len(codecs) == 0 {
		return "empty"
	}
	names := make([]string, 0, len(codecs))
	for n := range codecs {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 1 && names[0] == chunkcodec.Raw.String() {
		return "raw"
	}
	out := "compressed ("
	if codecs["delta"] {
		out = "delta ("
	}
	for i, n := range names {
		if i > 0 {
			out += "+"
		}
		out += n
	}
	return out + ")"
}

// TensorChange is one changed tensor in a diff.
type TensorChange struct {
	Name  string `json:"name"`
	DType string `json:"dtype"`
	// RelL2 is ‖b − a‖₂ / ‖a‖₂ for float tensors of equal dtype and shape; −1 when
	// not computable (other dtypes, shape change).
	RelL2       float64 `json:"relative_l2"`
	ShapeChange bool    `json:"shape_changed,omitempty"`
	SharedBytes uint64  `json:"shared_bytes"` // bytes of chunks the two versions share
}

// DiffResult compares two commits tensor by tensor (by name, across files).
type DiffResult struct {
	A, B        ID             `json:"-"`
	Identical   []string       `json:"identical"`
	Changed     []TensorChange `json:"changed"`
	Added       []string       `json:"added"`
	Removed     []string       `json:"removed"`
	SharedBytes uint64         `json:"shared_bytes"` // tensor bytes stored once for both
	BytesA      uint64         `json:"bytes_a"`
	BytesB      uint64         `json:"bytes_b"`
}

// Diff compares the tensors of two refs or commits.
func (s *Store) Diff(refA, refB string) (*DiffResult, error) {
	a, err := s.Resolve(refA)
	if err != nil {
		return nil, err
	}
	b, err := s.Resolve(refB)
	if err != nil {
		return nil, err
	}
	release, err := s.hold()
	defer release()
	if err != nil {
		return nil, err
	}
	ta, err := s.commitTensors(a)
	if err != nil {
		return nil, err
	}
	tb, err := s.commitTensors(b)
	if err != nil {
		return nil, err
	}
	res := &DiffResult{A: a, B: b, Identical: []string{}, Changed: []TensorChange{}, Added: []string{}, Removed: []string{}}
	byName := map[string]namedTensor{}
	for _, t := range ta {
		byName[t.Name] = t
		res.BytesA += t.Size
	}
	inB := map[string]bool{}
	for _, t := range tb {
		res.BytesB += t.Size
		inB[t.Name] = true
		old, ok := byName[t.Name]
		switch {
		case !ok:
			res.Added = append(res.Added, t.Name)
		case old.Tensor == t.Tensor:
			res.Identical = append(res.Identical, t.Name)
			res.SharedBytes += t.Size
		default:
			ch, err := s.compareTensors(t.Name, old.Tensor, t.Tensor)
			if err != nil {
				return nil, err
			}
			res.SharedBytes += ch.SharedBytes
			res.Changed = append(res.Changed, ch)
		}
	}
	for _, t := range ta {
		if !inB[t.Name] {
			res.Removed = append(res.Removed, t.Name)
		}
	}
	return res, nil
}

func (s *Store) compareTensors(name string, a, b ID) (TensorChange, error) {
	ta, err := s.LoadTensor(a)
	if err != nil {
		return TensorChange{}, fmt.Errorf("tensor %q: %w", name, err)
	}
	tb, err := s.LoadTensor(b)
	if err != nil {
		return TensorChange{}, fmt.Errorf("tensor %q: %w", name, err)
	}
	ch := TensorChange{Name: name, DType: tb.DType, RelL2: -1}
	inA := map[ID]bool{}
	for _, c := range ta.Chunks {
		inA[c.ID] = true
	}
	for _, c := range tb.Chunks {
		if inA[c.ID] {
			ch.SharedBytes += c.Size
		}
	}
	if ta.DType != tb.DType || fmt.Sprint(ta.Shape) != fmt.Sprint(tb.Shape) {
		ch.ShapeChange = true
		return ch, nil
	}
	decode := floatDecoder(ta.DType)
	if decode == nil || len(ta.Chunks) != len(tb.Chunks) {
		return ch, nil
	}
	var num, den float64
	for i := range ta.Chunks {
		ca, cb := ta.Chunks[i], tb.Chunks[i]
		if ca.Size != cb.Size {
			return ch, nil
		}
		da, err := s.ReadChunk(ca.ID)
		if err != nil {
			return ch, fmt.Errorf("tensor %q: %w", name, err)
		}
		db := da
		if cb.ID != ca.ID {
			if db, err = s.ReadChunk(cb.ID); err != nil {
				return ch, fmt.Errorf("tensor %q: %w", name, err)
			}
		}
		n, d := decode(da, db)
		num += n
		den += d
	}
	if den > 0 {
		ch.RelL2 = math.Sqrt(num / den)
	} else if num == 0 {
		ch.RelL2 = 0
	}
	return ch, nil
}

// floatDecoder returns a function summing (b−a)² and a² over two equal-length byte
// slices of a float dtype, or nil for other dtypes.
func floatDecoder(dtype string) func(a, b []byte) (num, den float64) {
	var width int
	var get func([]byte) float64
	switch dtype {
	case "F32":
		width, get = 4, func(p []byte) float64 { return float64(math.Float32frombits(binary.LittleEndian.Uint32(p))) }
	case "F64":
		width, get = 8, func(p []byte) float64 { return math.Float64frombits(binary.LittleEndian.Uint64(p)) }
	case "BF16":
		width, get = 2, func(p []byte) float64 {
			return float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(p)) << 16))
		}
	case "F16":
		width, get = 2, func(p []byte) float64 { return halfToFloat(binary.LittleEndian.Uint16(p)) }
	default:
		return nil
	}
	return func(a, b []byte) (num, den float64) {
		for i := 0; i+width <= len(a); i += width {
			x, y := get(a[i:]), get(b[i:])
			if math.IsNaN(x) || math.IsNaN(y) || math.IsInf(x, 0) || math.IsInf(y, 0) {
				continue
			}
			num += (y - x) * (y - x)
			den += x * x
		}
		return num, den
	}
}

func halfToFloat(h uint16) float64 {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	exp := int(h>>10) & 0x1f
	frac := float64(h & 0x3ff)
	switch exp {
	case 0:
		return sign * frac * math.Pow(2, -24)
	case 31:
		if frac == 0 {
			return sign * math.Inf(1)
		}
		return math.NaN()
	}
	return sign * (1 + frac/1024) * math.Pow(2, float64(exp-15))
}
