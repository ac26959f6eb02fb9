//go:build !cgo || !linux

package pjrtgpu

import (
	"fmt"
	"runtime"
	"time"

	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/safetensors"
	"github.com/heft-dev/heft/ops/internal/linalg"
)

// This build has no PJRT code: cgo is off or the system is not Linux. Open
// always fails, so ops runs everything on the CPU; the Device methods exist
// only so that callers compile the same way in every build.

// stubReason says why this build cannot use a device.
var stubReason = fmt.Sprintf("this heft was built without cgo or for %s/%s: the PJRT backend needs cgo on Linux (build with CGO_ENABLED=1)", runtime.GOOS, runtime.GOARCH)

// SVDOptions tunes TruncatedSVD (see the cgo build).
type SVDOptions struct {
	linalg.SVDOptions
	BF16 bool
}

// Device is never opened in this build.
type Device struct{}

// Open reports why this build has no device.
func Open(opts Options) (*Device, *Report, error) {
	rep := &Report{Cgo: false, XLAFlags: opts.getenv("XLA_FLAGS"), Reason: stubReason}
	return nil, rep, fmt.Errorf("%w: %s", ErrUnavailable, stubReason)
}

func unavailable() error { return fmt.Errorf("%w: %s", ErrUnavailable, stubReason) }

// Name describes the device.
func (d *Device) Name() string { return "none" }

// Stats returns the accumulated statistics.
func (d *Device) Stats() Stats { return Stats{} }

// ResetStats clears the statistics.
func (d *Device) ResetStats() {}

// Close releases the device.
func (d *Device) Close() error { return nil }

// Dequantize fails: there is no device in this build.
func (d *Device) Dequantize([]byte, quant.Module, map[quant.Role][]byte, safetensors.DType) error {
	return unavailable()
}

// DequantizeKernel fails: there is no device in this build.
func (d *Device) DequantizeKernel([]byte, quant.Module, map[quant.Role][]byte, safetensors.DType, string) error {
	return unavailable()
}

// DequantizeBatch fails: there is no device in this build.
func (d *Device) DequantizeBatch([]DequantItem) error { return unavailable() }

// FailedPrograms reports nothing: there is no device in this build.
func (d *Device) FailedPrograms() []string { return nil }

// DequantChoices reports nothing: there is no device in this build.
func (d *Device) DequantChoices() map[string]string { return nil }

// SetDequantPack does nothing: there is no device in this build.
func (d *Device) SetDequantPack(bool) {}

// QuantizeFP8Block fails: there is no device in this build.
func (d *Device) QuantizeFP8Block(quant.QuantizeScheme, safetensors.TensorInfo, []byte) ([]quant.QuantizedTensor, error) {
	return nil, unavailable()
}

// QuantizeWeight fails: there is no device in this build.
func (d *Device) QuantizeWeight(quant.QuantizeScheme, safetensors.TensorInfo, []byte) ([]quant.QuantizedTensor, error) {
	return nil, unavailable()
}

// QuantizeInt fails: there is no device in this build.
func (d *Device) QuantizeInt(quant.QuantizeScheme, safetensors.TensorInfo, []byte) ([]quant.QuantizedTensor, error) {
	return nil, unavailable()
}

// FrobeniusNorm fails: there is no device in this build.
func (d *Device) FrobeniusNorm(linalg.Matrix) (float64, error) { return 0, unavailable() }

// Cosine fails: there is no device in this build.
func (d *Device) Cosine(x, y linalg.Matrix) (float64, error) { return 0, unavailable() }

// LowRankError fails: there is no device in this build.
func (d *Device) LowRankError(x, b, a linalg.Matrix) (residual, norm float64, err error) {
	return 0, 0, unavailable()
}

// CosineLowRank fails: there is no device in this build.
func (d *Device) CosineLowRank(x, b, a linalg.Matrix) (float64, error) { return 0, unavailable() }

// Merge fails: there is no device in this build.
func (d *Device) Merge(dst, w, b, a linalg.Matrix, scale float32) error { return unavailable() }

// TruncatedSVD fails: there is no device in this build.
func (d *Device) TruncatedSVD(linalg.Matrix, int, SVDOptions) (linalg.SVD, error) {
	return linalg.SVD{}, unavailable()
}

// MeasureDequantFP8 fails: there is no device in this build.
func (d *Device) MeasureDequantFP8(quant.Module, map[quant.Role][]byte, safetensors.DType, string, int) ([]time.Duration, error) {
	return nil, unavailable()
}

// MeasureDequant fails: there is no device in this build.
func (d *Device) MeasureDequant(quant.Module, map[quant.Role][]byte, safetensors.DType, int) ([]time.Duration, error) {
	return nil, unavailable()
}

// MeasureDequantBatch fails: there is no device in this build.
func (d *Device) MeasureDequantBatch([]DequantItem, int) (batched, separate []time.Duration, err error) {
	return nil, nil, unavailable()
}

// MeasureLaunch fails: there is no device in this build.
func (d *Device) MeasureLaunch(int) ([]time.Duration, error) { return nil, unavailable() }

// MeasureCopy fails: there is no device in this build.
func (d *Device) MeasureCopy(int, int) ([]time.Duration, error) {
	return nil, unavailable()
}
