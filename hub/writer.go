package hub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Writer is what the write API needs from a store, next to Repos: repository
// and ref lifecycle, content-addressed objects (the Git LFS objects of the
// Hub, named by SHA-256), and atomic commits that name those objects.
//
// Contract (hubtest.CheckWriter tests an implementation against it):
//
//   - Safe for concurrent use: every request goroutine calls it, and parts of
//     one upload may arrive in parallel.
//   - Objects are stored first and are invisible to readers until a commit
//     names them: StoreObject never changes what Repos returns. CreateCommit
//     is the only way bytes become visible, and it is atomic: after it
//     returns, Repos.Resolve(repo, branch) gives the new commit and
//     Repos.Files lists exactly the resulting tree; before it returns (or if
//     it fails) readers see the old head and nothing of the new commit.
//   - Objects are scoped to repositories for the purpose of "may this repo
//     use it without uploading it": StatObject(repo, oid) reports an object
//     only if it was stored by StoreObject for that repo or is the content
//     of a file in a commit of that repo. An implementation may (and heft's
//     store does) keep one copy of each object for all repos, but it must
//     not report an object to repo B merely because repo A has it: anyone
//     who knows the SHA-256 of a file in a private namespace could otherwise
//     commit it into their own repo and read it.
//   - Commit ids follow the Repos rules (40 lowercase hex digits) and every
//     commit returned here resolves through Repos at once.
//   - Errors are matched with errors.Is against the sentinels below (and
//     ErrRepoNotFound, ErrRevisionNotFound, ErrEntryNotFound); the handler
//     maps each to the HTTP status the Hub uses. Any other error is an
//     internal failure: a 500 whose cause is logged, not shown.
//   - Repo ids are "ns/name" and paths are clean relative slash paths; the
//     handler validates both before calling (see ValidRepoID, ValidPath), and
//     names of new branches and tags follow git's ref-name rules, so an
//     implementation may rely on that.
//   - ctx is the request's. When it is done (the client went away, the
//     server is shutting down) a call may stop and return an error wrapping
//     ctx.Err(); a StoreObject stopped so stores nothing, and a CreateCommit
//     either happened entirely or not at all.
//   - Branches and tags share one namespace per repository (a name is one
//     or the other), as Repos.Resolve already assumes. Only branches move:
//     CreateCommit advances a branch; a tag is fixed until deleted.
type Writer interface {
	// CreateRepo creates repo with a "main" branch pointing at an initial
	// commit that holds exactly req.Files (the handler always passes a
	// .gitattributes, so that main resolves at once, as on the Hub). The
	// objects of req.Files were stored for req.Repo with StoreObject.
	// Errors: ErrRepoExists if the repo exists (nothing changes then);
	// ErrObjectNotFound if a file names an object StatObject would not
	// report for the repo. Two concurrent calls for one repo: exactly one
	// succeeds.
	CreateRepo(ctx context.Context, req CreateRepoRequest) (Commit, error)

	// DeleteRepo removes repo and all its branches and tags. Readers see
	// ErrRepoNotFound once it returns. Stored objects are left to garbage
	// collection. Errors: ErrRepoNotFound.
	DeleteRepo(ctx context.Context, repo string) error

	// StatObject returns the size of the object with lowercase hex SHA-256
	// oid if repo may use it (see the contract above), else
	// ErrObjectNotFound. It must be cheap (an index lookup): the LFS batch
	// endpoint and commits call it for every object of a request. It does
	// not require the repo to exist (CreateRepo's files are stored before
	// the repo).
	StatObject(ctx context.Context, repo, oid string) (size int64, err error)

	// StoreObject ingests an object for repo as it streams in from r and
	// returns when it is durable (fsynced; it survives a crash from then
	// on). It must verify what it read: exactly size bytes whose SHA-256 is
	// oid, else an error matching ErrObjectMismatch (use
	// *ObjectMismatchError), and nothing is stored. Any read error from r
	// aborts it and is returned (wrapped). The handler's readers already
	// verify and report a mismatch as a read error, so an implementation
	// must treat a read error as failure, never as end of data.
	//
	// Idempotent: storing an object the repo may already use succeeds and
	// may skip reading r. An object stored only for other repos must still
	// be read and verified in full (the upload is the repo's proof of
	// possession, see above) before the repo may use it; its bytes need not
	// be stored twice. Concurrent calls for one oid (two clients uploading
	// the same file) both succeed, leaving one object. StoreObject does not
	// require the repo to exist. A stored object that no commit names
	// stays available to StatObject and CreateCommit for at least
	// ObjectGracePeriod, after which garbage collection may drop it.
	StoreObject(ctx context.Context, repo, oid string, size int64, r io.Reader) error

	// CreateCommit applies req.Operations, in order, to the head of
	// req.Branch and moves the branch to the new commit with a
	// compare-and-swap, so that the whole commit appears at once or not at
	// all. The new commit's parent is the head it was built on.
	//
	//   - If req.ParentCommit is set (5 to 40 lowercase hex digits, a
	//     prefix of a commit id), the branch head must be that commit, else
	//     ErrParentMismatch (HTTP 412), also when the head moved during the
	//     call.
	//   - Without it, operations are path-level edits and are applied to
	//     whatever head the compare-and-swap wins on: an implementation
	//     retries a lost race a few times and returns ErrConflict (409) only
	//     if it keeps losing.
	//   - OpAdd names an object by oid and size; it must be one StatObject
	//     reports for req.Repo with that size, else ErrObjectNotFound.
	//     Adding replaces an existing file.
	//   - OpDeleteFile on a path that is not a file, or OpDeleteFolder on
	//     a path that is not a directory, is ErrEntryNotFound.
	//   - A result with a path that is both a file and a directory (adding
	//     "a/b" when "a" is a file) is ErrPathConflict.
	//   - A commit is made even when the tree does not change.
	//
	// Errors also: ErrRepoNotFound; ErrRevisionNotFound when req.Branch is
	// not a branch of the repo (a tag or commit id included).
	CreateCommit(ctx context.Context, req CommitRequest) (Commit, error)

	// CreateBranch creates branch req.Branch at req.StartingPoint (a
	// branch, tag or commit id of the repo; "" means the head of main), or
	// at a new commit without files or parent when req.Empty. If the name
	// exists: ErrRefExists, unless req.Overwrite and the name is a branch,
	// which moves it. Errors also: ErrRepoNotFound, ErrRevisionNotFound
	// (unknown starting point).
	CreateBranch(ctx context.Context, req BranchRequest) (Commit, error)

	// DeleteBranch deletes a branch. Deleting main is allowed only as
	// part of DeleteRepo: ErrProtectedRef. Errors also: ErrRepoNotFound,
	// ErrRevisionNotFound (no such branch; a tag included).
	DeleteBranch(ctx context.Context, repo, branch string) error

	// CreateTag points a new tag at revision (a branch, tag or commit id
	// of the repo) and returns that commit. message may be empty and may
	// be ignored by an implementation that keeps none. Errors:
	// ErrRepoNotFound, ErrRevisionNotFound, ErrRefExists (the name is
	// taken by a tag or a branch).
	CreateTag(ctx context.Context, repo, tag, revision, message string) (Commit, error)

	// DeleteTag deletes a tag. Errors: ErrRepoNotFound,
	// ErrRevisionNotFound (no such tag; a branch included).
	DeleteTag(ctx context.Context, repo, tag string) error
}

// ObjectGracePeriod is how long a Writer must keep an object that was stored
// but is not named by any commit yet. It covers the gap between the LFS
// upload and the commit of one client operation (minutes), with room for
// multi-hour uploads of many large files before their single commit.
const ObjectGracePeriod = 24 * time.Hour

// CreateRepoRequest is the input of Writer.CreateRepo.
type CreateRepoRequest struct {
	// Repo is "ns/name".
	Repo string
	// Files are the initial files: OpAdd operations only, paths unique.
	Files []Operation
	// Summary is the initial commit's message.
	Summary string
	// Author is the name of the identity making the request (for
	// provenance); empty when the server runs without authentication.
	Author string
}

// CommitRequest is the input of Writer.CreateCommit.
type CommitRequest struct {
	Repo   string
	Branch string
	// ParentCommit, if set, is the compare-and-swap precondition: 5 to 40
	// lowercase hex digits that the branch head's id must start with.
	ParentCommit string
	Operations   []Operation
	// Summary is the commit title; Description the body (may be empty).
	Summary     string
	Description string
	// Author: see CreateRepoRequest.
	Author string
}

// BranchRequest is the input of Writer.CreateBranch.
type BranchRequest struct {
	Repo   string
	Branch string
	// StartingPoint is a revision of the repo; "" means the head of main.
	StartingPoint string
	// Empty makes the branch point at a new commit without files or
	// parent (JS createBranch emptyBranch); StartingPoint is then ignored.
	Empty bool
	// Overwrite moves an existing branch instead of failing.
	Overwrite bool
}

// OpKind is the kind of a commit operation.
type OpKind int

const (
	// OpAdd adds or replaces the file Path with the object OID of Size
	// bytes.
	OpAdd OpKind = iota + 1
	// OpDeleteFile deletes the file Path.
	OpDeleteFile
	// OpDeleteFolder deletes every file under the directory Path.
	OpDeleteFolder
)

func (k OpKind) String() string {
	switch k {
	case OpAdd:
		return "add"
	case OpDeleteFile:
		return "deleteFile"
	case OpDeleteFolder:
		return "deleteFolder"
	}
	return fmt.Sprintf("OpKind(%d)", int(k))
}

// Operation is one change of a commit.
type Operation struct {
	Kind OpKind
	// Path is a clean relative slash path (no trailing slash, also for
	// OpDeleteFolder).
	Path string
	// OID is the lowercase hex SHA-256 of the content (OpAdd only).
	OID string
	// Size is the content size in bytes (OpAdd only).
	Size int64
	// LFS tells how the client sent the file (OpAdd only): true for an LFS
	// upload (an "lfsFile" line), false for content inline in the commit
	// (a "file" line). It is a presentation hint: an implementation may
	// record it to present the file the same way (FileInfo.LFS) or decide
	// from the content, as long as FileInfo stays consistent.
	LFS bool
}

// Errors a Writer returns (possibly wrapped), besides ErrRepoNotFound,
// ErrRevisionNotFound and ErrEntryNotFound.
var (
	// ErrRepoExists is returned by CreateRepo when the repo exists (409).
	ErrRepoExists = errors.New("hub: repository already exists")
	// ErrRefExists is returned when a branch or tag name is taken (409).
	ErrRefExists = errors.New("hub: reference already exists")
	// ErrProtectedRef is returned for deleting the main branch (403).
	ErrProtectedRef = errors.New("hub: reference is protected")
	// ErrObjectNotFound is returned when an object is not stored for the
	// repo (StatObject; an OpAdd naming it).
	ErrObjectNotFound = errors.New("hub: object not found")
	// ErrObjectMismatch is matched by *ObjectMismatchError: uploaded bytes
	// do not have the announced size or SHA-256.
	ErrObjectMismatch = errors.New("hub: object content does not match its oid and size")
	// ErrParentMismatch is returned by CreateCommit when ParentCommit is
	// not the branch head (412).
	ErrParentMismatch = errors.New("hub: parent commit is not the branch head")
	// ErrConflict is returned by CreateCommit when concurrent updates of
	// the branch kept winning (409).
	ErrConflict = errors.New("hub: concurrent update of the branch")
	// ErrPathConflict is returned by CreateCommit when the resulting tree
	// would have a path that is both a file and a directory (409).
	ErrPathConflict = errors.New("hub: a path would be both a file and a directory")
)

// ObjectMismatchError reports uploaded content that is not what was
// announced. It matches ErrObjectMismatch with errors.Is.
type ObjectMismatchError struct {
	OID  string // announced SHA-256
	Size int64  // announced size
	// GotOID is the SHA-256 of what arrived; empty when reading stopped
	// early because more than Size bytes came.
	GotOID  string
	GotSize int64 // bytes that arrived (Size+1 when there were too many)
}

func (e *ObjectMismatchError) Error() string {
	if e.GotSize != e.Size {
		return fmt.Sprintf("hub: object %s: got %d bytes, want %d", e.OID, e.GotSize, e.Size)
	}
	return fmt.Sprintf("hub: object %s: content has SHA-256 %s", e.OID, e.GotOID)
}

// Is makes errors.Is(err, ErrObjectMismatch) true.
func (e *ObjectMismatchError) Is(target error) bool { return target == ErrObjectMismatch }
