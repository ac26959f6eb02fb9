package s3_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/heft-dev/heft/store/backend"
	"github.com/heft-dev/heft/store/backend/backendtest"
	"github.com/heft-dev/heft/store/backend/s3"
	"github.com/heft-dev/heft/store/backend/s3/s3test"
)

// runSuite runs the conformance suite on srv: one bucket, a fresh prefix per
// test, and a part size of 6 MiB so that the suite's large objects (17 MiB and
// more) go up in three parts.
func runSuite(t *testing.T, srv *s3test.Server, tweak func(*s3.Config)) {
	bucket := srv.NewBucket(t)
	var n atomic.Int64
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		cfg := srv.Config(bucket, fmt.Sprintf("t%d", n.Add(1)))
		cfg.PartSize = 6 << 20
		cfg.Logf = t.Logf
		if tweak != nil {
			tweak(&cfg)
		}
		b, err := s3.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		return b
	})
}

func TestConformanceVersityGW(t *testing.T) {
	runSuite(t, s3test.VersityGW(t), nil)
}

// TestConformanceVersityGWUnsigned covers the request path of production (TLS,
// where minio-go sends payloads unsigned) on the loopback server, which
// otherwise sees SigV4 streaming signatures (docs/object-storage.md §7.3).
func TestConformanceVersityGWUnsigned(t *testing.T) {
	runSuite(t, s3test.VersityGW(t), func(c *s3.Config) { c.UnsignedPayload = true })
}

// TestConformanceSeaweedFS runs the suite on SeaweedFS (`weed mini`), the
// distributed store, when its binary is cached (see package s3test).
func TestConformanceSeaweedFS(t *testing.T) {
	runSuite(t, s3test.SeaweedFS(t), nil)
}

// TestCredentialsFromEnvironment: with nothing but a bucket in the Config, the
// endpoint, region and credentials come from the AWS environment variables,
// and then from the AWS shared files.
func TestCredentialsFromEnvironment(t *testing.T) {
	srv := s3test.VersityGW(t)
	bucket := srv.NewBucket(t)
	home := t.TempDir()
	t.Setenv("HOME", home)
	for _, k := range []string{"AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_ENDPOINT_URL", srv.Endpoint)
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_ACCESS_KEY_ID", s3test.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3test.SecretKey)
	cfg, err := s3.ParseURL("s3://" + bucket + "/env")
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string) {
		t.Helper()
		b, err := s3.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Put(t.Context(), "obj", bytes.NewReader([]byte("x")), 1); err != nil {
			t.Fatalf("Put with credentials from %s: %v", what, err)
		}
	}
	check("the environment")

	// The shared files: a profile in ~/.aws/config and its keys in
	// ~/.aws/credentials.
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_ENDPOINT_URL", "")
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_PROFILE", "heft")
	if err := os.MkdirAll(filepath.Join(home, ".aws"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".aws", "config"), []byte("[profile heft]\nregion = us-east-1\nendpoint_url = "+srv.Endpoint+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".aws", "credentials"), []byte("[heft]\naws_access_key_id = "+s3test.AccessKey+"\naws_secret_access_key = "+s3test.SecretKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	check("the AWS files")
}
