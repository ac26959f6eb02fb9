package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sync/errgroup"

	"github.com/heft-dev/heft/store/internal/pack"
)

// VerifyOptions select how deep verify looks.
type VerifyOptions struct {
	// ReadData re-reads every stored object, decodes it and checks its hash.
	ReadData bool
	Progress func(done, total int64)
}

// Damage is one damaged or missing object and what it breaks.
type Damage struct {
	ID      ID       `json:"id"`
	Kind    string   `json:"kind"`
	Pack    string   `json:"pack,omitempty"`
	Reason  string   `json:"reason"`
	Refs    []string `json:"refs,omitempty"`
	Files   []string `json:"files,omitempty"`   // REF:PATH
	Tensors []string `json:"tensors,omitempty"` // REF:PATH:TENSOR
}

// VerifyResult is the outcome of verify. OK is false when anything is damaged.
type VerifyResult struct {
	OK        bool     `json:"ok"`
	Refs      int      `json:"refs"`
	Packs     int      `json:"packs"`
	Objects   int      `json:"objects"`
	Reachable int      `json:"reachable_objects"`
	BytesRead int64    `json:"bytes_read"`
	Damaged   []Damage `json:"damaged"`
	Warnings  []string `json:"warnings"`
}

// Verify checks every structure: refs parse; every pack the index lists exists with
// its recorded size and a valid trailer that agrees with the index; every object
// reachable from a ref is indexed and every metadata object decodes (which reads and
// hashes it). With ReadData it also reads, decodes and hashes every indexed object.
// Damage is reported, with the refs, files and tensors it affects, not returned as an
// error; the error is for failures to run at all.
func (s *Store) Verify(ctx context.Context, opts VerifyOptions) (*VerifyResult, error) {
	res := &VerifyResult{Damaged: []Damage{}, Warnings: []string{}}
	damaged := map[ID]*Damage{}
	addDamage := func(id ID, kind Kind, pack, reason string) {
		if _, ok := damaged[id]; !ok {
			damaged[id] = &Damage{ID: id, Kind: kind.String(), Pack: pack, Reason: reason}
		}
	}
	refs, err := s.Refs()
	if err != nil {
		return nil, err
	}
	res.Refs = len(refs)

	// 1. Index ↔ packs.
	packs := map[ID]packRecord{}
	byPack := map[ID][]Location{}
	locIDs := map[ID][]ID{}
	err = s.idx.view(func(tx *bolt.Tx) error {
		if err := forEachPack(tx, func(id ID, rec packRecord) error {
			packs[id] = rec
			return nil
		}); err != nil {
			return err
		}
		return forEachObject(tx, func(id ID, loc Location) error {
			byPack[loc.Pack] = append(byPack[loc.Pack], loc)
			locIDs[loc.Pack] = append(locIDs[loc.Pack], id)
			res.Objects++
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	res.Packs = len(packs)
	for packID, locs := range byPack {
		path := s.packLocation(packID)
		rec, indexed := packs[packID]
		problem := ""
		var entries map[ID]pack.Entry
		switch st, err := s.statPack(packID); {
		case !indexed:
			problem = "the index lists objects in a pack it does not know"
		case errors.Is(err, os.ErrNotExist):
			problem = "pack file is missing"
		case err != nil:
			return nil, err
		case uint64(st.Size) != rec.Size:
			problem = fmt.Sprintf("pack file is %d bytes, the index recorded %d", st.Size, rec.Size)
		default:
			table, err := s.packTable(packID, st.Size)
			if err != nil {
				problem = err.Error()
				break
			}
			entries = map[ID]pack.Entry{}
			for _, e := range table {
				entries[ID(e.ID)] = e
			}
		}
		for i, loc := range locs {
			id := locIDs[packID][i]
			if problem != "" {
				addDamage(id, loc.Kind, path, problem)
				continue
			}
			e, ok := entries[id]
			if !ok || e.Offset != loc.Offset || e.StoredLen != loc.StoredLen || e.RawLen != loc.RawLen || e.CRC != loc.CRC {
				addDamage(id, loc.Kind, path, "the pack's trailer disagrees with the index")
			}
		}
	}
	if s.remote != nil {
		s.remote.mu.Lock()
		for id, uerr := range s.remote.unreadable {
			res.Warnings = append(res.Warnings, fmt.Sprintf("pack %s in the backend cannot be indexed: %v", s.packLocation(id), uerr))
		}
		s.remote.mu.Unlock()
	}
	err = s.walkPackDir(func(path string, _ os.FileInfo, id ID, isPack bool) error {
		if isPack {
			if _, ok := packs[id]; !ok {
				res.Warnings = append(res.Warnings, fmt.Sprintf("pack %s is not indexed (left by an interrupted write; gc removes it, `repair index` adopts it)", path))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	// 2. Reachability: every ref's history is loadable and indexed.
	w := newWalker(s)
	w.onMissing = func(id ID, kind Kind, err error) {
		pack, reason := "", err.Error()
		var ie *IntegrityError
		if errors.As(err, &ie) {
			pack = ie.Pack
		}
		addDamage(id, kind, pack, reason)
	}
	if err := w.refs(refs); err != nil {
		return nil, err
	}
	res.Reachable = len(w.seen)
	deltas := map[ID]Location{}
	if err := s.idx.view(func(tx *bolt.Tx) error {
		for id, kind := range w.seen {
			if _, bad := damaged[id]; bad {
				continue
			}
			loc, ok, err := getLocation(tx, id)
			if err != nil {
				return err
			}
			if !ok {
				addDamage(id, kind, "", "object is missing from the index")
			} else if loc.Codec == codecDelta {
				deltas[id] = loc
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	// Every delta's base must be indexed and plain.
	for id, loc := range deltas {
		base, err := s.deltaBase(id, loc)
		if err != nil {
			addDamage(id, KindChunk, s.packPath(loc.Pack), err.Error())
			continue
		}
		baseLoc, ok, err := s.locate(base)
		if err != nil {
			return nil, err
		}
		if !ok || baseLoc.Codec == codecDelta {
			addDamage(id, KindChunk, s.packPath(loc.Pack), fmt.Sprintf("its delta base %s is missing or not plain", base.Short()))
		}
	}

	// 3. Read every byte, and recompute every recipe from its inputs.
	if opts.ReadData {
		if err := s.verifyData(ctx, byPack, locIDs, damaged, addDamage, res, opts.Progress); err != nil {
			return nil, err
		}
		for _, id := range w.recipes {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if _, bad := damaged[id]; bad {
				continue
			}
			t, err := s.LoadTensor(id)
			if err != nil {
				addDamage(id, KindTensor, "", err.Error())
				continue
			}
			if _, err := s.evalRecipe(id, t, make([]byte, t.Size)); err != nil {
				var ie *IntegrityError
				if !errors.As(err, &ie) {
					return nil, err
				}
				if ie.ID == id {
					addDamage(id, KindTensor, "", ie.Reason)
				} else if _, known := damaged[ie.ID]; !known {
					addDamage(ie.ID, ie.Kind, ie.Pack, ie.Error())
				}
			}
		}
	}

	if len(damaged) > 0 {
		if err := s.attributeDamage(refs, damaged); err != nil {
			return nil, err
		}
		for _, d := range damaged {
			res.Damaged = append(res.Damaged, *d)
		}
		sort.Slice(res.Damaged, func(i, j int) bool { return res.Damaged[i].ID.String() < res.Damaged[j].ID.String() })
	}
	res.OK = len(res.Damaged) == 0
	return res, nil
}

func (s *Store) verifyData(ctx context.Context, byPack map[ID][]Location, locIDs map[ID][]ID, damaged map[ID]*Damage, addDamage func(ID, Kind, string, string), res *VerifyResult, progressFn func(done, total int64)) error {
	type job struct {
		id  ID
		loc Location
	}
	var total int64
	for _, locs := range byPack {
		for _, l := range locs {
			total += int64(l.StoredLen)
		}
	}
	prog := &progress{fn: progressFn, total: total}
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	jobs := make(chan job)
	for range s.opts.Workers {
		g.Go(func() error {
			var dst []byte
			for j := range jobs {
				var err error
				dst, err = s.readLocated(j.id, j.loc, dst[:0])
				mu.Lock()
				res.BytesRead += int64(j.loc.StoredLen)
				prog.add(int64(j.loc.StoredLen))
				if err != nil {
					var ie *IntegrityError
					if !errors.As(err, &ie) {
						mu.Unlock()
						return err
					}
					addDamage(j.id, j.loc.Kind, ie.Pack, ie.Error())
				}
				mu.Unlock()
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(jobs)
		for packID, locs := range byPack {
			for i, loc := range locs {
				id := locIDs[packID][i]
				mu.Lock()
				_, bad := damaged[id]
				mu.Unlock()
				if bad {
					continue
				}
				select {
				case jobs <- job{id, loc}:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
		}
		return nil
	})
	return g.Wait()
}

// attributeDamage fills in which refs, files and tensors reach each damaged object.
func (s *Store) attributeDamage(refs []RefEntry, damaged map[ID]*Damage) error {
	release, err := s.hold()
	defer release()
	if err != nil {
		return err
	}
	add := func(list *[]string, v string) {
		for _, x := range *list {
			if x == v {
				return
			}
		}
		*list = append(*list, v)
	}
	for _, r := range refs {
		ref := r.Ref.String()
		hit := func(id ID) *Damage { return damaged[id] }
		seenCommits := map[ID]bool{}
		for stack := []ID{r.Commit}; len(stack) > 0; {
			cid := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if seenCommits[cid] {
				continue
			}
			seenCommits[cid] = true
			if d := hit(cid); d != nil {
				add(&d.Refs, ref)
				continue
			}
			c, err := s.LoadCommit(cid)
			if err != nil {
				continue
			}
			stack = append(stack, c.Parents...)
			if d := hit(c.Manifest); d != nil {
				add(&d.Refs, ref)
				continue
			}
			m, err := s.LoadManifest(c.Manifest)
			if err != nil {
				continue
			}
			for _, e := range m.Files {
				where := ref + ":" + e.Path
				if d := hit(e.File); d != nil {
					add(&d.Refs, ref)
					add(&d.Files, where)
					continue
				}
				f, err := s.LoadFile(e.File)
				if err != nil {
					continue
				}
				chunks := append([]ChunkRef{}, f.Chunks...)
				if f.Header != nil {
					chunks = append(chunks, *f.Header)
				}
				for _, c := range chunks {
					if d := hit(c.ID); d != nil {
						add(&d.Refs, ref)
						add(&d.Files, where)
					}
				}
				for _, ft := range f.Tensor {
					tensorWhere := where + ":" + ft.Name
					if d := hit(ft.Tensor); d != nil {
						add(&d.Refs, ref)
						add(&d.Files, where)
						add(&d.Tensors, tensorWhere)
						continue
					}
					t, err := s.LoadTensor(ft.Tensor)
					if err != nil {
						continue
					}
					chunks := t.Chunks
					if t.Recipe != nil {
						for _, in := range t.Recipe.Inputs {
							if d := hit(in); d != nil {
								add(&d.Refs, ref)
								add(&d.Files, where)
								add(&d.Tensors, tensorWhere)
							}
						}
						chunks, _ = s.recipeChunks(t.Recipe)
					}
					for _, c := range chunks {
						if d := hit(c.ID); d != nil {
							add(&d.Refs, ref)
							add(&d.Files, where)
							add(&d.Tensors, tensorWhere)
						}
					}
				}
			}
		}
	}
	return nil
}
