package store

import (
	"strings"
	"testing"
)

func TestLineage(t *testing.T) {
	s := TestStore(t, smallChunks)
	f, err := s.IngestFile(ctx, "config.json", strings.NewReader("{}"), 2, IngestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	files := []ManifestEntry{{Path: "config.json", File: f.ID}}
	commit := func(ref, op string, inputs ...ID) ID {
		t.Helper()
		id, err := s.Commit(ctx, CommitRequest{Ref: mustRef(t, ref), Files: files, Message: ref, Provenance: Provenance{Op: op, Source: "src", Inputs: inputs}})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	base := commit("org/base", "import")
	fp8 := commit("org/fp8", "quantize", base)
	bridge := commit("org/bridge", "dequant", fp8)
	tuned := commit("org/tuned", "import")
	adapter := commit("org/adapter", "lora-extract", base, tuned)
	merged := commit("org/merged", "lora-merge", fp8, adapter)

	g, err := s.Lineage("org/fp8")
	if err != nil {
		t.Fatal(err)
	}
	rel := map[[2]ID]string{}
	for _, e := range g.Edges {
		rel[[2]ID{e.From, e.To}] = e.Relation
	}
	want := map[[2]ID]string{
		{base, fp8}:   "quantized from",
		{fp8, bridge}: "dequantized from",
		{fp8, merged}: "merged from",
	}
	for k, v := range want {
		if rel[k] != v {
			t.Errorf("edge %s→%s: %q, want %q", k[0].Short(), k[1].Short(), rel[k], v)
		}
	}
	if len(g.Edges) != len(want) {
		t.Errorf("edges %v, want %d", g.Edges, len(want))
	}
	// The adapter is upstream of merged, not part of fp8's lineage.
	for _, n := range g.Nodes {
		if n.Commit == adapter || n.Commit == tuned {
			t.Errorf("node %s should not be in fp8's lineage", n.Refs)
		}
	}
	g, err = s.Lineage("org/merged")
	if err != nil {
		t.Fatal(err)
	}
	// base→fp8, fp8→merged, adapter→merged, base→adapter, tuned→adapter.
	if len(g.Edges) != 5 {
		t.Errorf("merged lineage edges: %+v", g.Edges)
	}
}
