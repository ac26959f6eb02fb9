package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/heft-dev/heft/ops"
)

// runDoctor runs `heft doctor ARGS` in an app of its own (doctor is not yet
// in NewApp's command list).
func runDoctor(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := &cli.App{Name: "heft", Writer: &out, ErrWriter: &errOut, Flags: globalFlags(),
		ExitErrHandler: func(*cli.Context, error) {}, Commands: []*cli.Command{cmdDoctor()}}
	err := app.RunContext(context.Background(), append([]string{"heft", "doctor"}, args...))
	return out.String(), err
}

func TestDoctorFallsBackToCPU(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no_such_plugin.so")
	t.Setenv("HEFT_PJRT_PLUGIN", missing)
	t.Setenv("HEFT_DEVICE", "")
	out, err := runDoctor(t, "--json")
	if err != nil {
		t.Fatalf("doctor --json: %v", err)
	}
	var dr doctorReport
	if err := json.Unmarshal([]byte(out), &dr); err != nil {
		t.Fatalf("%v in %s", err, out)
	}
	if dr.Device.Requested != ops.DeviceAuto || dr.Device.Chosen != ops.DeviceCPU || dr.Device.GPU == nil {
		t.Fatalf("report %+v", dr.Device)
	}
	// The reason names the plugin that was not there (or, without cgo, the
	// build).
	if dr.Device.GPU.Cgo && !strings.Contains(dr.Device.Reason, missing) {
		t.Errorf("reason %q does not name %s", dr.Device.Reason, missing)
	}
	if dr.Env["HEFT_PJRT_PLUGIN"] != missing {
		t.Errorf("env %v", dr.Env)
	}
	text, err := runDoctor(t)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"requested:", "auto", "chosen:", "cpu", "reason:"} {
		if !strings.Contains(text, want) {
			t.Errorf("text report lacks %q:\n%s", want, text)
		}
	}
}

func TestDoctorDemandedGPU(t *testing.T) {
	t.Setenv("HEFT_PJRT_PLUGIN", filepath.Join(t.TempDir(), "none.so"))
	out, err := runDoctor(t, "--device", "gpu")
	var se silentExit
	if !errors.As(err, &se) || se.code != ExitOperational {
		t.Fatalf("doctor --device gpu without a GPU: %v, want exit %d", err, ExitOperational)
	}
	if !strings.Contains(out, "failure:") {
		t.Errorf("no failure line:\n%s", out)
	}
	if _, err := runDoctor(t, "--device", "tpu"); ExitCode(err) != ExitInput {
		t.Errorf("--device tpu: %v, want a usage error", err)
	}
}

func TestDeviceFlagOnComputeCommands(t *testing.T) {
	// A demanded GPU that is not there fails before any work: exit 2.
	t.Setenv("HEFT_PJRT_PLUGIN", filepath.Join(t.TempDir(), "none.so"))
	var out, errOut bytes.Buffer
	code := Main([]string{"heft", "--store", t.TempDir(), "analyze", "--base", "a", "--tuned", "b", "--device", "gpu"}, &out, &errOut)
	if code != ExitOperational || !strings.Contains(errOut.String(), "no usable GPU") {
		t.Errorf("exit %d, stderr %q", code, errOut.String())
	}
	code = Main([]string{"heft", "--store", t.TempDir(), "analyze", "--base", "a", "--tuned", "b", "--device", "tpu"}, &out, &errOut)
	if code != ExitInput {
		t.Errorf("--device tpu: exit %d", code)
	}
}
