package hub

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
)

// X-Error-Code values. Python's hf_raise_for_status maps them to exception
// classes (RevisionNotFoundError, EntryNotFoundError, …) and transformers and
// vLLM rely on EntryNotFound for optional files (§1.6). They must be explicit:
// on an http:// endpoint the client's 401 → RepoNotFound fallback never fires.
const (
	codeRepoNotFound     = "RepoNotFound"
	codeRevisionNotFound = "RevisionNotFound"
	codeEntryNotFound    = "EntryNotFound"
)

// X-Error-Message values, fixed strings so that nothing from the request
// ends up in a header; details go in the JSON body. Python appends both to
// its exception message.
const (
	msgRepoNotFound     = "Repository not found"
	msgRevisionNotFound = "Invalid rev id"
	msgEntryNotFound    = "Entry not found"
	// msgInvalidCredentials is the exact text Python special-cases for a
	// 401 (it then does not assume a missing repo).
	msgInvalidCredentials = "Invalid credentials in Authorization header"
	// msgAuthRequired answers an anonymous request where a token is
	// needed and no repository is involved.
	msgAuthRequired = "Authentication required"
	// msgForbidden answers a token that lacks the needed grant.
	msgForbidden = "Forbidden"
)

// writeJSON sends v as a JSON response with an explicit Content-Length.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Only our own response types are marshalled; they always encode.
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	body = append(body, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

// writeError sends the error shape both clients parse: X-Error-Code and
// X-Error-Message headers and a JSON body {"error": "..."} (§1.6). code may
// be empty for errors no client branches on.
func writeError(w http.ResponseWriter, status int, code, headerMsg, detail string) {
	h := w.Header()
	if code != "" {
		h.Set("X-Error-Code", code)
	}
	if headerMsg != "" {
		h.Set("X-Error-Message", headerMsg)
	}
	if detail == "" {
		detail = headerMsg
	}
	if detail == "" {
		detail = http.StatusText(status)
	}
	writeJSON(w, status, map[string]string{"error": detail})
}

// failRepos answers a Repos error: the three sentinels become 404s with
// their X-Error-Code, anything else a 500 whose cause goes to the request
// log (not to the client).
func failRepos(w http.ResponseWriter, r *http.Request, err error, repo, rev string) {
	switch {
	case errors.Is(err, ErrRepoNotFound):
		writeError(w, http.StatusNotFound, codeRepoNotFound, msgRepoNotFound, "Repository not found: "+repo)
	case errors.Is(err, ErrRevisionNotFound):
		writeError(w, http.StatusNotFound, codeRevisionNotFound, msgRevisionNotFound, "Invalid rev id: "+rev)
	case errors.Is(err, ErrEntryNotFound):
		writeError(w, http.StatusNotFound, codeEntryNotFound, msgEntryNotFound, "")
	default:
		noteError(r, err)
		writeError(w, http.StatusInternalServerError, "", "", "Internal server error")
	}
}
