package hub

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the server's Prometheus metrics. Labels are bounded: route is
// one of the route constants (never a repo or path), method is folded to
// the methods the API uses, code is the status code.
type metrics struct {
	registry *prometheus.Registry
	handler  http.Handler

	requests  *prometheus.CounterVec   // route, method, code
	duration  *prometheus.HistogramVec // route, method
	inFlight  prometheus.Gauge
	bytesIn   *prometheus.CounterVec // route
	bytesOut  *prometheus.CounterVec // route
	objects   *prometheus.CounterVec // result
	objBytes  prometheus.Counter
	commits   *prometheus.CounterVec // result
	authFails *prometheus.CounterVec // reason
}

func newMetrics(reg *prometheus.Registry, st *staging) *metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	const ns = "heft_hub"
	m := &metrics{
		registry: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "requests_total",
			Help: "HTTP requests by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "request_duration_seconds",
			Help: "Time from request start to the end of the response, by route pattern and method.",
			// From a cached HEAD (sub-millisecond) to a multi-gigabyte
			// transfer (minutes).
			Buckets: []float64{.001, .005, .025, .1, .5, 2.5, 10, 60, 300, 1800},
		}, []string{"route", "method"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Name: "requests_in_flight",
			Help: "Requests being served.",
		}),
		bytesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "request_body_bytes_total",
			Help: "Request body bytes read, by route pattern.",
		}, []string{"route"}),
		bytesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "response_body_bytes_total",
			Help: "Response body bytes written, by route pattern.",
		}, []string{"route"}),
		objects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "upload_objects_total",
			Help: "Objects handed to the store (stored), found already stored (present), or refused (mismatch, error).",
		}, []string{"result"}),
		objBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "upload_object_bytes_total",
			Help: "Bytes of objects stored through uploads and inline commit files.",
		}),
		commits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "commits_total",
			Help: "Commit requests by result (ok, conflict, rejected, error).",
		}, []string{"result"}),
		authFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "auth_failures_total",
			Help: "Requests refused by authentication or authorization, by reason.",
		}, []string{"reason"}),
	}
	staged := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: ns, Name: "staging_bytes",
		Help: "Bytes staged (or reserved) by multipart uploads awaiting completion.",
	}, func() float64 { return float64(st.Used()) })
	reg.MustRegister(m.requests, m.duration, m.inFlight, m.bytesIn, m.bytesOut, m.objects, m.objBytes, m.commits, m.authFails, staged)
	m.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
	return m
}

// methodLabel folds methods outside the API's to "other", so that a client
// cannot grow the label set.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}

func (m *metrics) observe(route, method string, status int, in, out int64, d time.Duration) {
	method = methodLabel(method)
	m.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(route, method).Observe(d.Seconds())
	if in > 0 {
		m.bytesIn.WithLabelValues(route).Add(float64(in))
	}
	if out > 0 {
		m.bytesOut.WithLabelValues(route).Add(float64(out))
	}
}

// serveMetrics answers GET /metrics in the Prometheus exposition format.
// It needs a token (any grant) unless anonymous reads are on: the metrics
// name no repos, but they describe the server's traffic.
func (h *Handler) serveMetrics(w http.ResponseWriter, r *http.Request) {
	if !h.anonymousRead {
		if id, ok := IdentityFrom(r.Context()); !ok || len(id.Grants) == 0 {
			h.metrics.authFails.WithLabelValues("anonymous").Inc()
			writeError(w, http.StatusUnauthorized, "", msgAuthRequired, "Authentication required: send Authorization: Bearer <token>")
			return
		}
	}
	h.metrics.handler.ServeHTTP(w, r)
}
