//go:build cgo && linux

package pjrtgpu

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/go-xla/pjrt"
	"golang.org/x/sync/errgroup"

	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/safetensors"
)

// Dequantize computes the dequantized weight of a quantized module into
// dst, which must have exactly out×in elements of dtype (BF16, F16 or
// F32): the same bytes as quant.DequantizeInto(dst, mod, tensors, dtype).
// For BF16 and F16 that includes NaNs (0x7FC0; 0x7E00 with the sign the
// CPU gives it); for F32, NaN elements are NaN with unspecified payload.
// FP8 E4M3 block-quantized modules to BF16 or F32 (compressed-tensors
// float-quantized with the block strategy, or native fp8 with
// weight_block_size) take the fastest kernel that passed its probe on this
// device (see DequantKernels); every other module codec/quant dequantizes
// takes the general kernel (see intPlanFor): INT8, packed codes (act-order
// g_idx included), AutoAWQ GEMM, FP8 E4M3/E5M2 per tensor, channel or
// block, E8M0 scales, F16 output.
//
// Any other module, and any input that does not have the shapes and sizes
// its tensors' descriptions promise, gives ErrUnsupported: the CPU kernel
// handles it, or gives the proper error.
func (d *Device) Dequantize(dst []byte, mod quant.Module, tensors map[quant.Role][]byte, dtype safetensors.DType) error {
	if _, err := fp8BlockPlan(mod, tensors, dtype, len(dst)); err == nil {
		return d.DequantizeKernel(dst, mod, tensors, dtype, "")
	}
	return d.dequantInt(dst, mod, tensors, dtype)
}

// DequantizeKernel is Dequantize with a given kernel (one of
// DequantKernels, or "" for the device's choice), for tests and
// benchmarks.
func (d *Device) DequantizeKernel(dst []byte, mod quant.Module, tensors map[quant.Role][]byte, dtype safetensors.DType, kernel string) error {
	p, err := fp8BlockPlan(mod, tensors, dtype, len(dst))
	if err != nil {
		return err
	}
	if kernel == "" {
		kernel = d.dequantKernel(p.sd, p.dtype)
	}
	codes, scale, err := d.uploadFP8(p)
	if err != nil {
		return err
	}
	defer destroy(codes, scale)
	out, err := d.dequantResident(p, codes, scale, kernel)
	if err != nil {
		return err
	}
	defer destroy(out)
	return d.download(out, dst)
}

// dqChoice is the kernel chosen for one (scale dtype, output dtype), and
// why the faster ones were passed over.
type dqChoice struct {
	kernel string
	why    []string
}

// dequantKernel returns the kernel for scales of sd and output dtype,
// probing the candidates the first time.
func (d *Device) dequantKernel(sd, dtype safetensors.DType) string {
	key := string(sd) + "→" + string(dtype)
	d.dqMu.Lock()
	defer d.dqMu.Unlock()
	if c, ok := d.dq[key]; ok {
		return c.kernel
	}
	c := &dqChoice{}
	if env := os.Getenv("HEFT_PJRT_DEQUANT"); slices.Contains(DequantKernels, env) {
		c.kernel, c.why = env, []string{"HEFT_PJRT_DEQUANT"}
	}
	for _, k := range DequantKernels {
		if c.kernel != "" {
			break
		}
		if k == DequantInt {
			c.kernel = k
			break
		}
		if err := d.probeDequant(k, sd, dtype); err != nil {
			c.why = append(c.why, k+": "+err.Error())
			continue
		}
		c.kernel = k
	}
	d.dq[key] = c
	return c.kernel
}

// probeDequant runs kernel on EdgeDequantCase and compares with the CPU.
func (d *Device) probeDequant(kernel string, sd, dtype safetensors.DType) error {
	c := EdgeDequantCase(sd, dtype)
	n := c.Module.Out * c.Module.In * dtype.BitSize() / 8
	want, got := make([]byte, n), make([]byte, n)
	if err := quant.DequantizeInto(want, c.Module, c.Tensors, dtype); err != nil {
		return err
	}
	if err := d.DequantizeKernel(got, c.Module, c.Tensors, dtype, kernel); err != nil {
		return err
	}
	if bad, first := compareDequant(c, got, want); bad > 0 {
		return fmt.Errorf("%d of %d elements differ from the CPU's, first %s", bad, c.Module.Out*c.Module.In, first)
	}
	return nil
}

// DequantChoices reports, per "scale dtype→output dtype" dequantized so
// far, the kernel in use and why faster ones were not.
func (d *Device) DequantChoices() map[string]string {
	d.dqMu.Lock()
	defer d.dqMu.Unlock()
	out := map[string]string{}
	for k, c := range d.dq {
		s := c.kernel
		if len(c.why) > 0 {
			s += " (" + strings.Join(c.why, "; ") + ")"
		}
		out[k] = s
	}
	return out
}

// fp8Plan is a validated FP8 block dequantization.
type fp8Plan struct {
	out, in, bh, bw int
	sd, dtype       safetensors.DType
	codes, scale    []byte
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

func (d *Device) dequantResident(p *fp8Plan, codes, scale *pjrt.Buffer, kernel string) (*pjrt.Buffer, error) {
	if !slices.Contains(DequantKernels, kernel) {
		return nil, fmt.Errorf("pjrtgpu: no dequantization kernel %q", kernel)
	}
	s := fp8Shape{out: p.out, in: p.in, bh: p.bh, bw: p.bw, sd: p.sd, dtype: p.dtype, kernel: kernel, pack: d.dqPack.Load()}
	key := fmt.Sprintf("dequant_fp8/%s/%dx%d/%dx%d/%s/%s/%v", kernel, p.out, p.in, p.bh, p.bw, p.sd, p.dtype, s.pack)
	e, err := d.exe(key, func() ([]byte, error) { return progDequantFP8Batch([]fp8Shape{s}) })
	if err != nil {
		return nil, err
	}
	return d.run1(e, codes, scale)
}

// SetDequantPack chooses how FP8 dequantization to BF16 stores its output
// (programs compiled from then on): on, as u32 words of two BF16 values
// (four-byte stores; the same bytes; the default), off as u16 values
// (HEFT_PJRT_DEQUANT_PACK=0). Both are bit-identical to the CPU; gpubench
// measures both.
func (d *Device) SetDequantPack(on bool) { d.dqPack.Store(on) }

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
// once, then runs the dequantization with kernel ("" for the device's
// choice) reps times on the device-resident
// data (compiled and warmed up first) and returns the wall time of each
// run, which includes the launch and the wait for completion but no
// transfer.
func (d *Device) MeasureDequantFP8(mod quant.Module, tensors map[quant.Role][]byte, dtype safetensors.DType, kernel string, reps int) ([]time.Duration, error) {
	p, err := fp8BlockPlan(mod, tensors, dtype, mod.Out*mod.In*dtype.BitSize()/8)
	if err != nil {
		return nil, err
	}
	if kernel == "" {
		kernel = d.dequantKernel(p.sd, p.dtype)
	}
	codes, scale, err := d.uploadFP8(p)
	if err != nil {
		return nil, err
	}
	defer destroy(codes, scale)
	return timeRuns(reps, func() (*pjrt.Buffer, error) { return d.dequantResident(p, codes, scale, kernel) })
}

// timeRuns returns the wall times of reps calls of run after one untimed
// warm-up call (which compiles and loads what the first run needs), freeing
// each call's output.
func timeRuns(reps int, run func() (*pjrt.Buffer, error)) ([]time.Duration, error) {
	var times []time.Duration
	for i := -1; i < reps; i++ {
		start := time.Now()
		out, err := run()
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
	return timeRuns(reps, func() (*pjrt.Buffer, error) { return d.run1(e, x) })
}

// DequantizeBatch dequantizes several FP8 block modules with one device
// program: the same bytes as Dequantize for each, with one launch and one
// wait for all (about 50 to 100 µs saved per module beyond the first; a
// win for many small tensors). Every distinct list of shapes compiles its
// own program, so batch modules of repeating shapes (a layer's). If any
// item is unsupported, the whole batch gives ErrUnsupported.
func (d *Device) DequantizeBatch(items []DequantItem) error {
	plans, kernels, err := d.batchPlans(items)
	if err != nil {
		return err
	}
	bufs, err := d.uploadBatch(plans)
	defer destroy(bufs...)
	if err != nil {
		return err
	}
	outs, err := d.dequantBatchResident(plans, kernels, bufs)
	defer destroy(outs...)
	if err != nil {
		return err
	}
	var g errgroup.Group
	for i, o := range outs {
		g.Go(func() error { return d.download(o, items[i].Dst) })
	}
	return g.Wait()
}

func (d *Device) batchPlans(items []DequantItem) ([]*fp8Plan, []string, error) {
	if len(items) == 0 {
		return nil, nil, unsupportedf("empty batch")
	}
	plans := make([]*fp8Plan, len(items))
	kernels := make([]string, len(items))
	for i, it := range items {
		p, err := fp8BlockPlan(it.Module, it.Tensors, it.DType, len(it.Dst))
		if err != nil {
			return nil, nil, err
		}
		plans[i], kernels[i] = p, d.dequantKernel(p.sd, p.dtype)
	}
	return plans, kernels, nil
}

// uploadBatch uploads every plan's codes and scales (codes0, scale0, …).
func (d *Device) uploadBatch(plans []*fp8Plan) ([]*pjrt.Buffer, error) {
	bufs := make([]*pjrt.Buffer, 0, 2*len(plans))
	for _, p := range plans {
		c, s, err := d.uploadFP8(p)
		if err != nil {
			return bufs, err
		}
		bufs = append(bufs, c, s)
	}
	return bufs, nil
}

func (d *Device) dequantBatchResident(plans []*fp8Plan, kernels []string, bufs []*pjrt.Buffer) ([]*pjrt.Buffer, error) {
	shapes := make([]fp8Shape, len(plans))
	pack := d.dqPack.Load()
	key := fmt.Sprintf("dequant_fp8_batch/%v", pack)
	for i, p := range plans {
		shapes[i] = fp8Shape{out: p.out, in: p.in, bh: p.bh, bw: p.bw, sd: p.sd, dtype: p.dtype, kernel: kernels[i], pack: pack}
		key += fmt.Sprintf("/%s:%dx%d:%dx%d:%s:%s", kernels[i], p.out, p.in, p.bh, p.bw, p.sd, p.dtype)
	}
	e, err := d.exe(key, func() ([]byte, error) { return progDequantFP8Batch(shapes) })
	if err != nil {
		return nil, err
	}
	outs, err := d.run(e, bufs...)
	if err == nil && len(outs) != len(plans) {
		err = fmt.Errorf("execute: %d outputs, want %d", len(outs), len(plans))
	}
	return outs, err
}

// MeasureDequantBatch is a benchmark hook: it uploads the modules once and
// returns the wall times of reps batched executions (one program for all)
// and of reps rounds of one execution per module, on device-resident data
// with the device's kernels, measured like MeasureDequantFP8.
func (d *Device) MeasureDequantBatch(items []DequantItem, reps int) (batched, separate []time.Duration, err error) {
	plans, kernels, err := d.batchPlans(items)
	if err != nil {
		return nil, nil, err
	}
	bufs, err := d.uploadBatch(plans)
	defer destroy(bufs...)
	if err != nil {
		return nil, nil, err
	}
	for i := -1; i < reps; i++ {
		start := time.Now()
		outs, err := d.dequantBatchResident(plans, kernels, bufs)
		dt := time.Since(start)
		destroy(outs...)
		if err != nil {
			return nil, nil, err
		}
		if i >= 0 {
			batched = append(batched, dt)
		}
		start = time.Now()
		for j, p := range plans {
			out, err := d.dequantResident(p, bufs[2*j], bufs[2*j+1], kernels[j])
			destroy(out)
			if err != nil {
				return nil, nil, err
			}
		}
		if i >= 0 {
			separate = append(separate, time.Since(start))
		}
	}
	return batched, separate, nil
}

// MeasureLaunch is a benchmark hook: the wall time of reps executions of a
// program that does nothing worth measuring (one float32 incremented):
// the fixed cost of a launch and the wait for completion that every
// measurement above includes.
func (d *Device) MeasureLaunch(reps int) ([]time.Duration, error) {
	e, err := d.exe("launch", progLaunch)
	if err != nil {
		return nil, err
	}
	x, err := d.uploadSmall(make([]byte, 4), dtypes.Float32, 1)
	if err != nil {
		return nil, err
	}
	defer destroy(x)
	return timeRuns(reps, func() (*pjrt.Buffer, error) { return d.run1(e, x) })
}
