package store

import (
	"fmt"
)

// hold keeps the index open across many short transactions (a walk reads thousands
// of objects); call the returned function to let it close.
func (s *Store) hold() (func(), error) {
	if _, err := s.idx.acquire(); err != nil {
		return func() {}, err
	}
	return s.idx.release, nil
}

// walker visits every object reachable from commits once, recording each in seen.
type walker struct {
	s    *Store
	seen map[ID]Kind
	// recipes lists the reachable tensors stored as recipes.
	recipes []ID
	// onMissing, when set, is called instead of failing when an object cannot be
	// loaded; the walk then skips that subtree.
	onMissing func(id ID, kind Kind, err error)
}

func newWalker(s *Store) *walker { return &walker{s: s, seen: map[ID]Kind{}} }

func (w *walker) fail(id ID, kind Kind, err error) error {
	if w.onMissing != nil {
		w.onMissing(id, kind, err)
		return nil
	}
	return err
}

// commitChain walks a commit and all its ancestors.
func (w *walker) commitChain(id ID) error {
	for stack := []ID{id}; len(stack) > 0; {
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if _, ok := w.seen[c]; ok {
			continue
		}
		w.seen[c] = KindCommit
		commit, err := w.s.LoadCommit(c)
		if err != nil {
			if err := w.fail(c, KindCommit, err); err != nil {
				return fmt.Errorf("commit %s: %w", c.Short(), err)
			}
			continue
		}
		if err := w.manifest(commit.Manifest); err != nil {
			return err
		}
		stack = append(stack, commit.Parents...)
	}
	return nil
}

func (w *walker) manifest(id ID) error {
	if _, ok := w.seen[id]; ok {
		return nil
	}
	w.seen[id] = KindManifest
	m, err := w.s.LoadManifest(id)
	if err != nil {
		return w.fail(id, KindManifest, err)
	}
	for _, e := range m.Files {
		if err := w.file(e.File); err != nil {
			return fmt.Errorf("%s: %w", e.Path, err)
		}
	}
	return nil
}

func (w *walker) file(id ID) error {
	if _, ok := w.seen[id]; ok {
		return nil
	}
	w.seen[id] = KindFile
	f, err := w.s.LoadFile(id)
	if err != nil {
		return w.fail(id, KindFile, err)
	}
	if f.Header != nil {
		w.seen[f.Header.ID] = KindChunk
	}
	for _, c := range f.Chunks {
		w.seen[c.ID] = KindChunk
	}
	for _, ft := range f.Tensor {
		if err := w.tensor(ft.Tensor); err != nil {
			return fmt.Errorf("tensor %q: %w", ft.Name, err)
		}
	}
	return nil
}

func (w *walker) tensor(id ID) error {
	if _, ok := w.seen[id]; ok {
		return nil
	}
	w.seen[id] = KindTensor
	t, err := w.s.LoadTensor(id)
	if err != nil {
		return w.fail(id, KindTensor, err)
	}
	for _, c := range t.Chunks {
		w.seen[c.ID] = KindChunk
	}
	if t.Recipe != nil {
		w.recipes = append(w.recipes, id)
		// A recipe needs its inputs: gc keeps them and verify checks them, even
		// when no ref names them any more.
		for _, in := range t.Recipe.Inputs {
			if err := w.tensor(in); err != nil {
				return fmt.Errorf("recipe input %s: %w", in.Short(), err)
			}
		}
	}
	return nil
}

// refs walks every ref and all ancestors of their commits.
func (w *walker) refs(refs []RefEntry) error {
	release, err := w.s.hold()
	defer release()
	if err != nil {
		return err
	}
	for _, r := range refs {
		if err := w.commitChain(r.Commit); err != nil {
			return fmt.Errorf("ref %s: %w", r.Ref, err)
		}
	}
	return nil
}
