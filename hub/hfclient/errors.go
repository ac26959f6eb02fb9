package hfclient

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Error classes. Every *Error wraps at most one of them, so callers classify
// with errors.Is.
var (
	// ErrRepoNotFound: the repository does not exist or the token may not see
	// it (X-Error-Code RepoNotFound, §1.6).
	ErrRepoNotFound = errors.New("repository not found")
	// ErrRevisionNotFound: the repository exists, the revision does not.
	ErrRevisionNotFound = errors.New("revision not found")
	// ErrEntryNotFound: the path is not a file of the revision.
	ErrEntryNotFound = errors.New("file not found")
	// ErrUnauthorized: 401 (no token, or a token the server does not accept).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrForbidden: 403 (the token lacks the permission, or the repo is gated
	// or disabled).
	ErrForbidden = errors.New("forbidden")
	// ErrHashMismatch: content did not have the size or hash the server listed.
	ErrHashMismatch = errors.New("content does not match its listed hash")
	// ErrProtocol: the server answered something this client cannot use (a
	// malformed body, a wrong Content-Range, a Xet-only transfer).
	ErrProtocol = errors.New("unexpected server response")
)

// Error is a failed request, or a response the client could not use.
type Error struct {
	Op     string // what the client was doing: "list files", "download", "commit", …
	Method string
	URL    string // without query string (upload URLs carry signatures there)
	Repo   string
	Path   string // the file, when one is involved
	Status int    // HTTP status; 0 when no response arrived
	// Code and Message are the X-Error-Code and X-Error-Message headers;
	// Detail the body's error text.
	Code, Message, Detail string
	RequestID             string
	// Attempts is how many times the request was sent.
	Attempts int
	Err      error // the class (ErrRepoNotFound, …) or the transport error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("hf: ")
	b.WriteString(e.Op)
	if e.Repo != "" {
		b.WriteString(" ")
		b.WriteString(e.Repo)
		if e.Path != "" {
			b.WriteString(": ")
			b.WriteString(e.Path)
		}
	}
	b.WriteString(": ")
	switch {
	case e.Status != 0:
		fmt.Fprintf(&b, "%s %s: %d %s", e.Method, e.URL, e.Status, http.StatusText(e.Status))
		if e.Code != "" {
			fmt.Fprintf(&b, " (%s)", e.Code)
		}
		msg := e.Detail
		if msg == "" {
			msg = e.Message
		}
		if msg != "" {
			b.WriteString(": ")
			b.WriteString(msg)
		}
		if e.Err != nil && !isClass(e.Err) {
			b.WriteString(": ")
			b.WriteString(e.Err.Error())
		}
	case e.Err != nil:
		if e.Method != "" {
			fmt.Fprintf(&b, "%s %s: ", e.Method, e.URL)
		}
		b.WriteString(e.Err.Error())
	}
	if hint := e.hint(); hint != "" {
		b.WriteString(" (")
		b.WriteString(hint)
		b.WriteString(")")
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " [after %d attempts]", e.Attempts)
	}
	return b.String()
}

func (e *Error) hint() string {
	switch {
	case errors.Is(e.Err, ErrUnauthorized) || (errors.Is(e.Err, ErrRepoNotFound) && e.Status == http.StatusUnauthorized):
		return "check HF_TOKEN or the token file, and HF_ENDPOINT"
	case errors.Is(e.Err, ErrForbidden):
		return "the token lacks permission for this repository"
	}
	return ""
}

func (e *Error) Unwrap() error { return e.Err }

func isClass(err error) bool {
	for _, c := range []error{ErrRepoNotFound, ErrRevisionNotFound, ErrEntryNotFound, ErrUnauthorized, ErrForbidden, ErrHashMismatch, ErrProtocol} {
		if err == c {
			return true
		}
	}
	return false
}

// IsPermanent reports whether err will not go away by retrying: a 4xx other
// than 408 and 429, a hash mismatch, a protocol error.
func IsPermanent(err error) bool {
	for _, c := range []error{ErrRepoNotFound, ErrRevisionNotFound, ErrEntryNotFound, ErrUnauthorized, ErrForbidden, ErrHashMismatch, ErrProtocol} {
		if errors.Is(err, c) {
			return true
		}
	}
	var e *Error
	return errors.As(err, &e) && e.Status >= 400 && e.Status < 500 && e.Status != http.StatusRequestTimeout && e.Status != http.StatusTooManyRequests
}

// maxErrorBody bounds what is read of an error response.
const maxErrorBody = 64 << 10

// responseError builds the *Error for a response with a status the caller did
// not accept, reading (a bounded part of) its body. It does not close the body.
func responseError(resp *http.Response, op, repo, path string) *Error {
	e := &Error{
		Op: op, Method: resp.Request.Method, URL: redactURL(resp.Request.URL.String()),
		Repo: repo, Path: path, Status: resp.StatusCode,
		Code:      resp.Header.Get("X-Error-Code"),
		Message:   resp.Header.Get("X-Error-Message"),
		RequestID: resp.Header.Get("X-Request-Id"),
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e.Detail = errorDetail(resp.Header.Get("Content-Type"), body)
	e.Err = classify(resp.StatusCode, e.Code, e.Message)
	return e
}

// classify maps a status and the error headers to an error class, as
// huggingface_hub's hf_raise_for_status does (§1.6), or nil.
func classify(status int, code, message string) error {
	switch code {
	case "RevisionNotFound":
		return ErrRevisionNotFound
	case "EntryNotFound":
		return ErrEntryNotFound
	case "RepoNotFound":
		return ErrRepoNotFound
	case "GatedRepo":
		return ErrForbidden
	}
	if message == "Access to this resource is disabled." {
		return ErrForbidden
	}
	switch status {
	case http.StatusUnauthorized:
		return ErrUnauthorized
	case http.StatusForbidden:
		return ErrForbidden
	}
	return nil
}

// errorDetail extracts the message of an error body: JSON "error" (a string
// or a list), "error_description", "message", "errors[].message", or short
// plain text.
func errorDetail(contentType string, body []byte) string {
	var j struct {
		Error            json.RawMessage `json:"error"`
		ErrorDescription string          `json:"error_description"`
		Message          string          `json:"message"`
		Errors           []struct {
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(body, &j); err == nil {
		var parts []string
		var s string
		var list []string
		switch {
		case json.Unmarshal(j.Error, &s) == nil && s != "":
			parts = append(parts, s)
		case json.Unmarshal(j.Error, &list) == nil:
			parts = append(parts, list...)
		}
		if j.ErrorDescription != "" {
			parts = append(parts, j.ErrorDescription)
		}
		if j.Message != "" && len(parts) == 0 {
			parts = append(parts, j.Message)
		}
		for _, e := range j.Errors {
			if e.Message != "" {
				parts = append(parts, e.Message)
			}
		}
		return truncate(strings.Join(parts, "; "))
	}
	if strings.Contains(contentType, "html") {
		return ""
	}
	return truncate(strings.TrimSpace(string(body)))
}

func truncate(s string) string {
	const max = 500
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

// redactURL drops the query string: signed upload URLs carry their signature
// there, and errors end up in logs.
func redactURL(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i]
	}
	return u
}
