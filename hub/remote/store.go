package remote

import (
	"context"
	"errors"
)

// Error classes. The Store implementation wraps one of these (store errors are
// translated by the adapter), the handler maps each to an HTTP status, and the
// client returns them, wrapped, for the statuses it gets.
var (
	// ErrNotFound: a ref or object does not exist (HTTP 404).
	ErrNotFound = errors.New("not found")
	// ErrConflict: the ref is not at the expected value, or the update is not a
	// fast-forward (HTTP 409). Nothing changed.
	ErrConflict = errors.New("ref changed concurrently or update is not a fast-forward")
	// ErrIncomplete: the receiver lacks objects the request needs: a commit
	// whose closure is not all present, a delta chunk sent before its base
	// (HTTP 412). A client negotiates again.
	ErrIncomplete = errors.New("objects missing")
	// ErrInvalid: a malformed request, ref, message or stream (HTTP 400).
	ErrInvalid = errors.New("invalid request")
	// ErrTooLarge: a body, list or object over the protocol's limits (HTTP 413).
	ErrTooLarge = errors.New("too large")
	// ErrIntegrity: an object failed verification: it does not decode or does
	// not hash to its ID (HTTP 422). Nothing of it was written.
	ErrIntegrity = errors.New("object failed verification")
	// ErrUnauthorized: no valid token (HTTP 401).
	ErrUnauthorized = errors.New("authentication required")
	// ErrForbidden: the token lacks the grant the request needs (HTTP 403).
	ErrForbidden = errors.New("forbidden")
	// ErrBusy: the store is locked by another operation, such as gc (HTTP 503);
	// retry later.
	ErrBusy = errors.New("store busy")
)

// ObjectRef names an object and the kind the caller expects it to have.
type ObjectRef struct {
	ID   ID
	Kind Kind
}

// ChunkLink is a chunk a file or tensor names, with the chunk it is delta-coded
// against in the store that listed it (zero when stored on its own).
type ChunkLink struct {
	ID   ID
	Base ID
}

// RefEntry is a ref (NAME:TAG) and its commit.
type RefEntry struct {
	Ref    string
	Commit ID
}

// RefChange is a checked ref update (Store.UpdateRef).
type RefChange struct {
	Ref string // NAME[:TAG]
	// Old is the value the ref must have (zero: it must not exist).
	Old ID
	New ID
	// Force allows an update that is not a fast-forward.
	Force   bool
	Message string
	// Usable decides which stored objects count (see Store.Presence); nil:
	// every object the store has.
	Usable func(ID) (bool, error)
}

// ReceiveStats counts what Store.Receive took in.
type ReceiveStats struct {
	Objects     int   // objects received and verified
	New         int   // of them, objects the store did not have
	StoredBytes int64 // stored bytes received
}

// Store is what the protocol needs from a heft store, on either side: the server
// answers requests with it and the client reads and writes the local store with
// it. internal/storeremote implements it over *store.Store. Methods are safe for
// concurrent use, and their errors wrap the classes above (anything else is an
// internal failure, HTTP 500).
type Store interface {
	// Ref returns the commit a ref (NAME[:TAG]) points to: ErrNotFound when it
	// does not exist, ErrInvalid for a malformed name.
	Ref(ctx context.Context, ref string) (ID, error)
	// Refs lists every ref.
	Refs(ctx context.Context) ([]RefEntry, error)
	// History returns tip and all its ancestors, each once, tip first; more
	// than limit commits is ErrTooLarge.
	History(ctx context.Context, tip ID, limit int) ([]ID, error)
	// TreeObjects returns the manifests, files and tensors (recipe inputs
	// included) under the commits' manifests, each once, children before the
	// objects naming them. Ancestors are not included.
	TreeObjects(ctx context.Context, commits []ID) ([]ObjectRef, error)
	// ChunkLinks returns the chunks that the given files and tensors name
	// directly, each once, with their delta bases.
	ChunkLinks(ctx context.Context, objs []ID) ([]ChunkLink, error)
	// Closure returns every object commit reaches, with its kind, delta bases
	// included: what a reader of the commit may read. The caller never modifies
	// the result and may cache it (it depends only on the commit).
	Closure(ctx context.Context, commit ID) (map[ID]Kind, error)
	// Presence reports for each object whether the store has it and all it
	// reaches. usable, when not nil, decides which stored objects count at
	// all; one it rejects is Absent. Malformed metadata is ErrInvalid.
	Presence(ctx context.Context, objs []ObjectRef, usable func(ID) (bool, error)) ([]Presence, error)
	// ReadObject returns an object's stored form, its Data appended to
	// buf[:0], and its delta base in Base.
	ReadObject(ctx context.Context, id ID, buf []byte) (Object, error)
	// Receive verifies and stores objects from next (io.EOF ends them) and
	// returns when they are durable. A delta chunk's base must be stored by an
	// earlier call, and accepted by usable when usable is not nil. When next
	// fails or ctx ends, what was verified is still stored and the error
	// returned; an object failing verification is ErrIntegrity (or
	// ErrIncomplete for a missing base) and is not stored. ns, when not empty,
	// records the objects as received for that namespace (Received).
	Receive(ctx context.Context, ns string, usable func(ID) (bool, error), next func() (Object, error)) (ReceiveStats, error)
	// Received reports whether ns received the object recently (a push into ns
	// may use it without sending it again).
	Received(ctx context.Context, ns string, id ID) (bool, error)
	// UpdateRef moves a ref after checking that the new commit is Complete with
	// ch.Usable (else ErrIncomplete) and that Old is an ancestor unless Force
	// (else ErrConflict); the move itself is a compare-and-swap from Old
	// (ErrConflict).
	UpdateRef(ctx context.Context, ch RefChange) error
}
