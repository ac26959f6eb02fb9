package store

import (
	"errors"
	"fmt"
	"slices"
	"sort"
)

// LineageNode is one commit of a derivation graph.
type LineageNode struct {
	Commit ID                `json:"commit"`
	Refs   []string          `json:"refs,omitempty"` // refs whose head is this commit
	Op     string            `json:"op"`
	Source string            `json:"source,omitempty"`
	Params map[string]string `json:"params,omitempty"`
	Time   string            `json:"time"`
	// Gone is set for an input commit that is no longer stored (its refs were
	// deleted and gc ran); only its id is known.
	Gone bool `json:"gone,omitempty"`
}

// LineageEdge says that To was derived from From.
type LineageEdge struct {
	From     ID     `json:"from"`
	To       ID     `json:"to"`
	Relation string `json:"relation"` // "quantized from", "dequantized from", …
}

// Lineage is the derivation graph around one commit: every commit it was derived
// from (transitively, through provenance inputs) and every commit in the store
// derived from it.
type Lineage struct {
	Root  ID            `json:"root"`
	Nodes []LineageNode `json:"nodes"`
	Edges []LineageEdge `json:"edges"`
}

// relationOf names the edge from an input to a commit made by op.
func relationOf(op string) string {
	switch op {
	case "quantize":
		return "quantized from"
	case "dequant":
		return "dequantized from"
	case "lora-extract":
		return "extracted from"
	case "lora-merge":
		return "merged from"
	case "import", "pull", "upload":
		return "delta-coded against"
	}
	return op + " of"
}

// Lineage builds the derivation graph of ref.
func (s *Store) Lineage(ref string) (*Lineage, error) {
	root, err := s.Resolve(ref)
	if err != nil {
		return nil, err
	}
	release, err := s.hold()
	defer release()
	if err != nil {
		return nil, err
	}
	refs, err := s.Refs()
	if err != nil {
		return nil, err
	}
	headRefs := map[ID][]string{}
	for _, r := range refs {
		headRefs[r.Commit] = append(headRefs[r.Commit], r.Ref.String())
	}
	commits := map[ID]*Commit{}
	load := func(id ID) (*Commit, error) {
		if c, ok := commits[id]; ok {
			return c, nil
		}
		c, err := s.LoadCommit(id)
		if err != nil {
			return nil, fmt.Errorf("commit %s: %w", id.Short(), err)
		}
		commits[id] = c
		return c, nil
	}
	// Every commit of every ref's history, for the downstream direction.
	all := map[ID]bool{}
	for _, r := range refs {
		for stack := []ID{r.Commit}; len(stack) > 0; {
			id := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if all[id] {
				continue
			}
			all[id] = true
			c, err := load(id)
			if err != nil {
				return nil, err
			}
			stack = append(stack, c.Parents...)
		}
	}
	derived := map[ID][]ID{} // input → commits made from it
	for id := range all {
		for _, in := range commits[id].Provenance.Inputs {
			derived[in] = append(derived[in], id)
		}
	}
	g := &Lineage{Root: root}
	inGraph := map[ID]bool{}
	edges := map[[2]ID]bool{}
	addNode := func(id ID) error {
		if inGraph[id] {
			return nil
		}
		c, err := load(id)
		if errors.Is(err, ErrIntegrity) && !all[id] {
			inGraph[id] = true
			commits[id] = &Commit{}
			g.Nodes = append(g.Nodes, LineageNode{Commit: id, Gone: true})
			return nil
		}
		if err != nil {
			return err
		}
		inGraph[id] = true
		names := slices.Clone(headRefs[id])
		sort.Strings(names)
		g.Nodes = append(g.Nodes, LineageNode{Commit: id, Refs: names, Op: c.Provenance.Op, Source: c.Provenance.Source, Params: c.Provenance.Params, Time: c.Time})
		return nil
	}
	addEdge := func(from, to ID) {
		if !edges[[2]ID{from, to}] {
			edges[[2]ID{from, to}] = true
			g.Edges = append(g.Edges, LineageEdge{From: from, To: to, Relation: relationOf(commits[to].Provenance.Op)})
		}
	}
	// Upstream: provenance inputs, transitively.
	seenUp := map[ID]bool{}
	for queue := []ID{root}; len(queue) > 0; queue = queue[1:] {
		id := queue[0]
		if seenUp[id] {
			continue
		}
		seenUp[id] = true
		if err := addNode(id); err != nil {
			return nil, err
		}
		for _, in := range commits[id].Provenance.Inputs {
			if err := addNode(in); err != nil {
				return nil, err
			}
			addEdge(in, id)
			queue = append(queue, in)
		}
	}
	// Downstream: commits derived from the root, transitively.
	seenDown := map[ID]bool{}
	for queue := []ID{root}; len(queue) > 0; queue = queue[1:] {
		id := queue[0]
		if seenDown[id] {
			continue
		}
		seenDown[id] = true
		for _, d := range derived[id] {
			if err := addNode(d); err != nil {
				return nil, err
			}
			addEdge(id, d)
			queue = append(queue, d)
		}
	}
	sort.Slice(g.Edges, func(i, j int) bool {
		a, b := g.Edges[i], g.Edges[j]
		if a.To != b.To {
			return a.To.String() < b.To.String()
		}
		return a.From.String() < b.From.String()
	})
	return g, nil
}
