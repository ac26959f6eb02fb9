package s3

import (
	"bufio"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/heft-dev/heft/store/backend"
)

// Config says where the objects are and how to reach them. Only Bucket is
// required; see New for what the empty fields resolve to.
type Config struct {
	// Endpoint is HOST[:PORT] or a URL (http://127.0.0.1:9000). A URL's scheme
	// decides TLS; a bare host uses TLS unless Insecure is set. Empty: the
	// AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL environment variable, then the
	// profile's endpoint_url in the AWS config file, then AWS S3
	// (s3.amazonaws.com).
	Endpoint string
	// Insecure selects plain HTTP for a bare-host Endpoint.
	Insecure bool
	// Region is the bucket's region. Empty: AWS_REGION, AWS_DEFAULT_REGION,
	// the profile's region in the AWS config file, then us-east-1.
	Region string
	// Bucket is the bucket name.
	Bucket string
	// Prefix is prepended to every object name as "PREFIX/NAME", so several
	// stores can share a bucket. It follows the object name rules; empty puts
	// names at the bucket's root.
	Prefix string
	// Addressing is "path" (https://HOST/BUCKET/KEY), "virtual"
	// (https://BUCKET.HOST/KEY) or empty: virtual for AWS endpoints, path for
	// every other (self-hosted endpoints have no wildcard DNS; see
	// docs/object-storage.md §7.2).
	Addressing string

	// AccessKeyID, SecretAccessKey and SessionToken are static credentials.
	// Empty: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN,
	// then the AWS shared credentials and config files (AWS_PROFILE or
	// Profile), then anonymous access.
	AccessKeyID, SecretAccessKey, SessionToken string
	// Profile selects the profile in the AWS files. Empty: AWS_PROFILE, then
	// "default".
	Profile string

	// PartSize is the multipart threshold and part size. Objects up to it are
	// sent in one PUT; larger ones in parts of this size. Default 16 MiB; at
	// least 5 MiB (S3's minimum part size), at most 5 GiB.
	PartSize int64
	// PartConcurrency is how many parts of one object upload at once. Default 4.
	PartConcurrency int
	// MaxAttempts is how many times one request is tried before a transient
	// failure is returned. Default 8.
	MaxAttempts int
	// RetryBaseDelay and RetryMaxDelay shape the exponential backoff between
	// attempts (each wait is drawn between half and all of
	// min(RetryMaxDelay, RetryBaseDelay×2^attempt)). Defaults 200 ms and 10 s:
	// about 20 s of waiting over the default 8 attempts, plus the attempts
	// themselves — against a SeaweedFS cluster with a volume server down, each
	// write attempt is held 30 s before its 500, so a write gives up after
	// about 4.5 minutes, and one started during the outage succeeds as soon as
	// the server is back (docs/s3-replication.md).
	RetryBaseDelay, RetryMaxDelay time.Duration
	// ConsistentList declares that the server's listings include every write
	// that returned before them (true of AWS S3, versitygw and SeaweedFS).
	// It is reported by Properties and is never assumed.
	ConsistentList bool
	// UnsignedPayload sends request bodies unsigned (UNSIGNED-PAYLOAD) instead
	// of with SigV4 streaming signatures over plain HTTP; over TLS minio-go
	// always sends them unsigned. Tests use it to cover the production path on
	// a loopback server (docs/object-storage.md §7.3).
	UnsignedPayload bool
	// Transport replaces the HTTP transport (tests inject faults with it).
	Transport http.RoundTripper
	// Logf, when set, receives a line for every failed attempt that is
	// retried or given up on.
	Logf func(format string, args ...any)
}

// Defaults.
const (
	DefaultPartSize        = 16 << 20
	MinPartSize            = 5 << 20
	MaxPartSize            = 5 << 30
	DefaultPartConcurrency = 4
	DefaultMaxAttempts     = 8
)

// ParseURL parses s3://BUCKET[/PREFIX][?OPTIONS] into a Config. OPTIONS are
// URL query parameters naming Config fields:
//
//	endpoint=URL|HOST[:PORT]   region=NAME        addressing=path|virtual
//	insecure=true              profile=NAME       part-size=BYTES (16MiB, 8388608)
//	part-concurrency=N         max-attempts=N     consistent-list=true
//	unsigned-payload=true
//
// Credentials are never taken from the URL: they come from the environment or
// the AWS files (see Config). Unknown options are errors, so a typo does not
// silently select a default.
func ParseURL(raw string) (Config, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Config{}, fmt.Errorf("parse %q: %w", raw, err)
	}
	if u.Scheme != "s3" {
		return Config{}, fmt.Errorf("parse %q: scheme must be s3://", raw)
	}
	if u.User != nil {
		return Config{}, fmt.Errorf("parse %q: credentials do not belong in the URL; use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or the AWS credentials file", redact(u))
	}
	cfg := Config{Bucket: u.Host, Prefix: strings.Trim(u.Path, "/")}
	for key, vals := range u.Query() {
		if len(vals) != 1 {
			return Config{}, fmt.Errorf("parse %q: option %s given %d times", raw, key, len(vals))
		}
		v := vals[0]
		switch key {
		case "endpoint":
			cfg.Endpoint = v
		case "region":
			cfg.Region = v
		case "addressing":
			cfg.Addressing = v
		case "profile":
			cfg.Profile = v
		case "insecure", "consistent-list", "unsigned-payload":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return Config{}, fmt.Errorf("parse %q: option %s: %w", raw, key, err)
			}
			switch key {
			case "insecure":
				cfg.Insecure = b
			case "consistent-list":
				cfg.ConsistentList = b
			default:
				cfg.UnsignedPayload = b
			}
		case "part-size":
			n, err := parseBytes(v)
			if err != nil {
				return Config{}, fmt.Errorf("parse %q: option part-size: %w", raw, err)
			}
			cfg.PartSize = n
		case "part-concurrency", "max-attempts":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return Config{}, fmt.Errorf("parse %q: option %s must be a positive integer", raw, key)
			}
			if key == "part-concurrency" {
				cfg.PartConcurrency = n
			} else {
				cfg.MaxAttempts = n
			}
		default:
			return Config{}, fmt.Errorf("parse %q: unknown option %q", raw, key)
		}
	}
	if err := cfg.validate(); err != nil {
		return Config{}, fmt.Errorf("parse %q: %w", raw, err)
	}
	return cfg, nil
}

func redact(u *url.URL) string {
	c := *u
	c.User = nil
	return c.String()
}

// parseBytes reads a byte count: digits with an optional KiB, MiB or GiB suffix.
func parseBytes(s string) (int64, error) {
	mult := int64(1)
	for _, suf := range []struct {
		s string
		m int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if strings.HasSuffix(s, suf.s) {
			s, mult = strings.TrimSuffix(s, suf.s), suf.m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("%q is not a byte count (e.g. 16MiB)", s)
	}
	return n * mult, nil
}

// validate checks what can be checked without the environment.
func (c Config) validate() error {
	if err := checkBucket(c.Bucket); err != nil {
		return err
	}
	if c.Prefix != "" {
		if err := backend.CheckName(c.Prefix); err != nil {
			return fmt.Errorf("prefix: %w", err)
		}
	}
	switch c.Addressing {
	case "", "path", "virtual":
	default:
		return fmt.Errorf("addressing %q: want path or virtual", c.Addressing)
	}
	if c.PartSize != 0 && (c.PartSize < MinPartSize || c.PartSize > MaxPartSize) {
		return fmt.Errorf("part size %d: must be between 5 MiB and 5 GiB", c.PartSize)
	}
	return nil
}

// checkBucket applies S3's bucket naming rules (3 to 63 lowercase letters,
// digits, '.' and '-', starting and ending with a letter or digit).
func checkBucket(b string) error {
	if len(b) < 3 || len(b) > 63 {
		return fmt.Errorf("bucket %q: must be 3 to 63 characters", b)
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && ((c != '.' && c != '-') || i == 0 || i == len(b)-1) {
			return fmt.Errorf("bucket %q: lowercase letters, digits, '.' and '-' only, starting and ending with a letter or digit", b)
		}
	}
	return nil
}

// String describes the configuration for messages: never credentials.
func (c Config) String() string {
	s := "s3://" + c.Bucket
	if c.Prefix != "" {
		s += "/" + c.Prefix
	}
	if c.Endpoint != "" {
		s += " at " + c.Endpoint
	}
	return s
}

// resolved is a Config with the environment applied.
type resolved struct {
	Config
	host   string
	secure bool
}

// resolve fills the empty fields from the environment and the AWS config file,
// then the defaults.
func (c Config) resolve(getenv func(string) string) (resolved, error) {
	if err := c.validate(); err != nil {
		return resolved{}, err
	}
	profile := c.Profile
	if profile == "" {
		profile = getenv("AWS_PROFILE")
	}
	var fileCfg map[string]string
	// setting returns set if given, else the first of the environment
	// variables that is set, else the profile's fileKey in the AWS config
	// file (read only when needed), else def.
	setting := func(set string, env []string, fileKey, def string) string {
		for _, e := range env {
			if set != "" {
				break
			}
			set = getenv(e)
		}
		if set == "" {
			if fileCfg == nil {
				fileCfg = readAWSConfig(getenv, profile)
			}
			set = fileCfg[fileKey]
		}
		if set == "" {
			set = def
		}
		return set
	}
	c.Endpoint = setting(c.Endpoint, []string{"AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"}, "endpoint_url", "s3.amazonaws.com")
	c.Region = setting(c.Region, []string{"AWS_REGION", "AWS_DEFAULT_REGION"}, "region", "us-east-1")
	if c.Profile == "" {
		c.Profile = profile
	}
	if c.PartSize == 0 {
		c.PartSize = DefaultPartSize
	}
	if c.PartConcurrency <= 0 {
		c.PartConcurrency = DefaultPartConcurrency
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.RetryBaseDelay <= 0 {
		c.RetryBaseDelay = 200 * time.Millisecond
	}
	if c.RetryMaxDelay <= 0 {
		c.RetryMaxDelay = 10 * time.Second
	}
	r := resolved{Config: c, secure: !c.Insecure, host: c.Endpoint}
	if strings.Contains(c.Endpoint, "://") {
		u, err := url.Parse(c.Endpoint)
		if err != nil {
			return resolved{}, fmt.Errorf("endpoint %q: %w", c.Endpoint, err)
		}
		switch u.Scheme {
		case "http":
			r.secure = false
		case "https":
			r.secure = true
		default:
			return resolved{}, fmt.Errorf("endpoint %q: scheme must be http or https", c.Endpoint)
		}
		if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil {
			return resolved{}, fmt.Errorf("endpoint %q: want SCHEME://HOST[:PORT] only", c.Endpoint)
		}
		r.host = u.Host
	}
	if r.host == "" {
		return resolved{}, fmt.Errorf("endpoint %q has no host", c.Endpoint)
	}
	return r, nil
}

// readAWSConfig returns the key = value pairs of one profile of the AWS config
// file (AWS_CONFIG_FILE or ~/.aws/config): section [default] or
// [profile NAME]. A missing or unreadable file is an empty profile: the file is
// optional, and credentials (which matter more) are read by minio-go's own
// parser of the same files.
func readAWSConfig(getenv func(string) string, profile string) map[string]string {
	out := map[string]string{}
	path := getenv("AWS_CONFIG_FILE")
	if path == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return out
		}
		path = filepath.Join(home, ".aws", "config")
	}
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	if profile == "" {
		profile = "default"
	}
	want := "profile " + profile
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			sec := strings.Join(strings.Fields(line[1:len(line)-1]), " ")
			in = sec == want || (profile == "default" && sec == "default")
			continue
		}
		if !in {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			out[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out
}
