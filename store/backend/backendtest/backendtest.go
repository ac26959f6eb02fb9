// Package backendtest is the conformance suite of backend.Backend: one set of
// tests of the contract in the backend package's documentation, run against
// every implementation (style.md pattern 14; restic's internal/backend/test,
// kopia's blobtesting).
package backendtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/heft-dev/heft/store/backend"
)

// Run runs the suite. newBackend must return a new, empty backend for each call
// (for S3: a fresh prefix or bucket) and close it when t ends.
func Run(t *testing.T, newBackend func(t *testing.T) backend.Backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b backend.Backend)
	}{
		{"PutGetStat", testPutGetStat},
		{"EmptyObject", testEmptyObject},
		{"Overwrite", testOverwrite},
		{"NotFound", testNotFound},
		{"InvalidNames", testInvalidNames},
		{"NameConflict", testNameConflict},
		{"ReadAt", testReadAt},
		{"GetRange", testGetRange},
		{"List", testList},
		{"Delete", testDelete},
		{"PutIfAbsent", testPutIfAbsent},
		{"PutIfAbsentRace", testPutIfAbsentRace},
		{"CompareAndSwap", testCompareAndSwap},
		{"CompareAndSwapRace", testCompareAndSwapRace},
		{"CompareAndSwapCounter", testCompareAndSwapCounter},
		{"Large", testLarge},
		{"AtomicVisibility", testAtomicVisibility},
		{"Cancellation", testCancellation},
		{"ShortSource", testShortSource},
		{"Properties", testProperties},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newBackend(t))
		})
	}
}

// --- helpers ---

func ctxOf(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), 1}))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

func put(t *testing.T, b backend.Backend, name string, data []byte) backend.ObjectInfo {
	t.Helper()
	info, err := b.Put(ctxOf(t), name, bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatalf("Put(%s, %d bytes): %v", name, len(data), err)
	}
	checkInfo(t, "Put", info, name, int64(len(data)))
	return info
}

func checkInfo(t *testing.T, what string, info backend.ObjectInfo, name string, size int64) {
	t.Helper()
	if info.Name != name || info.Size != size {
		t.Fatalf("%s(%s): info name %q size %d, want %q %d", what, name, info.Name, info.Size, name, size)
	}
	if info.Version == "" {
		t.Fatalf("%s(%s): empty version", what, name)
	}
}

func checkModTime(t *testing.T, what string, mt time.Time) {
	t.Helper()
	if d := time.Since(mt); d < -10*time.Minute || d > 10*time.Minute {
		t.Fatalf("%s: ModTime %v is %v away from now", what, mt, d)
	}
}

func getAll(t *testing.T, b backend.Backend, name string) ([]byte, backend.ObjectInfo) {
	t.Helper()
	data, info, err := backend.ReadAll(ctxOf(t), b, name)
	if err != nil {
		t.Fatalf("Get(%s): %v", name, err)
	}
	return data, info
}

func mustEqual(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: got %d bytes, want %d; first difference at offset %d", what, len(got), len(want), i)
	}
}

// wantErr checks that err wraps target, is a *backend.Error naming the object,
// and is not transient.
func wantErr(t *testing.T, what string, err error, target error, name string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want %v", what, target)
	}
	if !errors.Is(err, target) {
		t.Fatalf("%s: error %q (%T) does not wrap %v", what, err, err, target)
	}
	if backend.IsTransient(err) {
		t.Fatalf("%s: error %q is transient; want a permanent %v", what, err, target)
	}
	var be *backend.Error
	if !errors.As(err, &be) {
		t.Fatalf("%s: error %q is not a *backend.Error", what, err)
	}
	if name != "" && !strings.Contains(err.Error(), name) {
		t.Fatalf("%s: error %q does not name %q", what, err, name)
	}
}

// race runs fn(0..n-1) concurrently, released together, and returns their
// errors. It uses a WaitGroup rather than an errgroup: every writer's outcome is
// the result, and losing a race is not a failure that should stop the others.
func race(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			errs[i] = fn(i)
		}()
	}
	close(gate)
	wg.Wait()
	return errs
}

// --- tests ---

func testPutGetStat(t *testing.T, b backend.Backend) {
	ctx := ctxOf(t)
	data := randBytes(1, 100_003)
	pinfo := put(t, b, "obj/a.bin", data)
	got, ginfo := getAll(t, b, "obj/a.bin")
	mustEqual(t, "Get", got, data)
	checkInfo(t, "Get", ginfo, "obj/a.bin", int64(len(data)))
	checkModTime(t, "Get", ginfo.ModTime)
	st, err := b.Stat(ctx, "obj/a.bin")
	if err != nil {
		t.Fatal(err)
	}
	checkInfo(t, "Stat", st, "obj/a.bin", int64(len(data)))
	checkModTime(t, "Stat", st.ModTime)
	if st.Version != pinfo.Version || ginfo.Version != pinfo.Version {
		t.Fatalf("versions differ: Put %q, Get %q, Stat %q", pinfo.Version, ginfo.Version, st.Version)
	}
	// Put is idempotent.
	again := put(t, b, "obj/a.bin", data)
	got, _ = getAll(t, b, "obj/a.bin")
	mustEqual(t, "Get after the same Put again", got, data)
	if st, err := b.Stat(ctx, "obj/a.bin"); err != nil || st.Version != again.Version {
		t.Fatalf("Stat after the same Put again: %+v, %v; Put said version %q", st, err, again.Version)
	}
	// A deep name.
	deep := "d1/d2/d3/d4/leaf_1-2.3"
	put(t, b, deep, data[:10])
	got, _ = getAll(t, b, deep)
	mustEqual(t, "Get deep", got, data[:10])
}

func testEmptyObject(t *testing.T, b backend.Backend) {
	ctx := ctxOf(t)
	put(t, b, "empty", nil)
	got, info := getAll(t, b, "empty")
	if len(got) != 0 || info.Size != 0 {
		t.Fatalf("empty object: got %d bytes, size %d", len(got), info.Size)
	}
	for _, r := range [][2]int64{{0, 0}, {0, -1}} {
		rc, _, err := b.Get(ctx, "empty", r[0], r[1])
		if err != nil {
			t.Fatalf("Get(empty, %d, %d): %v", r[0], r[1], err)
		}
		if data, err := io.ReadAll(rc); err != nil || len(data) != 0 {
			t.Fatalf("Get(empty, %d, %d) read %d bytes, %v", r[0], r[1], len(data), err)
		}
		rc.Close()
	}
	_, _, err := b.Get(ctx, "empty", 1, -1)
	wantErr(t, "Get(empty, 1, -1)", err, io.ErrUnexpectedEOF, "empty")
	n, err := b.ReadAt(ctx, "empty", nil, 0)
	if n != 0 || err != nil {
		t.Fatalf("ReadAt(empty, 0 bytes) = %d, %v", n, err)
	}
	n, err = b.ReadAt(ctx, "empty", make([]byte, 1), 0)
	if n != 0 {
		t.Fatalf("ReadAt(empty, 1 byte) = %d", n)
	}
	wantErr(t, "ReadAt(empty, 1 byte)", err, io.ErrUnexpectedEOF, "empty")
}

func testOverwrite(t *testing.T, b backend.Backend) {
	v1 := put(t, b, "over", []byte("first version"))
	v2 := put(t, b, "over", []byte("second, longer version"))
	if v1.Version == v2.Version {
		t.Fatalf("overwrite with different bytes kept version %q", v1.Version)
	}
	got, info := getAll(t, b, "over")
	mustEqual(t, "Get after overwrite", got, []byte("second, longer version"))
	if info.Version != v2.Version {
		t.Fatalf("Get version %q, Put said %q", info.Version, v2.Version)
	}
	put(t, b, "over", []byte("short"))
	got, _ = getAll(t, b, "over")
	mustEqual(t, "Get after overwrite with a shorter object", got, []byte("short"))
}

func testNotFound(t *testing.T, b backend.Backend) {
	ctx := ctxOf(t)
	const name = "missing/object"
	_, _, err := b.Get(ctx, name, 0, -1)
	wantErr(t, "Get", err, backend.ErrNotFound, name)
	_, _, err = b.Get(ctx, name, 10, 5)
	wantErr(t, "Get range", err, backend.ErrNotFound, name)
	_, _, err = b.Get(ctx, name, 0, 0)
	wantErr(t, "Get empty range", err, backend.ErrNotFound, name)
	_, err = b.ReadAt(ctx, name, make([]byte, 4), 0)
	wantErr(t, "ReadAt", err, backend.ErrNotFound, name)
	_, err = b.ReadAt(ctx, name, nil, 0)
	wantErr(t, "ReadAt 0 bytes", err, backend.ErrNotFound, name)
	_, err = b.Stat(ctx, name)
	wantErr(t, "Stat", err, backend.ErrNotFound, name)
	if err := b.Delete(ctx, name); err != nil {
		t.Fatalf("Delete of a missing object: %v", err)
	}
	_, err = b.CompareAndSwap(ctx, name, "some-version", bytes.NewReader([]byte("x")), 1)
	wantErr(t, "CompareAndSwap", err, backend.ErrPreconditionFailed, name)
	if _, err := b.Stat(ctx, name); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("CompareAndSwap on a missing object created it: Stat says %v", err)
	}
	// A directory of objects is not an object.
	put(t, b, "dir/child", []byte("x"))
	_, err = b.Stat(ctx, "dir")
	wantErr(t, "Stat of a directory name", err, backend.ErrNotFound, "dir")
	_, _, err = b.Get(ctx, "dir", 0, -1)
	wantErr(t, "Get of a directory name", err, backend.ErrNotFound, "dir")
	// Nothing listed.
	n := 0
	if err := b.List(ctx, "missing/", func(backend.ObjectInfo) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("List(missing/) = %d objects, %v", n, err)
	}
}

func testInvalidNames(t *testing.T, b backend.Backend) {
	ctx := ctxOf(t)
	bad := []string{"", "/abs", "a//b", "a/", "../x", "a/../b", "./a", ".hidden", "a/.tmp-1", "a\x00b", "a b", "a\\b",
		"é", strings.Repeat("x", backend.MaxSegmentLen+1), strings.Repeat("a/", backend.MaxNameLen/2+1) + "a"}
	for _, name := range bad {
		what := fmt.Sprintf("%q", name)
		if len(what) > 40 {
			what = what[:40] + "…"
		}
		data := []byte("x")
		_, err := b.Put(ctx, name, bytes.NewReader(data), 1)
		wantErr(t, "Put "+what, err, backend.ErrInvalidName, "")
		_, err = b.PutIfAbsent(ctx, name, bytes.NewReader(data), 1)
		wantErr(t, "PutIfAbsent "+what, err, backend.ErrInvalidName, "")
		_, err = b.CompareAndSwap(ctx, name, "v", bytes.NewReader(data), 1)
		wantErr(t, "CompareAndSwap "+what, err, backend.ErrInvalidName, "")
		_, _, err = b.Get(ctx, name, 0, -1)
		wantErr(t, "Get "+what, err, backend.ErrInvalidName, "")
		_, err = b.ReadAt(ctx, name, make([]byte, 1), 0)
		wantErr(t, "ReadAt "+what, err, backend.ErrInvalidName, "")
		_, err = b.Stat(ctx, name)
		wantErr(t, "Stat "+what, err, backend.ErrInvalidName, "")
		err = b.Delete(ctx, name)
		wantErr(t, "Delete "+what, err, backend.ErrInvalidName, "")
	}
	for _, prefix := range []string{"/", "/a", "../", "a//", ".x", "a/.t", "a b"} {
		err := b.List(ctx, prefix, func(backend.ObjectInfo) error { return nil })
		wantErr(t, fmt.Sprintf("List %q", prefix), err, backend.ErrInvalidName, "")
	}
	// The longest valid name works.
	long := strings.Repeat(strings.Repeat("n", 99)+"/", 8) + strings.Repeat("n", backend.MaxNameLen-800)
	if len(long) != backend.MaxNameLen || backend.CheckName(long) != nil {
		t.Fatalf("test bug: long name of %d bytes: %v", len(long), backend.CheckName(long))
	}
	put(t, b, long, []byte("long"))
	got, _ := getAll(t, b, long)
	mustEqual(t, "Get long name", got, []byte("long"))
}

// testNameConflict: "a" and "a/b" may both exist, or the second write fails with
// ErrInvalidName (or, for PutIfAbsent of "a", ErrExists); never another error.
func testNameConflict(t *testing.T, b backend.Backend) {
	ctx := ctxOf(t)
	put(t, b, "conflict1/a", []byte("file"))
	_, err := b.Put(ctx, "conflict1/a/b", bytes.NewReader([]byte("child")), 5)
	if err != nil {
		wantErr(t, "Put below an object", err, backend.ErrInvalidName, "conflict1/a/b")
	}
	got, _ := getAll(t, b, "conflict1/a")
	mustEqual(t, "object after a conflicting Put below it", got, []byte("file"))

	put(t, b, "conflict2/x/y", []byte("child"))
	_, err = b.PutIfAbsent(ctx, "conflict2/x", bytes.NewReader([]byte("file")), 4)
	if err != nil && !errors.Is(err, backend.ErrExists) { // SeaweedFS: ErrExists, see the package doc
		wantErr(t, "PutIfAbsent over a directory", err, backend.ErrInvalidName, "conflict2/x")
	}
	got, _ = getAll(t, b, "conflict2/x/y")
	mustEqual(t, "object after a conflicting Put above it", got, []byte("child"))

	// Once the object below is gone, the name is free.
	if err := b.Delete(ctx, "conflict2/x/y"); err != nil {
		t.Fatal(err)
	}
	put(t, b, "conflict2/x", []byte("file"))
}

func testReadAt(t *testing.T, b backend.Backend) {
	ctx := ctxOf(t)
	data := randBytes(2, 100_003)
	size := int64(len(data))
	put(t, b, "readat", data)
	for _, c := range []struct{ off, n int64 }{{0, 10}, {0, size}, {1, 1}, {50_000, 4096}, {size - 1, 1}, {size - 4096, 4096}} {
		p := make([]byte, c.n)
		n, err := b.ReadAt(ctx, "readat", p, c.off)
		if err != nil || int64(n) != c.n {
			t.Fatalf("ReadAt(%d, %d) = %d, %v", c.off, c.n, n, err)
		}
		mustEqual(t, fmt.Sprintf("ReadAt(%d, %d)", c.off, c.n), p, data[c.off:c.off+c.n])
	}
	if n, err := b.ReadAt(ctx, "readat", nil, size); n != 0 || err != nil {
		t.Fatalf("ReadAt(0 bytes at the end) = %d, %v", n, err)
	}
	// Short reads: the bytes that exist, then io.ErrUnexpectedEOF.
	for _, c := range []struct{ off, n, want int64 }{{size - 5, 10, 5}, {size - 1, 2, 1}, {size, 1, 0}, {size + 10, 4, 0}, {0, size + 1, size}} {
		p := make([]byte, c.n)
		n, err := b.ReadAt(ctx, "readat", p, c.off)
		if int64(n) != c.want {
			t.Fatalf("ReadAt(%d, %d) returned n=%d, want %d (err %v)", c.off, c.n, n, c.want, err)
		}
		wantErr(t, fmt.Sprintf("ReadAt(%d, %d)", c.off, c.n), err, io.ErrUnexpectedEOF, "readat")
		mustEqual(t, fmt.Sprintf("ReadAt(%d, %d) bytes", c.off, c.n), p[:n], data[min(c.off, size):min(c.off, size)+c.want])
	}
	if _, err := b.ReadAt(ctx, "readat", nil, size+1); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("ReadAt(0 bytes beyond the end) = %v, want io.ErrUnexpectedEOF", err)
	}
	if _, err := b.ReadAt(ctx, "readat", make([]byte, 1), -1); err == nil || backend.IsTransient(err) {
		t.Fatalf("ReadAt at offset -1: %v, want a permanent error", err)
	}
}

func testGetRange(t *testing.T, b backend.Backend) {
	ctx := ctxOf(t)
	data := randBytes(3, 100_003)
	size := int64(len(data))
	put(t, b, "range", data)
	for _, c := range []struct{ off, length int64 }{{0, -1}, {0, 0}, {0, size}, {5, 10}, {size - 1, 1}, {size - 1, -1}, {size, -1}, {size, 0}, {12345, -1}} {
		rc, info, err := b.Get(ctx, "range", c.off, c.length)
		if err != nil {
			t.Fatalf("Get(%d, %d): %v", c.off, c.length, err)
		}
		if info.Size != size || info.Version == "" {
			t.Fatalf("Get(%d, %d): info %+v, want the whole object's size %d and a version", c.off, c.length, info, size)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("Get(%d, %d) read: %v", c.off, c.length, err)
		}
		end := size
		if c.length >= 0 {
			end = c.off + c.length
		}
		mustEqual(t, fmt.Sprintf("Get(%d, %d)", c.off, c.length), got, data[c.off:end])
	}
	for _, c := range []struct{ off, length int64 }{{size, 1}, {size + 1, -1}, {size + 1, 0}, {size - 5, 10}, {0, size + 1}} {
		rc, _, err := b.Get(ctx, "range", c.off, c.length)
		if err == nil {
			rc.Close()
		}
		wantErr(t, fmt.Sprintf("Get(%d, %d)", c.off, c.length), err, io.ErrUnexpectedEOF, "range")
	}
	if _, _, err := b.Get(ctx, "range", -1, 5); err == nil || backend.IsTransient(err) {
		t.Fatalf("Get at offset -1: %v, want a permanent error", err)
	}
}

func listAll(t *testing.T, b backend.Backend, prefix string) []backend.ObjectInfo {
	t.Helper()
	var out []backend.ObjectInfo
	if err := b.List(ctxOf(t), prefix, func(info backend.ObjectInfo) error {
		out = append(out, info)
		return nil
	}); err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return out
}

func names(infos []backend.ObjectInfo) []string {
	var out []string
	for _, i := range infos {
		out = append(out, i.Name)
	}
	return out
}

func testList(t *testing.T, b backend.Backend) {
	ctx := ctxOf(t)
	objs := map[string]int{"list/a/1": 1, "list/a/2": 22, "list/a.b": 3, "list/ab": 44, "list/b/c/d": 5, "list/z": 0, "other": 7}
	for name, n := range objs {
		put(t, b, name, randBytes(uint64(n), n))
	}
	all := []string{"list/a.b", "list/a/1", "list/a/2", "list/ab", "list/b/c/d", "list/z"}
	for _, c := range []struct {
		prefix string
		want   []string
	}{
		{"", append(slices.Clone(all), "other")},
		{"list/", all},
		{"list", all},
		{"list/a", []string{"list/a.b", "list/a/1", "list/a/2", "list/ab"}},
		{"list/a/", []string{"list/a/1", "list/a/2"}},
		{"list/b/c/", []string{"list/b/c/d"}},
		{"list/b/c/d", []string{"list/b/c/d"}},
		{"list/nope", nil},
		{"nope/", nil},
		{"o", []string{"other"}},
	} {
		got := listAll(t, b, c.prefix)
		if !slices.Equal(names(got), c.want) {
			t.Fatalf("List(%q) = %q, want %q (sorted)", c.prefix, names(got), c.want)
		}
		for _, info := range got {
			if info.Size != int64(objs[info.Name]) {
				t.Fatalf("List(%q): %s has size %d, want %d", c.prefix, info.Name, info.Size, objs[info.Name])
			}
			checkModTime(t, "List "+info.Name, info.ModTime)
		}
	}
	// fn's error stops the listing and comes back.
	stop := errors.New("stop here")
	calls := 0
	err := b.List(ctx, "list/", func(backend.ObjectInfo) error {
		calls++
		if calls == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 2 {
		t.Fatalf("List with fn failing on the 2nd object: %v after %d calls", err, calls)
	}
	if b.Properties().ConsistentList {
		if err := b.Delete(ctx, "list/a/1"); err != nil {
			t.Fatal(err)
		}
		put(t, b, "list/a/3", []byte("new"))
		if got := names(listAll(t, b, "list/a/")); !slices.Equal(got, []string{"list/a/2", "list/a/3"}) {
			t.Fatalf("List after a Delete and a Put = %q (backend claims ConsistentList)", got)
		}
	}
}

func testDelete(t *testing.T, b backend.Backend) {
	ctx := ctxOf(t)
	put(t, b, "del/x", []byte("bytes"))
	if err := b.Delete(ctx, "del/x"); err != nil {
		t.Fatal(err)
	}
	_, err := b.Stat(ctx, "del/x")
	wantErr(t, "Stat after Delete", err, backend.ErrNotFound, "del/x")
	_, _, err = b.Get(ctx, "del/x", 0, -1)
	wantErr(t, "Get after Delete", err, backend.ErrNotFound, "del/x")
	if err := b.Delete(ctx, "del/x"); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	if _, err := b.PutIfAbsent(ctx, "del/x", bytes.NewReader([]byte("again")), 5); err != nil {
		t.Fatalf("PutIfAbsent after Delete: %v", err)
	}
	got, _ := getAll(t, b, "del/x")
	mustEqual(t, "Get after re-creating", got, []byte("again"))
}

func testPutIfAbsent(t *testing.T, b backend.Backend) {
	ctx := ctxOf(t)
	first := []byte("first writer")
	info, err := b.PutIfAbsent(ctx, "pia", bytes.NewReader(first), int64(len(first)))
	if err != nil {
		t.Fatal(err)
	}
	checkInfo(t, "PutIfAbsent", info, "pia", int64(len(first)))
	if st, err := b.Stat(ctx, "pia"); err != nil || st.Version != info.Version {
		t.Fatalf("Stat after PutIfAbsent: %+v, %v; PutIfAbsent said version %q", st, err, info.Version)
	}
	second := []byte("second writer, who lost")
	_, err = b.PutIfAbsent(ctx, "pia", bytes.NewReader(second), int64(len(second)))
	wantErr(t, "PutIfAbsent on an existing object", err, backend.ErrExists, "pia")
	// Also when the bytes are the same: PutIfAbsent is a create, not a compare.
	_, err = b.PutIfAbsent(ctx, "pia", bytes.NewReader(first), int64(len(first)))
	wantErr(t, "PutIfAbsent of the same bytes", err, backend.ErrExists, "pia")
	got, _ := getAll(t, b, "pia")
	mustEqual(t, "object after refused PutIfAbsent", got, first)
}

func testPutIfAbsentRace(t *testing.T, b backend.Backend) {
	const writers, rounds = 8, 4
	for round := range rounds {
		name := fmt.Sprintf("race/pia-%d", round)
		payload := func(i int) []byte {
			return []byte(fmt.Sprintf("round %d writer %d %s", round, i, strings.Repeat("#", 100*i)))
		}
		errs := race(writers, func(i int) error {
			data := payload(i)
			_, err := b.PutIfAbsent(ctxOf(t), name, bytes.NewReader(data), int64(len(data)))
			return err
		})
		winner := checkOneWinner(t, "PutIfAbsent race", name, errs, backend.ErrExists)
		got, _ := getAll(t, b, name)
		mustEqual(t, fmt.Sprintf("round %d: object vs the winner's bytes", round), got, payload(winner))
	}
}

// checkOneWinner asserts that exactly one error is nil and the rest wrap loss.
func checkOneWinner(t *testing.T, what, name string, errs []error, loss error) int {
	t.Helper()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("%s %s: writers %d and %d both won", what, name, winner, i)
		case err == nil:
			winner = i
		default:
			wantErr(t, fmt.Sprintf("%s %s: loser %d", what, name, i), err, loss, name)
		}
	}
	if winner < 0 {
		t.Fatalf("%s %s: nobody won: %v", what, name, errs)
	}
	return winner
}

func testCompareAndSwap(t *testing.T, b backend.Backend) {
	ctx := ctxOf(t)
	v0 := put(t, b, "cas", []byte("v0"))
	v1, err := b.CompareAndSwap(ctx, "cas", v0.Version, bytes.NewReader([]byte("v1 bytes")), 8)
	if err != nil {
		t.Fatalf("CompareAndSwap at the current version: %v", err)
	}
	checkInfo(t, "CompareAndSwap", v1, "cas", 8)
	if st, err := b.Stat(ctx, "cas"); err != nil || st.Version != v1.Version {
		t.Fatalf("Stat after CompareAndSwap: %+v, %v; CompareAndSwap said version %q", st, err, v1.Version)
	}
	_, err = b.CompareAndSwap(ctx, "cas", v0.Version, bytes.NewReader([]byte("stale")), 5)
	wantErr(t, "CompareAndSwap at a stale version", err, backend.ErrPreconditionFailed, "cas")
	_, err = b.CompareAndSwap(ctx, "cas", "no-such-version", bytes.NewReader([]byte("bogus")), 5)
	wantErr(t, "CompareAndSwap at a made-up version", err, backend.ErrPreconditionFailed, "cas")
	got, _ := getAll(t, b, "cas")
	mustEqual(t, "object after refused swaps", got, []byte("v1 bytes"))
	// The version Get reports can be swapped from, and a swap to an empty
	// object works.
	_, info := getAll(t, b, "cas")
	if _, err := b.CompareAndSwap(ctx, "cas", info.Version, bytes.NewReader(nil), 0); err != nil {
		t.Fatalf("CompareAndSwap at Get's version: %v", err)
	}
	got, _ = getAll(t, b, "cas")
	mustEqual(t, "object after swap to empty", got, nil)
	// A deleted object fails the precondition (and is not recreated).
	_, info = getAll(t, b, "cas")
	if err := b.Delete(ctx, "cas"); err != nil {
		t.Fatal(err)
	}
	_, err = b.CompareAndSwap(ctx, "cas", info.Version, bytes.NewReader([]byte("zombie")), 6)
	wantErr(t, "CompareAndSwap on a deleted object", err, backend.ErrPreconditionFailed, "cas")
	if _, err := b.Stat(ctx, "cas"); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("CompareAndSwap recreated a deleted object: Stat says %v", err)
	}
}

func testCompareAndSwapRace(t *testing.T, b backend.Backend) {
	const writers, rounds = 8, 3
	for round := range rounds {
		name := fmt.Sprintf("race/cas-%d", round)
		base := put(t, b, name, []byte("base"))
		payload := func(i int) []byte { return []byte(fmt.Sprintf("round %d swapper %d", round, i)) }
		errs := race(writers, func(i int) error {
			data := payload(i)
			_, err := b.CompareAndSwap(ctxOf(t), name, base.Version, bytes.NewReader(data), int64(len(data)))
			return err
		})
		winner := checkOneWinner(t, "CompareAndSwap race", name, errs, backend.ErrPreconditionFailed)
		got, _ := getAll(t, b, name)
		mustEqual(t, fmt.Sprintf("round %d: object vs the winner's bytes", round), got, payload(winner))
	}
}

// testCompareAndSwapCounter increments a counter object from several goroutines
// with read-modify-swap loops: any lost update shows as a wrong final count.
func testCompareAndSwapCounter(t *testing.T, b backend.Backend) {
	const workers, each = 4, 6
	put(t, b, "counter", []byte("0"))
	var conflicts atomic.Int64
	g, ctx := errgroup.WithContext(ctxOf(t))
	for range workers {
		g.Go(func() error {
			for done := 0; done < each; {
				data, info, err := backend.ReadAll(ctx, b, "counter")
				if err != nil {
					return err
				}
				n, err := strconv.Atoi(string(data))
				if err != nil {
					return fmt.Errorf("counter holds %q: %w", data, err)
				}
				next := []byte(strconv.Itoa(n + 1))
				_, err = b.CompareAndSwap(ctx, "counter", info.Version, bytes.NewReader(next), int64(len(next)))
				switch {
				case err == nil:
					done++
				case errors.Is(err, backend.ErrPreconditionFailed):
					conflicts.Add(1)
				default:
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	got, _ := getAll(t, b, "counter")
	if string(got) != strconv.Itoa(workers*each) {
		t.Fatalf("counter = %s after %d increments (%d conflicts retried): lost updates", got, workers*each, conflicts.Load())
	}
}

// largeSize is above the backend's multipart threshold and above minio-go's
// default part size (16 MiB), so the conditional-multipart trap of
// docs/object-storage.md §7.1 would show, and it leaves a short last part.
func largeSize(b backend.Backend) int {
	size := int64(17<<20) + 12345
	if th := b.Properties().MultipartThreshold; th > 0 && size <= th*3/2 {
		size = th*3/2 + 12345
	}
	return int(size)
}

func testLarge(t *testing.T, b backend.Backend) {
	ctx := ctxOf(t)
	size := largeSize(b)
	a, bb, c := randBytes(10, size), randBytes(11, size), randBytes(12, size)

	ia, err := b.PutIfAbsent(ctx, "large/x", bytes.NewReader(a), int64(size))
	if err != nil {
		t.Fatalf("PutIfAbsent of %d bytes: %v", size, err)
	}
	checkInfo(t, "PutIfAbsent large", ia, "large/x", int64(size))
	got, info := getAll(t, b, "large/x")
	mustEqual(t, "Get large", got, a)
	if info.Version != ia.Version {
		t.Fatalf("Get version %q, PutIfAbsent said %q", info.Version, ia.Version)
	}
	// Ranges across the part boundaries and at the end.
	offs := []int64{0, int64(size) - 7}
	if th := b.Properties().MultipartThreshold; th > 0 {
		for o := th - 3; o < int64(size)-7; o += th {
			offs = append(offs, o)
		}
	}
	for _, off := range offs {
		p := make([]byte, 7)
		if n, err := b.ReadAt(ctx, "large/x", p, off); err != nil || n != 7 {
			t.Fatalf("ReadAt(%d, 7) = %d, %v", off, n, err)
		}
		mustEqual(t, fmt.Sprintf("ReadAt(%d, 7)", off), p, a[off:off+7])
		rc, _, err := b.Get(ctx, "large/x", off, 7)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		mustEqual(t, fmt.Sprintf("Get(%d, 7)", off), got, a[off:off+7])
	}

	// The trap: a conditional create of a large object over an existing one
	// must fail and leave the object alone.
	_, err = b.PutIfAbsent(ctx, "large/x", bytes.NewReader(bb), int64(size))
	wantErr(t, "PutIfAbsent of a large object over an existing one", err, backend.ErrExists, "large/x")
	got, _ = getAll(t, b, "large/x")
	mustEqual(t, "large object after refused PutIfAbsent", got, a)
	_, err = b.CompareAndSwap(ctx, "large/x", "no-such-version", bytes.NewReader(bb), int64(size))
	wantErr(t, "CompareAndSwap of a large object at a wrong version", err, backend.ErrPreconditionFailed, "large/x")
	got, _ = getAll(t, b, "large/x")
	mustEqual(t, "large object after refused CompareAndSwap", got, a)
	ib, err := b.CompareAndSwap(ctx, "large/x", ia.Version, bytes.NewReader(bb), int64(size))
	if err != nil {
		t.Fatalf("CompareAndSwap of a large object at its version: %v", err)
	}
	got, _ = getAll(t, b, "large/x")
	mustEqual(t, "large object after CompareAndSwap", got, bb)
	// A small swap at a large object's version, and back.
	small, err := b.CompareAndSwap(ctx, "large/x", ib.Version, bytes.NewReader([]byte("small")), 5)
	if err != nil {
		t.Fatalf("CompareAndSwap large→small: %v", err)
	}
	if _, err := b.CompareAndSwap(ctx, "large/x", small.Version, bytes.NewReader(c), int64(size)); err != nil {
		t.Fatalf("CompareAndSwap small→large: %v", err)
	}

	// Races of large conditional writes: one winner each.
	payloads := [][]byte{a, bb, c}
	errs := race(3, func(i int) error {
		_, err := b.PutIfAbsent(ctxOf(t), "large/race", bytes.NewReader(payloads[i]), int64(size))
		return err
	})
	w := checkOneWinner(t, "large PutIfAbsent race", "large/race", errs, backend.ErrExists)
	got, base := getAll(t, b, "large/race")
	mustEqual(t, "large PutIfAbsent race: object vs the winner's bytes", got, payloads[w])
	// The swappers write bytes other than the current ones: on S3 an object
	// rewritten with its own bytes keeps its ETag, so a swap to them would let
	// a second swapper match too (value CAS, as documented).
	swaps := [][]byte{payloads[(w+1)%3], payloads[(w+2)%3], randBytes(13, size)}
	errs = race(3, func(i int) error {
		_, err := b.CompareAndSwap(ctxOf(t), "large/race", base.Version, bytes.NewReader(swaps[i]), int64(size))
		return err
	})
	w = checkOneWinner(t, "large CompareAndSwap race", "large/race", errs, backend.ErrPreconditionFailed)
	got, _ = getAll(t, b, "large/race")
	mustEqual(t, "large CompareAndSwap race: object vs the winner's bytes", got, swaps[w])

	// A plain Put of a large object replaces it.
	put(t, b, "large/race", a)
	got, _ = getAll(t, b, "large/race")
	mustEqual(t, "large Put over a large object", got, a)
}

// testAtomicVisibility has one writer replace an object many times while readers
// check that every read sees one complete version: version i is
// atomicSize(i) bytes, all equal to byte(i+1).
func testAtomicVisibility(t *testing.T, b backend.Backend) {
	const versions, readers = 24, 3
	atomicSize := func(i int) int { return 64<<10 + 4099*i }
	versionOf := func(size int64) (int, bool) {
		i := (int(size) - 64<<10) / 4099
		return i, i >= 0 && i < versions && int64(atomicSize(i)) == size
	}
	const name = "atomic/obj"
	ctx := ctxOf(t)
	var writing atomic.Bool
	writing.Store(true)
	var reads atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer writing.Store(false)
		for i := range versions {
			data := bytes.Repeat([]byte{byte(i + 1)}, atomicSize(i))
			if _, err := b.Put(gctx, name, bytes.NewReader(data), int64(len(data))); err != nil {
				return err
			}
		}
		return nil
	})
	for r := range readers {
		g.Go(func() error {
			for writing.Load() {
				switch r % 3 {
				case 0: // whole-object Get
					data, info, err := backend.ReadAll(gctx, b, name)
					if errors.Is(err, backend.ErrNotFound) {
						continue
					}
					if err != nil {
						return err
					}
					i, ok := versionOf(int64(len(data)))
					if !ok || info.Size != int64(len(data)) {
						return fmt.Errorf("whole-object read got %d bytes (info says %d): not a complete version", len(data), info.Size)
					}
					if k := firstOther(data, byte(i+1)); k >= 0 {
						return fmt.Errorf("whole-object read of version %d: byte %d is %d: a mix of versions", i, k, data[k])
					}
				case 1: // Stat
					info, err := b.Stat(gctx, name)
					if errors.Is(err, backend.ErrNotFound) {
						continue
					}
					if err != nil {
						return err
					}
					if _, ok := versionOf(info.Size); !ok {
						return fmt.Errorf("stat saw size %d: not a complete version", info.Size)
					}
				case 2: // ReadAt of the tail of the smallest version
					p := make([]byte, 4096)
					_, err := b.ReadAt(gctx, name, p, int64(atomicSize(0))-4096)
					if errors.Is(err, backend.ErrNotFound) {
						continue
					}
					if err != nil {
						return err
					}
					if k := firstOther(p, p[0]); k >= 0 || p[0] == 0 || int(p[0]) > versions {
						return fmt.Errorf("ReadAt read a mix of versions or zeros: p[0]=%d, p[%d] differs", p[0], k)
					}
				}
				reads.Add(1)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	got, _ := getAll(t, b, name)
	if len(got) != atomicSize(versions-1) || got[0] != versions {
		t.Fatalf("final object is %d bytes of %d, want version %d", len(got), got[0], versions-1)
	}
	t.Logf("%d checked reads during %d replacements", reads.Load(), versions)
}

// firstOther returns the index of the first byte of p that is not v, or -1.
func firstOther(p []byte, v byte) int {
	for i, c := range p {
		if c != v {
			return i
		}
	}
	return -1
}

// cancelAt is a put source that cancels its context when a read reaches half of
// it, then gives the backend a moment to notice before returning the bytes.
type cancelAt struct {
	data   []byte
	cancel context.CancelFunc
	once   sync.Once
}

func (c *cancelAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > int64(len(c.data))/2 {
		c.once.Do(func() {
			c.cancel()
			time.Sleep(50 * time.Millisecond)
		})
	}
	if off >= int64(len(c.data)) {
		return 0, io.EOF
	}
	n := copy(p, c.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func testCancellation(t *testing.T, b backend.Backend) {
	ctx := ctxOf(t)
	put(t, b, "cancel/existing", []byte("existing"))

	dead, cancel := context.WithCancel(ctx)
	cancel()
	data := []byte("never stored")
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("%s with a cancelled context: %v, want context.Canceled", what, err)
		}
	}
	_, err := b.Put(dead, "cancel/new", bytes.NewReader(data), int64(len(data)))
	check("Put", err)
	_, err = b.PutIfAbsent(dead, "cancel/new", bytes.NewReader(data), int64(len(data)))
	check("PutIfAbsent", err)
	st, err := b.Stat(ctx, "cancel/existing")
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.CompareAndSwap(dead, "cancel/existing", st.Version, bytes.NewReader(data), int64(len(data)))
	check("CompareAndSwap", err)
	_, _, err = b.Get(dead, "cancel/existing", 0, -1)
	check("Get", err)
	_, err = b.ReadAt(dead, "cancel/existing", make([]byte, 3), 0)
	check("ReadAt", err)
	_, err = b.Stat(dead, "cancel/existing")
	check("Stat", err)
	err = b.List(dead, "cancel/", func(backend.ObjectInfo) error { return nil })
	check("List", err)
	err = b.Delete(dead, "cancel/existing")
	check("Delete", err)
	if _, err := b.Stat(ctx, "cancel/new"); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("a cancelled Put published the object: Stat says %v", err)
	}
	got, _ := getAll(t, b, "cancel/existing")
	mustEqual(t, "object after cancelled CompareAndSwap and Delete", got, []byte("existing"))

	// Cancelled half way through the source: nothing, or (had the backend
	// already committed) the complete object; never a part of it.
	for _, size := range []int{1 << 20, largeSize(b)} {
		name := fmt.Sprintf("cancel/mid-%d", size)
		src := randBytes(20, size)
		mctx, mcancel := context.WithCancel(ctx)
		_, err := b.Put(mctx, name, &cancelAt{data: src, cancel: mcancel}, int64(size))
		mcancel()
		check(fmt.Sprintf("Put of %d bytes cancelled half way", size), err)
		rc, info, err := b.Get(ctx, name, 0, -1)
		switch {
		case errors.Is(err, backend.ErrNotFound):
		case err != nil:
			t.Fatal(err)
		default:
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
			if info.Size != int64(size) {
				t.Fatalf("a Put cancelled half way left a %d-byte object of %d", info.Size, size)
			}
			mustEqual(t, "object of a Put cancelled after it committed", got, src)
		}
	}

	// Cancelled while reading: the stream fails with ctx's error, it does not
	// end early as if complete.
	big := randBytes(21, largeSize(b))
	put(t, b, "cancel/big", big)
	rctx, rcancel := context.WithCancel(ctx)
	rc, _, err := b.Get(rctx, "cancel/big", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 1<<20)
	if _, err := io.ReadFull(rc, head); err != nil {
		t.Fatal(err)
	}
	rcancel()
	n, err := io.Copy(io.Discard, rc)
	rc.Close()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("reading on after cancel: %d more bytes, then %v; want context.Canceled", n, err)
	}

	// Cancelled during List.
	put(t, b, "cancel/l1", nil)
	put(t, b, "cancel/l2", nil)
	lctx, lcancel := context.WithCancel(ctx)
	calls := 0
	err = b.List(lctx, "cancel/", func(backend.ObjectInfo) error {
		calls++
		lcancel()
		return nil
	})
	check("List cancelled by its callback", err)
	if calls != 1 {
		t.Fatalf("List called fn %d times after its context was cancelled in the first call", calls)
	}
}

// shortReader holds fewer bytes than the size given to Put.
type shortReader struct{ data []byte }

func (s shortReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(s.data)) {
		return 0, io.EOF
	}
	n := copy(p, s.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// failingReader fails after some bytes.
type failingReader struct{ ok int64 }

var errSource = errors.New("source read failed")

func (f failingReader) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.ok {
		return 0, errSource
	}
	return len(p), nil
}

func testShortSource(t *testing.T, b backend.Backend) {
	ctx := ctxOf(t)
	for _, size := range []int{1000, largeSize(b)} {
		name := fmt.Sprintf("short-%d", size)
		_, err := b.Put(ctx, name, shortReader{make([]byte, size/2)}, int64(size))
		if err == nil || backend.IsTransient(err) {
			t.Fatalf("Put of %d bytes from a source of %d: %v, want a permanent error", size, size/2, err)
		}
		_, err = b.PutIfAbsent(ctx, name, failingReader{int64(size / 3)}, int64(size))
		if !errors.Is(err, errSource) || backend.IsTransient(err) {
			t.Fatalf("PutIfAbsent from a failing source: %v, want a permanent error wrapping the source's", err)
		}
		if _, err := b.Stat(ctx, name); !errors.Is(err, backend.ErrNotFound) {
			t.Fatalf("a Put from a short or failing source published something: Stat says %v", err)
		}
	}
	if _, err := b.Put(ctx, "neg", bytes.NewReader(nil), -1); err == nil {
		t.Fatal("Put with size -1 succeeded")
	}
}

func testProperties(t *testing.T, b backend.Backend) {
	p := b.Properties()
	if p.Kind == "" || p.Location == "" || p.Connections <= 0 {
		t.Fatalf("Properties %+v: Kind, Location and Connections must be set", p)
	}
}
