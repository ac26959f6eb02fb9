// Package storeremote presents a *store.Store as the remote.Store that the heft
// remote protocol (hub/remote) serves and writes, so that hub/remote does not
// import store. It converts types and translates the store's error classes into
// the protocol's.
package storeremote

import (
	"context"
	"errors"

	"github.com/heft-dev/heft/hub/remote"
	"github.com/heft-dev/heft/store"
)

// Store adapts a *store.Store. It is safe for concurrent use, as the store is.
type Store struct {
	s *store.Store
}

var _ remote.Store = (*Store)(nil)

// New returns the adapter over s.
func New(s *store.Store) *Store { return &Store{s: s} }

// classify marks a store error with the protocol class it belongs to; errors of
// no store class (including the protocol's own, passed through from a stream)
// are returned as they are.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrIncomplete):
		return classed{remote.ErrIncomplete, err}
	case errors.Is(err, store.ErrNotFound):
		return classed{remote.ErrNotFound, err}
	case errors.Is(err, store.ErrConflict):
		return classed{remote.ErrConflict, err}
	case errors.Is(err, store.ErrInput):
		return classed{remote.ErrInvalid, err}
	case errors.Is(err, store.ErrIntegrity):
		return classed{remote.ErrIntegrity, err}
	case errors.Is(err, store.ErrBusy):
		return classed{remote.ErrBusy, err}
	}
	return err
}

// classed is a store error that also matches a protocol class; its message is
// the store's, which already names the class.
type classed struct{ class, err error }

func (c classed) Error() string   { return c.err.Error() }
func (c classed) Unwrap() []error { return []error{c.class, c.err} }

func parseRef(ref string) (store.RefName, error) {
	r, err := store.ParseRef(ref)
	return r, classify(err)
}

func ids(in []remote.ID) []store.ID {
	out := make([]store.ID, len(in))
	for i, id := range in {
		out[i] = store.ID(id)
	}
	return out
}

func usable(fn func(remote.ID) (bool, error)) func(store.ID) (bool, error) {
	if fn == nil {
		return nil
	}
	return func(id store.ID) (bool, error) { return fn(remote.ID(id)) }
}

// Ref implements remote.Store.
func (a *Store) Ref(ctx context.Context, ref string) (remote.ID, error) {
	r, err := parseRef(ref)
	if err != nil {
		return remote.ID{}, err
	}
	id, err := a.s.Ref(r)
	return remote.ID(id), classify(err)
}

// Refs implements remote.Store.
func (a *Store) Refs(ctx context.Context) ([]remote.RefEntry, error) {
	refs, err := a.s.Refs()
	if err != nil {
		return nil, classify(err)
	}
	out := make([]remote.RefEntry, len(refs))
	for i, r := range refs {
		out[i] = remote.RefEntry{Ref: r.Ref.String(), Commit: remote.ID(r.Commit)}
	}
	return out, nil
}

// History implements remote.Store.
func (a *Store) History(ctx context.Context, tip remote.ID, limit int) ([]remote.ID, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	hist, err := a.s.History(store.ID(tip), limit)
	if err != nil {
		if errors.Is(err, store.ErrInput) {
			return nil, classed{remote.ErrTooLarge, err}
		}
		return nil, classify(err)
	}
	out := make([]remote.ID, len(hist))
	for i, id := range hist {
		out[i] = remote.ID(id)
	}
	return out, nil
}

// TreeObjects implements remote.Store.
func (a *Store) TreeObjects(ctx context.Context, commits []remote.ID) ([]remote.ObjectRef, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	trees, err := a.s.TreeObjects(ids(commits))
	if err != nil {
		return nil, classify(err)
	}
	out := make([]remote.ObjectRef, len(trees))
	for i, o := range trees {
		out[i] = remote.ObjectRef{ID: remote.ID(o.ID), Kind: remote.Kind(o.Kind)}
	}
	return out, nil
}

// ChunkLinks implements remote.Store.
func (a *Store) ChunkLinks(ctx context.Context, objs []remote.ID) ([]remote.ChunkLink, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	links, err := a.s.ChunkLinks(ids(objs))
	if err != nil {
		return nil, classify(err)
	}
	out := make([]remote.ChunkLink, len(links))
	for i, l := range links {
		out[i] = remote.ChunkLink{ID: remote.ID(l.ID), Base: remote.ID(l.Base)}
	}
	return out, nil
}

// Closure implements remote.Store.
func (a *Store) Closure(ctx context.Context, commit remote.ID) (map[remote.ID]remote.Kind, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cl, err := a.s.Closure(store.ID(commit))
	if err != nil {
		return nil, classify(err)
	}
	out := make(map[remote.ID]remote.Kind, len(cl))
	for id, k := range cl {
		out[remote.ID(id)] = remote.Kind(k)
	}
	return out, nil
}

// Presence implements remote.Store.
func (a *Store) Presence(ctx context.Context, objs []remote.ObjectRef, use func(remote.ID) (bool, error)) ([]remote.Presence, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	in := make([]store.ObjectRef, len(objs))
	for i, o := range objs {
		in[i] = store.ObjectRef{ID: store.ID(o.ID), Kind: store.Kind(o.Kind)}
	}
	st, err := a.s.Presence(in, usable(use))
	if err != nil {
		return nil, classify(err)
	}
	out := make([]remote.Presence, len(st))
	for i, p := range st {
		switch p {
		case store.Complete:
			out[i] = remote.Complete
		case store.Incomplete:
			out[i] = remote.Incomplete
		default:
			out[i] = remote.Absent
		}
	}
	return out, nil
}

// ReadObject implements remote.Store.
func (a *Store) ReadObject(ctx context.Context, id remote.ID, buf []byte) (remote.Object, error) {
	if err := ctx.Err(); err != nil {
		return remote.Object{}, err
	}
	o, err := a.s.ReadStored(store.ID(id), buf)
	if err != nil {
		return remote.Object{}, classify(err)
	}
	return remote.Object{ID: id, Kind: remote.Kind(o.Kind), Codec: o.Codec, RawLen: o.RawLen, Base: remote.ID(o.Base), Data: o.Data}, nil
}

// Receive implements remote.Store.
func (a *Store) Receive(ctx context.Context, ns string, use func(remote.ID) (bool, error), next func() (remote.Object, error)) (remote.ReceiveStats, error) {
	stats, err := a.s.ReceiveObjects(ctx, store.ReceiveOptions{Namespace: ns, Usable: usable(use)}, func() (store.StoredObject, error) {
		o, err := next()
		if err != nil {
			return store.StoredObject{}, err
		}
		return store.StoredObject{ID: store.ID(o.ID), Kind: store.Kind(o.Kind), Codec: o.Codec, RawLen: o.RawLen, Data: o.Data}, nil
	})
	return remote.ReceiveStats{Objects: stats.Objects, New: stats.New, StoredBytes: stats.StoredBytes}, classify(err)
}

// Received implements remote.Store.
func (a *Store) Received(ctx context.Context, ns string, id remote.ID) (bool, error) {
	ok, err := a.s.Received(ns, store.ID(id))
	return ok, classify(err)
}

// UpdateRef implements remote.Store.
func (a *Store) UpdateRef(ctx context.Context, ch remote.RefChange) error {
	r, err := parseRef(ch.Ref)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return classify(a.s.UpdateRefVerified(store.RefChange{
		Ref: r, Old: store.ID(ch.Old), New: store.ID(ch.New), Force: ch.Force, Message: ch.Message, Usable: usable(ch.Usable),
	}))
}
