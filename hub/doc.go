// Package hub speaks the Hugging Face Hub HTTP protocol, so that heft can stand
// in for huggingface.co as an HF_ENDPOINT (`heft serve`).
//
// This file set is the read side: [NewHandler] returns an http.Handler that
// answers what huggingface_hub (0.3x, 1.x, 2.x), @huggingface/hub and
// hf_transfer call to list and download a model — repo and revision info,
// tree listings, paths-info, resolve (HEAD and GET, with Range), raw, model
// listing and whoami-v2. The wire rules it follows, and why, are in
// shared/docs/hub-protocol.md; section numbers in comments (§2.1, …) refer to
// it.
//
// The handler reads through [Repos], a small interface declared here (the
// store implements it through an adapter, so this package does not import
// store). File bytes are streamed from [FileReader] through an
// io.SectionReader; nothing is ever staged whole in memory or on disk.
// Package hubtest holds an in-memory Repos and a conformance check that any
// implementation can run.
//
// Authentication is a hook ([Options.Auth], a [Middleware]); this package
// does no token checks itself. [Serve] runs a handler with graceful shutdown.
package hub
