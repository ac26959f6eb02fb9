package hub_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heft-dev/heft/hub"
)

func TestMetricsAndLogs(t *testing.T) {
	e := newWriteEnv(t, nil)
	e.createRepo("acme/m")
	data := randomBytes(20, 5000)
	e.upload("acme/m", data)
	e.commit("acme/m", "main", ndjson(header("m"), lfsLine("w.bin", data)))
	e.download("acme/m", "main", "w.bin")
	e.call(http.MethodGet, "/api/models/acme/nope", "alice", "", nil)
	e.call(http.MethodGet, "/api/models/acme/m", "Bearer heft_nope", "", nil)

	resp, body := e.call(http.MethodGet, "/metrics", "", "", nil)
	expect(t, "anonymous /metrics", resp, body, 401, "")
	resp, body = e.call(http.MethodGet, "/metrics", "reader", "", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, body)
	}
	text := string(body)
	for _, want := range []string{
		`heft_hub_requests_total{code="200",method="GET",route="resolve"} 1`,
		`heft_hub_requests_total{code="200",method="PUT",route="lfs_upload"} 1`,
		`heft_hub_requests_total{code="200",method="POST",route="api_commit"} 1`,
		`heft_hub_requests_total{code="404",method="GET",route="api_model_info"} 1`,
		`heft_hub_requests_total{code="401",method="GET",route="other"} 1`,
		`heft_hub_request_duration_seconds_bucket{method="POST",route="lfs_batch",le="+Inf"} 1`,
		`heft_hub_request_body_bytes_total{route="lfs_upload"} 5000`,
		`heft_hub_response_body_bytes_total{route="resolve"} 5000`,
		`heft_hub_upload_objects_total{result="stored"} 2`, // the new repo's .gitattributes and the upload
		`heft_hub_commits_total{result="ok"} 1`,
		`heft_hub_auth_failures_total{reason="invalid_token"} 1`,
		`heft_hub_requests_in_flight 1`, // this request
		`heft_hub_staging_bytes 0`,
		`go_goroutines`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// One log record per request, with route, user and sizes; upload URL
	// signatures stay out of the log.
	var put map[string]any
	for _, rec := range e.logs.records(t) {
		if rec["route"] == "lfs_upload" {
			put = rec
		}
		if q, _ := rec["query"].(string); strings.Contains(q, "sig=") {
			t.Errorf("a signature was logged: %v", rec)
		}
	}
	if put == nil || put["user"] != "alice" || put["bytes_in"] != float64(5000) || put["status"] != float64(200) || put["repo"] != "acme/m" || put["method"] != "PUT" {
		t.Errorf("upload log record %v", put)
	}
}

// TestServeGraceExpires: a request still running when the grace period
// ends is cut, and ServeListenerGrace returns.
func TestServeGraceExpires(t *testing.T) {
	started := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done() // until the server cuts the connection
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- hub.ServeListenerGrace(ctx, ln, h, 100*time.Millisecond) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	<-started
	start := time.Now()
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("ServeListenerGrace: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeListenerGrace did not return after the grace period")
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("returned after %v, before the grace period", d)
	}
	if _, err := io.ReadAll(resp.Body); err == nil || errors.Is(err, io.EOF) {
		t.Errorf("the cut response ended cleanly: %v", err)
	}
	resp.Body.Close()
}
