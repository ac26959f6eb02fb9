package recipe

import (
	"bytes"
	"errors"
	"testing"

	"github.com/heft-dev/heft/codec/quant"
	"github.com/heft-dev/heft/codec/safetensors"
)

// TestDequantRecipe evaluates the dequant recipe of formats.md §14.8's FP8 block
// example and compares with quant.Dequantize.
func TestDequantRecipe(t *testing.T) {
	codes := []byte{0x38, 0x40, 0xB8, 0x7E, 0x01, 0x00, 0x3C, 0xC4, 0x30}
	scale := []byte{0x80, 0x3f, 0x40, 0x40, 0x80, 0x3a, 0xda, 0x3f} // BF16 1, 3, 2^-10, 1.703125
	mod := quant.Module{Scheme: quant.Scheme{Format: quant.FormatFP8, Type: quant.TypeFloat, Bits: 8, CodeDType: safetensors.F8E4M3, Strategy: quant.StrategyBlock, BlockSize: [2]int{2, 2}, Symmetric: true}, Out: 3, In: 3,
		Tensors: map[quant.Role]safetensors.TensorInfo{
			quant.RoleCodes: {Name: "w", DType: safetensors.F8E4M3, Shape: []uint64{3, 3}, End: 9},
			quant.RoleScale: {Name: "s", DType: safetensors.BF16, Shape: []uint64{2, 2}, End: 8},
		}}
	want, err := quant.Dequantize(mod, map[quant.Role][]byte{quant.RoleCodes: codes, quant.RoleScale: scale}, safetensors.BF16)
	if err != nil {
		t.Fatal(err)
	}
	params, err := DequantParams(mod, []quant.Role{quant.RoleCodes, quant.RoleScale}, safetensors.BF16)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Eval(OpDequant, params, []Input{{safetensors.F8E4M3, []uint64{3, 3}, codes}, {safetensors.BF16, []uint64{2, 2}, scale}}, make([]byte, 18))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("recipe: %x, %v; want %x", got, err, want)
	}
	if _, err := Eval("frobnicate", nil, nil, nil); !errors.Is(err, ErrUnknownOp) {
		t.Fatalf("unknown op: %v", err)
	}
}

// FuzzEval: recipe parameters and inputs come from stored objects; malformed ones
// must give an error, never a panic or an out-of-bounds write.
func FuzzEval(f *testing.F) {
	f.Add("dequant", `{"Format":"fp8","Type":"float","Bits":8,"CodeDType":"F8_E4M3","Strategy":"block","BlockSize":[2,2],"Symmetric":true}`, "codes,scale", "3", "3", "BF16", []byte{1, 2, 3, 4, 5, 6, 7, 8, 9}, []byte{0x80, 0x3f, 0, 0x40, 0, 0x3f, 0, 0x3f}, 18)
	f.Add("quantize", `{"Name":"fp8-block"}`, "codes", "", "", "", []byte{0, 0x3f, 0, 0x40, 0, 0xbf, 0, 0}, []byte{}, 4)
	f.Fuzz(func(t *testing.T, op, scheme, roles, out, in, dtype string, a, b []byte, dstLen int) {
		if dstLen < 0 || dstLen > 1<<16 {
			return
		}
		params := map[string]string{"scheme": scheme, "roles": roles, "out": out, "in": in, "dtype": dtype, "role": roles}
		inputs := []Input{{safetensors.F8E4M3, []uint64{uint64(len(a))}, a}, {safetensors.BF16, []uint64{uint64(len(b) / 2)}, b}}
		if op == "quantize" {
			inputs = []Input{{safetensors.BF16, []uint64{1, uint64(len(a) / 2)}, a}}
		}
		dst := make([]byte, dstLen)
		res, err := Eval(op, params, inputs, dst)
		if err == nil && len(res) != dstLen {
			t.Fatalf("Eval returned %d bytes for a %d-byte destination", len(res), dstLen)
		}
	})
}
