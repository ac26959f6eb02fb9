//go:build cgo && linux

package pjrtgpu

import (
	"fmt"
	"strings"
	"time"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/go-xla/pjrt"

	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/safetensors"
)

// Dequantize computes the dequantized weight of an FP8 E4M3 block-quantized
// module (compressed-tensors float-quantized with the block strategy, or
// native fp8 with weight_block_size) into dst, which must have exactly
// out×in elements of dtype (BF16 or F32): the same bytes as
// quant.DequantizeInto(dst, mod, tensors, dtype). For BF16 that includes
// NaNs (0x7FC0); for F32, NaN elements are NaN with unspecified payload.
//
// Any other module, and any input that does not have the shapes and sizes
// its tensors' descriptions promise, gives ErrUnsupported: the CPU kernel
// handles it, or gives the proper error.
func (d *Device) Dequantize(dst []byte, mod quant.Module, tensors map[quant.Role][]byte, dtype safetensors.DType) error {
	p, err := fp8BlockPlan(mod, tensors, dtype, len(dst))
	if err != nil {
		return err
	}
	codes, scale, err := d.uploadFP8(p)
	if err != nil {
		return err
	}
	defer destroy(codes, scale)
	out, err := d.dequantResident(p, codes, scale)
	if err != nil {
		return err
	}
	defer destroy(out)
	return d.download(out, dst)
}

// fp8Plan is a validated FP8 block dequantization.
type fp8Plan struct {
	out, in, bh, bw int
	sd, dtype       safetensors.DType
	codes, scale    []byte
}

func unsupportedf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUnsupported, fmt.Sprintf(format, args...))
}

func fp8BlockPlan(mod quant.Module, tensors map[quant.Role][]byte, dtype safetensors.DType, dstLen int) (*fp8Plan, error) {
	s := mod.Scheme
	ct, st := mod.Tensors[quant.RoleCodes], mod.Tensors[quant.RoleScale]
	switch {
	case s.Format != quant.FormatFP8 && s.Format != quant.FormatCTFloat:
		return nil, unsupportedf("format %s", s.Format)
	case s.Strategy != quant.StrategyBlock:
		return nil, unsupportedf("strategy %s", s.Strategy)
	case ct.DType != safetensors.F8E4M3:
		return nil, unsupportedf("codes %s", ct.DType)
	case dtype != safetensors.BF16 && dtype != safetensors.F32:
		return nil, unsupportedf("output dtype %s", dtype)
	case st.DType != safetensors.F32 && st.DType != safetensors.BF16 && st.DType != safetensors.F16:
		return nil, unsupportedf("scale dtype %s", st.DType)
	}
	for r := range mod.Tensors {
		if r != quant.RoleCodes && r != quant.RoleScale && r != quant.RoleInputScale {
			return nil, unsupportedf("module has a %s tensor", r)
		}
	}
	p := &fp8Plan{out: mod.Out, in: mod.In, bh: s.BlockSize[0], bw: s.BlockSize[1], sd: st.DType, dtype: dtype,
		codes: tensors[quant.RoleCodes], scale: tensors[quant.RoleScale]}
	if p.out <= 0 || p.in <= 0 || p.bh <= 0 || p.bw <= 0 || p.out > 1<<24 || p.in > 1<<24 {
		return nil, unsupportedf("shape [%d, %d] block %v", p.out, p.in, s.BlockSize)
	}
	r, c := cdiv(p.out, p.bh), cdiv(p.in, p.bw)
	switch {
	case !shapeIs(ct.Shape, p.out, p.in) || len(p.codes) != p.out*p.in:
		return nil, unsupportedf("codes %v (%d bytes) for [%d, %d]", ct.Shape, len(p.codes), p.out, p.in)
	case !shapeIs(st.Shape, r, c) || len(p.scale) != r*c*st.DType.BitSize()/8:
		return nil, unsupportedf("scales %v (%d bytes), want [%d, %d]", st.Shape, len(p.scale), r, c)
	case dstLen != p.out*p.in*dtype.BitSize()/8:
		return nil, unsupportedf("destination of %d bytes", dstLen)
	}
	return p, nil
}

func shapeIs(shape []uint64, dims ...int) bool {
	if len(shape) != len(dims) {
		return false
	}
	for i, d := range dims {
		if shape[i] != uint64(d) {
			return false
		}
	}
	return true
}

func (d *Device) uploadFP8(p *fp8Plan) (codes, scale *pjrt.Buffer, err error) {
	codes, err = d.upload(p.codes, dtypes.Uint8, p.out, p.in)
	if err != nil {
		return nil, nil, err
	}
	sdt := dtypes.Uint16 // scales travel as bits
	if p.sd == safetensors.F32 {
		sdt = dtypes.Uint32
	}
	scale, err = d.uploadSmall(p.scale, sdt, cdiv(p.out, p.bh), cdiv(p.in, p.bw))
	if err != nil {
		destroy(codes)
		return nil, nil, err
	}
	return codes, scale, nil
}

func (d *Device) dequantResident(p *fp8Plan, codes, scale *pjrt.Buffer) (*pjrt.Buffer, error) {
	key := fmt.Sprintf("dequant_fp8/%dx%d/%dx%d/%s/%s", p.out, p.in, p.bh, p.bw, p.sd, p.dtype)
	e, err := d.exe(key, func() ([]byte, error) { return progDequantFP8(p.out, p.in, p.bh, p.bw, p.sd, p.dtype) })
	if err != nil {
		return nil, err
	}
	return d.run1(e, codes, scale)
}

// QuantizeFP8Block quantizes one dense weight with an fp8-block scheme:
// the same tensors and bytes as quant.QuantizeWeight(qs, weight, data).
// Other schemes, weights the CPU kernel would refuse (NaN or ±Inf
// elements, scales that overflow, malformed descriptions) and dtypes other
// than BF16, F16 and F32 give ErrUnsupported, so that the CPU kernel
// returns its result or its error.
func (d *Device) QuantizeFP8Block(qs quant.QuantizeScheme, weight safetensors.TensorInfo, data []byte) ([]quant.QuantizedTensor, error) {
	if err := qs.Validate(); err != nil || qs.Name != quant.QuantFP8Block {
		return nil, unsupportedf("scheme %s", qs.Name)
	}
	bs := qs.BlockSize
	if bs == [2]int{} {
		bs = [2]int{quant.DefaultBlockSize, quant.DefaultBlockSize}
	}
	prefix, ok := strings.CutSuffix(weight.Name, ".weight")
	wd := weight.DType
	if !ok || prefix == "" || len(weight.Shape) != 2 || weight.Shape[0] == 0 || weight.Shape[1] == 0 ||
		weight.Shape[0] > 1<<24 || weight.Shape[1] > 1<<24 {
		return nil, unsupportedf("weight %s %v", weight.Name, weight.Shape)
	}
	out, in := int(weight.Shape[0]), int(weight.Shape[1])
	var wdt dtypes.DType
	switch wd {
	case safetensors.BF16, safetensors.F16:
		wdt = dtypes.Uint16
	case safetensors.F32:
		wdt = dtypes.Uint32
	default:
		return nil, unsupportedf("weight dtype %s", wd)
	}
	if len(data) != out*in*wd.BitSize()/8 {
		return nil, unsupportedf("%d bytes for %s%v", len(data), wd, weight.Shape)
	}
	bh, bw := bs[0], bs[1]
	r, c := cdiv(out, bh), cdiv(in, bw)
	w, err := d.upload(data, wdt, out, in)
	if err != nil {
		return nil, err
	}
	defer destroy(w)
	shape := fmt.Sprintf("%dx%d/%dx%d/%s", out, in, bh, bw, wd)
	e, err := d.exe("absmax/"+shape, func() ([]byte, error) { return progAbsMaxBlocks(wd, out, in, bh, bw) })
	if err != nil {
		return nil, err
	}
	mb, err := d.run1(e, w)
	if err != nil {
		return nil, err
	}
	mags := make([]uint32, r*c)
	err = d.download(mb, u32bytes(mags))
	destroy(mb)
	if err != nil {
		return nil, err
	}
	cells, ok := fp8BlockCells(qs, wd, mags)
	if !ok {
		return nil, unsupportedf("%s: a block holds a non-finite value or has an unusable scale", weight.Name)
	}
	rcp, err := d.uploadSmall(f64bytes(cells.rcp), dtypes.Float64, r, c)
	if err != nil {
		return nil, err
	}
	defer destroy(rcp)
	e, err = d.exe("fp8codes/"+shape, func() ([]byte, error) { return progFP8Codes(wd, out, in, bh, bw) })
	if err != nil {
		return nil, err
	}
	cb, err := d.run1(e, w, rcp)
	if err != nil {
		return nil, err
	}
	defer destroy(cb)
	codes := make([]byte, out*in)
	if err := d.download(cb, codes); err != nil {
		return nil, err
	}
	sd := qs.ScaleDTypeFor(wd)
	scaleName := "weight_scale"
	if qs.Format == quant.OutputFP8 {
		scaleName = "weight_scale_inv"
	}
	return []quant.QuantizedTensor{
		{Name: prefix + ".weight", Role: quant.RoleCodes, DType: safetensors.F8E4M3, Shape: []uint64{uint64(out), uint64(in)}, Data: codes},
		{Name: prefix + "." + scaleName, Role: quant.RoleScale, DType: sd, Shape: []uint64{uint64(r), uint64(c)}, Data: encodeScales(cells.scales, sd)},
	}, nil
}

// MeasureDequantFP8 is a benchmark hook: it uploads an FP8 block module
// once, then runs the dequantization reps times on the device-resident
// data (compiled and warmed up first) and returns the wall time of each
// run, which includes the launch and the wait for completion but no
// transfer.
func (d *Device) MeasureDequantFP8(mod quant.Module, tensors map[quant.Role][]byte, dtype safetensors.DType, reps int) ([]time.Duration, error) {
	p, err := fp8BlockPlan(mod, tensors, dtype, mod.Out*mod.In*dtype.BitSize()/8)
	if err != nil {
		return nil, err
	}
	codes, scale, err := d.uploadFP8(p)
	if err != nil {
		return nil, err
	}
	defer destroy(codes, scale)
	var times []time.Duration
	for i := -1; i < reps; i++ {
		start := time.Now()
		out, err := d.dequantResident(p, codes, scale)
		if err != nil {
			return nil, err
		}
		if i >= 0 {
			times = append(times, time.Since(start))
		}
		destroy(out)
	}
	return times, nil
}

// MeasureCopy is a benchmark hook: the wall time of reps device copies of
// an array of rows×1024 32-bit words (read and write 4 KiB per row),
// measured like MeasureDequantFP8.
func (d *Device) MeasureCopy(rows, reps int) ([]time.Duration, error) {
	const cols = 1024
	e, err := d.exe(fmt.Sprintf("copy/%d", rows), func() ([]byte, error) { return progCopy(rows, cols) })
	if err != nil {
		return nil, err
	}
	x, err := d.upload(make([]byte, 4*rows*cols), dtypes.Uint32, rows, cols)
	if err != nil {
		return nil, err
	}
	defer destroy(x)
	var times []time.Duration
	for i := -1; i < reps; i++ {
		start := time.Now()
		out, err := d.run1(e, x)
		if err != nil {
			return nil, err
		}
		if i >= 0 {
			times = append(times, time.Since(start))
		}
		destroy(out)
	}
	return times, nil
}
