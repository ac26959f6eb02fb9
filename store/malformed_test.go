package store

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// malformedCases derive broken files from a valid header; each must be rejected with
// a message naming the file (and the tensor where one is at fault).
func malformedCases() map[string]struct {
	file   func() []byte
	tensor string // expected in the message, "" when no tensor is at fault
} {
	header := func(json string, data int) []byte {
		for len(json)%8 != 0 {
			json += " "
		}
		b := make([]byte, 8, 8+len(json)+data)
		binary.LittleEndian.PutUint64(b, uint64(len(json)))
		b = append(b, json...)
		return append(b, make([]byte, data)...)
	}
	ok := `"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}`
	type c = struct {
		file   func() []byte
		tensor string
	}
	return map[string]c{
		"header beyond file":  {func() []byte { b := header("{"+ok+"}", 8); binary.LittleEndian.PutUint64(b, 1<<20); return b }, ""},
		"header too large":    {func() []byte { b := header("{"+ok+"}", 8); binary.LittleEndian.PutUint64(b, 100_000_001); return b }, ""},
		"not json":            {func() []byte { return header("{nope", 0) }, ""},
		"not starting with {": {func() []byte { return header(`["w"]`, 0) }, ""},
		"overlap": {func() []byte {
			return header(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, 12)
		}, "b"},
		"gap": {func() []byte {
			return header(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}`, 12)
		}, "b"},
		"out of bounds":  {func() []byte { return header(`{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, 8) }, ""},
		"trailing bytes": {func() []byte { return header("{"+ok+"}", 12) }, ""},
		"size mismatch":  {func() []byte { return header(`{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, 8) }, "w"},
		"unknown dtype":  {func() []byte { return header(`{"w":{"dtype":"F128","shape":[1],"data_offsets":[0,8]}}`, 8) }, "w"},
		"negative dim":   {func() []byte { return header(`{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, 8) }, "w"},
		"duplicate name": {func() []byte {
			return header(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8)
		}, "w"},
		"metadata not strings": {func() []byte { return header(`{"__metadata__":{"format":1},`+ok+`}`, 8) }, ""},
	}
}

func TestMalformedInputLeavesStoreUnchanged(t *testing.T) {
	s := TestStore(t, smallChunks)
	base, _, _, _ := family(t, testCfg())
	importDir(t, s, base, "org/base")
	refsBefore, _ := os.ReadFile(filepath.Join(s.Dir(), "refs"))
	physBefore := packBytesOnDisk(t, s)
	for name, tc := range malformedCases() {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			// A valid big file first, so a late failure would have stored data.
			blob := make([]byte, 1<<20)
			for i := range blob {
				blob[i] = byte(i * 7)
			}
			os.WriteFile(filepath.Join(dir, "a-blob.bin"), blob, 0o644)
			bad := filepath.Join(dir, "model-bad.safetensors")
			if err := os.WriteFile(bad, tc.file(), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := s.Import(ctx, dir, ImportOptions{Ref: mustRef(t, "org/bad")})
			wantErr(t, err, ErrInput)
			msg := err.Error()
			if !strings.Contains(msg, "model-bad.safetensors") {
				t.Errorf("message does not name the file: %s", msg)
			}
			if tc.tensor != "" && !strings.Contains(msg, `"`+tc.tensor+`"`) {
				t.Errorf("message does not name tensor %q: %s", tc.tensor, msg)
			}
			refsAfter, _ := os.ReadFile(filepath.Join(s.Dir(), "refs"))
			if string(refsAfter) != string(refsBefore) {
				t.Errorf("refs changed")
			}
			if got := packBytesOnDisk(t, s); got != physBefore {
				t.Errorf("physical bytes %d → %d", physBefore, got)
			}
		})
	}
}
