package hub

import (
	"context"
	"errors"
	"io"
	"time"
)

// Repos is what the server needs from a store: read access to repositories,
// their revisions, and the files of each commit.
//
// Contract (hubtest.CheckRepos tests an implementation against it):
//
//   - Safe for concurrent use: every request goroutine calls it.
//   - Commits are immutable. Files(c) and the bytes behind Open(c, p) never
//     change for a given commit id. The handler caches Files per commit on
//     that basis, and clients cache downloads forever under
//     snapshots/<commit>/ (§2.5).
//   - Commit ids are 40 lowercase hex digits. Clients decide "this revision is
//     a commit" with ^[0-9a-f]{40}$ (§1.3), so a longer id (heft's are
//     BLAKE3-256) must be shortened by the implementation, and Resolve must
//     accept the short form back.
//   - Errors are matched with errors.Is against ErrRepoNotFound,
//     ErrRevisionNotFound and ErrEntryNotFound; they become 404s with the
//     X-Error-Code clients branch on. Any other error is an internal failure:
//     a 500, logged with the request.
//   - FileReader.ReadAt returns verified bytes or an error, never wrong
//     bytes: the server streams what it gets straight to the client, which
//     only checks the length (§2.3).
type Repos interface {
	// Resolve maps a repo id ("ns/name") and a revision to a commit. The
	// revision is a branch or tag name (possibly with slashes, e.g.
	// "refs/pr/1" or "feature/x") or a full 40-hex commit id belonging to the
	// repo. The handler passes "main" for the default branch (it maps the
	// clients' "HEAD" to it). Errors: ErrRepoNotFound when the repo does not
	// exist (whatever the revision), ErrRevisionNotFound when the repo exists
	// but the revision does not.
	Resolve(repo, revision string) (Commit, error)

	// ListRepos lists every repository (for GET /api/models). Order does not
	// matter.
	ListRepos() ([]RepoInfo, error)

	// Files lists every file of a commit returned by Resolve. It must be
	// cheap in data reads: the sizes and hashes come from metadata, never
	// from reading content. An unknown commit is ErrRevisionNotFound.
	Files(commit string) ([]FileInfo, error)

	// Open opens one file of a commit for reading. The reader streams from
	// the stored chunks; it must not stage the file whole. The handler reads
	// it sequentially in 1 MiB pieces from wherever the requested range
	// starts, so an implementation should keep the current chunk decoded
	// between calls rather than decode a 4 MiB chunk per read. The handler
	// always closes it. A path that is not a file of the commit (including
	// a directory) is ErrEntryNotFound.
	Open(commit, path string) (FileReader, error)
}

// Commit is a resolved revision.
type Commit struct {
	// ID is 40 lowercase hex digits (see Repos).
	ID string
	// Time is when the commit was made; the Hub calls it lastModified.
	Time time.Time
}

// RepoInfo describes one repository for listings.
type RepoInfo struct {
	// ID is "ns/name". The Hub's clients require exactly one slash (§1.2).
	ID string
	// LastModified is the time of the default branch's head commit; zero
	// when unknown (the field is then omitted).
	LastModified time.Time
}

// FileInfo describes one file of a commit.
type FileInfo struct {
	// Path is slash-separated and relative: no leading or trailing slash,
	// no empty, "." or ".." segment, and no path that is both a file and a
	// directory.
	Path string
	// Size is the content size in bytes.
	Size int64
	// SHA256 is the lowercase hex SHA-256 of the content: the Git LFS oid and
	// the ETag of LFS files. Always required.
	SHA256 string
	// GitSHA1 is the lowercase hex git blob SHA-1 of the content
	// (sha1("blob <size>\x00" + content)): the ETag and tree oid of regular
	// (non-LFS) files. The store records it for files up to 10 MB, so it
	// costs nothing to return. It may be empty for LFS files; a non-LFS file
	// without it is served as an LFS file, since a regular file's ETag
	// must be its blob SHA-1 and computing one would mean reading the file.
	GitSHA1 string
	// LFS says the file is presented as a Git LFS file, as the Hub does for
	// weights and anything large or binary: its ETag is SHA256, its tree
	// entry carries lfs{oid,size,pointerSize}, and /raw serves the pointer.
	LFS bool
}

// RangeWriterTo is an optional interface of a FileReader: WriteRangeTo writes the
// n bytes at offset off to w straight from the reader's own buffers (verified
// bytes, as ReadAt returns) and returns how many it wrote. The handler uses it when
// present, saving a copy per byte.
type RangeWriterTo interface {
	WriteRangeTo(w io.Writer, off, n int64) (int64, error)
}

// FileReader reads one stored file.
type FileReader interface {
	// ReadAt follows io.ReaderAt and returns verified bytes or an error.
	io.ReaderAt
	// Size is the file's size; it must equal FileInfo.Size.
	Size() int64
	// Close releases what Open acquired.
	io.Closer
}

// Errors a Repos returns (possibly wrapped). The handler turns them into 404
// responses with the matching X-Error-Code (§1.6).
var (
	// ErrRepoNotFound is returned when the repository does not exist.
	ErrRepoNotFound = errors.New("hub: repository not found")
	// ErrRevisionNotFound is returned when the repository exists but the
	// revision (branch, tag or commit) does not.
	ErrRevisionNotFound = errors.New("hub: revision not found")
	// ErrEntryNotFound is returned when a path is not a file of the commit.
	ErrEntryNotFound = errors.New("hub: entry not found")
)

// Identity is who a request is acting for, as the Authenticator (or an Auth
// middleware) decides. The handler authorizes every repository request
// against its Grants, and answers /api/whoami-v2 from it.
type Identity struct {
	Name      string   // user name
	FullName  string   // display name; Name when empty
	Orgs      []string // organisation names the user belongs to
	TokenName string   // the access token's display name
	// TokenRole is "read" or "write" as whoami reports it; when empty it
	// is derived from Grants.
	TokenRole string
	// Grants are what the token may do, per namespace. An identity without
	// grants may only do what anonymous requests may.
	Grants []Grant
}

type identityKey struct{}

// WithIdentity returns a context carrying id; an authentication middleware
// calls it for an accepted request.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// IdentityFrom returns the identity a middleware attached, if any.
func IdentityFrom(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}
