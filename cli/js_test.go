package cli_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heft-dev/heft/internal/jsenv"
	"github.com/heft-dev/heft/internal/modelgen"
)

// TestJSClient drives `heft serve` with @huggingface/hub from npm: listFiles and
// downloadFile (whole and a slice) on a fine-tune stored as deltas and a bridge
// stored as recipes, and uploadFiles of a model, downloaded back; every sha256
// must match heft's export.
func TestJSClient(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the @huggingface/hub interop test")
	}
	js := jsenv.Dir(t, "hf-js", "@huggingface/hub@2")
	root := t.TempDir()
	storeDir := filepath.Join(root, "store")
	base, tuned, upload := filepath.Join(root, "base"), filepath.Join(root, "tuned"), filepath.Join(root, "upload")
	for _, err := range []error{
		modelgen.WriteBase(base, modelgen.Tiny(), modelgen.Options{Seed: 1}),
		modelgen.FineTune(base, tuned, modelgen.FineTuneOptions{Seed: 2}),
		modelgen.WriteBase(upload, modelgen.Demo(), modelgen.Options{Seed: 9}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	mustHeft(t, storeDir, "import", base, "--name", "org/base")
	mustHeft(t, storeDir, "import", tuned, "--name", "org/tuned")
	mustHeft(t, storeDir, "quantize", "org/base", "--scheme", "fp8-block", "--skip-vllm-checks", "--name", "org/fp8")
	mustHeft(t, storeDir, "dequant", "org/fp8", "--name", "org/bridge")
	token := strings.TrimSpace(mustHeft(t, storeDir, "token", "create", "--scope", "write", "--namespace", "org", "--namespace", "js").stdout)
	addr := startServe(t, storeDir)

	spec := map[string]any{"download": []string{"org/tuned", "org/bridge"}, "upload_repo": "js/uploaded",
		"upload_files": []string{filepath.Join(upload, "model.safetensors"), filepath.Join(upload, "config.json")}}
	specPath := filepath.Join(root, "spec.json")
	data, _ := json.Marshal(spec)
	os.WriteFile(specPath, data, 0o644)
	script, _ := filepath.Abs(filepath.Join("testdata", "js_client.mjs"))
	// Node resolves packages next to the script: run a copy inside the package dir.
	local := filepath.Join(js, "js_client.mjs")
	src, _ := os.ReadFile(script)
	os.WriteFile(local, src, 0o644)
	cmd := exec.Command("node", local, "http://"+addr, token, specPath)
	cmd.Dir = js
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("@huggingface/hub: %v\n%s", err, ee.Stderr)
		}
		t.Fatal(err)
	}
	var res struct {
		Listed     map[string][]string          `json:"listed"`
		Downloaded map[string]map[string]string `json:"downloaded"`
		Uploaded   map[string]string            `json:"uploaded"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, ref := range []string{"org/tuned", "org/bridge"} {
		dest := filepath.Join(root, "export-"+strings.ReplaceAll(ref, "/", "_"))
		mustHeft(t, storeDir, "export", ref, dest)
		want := hashTree(t, dest)
		if len(res.Listed[ref]) != len(want) {
			t.Fatalf("%s: listFiles gave %v, heft exports %d files", ref, res.Listed[ref], len(want))
		}
		for p, h := range want {
			if res.Downloaded[ref][p] != h {
				t.Fatalf("%s: %s downloaded by @huggingface/hub differs", ref, p)
			}
		}
	}
	for _, p := range []string{"model.safetensors", "config.json"} {
		want := hashTree(t, upload)[p]
		if res.Uploaded[p] != want {
			t.Fatalf("uploaded %s came back as %s, want %s", p, res.Uploaded[p], want)
		}
	}
	mustHeft(t, storeDir, "verify", "--read-data")
}
