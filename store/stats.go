package store

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Stats break the store's saving down by stage, in the order they apply:
//
//	logical      every file of every ref's head commit, as a user would see on disk
//	after file dedup    each distinct file once
//	after tensor dedup  each distinct tensor once, plus each distinct header and blob file
//	after recipes       less the tensors stored as recipes (their inputs' chunks, when
//	                    no model reaches them otherwise, are counted in the next stages)
//	after chunk dedup   each distinct chunk once (raw)
//	after delta         delta chunks at their stored size, plus the raw size of
//	                    base chunks kept only because deltas name them
//	after compression   every chunk as stored (entropy coding of the rest)
//	physical     pack files on disk (framing, metadata objects, history and garbage included)
type Stats struct {
	Refs             int         `json:"refs"`
	LogicalBytes     int64       `json:"logical_bytes"`
	AfterFileDedup   int64       `json:"after_file_dedup_bytes"`
	AfterTensorDedup int64       `json:"after_tensor_dedup_bytes"`
	AfterRecipes     int64       `json:"after_recipes_bytes"`
	RecipeTensors    int         `json:"recipe_tensors"`
	AfterChunkDedup  int64       `json:"after_chunk_dedup_bytes"`
	AfterDelta       int64       `json:"after_delta_bytes"`
	DeltaChunks      int         `json:"delta_chunks"`
	AfterCompression int64       `json:"after_compression_bytes"`
	PhysicalBytes    int64       `json:"physical_bytes"`
	Files            int         `json:"distinct_files"`
	Tensors          int         `json:"distinct_tensors"`
	Chunks           int         `json:"distinct_chunks"`
	Packs            int         `json:"packs"`
	Saving           float64     `json:"saving"` // 1 − physical/logical
	Models           []ModelStat `json:"models"`
	// DTypes: raw and stored bytes of the distinct tensor chunks of each dtype.
	DTypes            map[string]*DTypeStat `json:"dtypes"`
	CompressionCodecs map[string]int64      `json:"stored_bytes_by_codec"`
}

// DTypeStat is the storage of one dtype's tensor data.
type DTypeStat struct {
	RawBytes    int64   `json:"raw_bytes"`
	StoredBytes int64   `json:"stored_bytes"`
	Ratio       float64 `json:"ratio"`
}

// ModelStat is one ref's share.
type ModelStat struct {
	Ref          string `json:"ref"`
	Commit       ID     `json:"commit"`
	LogicalBytes int64  `json:"logical_bytes"`
	Files        int    `json:"files"`
	Tensors      int    `json:"tensors"`
	// StoredBytes: stored size of the chunks this model reaches; UniqueBytes: of
	// those that no other ref reaches (what deleting it would free).
	StoredBytes int64 `json:"stored_bytes"`
	UniqueBytes int64 `json:"unique_bytes"`
}

// Stats computes the breakdown for all refs, or for the refs in only when non-empty.
func (s *Store) Stats(only []RefName) (*Stats, error) {
	refs, err := s.Refs()
	if err != nil {
		return nil, err
	}
	if len(only) > 0 {
		want := map[RefName]bool{}
		for _, r := range only {
			want[r] = true
		}
		var sel []RefEntry
		for _, r := range refs {
			if want[r.Ref] {
				sel = append(sel, r)
				delete(want, r.Ref)
			}
		}
		for r := range want {
			return nil, fmt.Errorf("%w: ref %s", ErrNotFound, r)
		}
		refs = sel
	}
	release, err := s.hold()
	defer release()
	if err != nil {
		return nil, err
	}
	st := &Stats{Refs: len(refs), Models: []ModelStat{}, CompressionCodecs: map[string]int64{}, DTypes: map[string]*DTypeStat{}}
	chunkDType := map[ID]string{}
	seenFiles := map[ID]bool{}
	seenTensors := map[ID]bool{}
	var recipeBytes int64
	chunkRaw := map[ID]uint64{}
	chunkUsers := map[ID]int{}
	perModelChunks := make([]map[ID]bool, len(refs))
	for i, r := range refs {
		ms := ModelStat{Ref: r.Ref.String(), Commit: r.Commit}
		mine := map[ID]bool{}
		c, err := s.LoadCommit(r.Commit)
		if err != nil {
			return nil, fmt.Errorf("ref %s: %w", r.Ref, err)
		}
		m, err := s.LoadManifest(c.Manifest)
		if err != nil {
			return nil, fmt.Errorf("ref %s: %w", r.Ref, err)
		}
		for _, e := range m.Files {
			ms.Files++
			ms.LogicalBytes += int64(e.Size)
			f, err := s.LoadFile(e.File)
			if err != nil {
				return nil, fmt.Errorf("ref %s: %s: %w", r.Ref, e.Path, err)
			}
			ms.Tensors += len(f.Tensor)
			newFile := !seenFiles[e.File]
			if newFile {
				seenFiles[e.File] = true
				st.AfterFileDedup += int64(f.Size)
			}
			chunks := append([]ChunkRef{}, f.Chunks...)
			if f.Header != nil {
				chunks = append(chunks, *f.Header)
			}
			if newFile {
				for _, c := range chunks {
					st.AfterTensorDedup += int64(c.Size)
				}
			}
			for _, ft := range f.Tensor {
				t, err := s.LoadTensor(ft.Tensor)
				if err != nil {
					return nil, fmt.Errorf("ref %s: %s: tensor %q: %w", r.Ref, e.Path, ft.Name, err)
				}
				if t.Recipe != nil {
					if !seenTensors[ft.Tensor] {
						seenTensors[ft.Tensor] = true
						st.AfterTensorDedup += int64(t.Size)
						recipeBytes += int64(t.Size)
						st.RecipeTensors++
					}
					inputs, err := s.recipeChunks(t.Recipe)
					if err != nil {
						return nil, fmt.Errorf("ref %s: %s: tensor %q: %w", r.Ref, e.Path, ft.Name, err)
					}
					chunks = append(chunks, inputs...)
					continue
				}
				if !seenTensors[ft.Tensor] {
					seenTensors[ft.Tensor] = true
					st.AfterTensorDedup += int64(t.Size)
					for _, c := range t.Chunks {
						if _, ok := chunkDType[c.ID]; !ok {
							chunkDType[c.ID] = t.DType
						}
					}
				}
				chunks = append(chunks, t.Chunks...)
			}
			for _, c := range chunks {
				chunkRaw[c.ID] = c.Size
				if !mine[c.ID] {
					mine[c.ID] = true
					chunkUsers[c.ID]++
				}
			}
		}
		st.LogicalBytes += ms.LogicalBytes
		st.Models = append(st.Models, ms)
		perModelChunks[i] = mine
	}
	st.AfterRecipes = st.AfterTensorDedup - recipeBytes
	st.Files, st.Tensors, st.Chunks = len(seenFiles), len(seenTensors), len(chunkRaw)
	stored := map[ID]int64{}
	locs := map[ID]Location{}
	err = s.idx.view(func(tx *bolt.Tx) error {
		for id := range chunkRaw {
			loc, ok, err := getLocation(tx, id)
			if err != nil {
				return err
			}
			if !ok {
				return &IntegrityError{ID: id, Kind: KindChunk, Reason: "object is missing from the index (run `heft verify`)"}
			}
			locs[id] = loc
		}
		st.Packs = tx.Bucket(bucketPacks).Stats().KeyN
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Bases kept only because deltas name them cost their stored bytes too.
	extraBases := map[ID]Location{}
	for id, loc := range locs {
		if loc.Codec != codecDelta {
			continue
		}
		base, err := s.deltaBase(id, loc)
		if err != nil {
			return nil, err
		}
		if _, reached := locs[base]; reached {
			continue
		}
		if _, done := extraBases[base]; done {
			continue
		}
		bl, ok, err := s.locate(base)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, &IntegrityError{ID: base, Kind: KindChunk, Reason: "delta base is missing from the index (run `heft verify`)"}
		}
		extraBases[base] = bl
	}
	var deltaSaved, entropySaved int64
	for id, loc := range locs {
		raw := int64(chunkRaw[id])
		st.AfterChunkDedup += raw
		stored[id] = int64(loc.StoredLen)
		if loc.Codec == codecDelta {
			st.DeltaChunks++
			deltaSaved += raw - int64(loc.StoredLen)
		} else {
			entropySaved += raw - int64(loc.StoredLen)
		}
		st.CompressionCodecs[codecName(loc.Codec)] += int64(loc.StoredLen)
		if dt, ok := chunkDType[id]; ok {
			d := st.DTypes[dt]
			if d == nil {
				d = &DTypeStat{}
				st.DTypes[dt] = d
			}
			d.RawBytes += raw
			d.StoredBytes += int64(loc.StoredLen)
		}
	}
	for _, d := range st.DTypes {
		if d.RawBytes > 0 {
			d.Ratio = float64(d.StoredBytes) / float64(d.RawBytes)
		}
	}
	var extraRaw int64
	for _, bl := range extraBases {
		extraRaw += int64(bl.RawLen)
		entropySaved += int64(bl.RawLen) - int64(bl.StoredLen)
		st.CompressionCodecs[codecName(bl.Codec)] += int64(bl.StoredLen)
	}
	st.AfterDelta = st.AfterChunkDedup - deltaSaved + extraRaw
	st.AfterCompression = st.AfterDelta - entropySaved
	for i := range st.Models {
		for id := range perModelChunks[i] {
			st.Models[i].StoredBytes += stored[id]
			if chunkUsers[id] == 1 {
				st.Models[i].UniqueBytes += stored[id]
			}
		}
	}
	if st.PhysicalBytes, err = s.physicalBytes(); err != nil {
		return nil, err
	}
	if st.LogicalBytes > 0 {
		st.Saving = 1 - float64(st.PhysicalBytes)/float64(st.LogicalBytes)
	}
	return st, nil
}

// recipeChunks lists the chunks of the data tensors a recipe chain reads.
func (s *Store) recipeChunks(r *Recipe) ([]ChunkRef, error) {
	var out []ChunkRef
	for _, in := range r.Inputs {
		t, err := s.LoadTensor(in)
		if err != nil {
			return nil, fmt.Errorf("recipe input %s: %w", in.Short(), err)
		}
		if t.Recipe == nil {
			out = append(out, t.Chunks...)
			continue
		}
		sub, err := s.recipeChunks(t.Recipe)
		if err != nil {
			return nil, err
		}
		out = append(out, sub...)
	}
	return out, nil
}
