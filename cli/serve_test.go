package cli_test

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heft-dev/heft/internal/modelgen"
	"github.com/heft-dev/heft/internal/pyenv"
)

// TestServeRoundTrip runs `heft serve` over a real store and drives it with
// huggingface_hub: upload a model (LFS multipart for the weights), tag it, and
// download it and two stored models back — a fine-tune stored as deltas and a
// bridge stored as recipes — checking every file's sha256 and that safetensors
// (numpy) and ml_dtypes read every tensor. Tokens gate every request.
func TestServeRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the huggingface_hub round trip")
	}
	venv := pyenv.Venv(t, "hub-roundtrip", "huggingface_hub", "numpy", "safetensors", "ml_dtypes")
	root := t.TempDir()
	storeDir := filepath.Join(root, "store")
	base, tuned, upload := filepath.Join(root, "base"), filepath.Join(root, "tuned"), filepath.Join(root, "upload")
	if err := modelgen.WriteBase(base, modelgen.Demo(), modelgen.Options{Seed: 1, Shards: 2}); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.FineTune(base, tuned, modelgen.FineTuneOptions{Seed: 2}); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.WriteBase(upload, modelgen.Demo(), modelgen.Options{Seed: 5, Shards: 2}); err != nil {
		t.Fatal(err)
	}
	mustHeft(t, storeDir, "import", base, "--name", "org/base")
	mustHeft(t, storeDir, "import", tuned, "--name", "org/tuned")
	mustHeft(t, storeDir, "quantize", "org/base", "--scheme", "fp8-block", "--name", "org/base-fp8")
	mustHeft(t, storeDir, "dequant", "org/base-fp8", "--name", "org/bridge")
	token := strings.TrimSpace(mustHeft(t, storeDir, "token", "create", "--scope", "write", "--namespace", "org", "--namespace", "team").stdout)
	readOther := strings.TrimSpace(mustHeft(t, storeDir, "token", "create", "--scope", "read", "--namespace", "other").stdout)

	addr := startServe(t, storeDir)

	spec := map[string]any{"upload_repo": "team/uploaded", "upload_dir": upload, "cache": filepath.Join(root, "hf-cache"),
		"download": []string{"org/tuned", "org/bridge", "team/uploaded"}}
	specPath := filepath.Join(root, "spec.json")
	data, _ := json.Marshal(spec)
	os.WriteFile(specPath, data, 0o644)
	run := func(tok string) ([]byte, error) {
		cmd := exec.Command(pyenv.Python(venv), filepath.Join("testdata", "hub_roundtrip.py"), specPath)
		cmd.Env = append(os.Environ(), "HF_ENDPOINT=http://"+addr, "HF_TOKEN="+tok, "HF_HUB_DISABLE_XET=1",
			"HF_HOME="+filepath.Join(root, "hf-home"), "NO_PROXY=127.0.0.1", "HF_HUB_DISABLE_TELEMETRY=1")
		return cmd.Output()
	}
	// A token for another namespace is refused, and nothing changes.
	before := mustHeft(t, storeDir, "ls", "--json").stdout
	if out, err := run(readOther); err == nil {
		t.Fatalf("a read token for another namespace uploaded: %s", out)
	}
	if after := mustHeft(t, storeDir, "ls", "--json").stdout; after != before {
		t.Fatal("a refused upload changed the refs")
	}
	out, err := run(token)
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("huggingface_hub round trip: %v\n%s", err, ee.Stderr)
		}
		t.Fatal(err)
	}
	var res struct {
		Downloads map[string]map[string]string `json:"downloads"`
		Tensors   map[string]int               `json:"tensors"`
		Whoami    string                       `json:"whoami"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	// What was downloaded is what heft exports, byte for byte.
	for _, c := range []struct{ ref, repo string }{{"org/tuned", "org/tuned"}, {"org/bridge", "org/bridge"}, {"team/uploaded", "team/uploaded"}, {"team/uploaded:v1", "team/uploaded@v1"}} {
		dest := filepath.Join(root, "export-"+strings.NewReplacer("/", "_", ":", "_").Replace(c.ref))
		mustHeft(t, storeDir, "export", c.ref, dest)
		want := hashTree(t, dest)
		got := res.Downloads[c.repo]
		delete(got, ".gitattributes")
		delete(want, ".gitattributes")
		if len(got) == 0 || len(got) != len(want) {
			t.Fatalf("%s: downloaded %d files, heft exports %d", c.repo, len(got), len(want))
		}
		for p, h := range want {
			if got[p] != h {
				t.Fatalf("%s: %s differs between download and export", c.repo, p)
			}
		}
	}
	// The upload is the source directory.
	src := hashTree(t, upload)
	for p, h := range src {
		if res.Downloads["team/uploaded"][p] != h {
			t.Fatalf("uploaded %s came back different", p)
		}
	}
	if res.Tensors["org/bridge"] == 0 || res.Tensors["org/tuned"] == 0 {
		t.Fatalf("safetensors read %v tensors", res.Tensors)
	}
	t.Logf("whoami %s; tensors read by safetensors: %v", res.Whoami, res.Tensors)
	mustHeft(t, storeDir, "verify", "--read-data")
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("heft serve did not listen on %s", addr)
}

// startServe runs `heft serve` on a free loopback port until the test ends, and
// logs the server's errors.
func startServe(t *testing.T, storeDir string, args ...string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	srv := exec.Command(heftBin, append([]string{"--store", storeDir, "serve", "--addr", addr}, args...)...)
	stderr, _ := srv.StderrPipe()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Signal(os.Interrupt); srv.Wait() })
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), `"level":"ERROR"`) {
				t.Logf("server: %s", sc.Text())
			}
		}
	}()
	waitListening(t, addr)
	return addr
}
