package store

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/heft-dev/heft/internal/failpoint"
	"github.com/heft-dev/heft/internal/vfs"
)

// Refs live outside the index, in one small text file rewritten atomically (temp,
// fsync, rename, directory fsync) under an exclusive lock, so that compare-and-swap
// is a read-compare-write under that lock, and deleting the index never loses a ref.
// Every change is appended to a reflog first.

// RefName is NAME[:TAG]. NAME follows Hugging Face repo ids ("org/model" or
// "model"); TAG defaults to "main" and may contain slashes, as branch names do.
type RefName struct {
	Name string
	Tag  string
}

const DefaultTag = "main"

var (
	refNamePart = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	refTagRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]*$`)
)

// ParseRef parses NAME[:TAG].
func ParseRef(s string) (RefName, error) {
	name, tag, hasTag := strings.Cut(s, ":")
	if !hasTag {
		tag = DefaultTag
	}
	r := RefName{Name: name, Tag: tag}
	return r, r.Validate()
}

// Validate checks the name and tag against the rules above.
func (r RefName) Validate() error {
	if len(r.Name) == 0 || len(r.Name) > 96 {
		return inputErrorf("ref %q: name must be 1 to 96 characters", r.String())
	}
	parts := strings.Split(r.Name, "/")
	if len(parts) > 2 {
		return inputErrorf("ref %q: name is NAME or ORG/NAME", r.String())
	}
	for _, p := range parts {
		if !refNamePart.MatchString(p) || strings.Contains(p, "..") || strings.Contains(p, "--") || strings.HasSuffix(p, ".") {
			return inputErrorf("ref %q: %q may hold letters, digits, '.', '_' and '-' (no '..' or '--'), starting with a letter or digit", r.String(), p)
		}
	}
	if len(r.Tag) == 0 || len(r.Tag) > 128 || !refTagRE.MatchString(r.Tag) ||
		strings.Contains(r.Tag, "..") || strings.Contains(r.Tag, "//") || strings.HasSuffix(r.Tag, "/") || strings.HasSuffix(r.Tag, ".lock") {
		return inputErrorf("ref %q: invalid tag %q", r.String(), r.Tag)
	}
	return nil
}

func (r RefName) String() string { return r.Name + ":" + r.Tag }

// RefEntry is a ref and the commit it points to.
type RefEntry struct {
	Ref    RefName
	Commit ID
	// Fixed marks a ref that never moves (a Hugging Face tag): it can be created
	// and deleted, not advanced.
	Fixed bool
}

// refState is a ref's value in the refs file.
type refState struct {
	id    ID
	fixed bool
}

// ReflogEntry records one ref change.
type ReflogEntry struct {
	Time    string `json:"time"`
	Ref     string `json:"ref"`
	Old     string `json:"old,omitempty"`
	New     string `json:"new,omitempty"`
	Message string `json:"message"`
}

const refsHeader = "# heft refs 1"

func (s *Store) refsPath() string   { return filepath.Join(s.dir, "refs") }
func (s *Store) reflogPath() string { return filepath.Join(s.dir, "logs", "reflog") }

// readRefs parses the refs file. A missing file is an empty set of refs.
func (s *Store) readRefs() (map[RefName]refState, error) {
	if s.remote != nil {
		refs, _, _, err := s.readRemoteRefs(context.Background())
		return refs, err
	}
	data, err := vfs.ReadFile(s.fs, s.refsPath())
	if errors.Is(err, fs.ErrNotExist) {
		return map[RefName]refState{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read refs: %w", err)
	}
	return parseRefs(data, s.refsPath())
}

// parseRefs reads the refs file: a header line, one "NAME:TAG ID[ fixed]" line per
// ref, and a CRC-32C trailer over everything before it.
func parseRefs(data []byte, path string) (map[RefName]refState, error) {
	refs := map[RefName]refState{}
	body, sumLine, ok := cutLastLine(data)
	var want uint32
	if !ok || !bytes.HasPrefix(data, []byte(refsHeader+"\n")) {
		return nil, fmt.Errorf("%w: refs file %s is damaged (bad header or trailer)", ErrIntegrity, path)
	}
	if _, err := fmt.Sscanf(string(sumLine), "# crc32c %08x", &want); err != nil || crc32.Checksum(body, castagnoli) != want {
		return nil, fmt.Errorf("%w: refs file %s fails its checksum", ErrIntegrity, path)
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, " ")
		if len(fields) < 2 || len(fields) > 3 || (len(fields) == 3 && fields[2] != "fixed") {
			return nil, fmt.Errorf("%w: refs file %s: bad line %q", ErrIntegrity, path, line)
		}
		ref, err := ParseRef(fields[0])
		if err != nil {
			return nil, fmt.Errorf("%w: refs file %s: %v", ErrIntegrity, path, err)
		}
		id, err := ParseID(fields[1])
		if err != nil {
			return nil, fmt.Errorf("%w: refs file %s: %v", ErrIntegrity, path, err)
		}
		if _, dup := refs[ref]; dup {
			return nil, fmt.Errorf("%w: refs file %s: ref %s listed twice", ErrIntegrity, path, ref)
		}
		refs[ref] = refState{id: id, fixed: len(fields) == 3}
	}
	return refs, nil
}

// cutLastLine splits "body\nlast\n" into body (with its final newline) and last.
func cutLastLine(data []byte) (body, last []byte, ok bool) {
	if len(data) == 0 || data[len(data)-1] != '\n' {
		return nil, nil, false
	}
	i := bytes.LastIndexByte(data[:len(data)-1], '\n')
	if i < 0 {
		return nil, nil, false
	}
	return data[:i+1], data[i+1 : len(data)-1], true
}

// encodeRefs writes the refs file. A positive generation adds a
// "# generation N" line (shared stores: it makes every version of the refs
// object distinct, so a compare-and-swap cannot mistake A→B→A for no change).
func encodeRefs(refs map[RefName]refState, generation uint64) []byte {
	names := make([]RefName, 0, len(refs))
	for r := range refs {
		names = append(names, r)
	}
	sort.Slice(names, func(i, j int) bool { return names[i].String() < names[j].String() })
	var b bytes.Buffer
	b.WriteString(refsHeader + "\n")
	if generation > 0 {
		fmt.Fprintf(&b, "# generation %d\n", generation)
	}
	for _, r := range names {
		fmt.Fprintf(&b, "%s %s", r, refs[r].id)
		if refs[r].fixed {
			b.WriteString(" fixed")
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "# crc32c %08x\n", crc32.Checksum(b.Bytes(), castagnoli))
	return b.Bytes()
}

// Refs lists every ref, sorted by name.
func (s *Store) Refs() ([]RefEntry, error) {
	refs, err := s.currentRefs()
	if err != nil {
		return nil, err
	}
	out := make([]RefEntry, 0, len(refs))
	for r, st := range refs {
		out = append(out, RefEntry{Ref: r, Commit: st.id, Fixed: st.fixed})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref.String() < out[j].Ref.String() })
	return out, nil
}

// Ref returns the commit a ref points to, or ErrNotFound.
func (s *Store) Ref(r RefName) (ID, error) {
	refs, err := s.currentRefs()
	if err != nil {
		return ID{}, err
	}
	st, ok := refs[r]
	if !ok {
		return ID{}, fmt.Errorf("%w: ref %s", ErrNotFound, r)
	}
	return st.id, nil
}

// UpdateRef moves ref from old to new atomically: it fails with ErrConflict unless
// the ref currently points to old (the zero ID meaning "does not exist"). A zero new
// deletes the ref. The caller must have made new's objects durable and indexed first.
// A fixed ref can be deleted but not moved.
func (s *Store) UpdateRef(r RefName, old, new ID, message string) error {
	return s.UpdateRefs([]RefUpdate{{Ref: r, Old: old, New: new}}, message)
}

// RefUpdate is one change of UpdateRefs: Ref from Old to New (zero: absent), with
// Fixed deciding whether a ref it creates is fixed.
type RefUpdate struct {
	Ref      RefName
	Old, New ID
	Fixed    bool
}

// UpdateRefs applies several ref changes atomically, each a compare-and-swap: all of
// them happen, or none (ErrConflict when any ref is not at its Old). A fixed ref can
// be deleted but not moved; a ref created with Fixed never moves.
func (s *Store) UpdateRefs(updates []RefUpdate, message string) error {
	if err := checkRefUpdates(updates); err != nil {
		return err
	}
	failpoint.Hit(failpoint.RefBeforeUpdate)
	if s.remote != nil {
		return s.updateRemoteRefs(context.Background(), updates, message)
	}
	lock, err := lockFile(filepath.Join(s.dir, "locks", "refs.lock"), true, s.opts.LockTimeout, "another heft process is updating refs")
	if err != nil {
		return err
	}
	defer lock.Unlock()
	refs, err := s.readRefs()
	if err != nil {
		return err
	}
	if err := applyRefUpdates(refs, updates); err != nil {
		return err
	}
	if err := s.logRefUpdates(updates, message); err != nil {
		return err
	}
	// A writer killed between creating its temp file and renaming it left the
	// temp behind; under refs.lock no live writer owns one.
	if _, err := vfs.RemoveStaleTemps(s.fs, s.refsPath()); err != nil {
		return fmt.Errorf("write refs: %w", err)
	}
	if err := vfs.WriteFileAtomic(s.fs, s.refsPath(), encodeRefs(refs, 0), 0o600); err != nil {
		if errors.Is(err, vfs.ErrNotDurable) {
			return fmt.Errorf("write refs: the refs changed, but a crash now could undo it: %w", err)
		}
		return fmt.Errorf("write refs: %w", err)
	}
	failpoint.Hit(failpoint.RefAfterUpdate)
	return nil
}

// checkRefUpdates validates the names of one UpdateRefs call.
func checkRefUpdates(updates []RefUpdate) error {
	seen := map[RefName]bool{}
	for _, u := range updates {
		if err := u.Ref.Validate(); err != nil {
			return err
		}
		if seen[u.Ref] {
			return inputErrorf("ref %s changed twice in one update", u.Ref)
		}
		seen[u.Ref] = true
	}
	return nil
}

// applyRefUpdates checks every update against refs (each a compare-and-swap)
// and applies them all, or returns ErrConflict and changes nothing.
func applyRefUpdates(refs map[RefName]refState, updates []RefUpdate) error {
	for _, u := range updates {
		cur, exists := refs[u.Ref]
		if cur.id != u.Old {
			if u.Old.IsZero() {
				return fmt.Errorf("%w: ref %s already exists (at %s)", ErrConflict, u.Ref, cur.id.Short())
			}
			return fmt.Errorf("%w: ref %s is at %s, expected %s", ErrConflict, u.Ref, shortOrNone(cur.id), u.Old.Short())
		}
		if exists && cur.fixed && !u.New.IsZero() && u.New != cur.id {
			return fmt.Errorf("%w: ref %s is a fixed tag; delete it to point it elsewhere", ErrConflict, u.Ref)
		}
	}
	for _, u := range updates {
		if u.New.IsZero() {
			delete(refs, u.Ref)
			continue
		}
		st := refs[u.Ref]
		if u.Old.IsZero() {
			st.fixed = u.Fixed
		}
		st.id = u.New
		refs[u.Ref] = st
	}
	return nil
}

// logRefUpdates appends the updates to this node's reflog.
func (s *Store) logRefUpdates(updates []RefUpdate, message string) error {
	now := s.now().UTC().Format(time.RFC3339Nano)
	for _, u := range updates {
		entry := ReflogEntry{Time: now, Ref: u.Ref.String(), Message: message}
		if !u.Old.IsZero() {
			entry.Old = u.Old.String()
		}
		if !u.New.IsZero() {
			entry.New = u.New.String()
		}
		if err := s.appendReflog(entry); err != nil {
			return err
		}
	}
	return nil
}

func shortOrNone(id ID) string {
	if id.IsZero() {
		return "(none)"
	}
	return id.Short()
}

func (s *Store) appendReflog(e ReflogEntry) error {
	line, err := json.Marshal(e)
	if err != nil {
		return err
	}
	f, err := s.fs.OpenFile(s.reflogPath(), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open reflog: %w", err)
	}
	_, err = f.Write(append(line, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && !s.reflogDurable.Load() {
		// The first append creates the file: its entry in logs/ must be durable
		// too, or a crash can take the whole reflog.
		if err = s.fs.SyncDir(filepath.Dir(s.reflogPath())); err == nil {
			s.reflogDurable.Store(true)
		}
	}
	if err != nil {
		return fmt.Errorf("append reflog: %w", err)
	}
	return nil
}

// Reflog returns the changes of one ref (or of all refs when r is nil), oldest first.
// Damaged lines (a torn last write) are skipped: the reflog is informational.
func (s *Store) Reflog(r *RefName) ([]ReflogEntry, error) {
	data, err := vfs.ReadFile(s.fs, s.reflogPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read reflog: %w", err)
	}
	var out []ReflogEntry
	for _, line := range bytes.Split(data, []byte("\n")) {
		var e ReflogEntry
		if len(line) == 0 || json.Unmarshal(line, &e) != nil {
			continue
		}
		if r == nil || e.Ref == r.String() {
			out = append(out, e)
		}
	}
	return out, nil
}
