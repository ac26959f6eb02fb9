package ops

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/heft-dev/heft/codec/numeric"
	"github.com/heft-dev/heft/codec/safetensors"
)

// decodeFloats widens a BF16, F16 or F32 tensor to float32 (exactly: every value
// of those formats is a float32), into dst when it has the capacity.
func decodeFloats(dtype string, data []byte, dst []float32) ([]float32, error) {
	dt := safetensors.DType(dtype)
	n := len(data) / max(1, dt.BitSize()/8)
	if cap(dst) < n {
		dst = make([]float32, n)
	}
	dst = dst[:n]
	switch dt {
	case safetensors.BF16:
		numeric.BF16ToF32Slice(dst, data)
	case safetensors.F16:
		for i := range dst {
			dst[i] = numeric.F16ToF32(binary.LittleEndian.Uint16(data[2*i:]))
		}
	case safetensors.F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
		}
	default:
		return nil, fmt.Errorf("dtype %s is not a float format ops compute in (BF16, F16, F32)", dtype)
	}
	return dst, nil
}

// encodeFloats rounds float32 values to dtype (round to nearest even, as torch's
// casts do) into dst, which must have the exact size.
func encodeFloats(dtype string, vals []float32, dst []byte) ([]byte, error) {
	dt := safetensors.DType(dtype)
	if want := len(vals) * dt.BitSize() / 8; len(dst) != want {
		return nil, fmt.Errorf("encode %d values as %s into %d bytes, want %d", len(vals), dtype, len(dst), want)
	}
	switch dt {
	case safetensors.BF16:
		numeric.F32ToBF16Slice(dst, vals)
	case safetensors.F16:
		for i, v := range vals {
			binary.LittleEndian.PutUint16(dst[2*i:], numeric.F32ToF16(v))
		}
	case safetensors.F32:
		for i, v := range vals {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
		}
	default:
		return nil, fmt.Errorf("dtype %s is not a float format ops write (BF16, F16, F32)", dtype)
	}
	return dst, nil
}

func isFloatDType(dtype string) bool {
	switch safetensors.DType(dtype) {
	case safetensors.BF16, safetensors.F16, safetensors.F32:
		return true
	}
	return false
}
