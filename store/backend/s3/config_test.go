package s3

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/heft-dev/heft/store/backend"
)

func TestParseURL(t *testing.T) {
	cfg, err := ParseURL("s3://my-bucket/stores/team-a/?endpoint=http://127.0.0.1:9000&region=eu-west-1&addressing=path&part-size=32MiB&part-concurrency=8&max-attempts=3&consistent-list=true&unsigned-payload=1&profile=ci")
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Bucket: "my-bucket", Prefix: "stores/team-a", Endpoint: "http://127.0.0.1:9000", Region: "eu-west-1",
		Addressing: "path", PartSize: 32 << 20, PartConcurrency: 8, MaxAttempts: 3, ConsistentList: true, UnsignedPayload: true, Profile: "ci"}
	if cfg.String() != want.String() || cfg.Bucket != want.Bucket || cfg.Prefix != want.Prefix || cfg.Endpoint != want.Endpoint ||
		cfg.Region != want.Region || cfg.Addressing != want.Addressing || cfg.PartSize != want.PartSize ||
		cfg.PartConcurrency != want.PartConcurrency || cfg.MaxAttempts != want.MaxAttempts ||
		cfg.ConsistentList != want.ConsistentList || cfg.UnsignedPayload != want.UnsignedPayload || cfg.Profile != want.Profile {
		t.Fatalf("ParseURL = %+v, want %+v", cfg, want)
	}
	if cfg, err := ParseURL("s3://bucket"); err != nil || cfg.Prefix != "" || cfg.Bucket != "bucket" {
		t.Fatalf("ParseURL(s3://bucket) = %+v, %v", cfg, err)
	}
	for _, bad := range []string{
		"http://bucket/x", "s3:///prefix", "s3://ab", "s3://Bucket", "s3://-bucket", "s3://bucket_1",
		"s3://bucket/a//b", "s3://bucket/.hidden", "s3://bucket?colour=blue", "s3://bucket?part-size=1MiB",
		"s3://bucket?part-size=lots", "s3://bucket?addressing=dns", "s3://bucket?insecure=maybe",
		"s3://bucket?max-attempts=0", "s3://bucket?region=a&region=b", "s3://key:secret@bucket/x",
	} {
		if _, err := ParseURL(bad); err == nil {
			t.Errorf("ParseURL(%q) succeeded", bad)
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("ParseURL(%q) error leaks the secret: %v", bad, err)
		}
	}
}

func TestResolve(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "config")
	if err := os.WriteFile(cfgFile, []byte("[default]\nregion = us-west-2\n\n[profile ci]\nregion = eu-central-1\nendpoint_url = https://s3.example.net\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env["AWS_CONFIG_FILE"] = cfgFile

	r, err := Config{Bucket: "bkt"}.resolve(getenv)
	if err != nil {
		t.Fatal(err)
	}
	if r.host != "s3.amazonaws.com" || !r.secure || r.Region != "us-west-2" || r.PartSize != DefaultPartSize || r.MaxAttempts != DefaultMaxAttempts {
		t.Fatalf("defaults with the [default] profile: %+v", r)
	}
	env["AWS_PROFILE"] = "ci"
	r, _ = Config{Bucket: "bkt"}.resolve(getenv)
	if r.host != "s3.example.net" || !r.secure || r.Region != "eu-central-1" {
		t.Fatalf("profile ci: host %q secure %v region %q", r.host, r.secure, r.Region)
	}
	env["AWS_ENDPOINT_URL"] = "http://10.0.0.1:9000"
	env["AWS_REGION"] = "ap-south-1"
	r, _ = Config{Bucket: "bkt"}.resolve(getenv)
	if r.host != "10.0.0.1:9000" || r.secure || r.Region != "ap-south-1" {
		t.Fatalf("environment: host %q secure %v region %q", r.host, r.secure, r.Region)
	}
	env["AWS_ENDPOINT_URL_S3"] = "https://s3only.example.net"
	r, _ = Config{Bucket: "bkt"}.resolve(getenv)
	if r.host != "s3only.example.net" || !r.secure {
		t.Fatalf("AWS_ENDPOINT_URL_S3 must win over AWS_ENDPOINT_URL: %q", r.host)
	}
	r, _ = Config{Bucket: "bkt", Endpoint: "minio.internal:9000", Insecure: true, Region: "x"}.resolve(getenv)
	if r.host != "minio.internal:9000" || r.secure || r.Region != "x" {
		t.Fatalf("explicit config must win over the environment: %+v", r)
	}
	for _, bad := range []Config{{Bucket: "bkt", Endpoint: "ftp://x"}, {Bucket: "bkt", Endpoint: "http://x/path"}, {Bucket: "bkt", PartSize: 1 << 20}} {
		if _, err := bad.resolve(getenv); err == nil {
			t.Errorf("resolve(%+v) succeeded", bad)
		}
	}
}

func TestNewDoesNotLeakCredentials(t *testing.T) {
	b, err := New(Config{Bucket: "bkt", Prefix: "p", Endpoint: "http://127.0.0.1:1", AccessKeyID: "AKIDSECRETID", SecretAccessKey: "verysecret"})
	if err != nil {
		t.Fatal(err)
	}
	if loc := b.Properties().Location; strings.Contains(loc, "secret") || strings.Contains(loc, "AKID") || !strings.Contains(loc, "s3://bkt/p") {
		t.Fatalf("Location %q", loc)
	}
}

func TestClassify(t *testing.T) {
	ctx := context.Background()
	resp := func(status int, code string) error {
		return minio.ErrorResponse{StatusCode: status, Code: code, Message: code}
	}
	for _, c := range []struct {
		err  error
		want error // nil: permanent and unclassified
	}{
		{resp(404, "NoSuchKey"), backend.ErrNotFound},
		{resp(404, "NoSuchBucket"), nil},
		{resp(412, "PreconditionFailed"), backend.ErrPreconditionFailed},
		{resp(416, "InvalidRange"), io.ErrUnexpectedEOF},
		{resp(409, "ObjectParentIsFile"), backend.ErrInvalidName},
		{resp(409, "ExistingObjectIsDirectory"), backend.ErrInvalidName},
		{resp(409, "ConditionalRequestConflict"), backend.ErrTransient},
		{resp(409, "BucketAlreadyExists"), nil},
		{resp(503, "SlowDown"), backend.ErrTransient},
		{resp(500, "InternalError"), backend.ErrTransient},
		{resp(429, "TooManyRequests"), backend.ErrTransient},
		{resp(400, "RequestTimeout"), backend.ErrTransient},
		{resp(403, "AccessDenied"), nil},
		{resp(403, "SignatureDoesNotMatch"), nil},
		{resp(400, "InvalidArgument"), nil},
		{&url.Error{Op: "Put", URL: "http://x", Err: &net.OpError{Op: "read", Err: syscall.ECONNRESET}}, backend.ErrTransient},
		{&url.Error{Op: "Put", URL: "http://x", Err: syscall.ECONNREFUSED}, backend.ErrTransient},
		{io.ErrUnexpectedEOF, backend.ErrTransient},
		{errors.New("something else"), nil},
	} {
		got := classify(ctx, c.err)
		sentinels := []error{backend.ErrNotFound, backend.ErrPreconditionFailed, backend.ErrExists, backend.ErrInvalidName, backend.ErrTransient, io.ErrUnexpectedEOF}
		for _, s := range sentinels {
			if errors.Is(got, s) != (s == c.want) {
				t.Errorf("classify(%v) = %v: errors.Is(%v) = %v", c.err, got, s, errors.Is(got, s))
			}
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if got := classify(cancelled, resp(503, "SlowDown")); !errors.Is(got, context.Canceled) || backend.IsTransient(got) {
		t.Errorf("classify with a cancelled context = %v", got)
	}
}
